//! Operations tests for edge-mes (tests only; this library is empty).
//!
//! - `tests/dashboards.rs`: loads the sample data and generated runs through the real binaries,
//!   then runs every SQL query of every Grafana dashboard (macros and variables expanded as
//!   Grafana's PostgreSQL data source does) against the database.
//! - `tests/static_checks.rs`: `nats-server -t` on every NATS config, the compose file and the
//!   files it references, `systemd-analyze verify` on the edge unit, the Kubernetes overlays
//!   rendered with `kubectl kustomize` and validated offline (`.ci/tools.sh` installs the tools).
//! - `tests/nats_permissions.rs`: the production NATS config's per-component users and
//!   permissions, exercised with each component's JetStream calls.
