//! Integration tests of edge-mes-archiver against a real PostgreSQL: rows are loaded through the
//! ingest worker's own loader (so the ledger and its time spans are the real ones), archived to
//! a local directory, verified, damaged, replayed, and read back by an independent reader.

#![allow(clippy::unwrap_used)]

mod archive;
mod faults;
mod reader;
mod replay;
mod support;
