//! Integration tests of the testkit: real servers started, stopped, killed and restarted, and
//! never left behind.

mod cleanup;
mod handles;
mod nats_server;
mod pg_server;
