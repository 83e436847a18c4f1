//! The whole pipeline, binaries and servers real: files → edge-shipper → JetStream →
//! ingest-worker → PostgreSQL. Every test asserts exact counts: nothing lost, nothing doubled.

#![allow(clippy::unwrap_used)]

mod auth;
mod bus_buffer;
mod cluster;
mod faults;
mod identity;
mod inputs;
mod pipeline;
mod shutdown;
mod simulator;
mod site_gateway;
mod support;
