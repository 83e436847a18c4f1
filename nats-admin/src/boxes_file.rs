//! The server's boxes file (`nats/production/boxes.inc`): the users list of account `BOXES`, one
//! line per box, included by the central and the site gateway configs.
//!
//! Lines are added before the list's closing `]` and removed whole; everything else in the file
//! (comments, hand-written entries) is kept as it is. A box's line is recognised by its readings
//! subject, quoted, which no other box's line contains.

use std::io::Write;
use std::path::Path;

use crate::box_identity::BoxId;
use crate::AdminError;

/// `text` with `line` added to its users list. A line for the same box is an error, unless
/// `replace` (key rotation): then it is removed.
pub fn add(text: &str, id: &BoxId, line: &str, replace: bool) -> Result<String, AdminError> {
    let existing = lines_of(text, id);
    if !existing.is_empty() && !replace {
        return Err(AdminError::AlreadyListed {
            label: id.label(),
            lines: existing.iter().map(|i| i + 1).collect(),
        });
    }
    let mut kept = without(text, &existing);
    let close = closing_bracket(&kept)?;
    let indent = " ".repeat(indent_of(&kept, close) + 2);
    let new_line = format!("{indent}{line}");
    kept.insert(close, &new_line);
    Ok(kept.join("\n") + "\n")
}

/// `text` without the box's line(s); an error if it has none.
pub fn remove(text: &str, id: &BoxId) -> Result<String, AdminError> {
    let existing = lines_of(text, id);
    if existing.is_empty() {
        return Err(AdminError::NotListed { label: id.label() });
    }
    Ok(without(text, &existing).join("\n") + "\n")
}

/// The lines of `text` except those at `skip`.
fn without<'t>(text: &'t str, skip: &[usize]) -> Vec<&'t str> {
    text.lines()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .map(|(_, l)| l)
        .collect()
}

/// Indexes of the entry lines (not comments) that allow the box's subject.
fn lines_of(text: &str, id: &BoxId) -> Vec<usize> {
    let quoted = format!("\"{}\"", id.subject());
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#') && l.contains(&quoted))
        .map(|(i, _)| i)
        .collect()
}

/// Index of the line that closes the `users: [` list.
fn closing_bracket(lines: &[&str]) -> Result<usize, AdminError> {
    let open = lines
        .iter()
        .position(|l| {
            let t = l.trim();
            t.starts_with("users") && t.ends_with('[')
        })
        .ok_or(AdminError::NoUsersList)?;
    lines
        .iter()
        .enumerate()
        .skip(open + 1)
        .find(|(_, l)| l.trim_start().starts_with(']'))
        .map(|(i, _)| i)
        .ok_or(AdminError::NoUsersList)
}

fn indent_of(lines: &[&str], i: usize) -> usize {
    lines[i].len() - lines[i].trim_start().len()
}

/// Replaces `path` with `text` atomically (temporary file beside it, then rename), keeping its
/// permissions: a reload never reads a half-written file.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), AdminError> {
    let io = |source| AdminError::Io {
        path: path.display().to_string(),
        source,
    };
    let permissions = std::fs::metadata(path).map_err(io)?.permissions();
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, permissions)?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FILE: &str = "# boxes\nusers: [\n  # one line per box\n]\n";

    fn id(b: &str) -> BoxId {
        BoxId::new("BKK", b).unwrap()
    }

    fn line(b: &str, key: &str) -> String {
        format!(
            r#"{{"nkey":"{key}","permissions":{{"publish":{{"allow":["edge.readings.BKK.{b}"]}}}}}}  # box {b}"#
        )
    }

    #[test]
    fn lines_go_before_the_closing_bracket_and_come_out_again() {
        let one = add(FILE, &id("edge-01"), &line("edge-01", "U1"), false).unwrap();
        let two = add(&one, &id("edge-02"), &line("edge-02", "U2"), false).unwrap();
        assert_eq!(
            two,
            format!(
                "# boxes\nusers: [\n  # one line per box\n  {}\n  {}\n]\n",
                line("edge-01", "U1"),
                line("edge-02", "U2")
            )
        );
        assert_eq!(remove(&two, &id("edge-02")).unwrap(), one);
        assert_eq!(remove(&one, &id("edge-01")).unwrap(), FILE);
    }

    #[test]
    fn a_box_is_listed_once_unless_its_key_is_replaced() {
        let one = add(FILE, &id("edge-01"), &line("edge-01", "U1"), false).unwrap();
        let err = add(&one, &id("edge-01"), &line("edge-01", "U2"), false).unwrap_err();
        assert!(matches!(err, AdminError::AlreadyListed { ref lines, .. } if lines == &[4]));
        let rotated = add(&one, &id("edge-01"), &line("edge-01", "U2"), true).unwrap();
        assert!(
            rotated.contains("U2") && !rotated.contains("U1"),
            "{rotated}"
        );
        // A box whose id extends another's is another box.
        let other = add(&one, &id("edge-010"), &line("edge-010", "U3"), false).unwrap();
        assert!(other.contains("U1") && other.contains("U3"));
        assert!(matches!(
            remove(FILE, &id("edge-01")),
            Err(AdminError::NotListed { .. })
        ));
    }

    #[test]
    fn a_file_without_a_users_list_is_refused() {
        assert!(matches!(
            add("users: [\n", &id("b"), "x", false),
            Err(AdminError::NoUsersList)
        ));
        assert!(matches!(
            add("# nothing\n", &id("b"), "x", false),
            Err(AdminError::NoUsersList)
        ));
    }
}
