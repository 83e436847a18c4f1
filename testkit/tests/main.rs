//! Integration tests of the testkit: real servers started, stopped, killed and restarted.

mod nats_server;
mod pg_server;
