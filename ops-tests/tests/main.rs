//! Operations tests: Grafana dashboards against a loaded database, static checks of the deploy
//! files. One test binary (see the crate docs).
#![allow(clippy::unwrap_used)]

mod dashboards;
mod flag_tables;
mod grafana;
mod loaded_stack;
mod nats_permissions;
mod openapi_fuzz;
mod static_checks;
