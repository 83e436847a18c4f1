//! The Merkle tree over a part's row groups: RFC 6962 (Certificate Transparency) section 2.1,
//! with SHA-256.
//!
//! - A row group's hash (a leaf) is `SHA-256(0x00 || bytes)`, where `bytes` is the row group's
//!   byte range in its Parquet file: from the first byte of its first column chunk (the
//!   dictionary page if there is one, else the first data page) to the last byte of its last
//!   column chunk, i.e. `[min(start), max(start + total_compressed_size))` over its column chunks.
//! - Leaves are ordered by file (the manifest's file order: ascending path) and, in a file, by
//!   row group index.
//! - The root of `n` leaves: the empty tree is `SHA-256("")`; one leaf is itself; otherwise, with
//!   `k` the largest power of two below `n`, `SHA-256(0x01 || root(first k) || root(rest))`.
//!
//! The prefixes keep a leaf from passing for an inner node. Any tool with SHA-256 and a Parquet
//! metadata reader can recompute it (the archive's Python test does, with pyarrow).

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// The leaf hash of one row group's bytes.
pub fn leaf_hash(bytes: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(bytes);
    h.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root over `leaves` in order.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = largest_power_of_two_below(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

fn largest_power_of_two_below(n: usize) -> usize {
    debug_assert!(n > 1);
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(hex_str: &str) -> String {
        hex_str.to_owned()
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(
            hex::encode(root(&[])),
            h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        let leaf = leaf_hash(b"");
        // RFC 6962's hash of an empty leaf.
        assert_eq!(
            hex::encode(leaf),
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        );
        assert_eq!(root(&[leaf]), leaf);
    }

    #[test]
    fn unbalanced_trees_split_at_the_largest_power_of_two() {
        let leaves: Vec<Hash> = (0u8..5).map(|i| leaf_hash(&[i])).collect();
        let left = node_hash(
            &node_hash(&leaves[0], &leaves[1]),
            &node_hash(&leaves[2], &leaves[3]),
        );
        assert_eq!(root(&leaves), node_hash(&left, &leaves[4]));
        let three = node_hash(&node_hash(&leaves[0], &leaves[1]), &leaves[2]);
        assert_eq!(root(&leaves[..3]), three);
    }

    #[test]
    fn order_matters() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        assert_ne!(root(&[a, b]), root(&[b, a]));
    }
}
