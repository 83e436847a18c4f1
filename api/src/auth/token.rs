//! API tokens: `emt_<id>_<secret>`, where `id` (16 hex digits) finds the token's row and
//! `secret` (64 hex digits, 256 random bits) proves it. Only a salted SHA-256 of the secret is
//! stored; it is compared in constant time. A token is shown once, when it is created.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every API token starts with; any other bearer value is tried as a JWT.
pub const PREFIX: &str = "emt_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;
const SALT_BYTES: usize = 16;

/// A token as its holder has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub id: String,
    secret: String,
}

/// What is stored of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: String,
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
}

/// A new token: the text to hand out once, and what to store.
pub fn generate() -> (String, Stored) {
    let mut rng = rand::rng();
    let mut id = [0u8; ID_HEX / 2];
    let mut secret = [0u8; SECRET_HEX / 2];
    let mut salt = vec![0u8; SALT_BYTES];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    rng.fill_bytes(&mut salt);
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    let hash = digest(&salt, &secret);
    (format!("{PREFIX}{id}_{secret}"), Stored { id, salt, hash })
}

/// Parses a presented token; `None` for anything not shaped like one (never a reason why).
pub fn parse(text: &str) -> Option<Presented> {
    let rest = text.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (hex(id, ID_HEX) && hex(secret, SECRET_HEX)).then(|| Presented {
        id: id.to_owned(),
        secret: secret.to_owned(),
    })
}

fn digest(salt: &[u8], secret: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret.as_bytes());
    h.finalize().to_vec()
}

impl Stored {
    /// Whether `presented` is this token (constant time in the secret).
    pub fn verifies(&self, presented: &Presented) -> bool {
        self.id == presented.id
            && bool::from(digest(&self.salt, &presented.secret).ct_eq(&self.hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_against_what_is_stored_and_nothing_else() {
        let (text, stored) = generate();
        assert_eq!(text.len(), PREFIX.len() + ID_HEX + 1 + SECRET_HEX);
        let presented = parse(&text).unwrap();
        assert_eq!(presented.id, stored.id);
        assert!(stored.verifies(&presented));
        // The secret is not stored, nor derivable without the salt.
        assert!(!stored.hash.is_empty() && !text.contains(&hex::encode(&stored.hash)));
        let (other, other_stored) = generate();
        assert!(!stored.verifies(&parse(&other).unwrap()));
        assert!(!other_stored.verifies(&presented));
        // Same id, another secret.
        let mut forged = text.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        assert!(!stored.verifies(&parse(&forged).unwrap()));
    }

    #[test]
    fn only_well_formed_tokens_parse() {
        let (text, _) = generate();
        for bad in [
            "",
            "emt_",
            &text[..text.len() - 1],
            &text.to_uppercase(),
            &text.replacen("emt_", "xyz_", 1),
            &format!("{text}0"),
            "emt_0123456789abcdef_zz",
            &format!("Bearer {text}"),
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
