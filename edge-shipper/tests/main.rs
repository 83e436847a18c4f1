//! Integration tests against a real, private nats-server (one per test, so fault tests can stop
//! and restart it). The shipper runs in-process through `edge_shipper::run` or as the built
//! binary, which SIGTERM and SIGKILL tests need.

mod faults;
mod shipping;
mod support;
