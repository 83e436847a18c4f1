//! Integration tests of mes-api against real PostgreSQL and nats-server (testkit's private
//! servers, or the ones `EDGE_MES_TEST_DATABASE_URL` / `EDGE_MES_TEST_NATS_URL` name). Every test
//! has its own database and its own stream names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod bad_input;
mod board;
mod board_browser;
mod cdp;
mod event_contract;
mod jwt;
mod kpi;
mod least_privilege;
mod lifecycle;
mod machine_state;
mod oee;
mod ops;
mod relay;
mod same_figures;
mod spc;
mod spc_limits;
mod support;
mod sweep;
mod trace_runs;
