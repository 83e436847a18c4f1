//! Who may call what. Every route but `GET /health` needs `Authorization: Bearer <token>`; the
//! token's role must reach the route's ([`required_role`]): `viewer` reads (every GET, the board
//! and its feed), `operator` also runs production (the run lifecycle), `admin` also manages
//! (tokens, plant data). No token or a bad one: 401 with `WWW-Authenticate: Bearer`; a token
//! without the role: 403. Why a token failed is logged, never answered.
//!
//! A bearer value starting with `emt_` is an API token ([`token`]); any other is tried as a JWT
//! of the plant's identity provider ([`jwt`], keys from [`jwks`]) when `--jwt-jwks` is set.

pub mod jwks;
pub mod jwks_http;
pub mod jwt;
pub mod middleware;
pub mod session;
pub mod token;

use std::fmt;
use std::str::FromStr;

use axum::http::Method;
use serde::{Deserialize, Serialize};

/// A token's role; each includes the ones before it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?} (viewer, operator, admin)"))
    }
}

/// Who made a request: a token's name and role. Handlers that write record the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// Who a valid token names, and the role it grants: always one for an API token; a JWT may name
/// none of mes-api's roles (then every route but the public ones answers 403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Option<Role>,
}

/// The role a route needs; `None`: public (the probes, the board's shell and its sign-in).
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    // Liveness and readiness: what Kubernetes probes, compose health checks and load balancers
    // call, without credentials (readiness says only whether the database and NATS answer); the
    // board's page (a shell without data: its data needs the token) and the board's sign-in,
    // which checks the token it carries.
    if path == "/health"
        || (path == "/ready" && method == Method::GET)
        || (path == "/board" && method == Method::GET)
        || (path == session::PATH && method == Method::POST)
    {
        return None;
    }
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        return Some(Role::Viewer);
    }
    // Run lifecycle and the reason of a detected stop: the shop floor's writes.
    if path.starts_with("/op_run/") || path.starts_with("/machine_stops/") {
        return Some(Role::Operator);
    }
    Some(Role::Admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_before() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn the_route_table() {
        let table = [
            (Method::GET, "/health", None),
            (Method::GET, "/ready", None),
            (Method::GET, "/openapi.json", Some(Role::Viewer)),
            (Method::GET, "/board", None),
            (Method::POST, "/board/session", None),
            (Method::GET, "/board/state", Some(Role::Viewer)),
            (Method::GET, "/board/events", Some(Role::Viewer)),
            (Method::GET, "/kpi/oee", Some(Role::Viewer)),
            (Method::GET, "/op_run/active", Some(Role::Viewer)),
            (Method::POST, "/op_run/start", Some(Role::Operator)),
            (Method::POST, "/op_run/report", Some(Role::Operator)),
            (Method::POST, "/op_run/abort", Some(Role::Operator)),
            (Method::POST, "/tokens", Some(Role::Admin)),
            (Method::GET, "/machine_stops", Some(Role::Viewer)),
            (
                Method::POST,
                "/machine_stops/7/reason",
                Some(Role::Operator),
            ),
            (Method::GET, "/machine_state/rules", Some(Role::Viewer)),
            (Method::PUT, "/machine_state/rules/R1", Some(Role::Admin)),
            (Method::DELETE, "/machine_state/rules/R1", Some(Role::Admin)),
            (Method::DELETE, "/op_run/x", Some(Role::Operator)),
            (Method::POST, "/anything-else", Some(Role::Admin)),
        ];
        for (method, path, role) in table {
            assert_eq!(required_role(&method, path), role, "{method} {path}");
        }
    }
}
