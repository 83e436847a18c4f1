//! The flag tables in the docs list exactly the flags each binary's `--help` documents, with
//! their environment variables, so the docs cannot drift from the code.

use std::collections::BTreeSet;
use std::process::Command;

use regex::Regex;

/// Flags and environment variables `<bin> --help` documents (without --help and --version).
fn from_help(bin: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let path = testkit::bins::bin_path(bin).unwrap_or_else(|e| panic!("{e:#}"));
    let out = Command::new(&path).arg("--help").output().unwrap();
    assert!(out.status.success(), "{bin} --help failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let flag = Regex::new(r"^\s+(?:-\w, )?(--[a-z0-9-]+)").unwrap();
    // `[env: NAME=value]`, or `[env: NAME]` for hidden values (secrets).
    let env = Regex::new(r"\[env: ([A-Z0-9_]+)[=\]]").unwrap();
    let flags = text
        .lines()
        .filter_map(|l| flag.captures(l).map(|c| c[1].to_owned()))
        .filter(|f| f != "--help" && f != "--version")
        .collect();
    let envs = env.captures_iter(&text).map(|c| c[1].to_owned()).collect();
    (flags, envs)
}

/// Flags (first column) and environment variables (second column) of the first table after the
/// heading `heading` in `file`.
fn from_table(file: &str, heading: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(testkit::bins::workspace_root().join(file)).unwrap();
    let start = text
        .lines()
        .position(|l| l.trim() == heading)
        .unwrap_or_else(|| panic!("{file}: no heading {heading:?}"));
    let rows: Vec<&str> = text
        .lines()
        .skip(start + 1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    assert!(!rows.is_empty(), "{file}: no table after {heading:?}");
    let flag = Regex::new(r"--[a-z0-9-]+").unwrap();
    let env = Regex::new(r"`([A-Z][A-Z0-9_]+)`").unwrap();
    let (mut flags, mut envs) = (BTreeSet::new(), BTreeSet::new());
    for row in rows {
        let cells: Vec<&str> = row.split(" | ").collect();
        flags.extend(flag.find_iter(cells[0]).map(|m| m.as_str().to_owned()));
        if let Some(c) = cells.get(1) {
            envs.extend(env.captures_iter(c).map(|m| m[1].to_owned()));
        }
    }
    (flags, envs)
}

fn tables_match_help(bin: &str, tables: &[(&str, &str)]) {
    let (help_flags, help_envs) = from_help(bin);
    for (file, heading) in tables {
        let (flags, envs) = from_table(file, heading);
        let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| -> Vec<String> {
            a.difference(b).cloned().collect()
        };
        assert!(
            flags == help_flags,
            "{file} {heading}: flags only in the table {:?}, only in `{bin} --help` {:?}",
            only(&flags, &help_flags),
            only(&help_flags, &flags)
        );
        assert!(
            envs == help_envs,
            "{file} {heading}: environment variables only in the table {:?}, only in \
             `{bin} --help` {:?}",
            only(&envs, &help_envs),
            only(&help_envs, &envs)
        );
    }
}

#[test]
fn edge_shipper_flag_tables_match_its_help() {
    tables_match_help(
        "edge-shipper",
        &[
            ("README.md", "### edge-shipper"),
            ("edge-shipper/README.md", "## Flags"),
        ],
    );
}

#[test]
fn ingest_worker_flag_table_matches_its_help() {
    tables_match_help("ingest-worker", &[("README.md", "### ingest-worker")]);
}

#[test]
fn mes_api_flag_table_matches_its_help() {
    tables_match_help("mes-api", &[("docs/api.md", "## Running it")]);
}
