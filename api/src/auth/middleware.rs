//! The bearer-token check in front of every route ([`authenticate`]).
//!
//! Tokens are looked up by id in the database (so every replica sees a new or revoked token) and
//! kept for [`CACHE_TTL`]: the report path then costs no extra round trip, and a revocation takes
//! effect everywhere within that time. A token's last use is written at most once per
//! [`TOUCH_EVERY`], in the background. A bearer value that is not an API token is tried as a JWT
//! when the identity provider's keys are configured ([`super::jwt`]).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use sqlx::PgPool;
use tracing::{info, warn};

use super::jwt::JwtAuth;
use super::token::{self, Presented};
use super::{required_role, Identity, Principal};
use crate::error::ApiError;
use crate::store::tokens::{self, TokenRow};

/// How long a looked-up token is trusted before it is read again (revocations take this long).
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// A token's `last_used_at` is written at most this often.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Why a token was not accepted.
enum Refusal {
    /// Logged, never answered: the answer is only "invalid token".
    Invalid(&'static str),
    /// The database could not be asked: 503, the client may retry.
    Unavailable(String),
}

/// Checks tokens against the `api_tokens` table, with a short cache, and limits each token's
/// writes.
pub struct Authenticator {
    pool: PgPool,
    /// Writes per second and caller (bursts up to twice that); 0: unlimited.
    write_rate: u32,
    writes: Option<DefaultKeyedRateLimiter<String>>,
    /// JWTs of the identity provider, when `--jwt-jwks` is set.
    jwt: Option<Arc<JwtAuth>>,
    cache: Mutex<HashMap<String, (Option<TokenRow>, Instant)>>,
    touched: Mutex<HashMap<String, Instant>>,
}

impl Authenticator {
    pub fn new(pool: PgPool) -> Arc<Self> {
        Self::with_write_rate(pool, 0)
    }

    /// With at most `per_second` writes per second and token (0: unlimited).
    pub fn with_write_rate(pool: PgPool, per_second: u32) -> Arc<Self> {
        Self::build(pool, per_second, None)
    }

    /// With at most `per_second` writes per second and caller (0: unlimited), also accepting
    /// the JWTs `jwt` verifies.
    pub fn build(pool: PgPool, per_second: u32, jwt: Option<Arc<JwtAuth>>) -> Arc<Self> {
        let writes = NonZeroU32::new(per_second).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Arc::new(Self {
            pool,
            write_rate: per_second,
            writes,
            jwt,
            cache: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
        })
    }

    pub fn write_rate(&self) -> u32 {
        self.write_rate
    }

    pub fn jwt(&self) -> Option<&Arc<JwtAuth>> {
        self.jwt.as_ref()
    }

    /// The principal of a token's text, if it is a valid one with a role (why not is logged).
    pub async fn verify(&self, text: &str) -> Result<Option<Principal>, ApiError> {
        match self.identify(text).await {
            Ok(Identity {
                name,
                role: Some(role),
            }) => Ok(Some(Principal { name, role })),
            Ok(Identity { name, role: None }) => {
                info!(caller = %name, "token refused: it grants no role");
                Ok(None)
            }
            Err(Refusal::Invalid(why)) => {
                info!(reason = why, "token refused");
                Ok(None)
            }
            Err(Refusal::Unavailable(cause)) => Err(ApiError::Unavailable(cause)),
        }
    }

    /// Who a bearer value names: an API token (`emt_…`), else a JWT when those are accepted.
    async fn identify(&self, text: &str) -> Result<Identity, Refusal> {
        if text.starts_with(token::PREFIX) {
            let presented = token::parse(text).ok_or(Refusal::Invalid("not a token"))?;
            let p = self.principal(&presented).await?;
            return Ok(Identity {
                name: p.name,
                role: Some(p.role),
            });
        }
        match &self.jwt {
            Some(jwt) => jwt.identify(text).await.map_err(Refusal::Invalid),
            None => Err(Refusal::Invalid("not a token (JWTs are not configured)")),
        }
    }

    /// The principal of a presented token, or why it is refused (for the log only).
    async fn principal(&self, presented: &Presented) -> Result<Principal, Refusal> {
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&presented.id).cloned())
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(row, _)| row);
        let row = match cached {
            Some(row) => row,
            None => {
                let row = tokens::lookup(&self.pool, &presented.id)
                    .await
                    .map_err(|e| Refusal::Unavailable(e.to_string()))?;
                if let Ok(mut c) = self.cache.lock() {
                    if c.len() > 10_000 {
                        c.clear();
                    }
                    c.insert(presented.id.clone(), (row.clone(), Instant::now()));
                }
                row
            }
        };
        let row = row.ok_or(Refusal::Invalid("unknown token id"))?;
        if !row.stored.verifies(presented) {
            return Err(Refusal::Invalid("wrong secret"));
        }
        if row.revoked_at.is_some() {
            return Err(Refusal::Invalid("revoked"));
        }
        if row.expires_at.is_some_and(|t| t <= Utc::now()) {
            return Err(Refusal::Invalid("expired"));
        }
        self.touch(&row.stored.id);
        Ok(Principal {
            name: row.name,
            role: row.role,
        })
    }

    fn touch(&self, id: &str) {
        let due = self.touched.lock().is_ok_and(|mut t| {
            let due = t.get(id).is_none_or(|at| at.elapsed() >= TOUCH_EVERY);
            if due {
                t.insert(id.to_owned(), Instant::now());
            }
            due
        });
        if due {
            let (pool, id) = (self.pool.clone(), id.to_owned());
            tokio::spawn(async move {
                if let Err(e) = tokens::touch(&pool, &id).await {
                    warn!(error = %e, "cannot record a token's last use");
                }
            });
        }
    }
}

/// The `Authorization: Bearer` check; the principal goes into the request's extensions.
pub async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(needed) = required_role(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // The board's own reads may carry the token in its session cookie instead (a browser's
    // EventSource cannot send a header); never a write.
    let cookie = || {
        (request.method() == axum::http::Method::GET && request.uri().path().starts_with("/board/"))
            .then(|| super::session::cookie_token(headers))
            .flatten()
    };
    let presented = bearer.map(str::to_owned).or_else(cookie);
    let Some(text) = presented.as_deref() else {
        return ApiError::Unauthorized { token_given: false }.into_response();
    };
    match auth.identify(text).await {
        Err(Refusal::Unavailable(cause)) => ApiError::Unavailable(cause).into_response(),
        Err(Refusal::Invalid(why)) => {
            info!(reason = why, path = %request.uri().path(), "request refused: invalid token");
            ApiError::Unauthorized { token_given: true }.into_response()
        }
        Ok(Identity {
            name,
            role: Some(role),
        }) if role >= needed => {
            let p = Principal { name, role };
            let write = !matches!(
                *request.method(),
                axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
            );
            if let (true, Some(limiter)) = (write, &auth.writes) {
                if let Err(not_until) = limiter.check_key(&p.name) {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    info!(token = %p.name, "write refused: rate limit");
                    return ApiError::TooManyRequests {
                        retry_after_secs: wait.as_secs().max(1),
                    }
                    .into_response();
                }
            }
            request.extensions_mut().insert(p);
            next.run(request).await
        }
        Ok(Identity { name, role }) => {
            let has = role.map_or("no role".to_owned(), |r| format!("role {r}"));
            info!(token = %name, has = %has, needed = %needed, path = %request.uri().path(),
                  "request refused: role too low");
            ApiError::Forbidden(format!(
                "this operation needs role {needed}; the token has {has}"
            ))
            .into_response()
        }
    }
}
