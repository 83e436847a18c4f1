//! Integration tests of ingest-worker against real nats-server and PostgreSQL.
//!
//! Messages are framed and published here with the protocol crate, exactly as edge-shipper does,
//! so these tests pin the worker's exactly-once behaviour independently of the tailer.

#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod exactly_once;
mod faults;
mod least_privilege;
mod schema;
mod support;
