//! End-to-end tests of the pipeline live in `tests/`: they run the real `edge-shipper` and
//! `ingest-worker` binaries against real nats-server and PostgreSQL and assert exact row counts.
//! The binaries must be built first, which `cargo test --workspace` does.
