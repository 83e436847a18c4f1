//! JWTs of the plant's identity provider (OIDC client credentials of MES connectors, Keycloak,
//! Entra ID), accepted beside API tokens with `--auth tokens` and `--jwt-jwks`.
//!
//! A token is accepted when it is signed with RS256 or ES256 by a key of the JWKS ([`super::jwks`],
//! found by its `kid`, the header's `alg` being the key's), its `iss` is `--jwt-issuer`, its `aud`
//! one of `--jwt-audience`, and it has not expired (`exp`, and `nbf` when present, with
//! `--jwt-leeway-seconds`). Its `sub` names the caller, recorded as `jwt:<sub>` (API token names
//! cannot start with `jwt:`), and its role comes from the claim `--jwt-role-claim`. Why a token is
//! refused goes to the log; the answer says only "invalid token".

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::Jwks;
use super::{Identity, Role};

/// What the actor of a JWT starts with; API token names may not.
pub const ACTOR_PREFIX: &str = "jwt:";
/// Longest `sub` accepted, in bytes (with the prefix, within the 128 bytes of an actor).
pub const MAX_SUBJECT_BYTES: usize = 120;
/// Longest token looked at, in bytes (an identity provider's tokens are a few KiB at most).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A JWT's subject as the actor recorded on what the caller writes: `jwt:<sub>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(String);

impl Subject {
    /// 1 to [`MAX_SUBJECT_BYTES`] bytes without control characters.
    pub fn parse(sub: &str) -> Result<Self, &'static str> {
        if sub.is_empty() || sub.len() > MAX_SUBJECT_BYTES {
            return Err("sub empty or longer than 120 bytes");
        }
        if sub.chars().any(char::is_control) {
            return Err("sub has control characters");
        }
        Ok(Self(sub.to_owned()))
    }

    pub fn actor(&self) -> String {
        format!("{ACTOR_PREFIX}{}", self.0)
    }
}

/// Where the role is in the claims: a claim name, or a dotted path into nested objects
/// (`realm_access.roles`). A name that is itself a claim (`https://example.com/roles`) wins over
/// the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleClaim(String);

impl std::str::FromStr for RoleClaim {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.split('.').any(str::is_empty) {
            return Err(format!(
                "{s:?}: a claim name or a dotted path such as realm_access.roles"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Display for RoleClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl RoleClaim {
    fn find<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        claims.get(&self.0).or_else(|| {
            let mut parts = self.0.split('.');
            let first = claims.get(parts.next()?)?;
            parts.try_fold(first, |value, part| value.get(part))
        })
    }

    /// The highest role the claims grant: the claim is a string (space-separated values, like
    /// `scope`) or an array of strings; each value is `prefix` + `viewer`, `operator` or `admin`;
    /// other values are ignored.
    pub fn role(&self, claims: &Map<String, Value>, prefix: &str) -> Option<Role> {
        let names: Vec<&str> = match self.find(claims)? {
            Value::String(s) => s.split_whitespace().collect(),
            Value::Array(values) => values.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        names
            .into_iter()
            .filter_map(|n| n.strip_prefix(prefix))
            .filter_map(|n| n.parse::<Role>().ok())
            .max()
    }
}

/// What a JWT must carry and where its role is.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// `iss` must be this.
    pub issuer: String,
    /// `aud` must be (or contain) one of these.
    pub audiences: Vec<String>,
    pub role_claim: RoleClaim,
    /// Stripped from role values before they are read (`edge-mes-` of `edge-mes-operator`).
    pub role_prefix: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

/// Verifies JWTs against the identity provider's keys.
pub struct JwtAuth {
    settings: JwtSettings,
    keys: Arc<Jwks>,
}

impl JwtAuth {
    pub fn new(settings: JwtSettings, keys: Arc<Jwks>) -> Self {
        Self { settings, keys }
    }

    pub fn keys(&self) -> &Arc<Jwks> {
        &self.keys
    }

    /// The caller a JWT names, or why it is refused (for the log only).
    pub async fn identify(&self, token: &str) -> Result<Identity, &'static str> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err("JWT too long");
        }
        // `none` and unknown algorithms do not even parse.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| "not a JWT, or an algorithm other than RS256 and ES256")?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err("JWT algorithm not accepted (RS256 and ES256 only)");
        }
        let kid = header.kid.as_deref().ok_or("JWT without kid")?;
        let key = self
            .keys
            .key(kid)
            .await
            .ok_or("JWT signed with an unknown kid")?;
        if key.alg != header.alg {
            return Err("JWT algorithm is not its key's");
        }
        let mut validation = Validation::new(key.alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&self.settings.audiences);
        validation.required_spec_claims = ["exp", "iss", "aud", "sub"]
            .into_iter()
            .map(str::to_owned)
            .collect::<HashSet<_>>();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => "JWT expired",
                ErrorKind::ImmatureSignature => "JWT not yet valid (nbf)",
                ErrorKind::InvalidIssuer => "JWT of another issuer",
                ErrorKind::InvalidAudience => "JWT for another audience",
                ErrorKind::InvalidSignature => "JWT signature does not verify",
                ErrorKind::MissingRequiredClaim(_) => "JWT lacks a valid exp, iss, aud or sub",
                ErrorKind::InvalidAlgorithm => "JWT algorithm not accepted",
                _ => "JWT invalid",
            })?;
        let sub = data
            .claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or("JWT sub not a string")?;
        let subject = Subject::parse(sub)?;
        Ok(Identity {
            name: subject.actor(),
            role: self
                .settings
                .role_claim
                .role(&data.claims, &self.settings.role_prefix),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_role_is_the_highest_one_the_claim_names() {
        let roles: RoleClaim = "roles".parse().unwrap();
        let c = claims(json!({"roles": ["viewer", "operator", "other"]}));
        assert_eq!(roles.role(&c, ""), Some(Role::Operator));
        let c = claims(json!({"roles": "admin"}));
        assert_eq!(roles.role(&c, ""), Some(Role::Admin));
        for none in [
            json!({}),
            json!({"roles": []}),
            json!({"roles": ["Operator", "root"]}),
            json!({"roles": 3}),
            json!({"roles": {"operator": true}}),
        ] {
            assert_eq!(roles.role(&claims(none.clone()), ""), None, "{none}");
        }
    }

    #[test]
    fn a_dotted_path_reaches_nested_claims_and_a_prefix_maps_provider_names() {
        let keycloak: RoleClaim = "realm_access.roles".parse().unwrap();
        let c = claims(
            json!({"realm_access": {"roles": ["offline_access", "edge-mes-admin", "edge-mes-viewer"]}}),
        );
        assert_eq!(keycloak.role(&c, "edge-mes-"), Some(Role::Admin));
        assert_eq!(
            keycloak.role(&c, ""),
            None,
            "without the prefix no value is a role"
        );
        let client: RoleClaim = "resource_access.mes-api.roles".parse().unwrap();
        let c = claims(json!({"resource_access": {"mes-api": {"roles": ["operator"]}}}));
        assert_eq!(client.role(&c, ""), Some(Role::Operator));
        // A claim whose name has dots (a namespaced claim) is taken whole.
        let namespaced: RoleClaim = "https://plant.example/roles".parse().unwrap();
        let c = claims(json!({"https://plant.example/roles": ["viewer"]}));
        assert_eq!(namespaced.role(&c, ""), Some(Role::Viewer));
        // Space-separated values, as in `scope`.
        let scope: RoleClaim = "scope".parse().unwrap();
        let c = claims(json!({"scope": "openid mes.operator"}));
        assert_eq!(scope.role(&c, "mes."), Some(Role::Operator));
        for bad in ["", ".", "a..b", "roles."] {
            assert!(bad.parse::<RoleClaim>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subjects_become_actors_that_no_token_name_can_be() {
        let s = Subject::parse("service-account-mes-connector").unwrap();
        assert_eq!(s.actor(), "jwt:service-account-mes-connector");
        assert!(Subject::parse(&"a".repeat(MAX_SUBJECT_BYTES)).is_ok());
        assert!(s.actor().len() <= 128);
        for bad in ["", "a\nb", "\u{0}", &"a".repeat(MAX_SUBJECT_BYTES + 1)] {
            assert!(Subject::parse(bad).is_err(), "{bad:?}");
        }
    }
}
