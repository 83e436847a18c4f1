//! `Idempotency-Key` on POSTs: the first answer is stored in the same transaction as the change
//! it answers; a retry with the same key and the same body gets that answer back (header
//! `Idempotent-Replayed: true`) and changes nothing; the same key with a different body or route
//! is refused with 422. Only successful answers are stored: a refused request changed nothing, so
//! its retry is simply evaluated again.

use axum::extract::FromRequestParts;
use axum::http::{request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use sqlx::PgConnection;

use crate::error::ApiError;

pub const HEADER: &str = "Idempotency-Key";
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";
const MAX_KEY_BYTES: usize = 255;
/// The rule of [`IdempotencyKey`] as the OpenAPI document states it: visible ASCII, `!` to `~`.
pub const KEY_PATTERN: &str = "^[!-~]+$";

fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The request's `Idempotency-Key`, if it sent one: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all(HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(Self(None));
        };
        if values.next().is_some() {
            return Err(ApiError::malformed(HEADER, "given more than once"));
        }
        let key = value
            .to_str()
            .ok()
            .filter(|k| is_valid_key(k))
            .ok_or_else(|| {
                ApiError::malformed(
                    HEADER,
                    format!("must be 1 to {MAX_KEY_BYTES} visible ASCII characters"),
                )
            })?;
        Ok(Self(Some(key.to_owned())))
    }
}

/// The header as an optional OpenAPI parameter of every POST, with the rule its extractor applies.
impl utoipa::IntoParams for IdempotencyKey {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ObjectBuilder, Required, Type};
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_KEY_BYTES))
            .pattern(Some(KEY_PATTERN));
        vec![ParameterBuilder::new()
            .name(HEADER)
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Retry-safe key: 1 to 255 visible ASCII characters (no spaces). A retry with the \
                 same key and body gets the first answer back (header `Idempotent-Replayed: \
                 true`); the same key with another body or route is refused with 422.",
            ))
            .schema(Some(schema))
            .build()]
    }
}

/// Who calls a write, and with which `Idempotency-Key`: the token's name (when authentication
/// is on) is recorded on what the call writes.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: IdempotencyKey,
    pub actor: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let key = IdempotencyKey::from_request_parts(parts, state).await?;
        let actor = parts
            .extensions
            .get::<crate::auth::Principal>()
            .map(|p| p.name.clone());
        Ok(Self { key, actor })
    }
}

/// A stored answer replayed for a retried request.
#[derive(Debug)]
pub struct Replay {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

impl IntoResponse for Replay {
    fn into_response(self) -> Response {
        crate::metrics::idempotent_replay();
        let mut response = (self.status, Json(self.body)).into_response();
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
        response
    }
}

/// Claims `key` for this request inside `tx`. `Ok(Some(replay))`: the key answered this very
/// request before, return that. `Ok(None)`: go ahead (no key, or freshly claimed: a concurrent
/// request with the same key now waits for this transaction). A key used for another request is
/// refused.
pub async fn claim(
    tx: &mut PgConnection,
    key: &IdempotencyKey,
    route: &str,
    request: &impl Serialize,
) -> Result<Option<Replay>, ApiError> {
    let Some(key) = &key.0 else {
        return Ok(None);
    };
    let canonical = serde_json::to_string(request)
        .map_err(|e| ApiError::Internal(format!("cannot serialize request: {e}")))?;
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (idempotency_key, route, request_hash)
         VALUES ($1, $2, sha256(convert_to($3, 'UTF8')))
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(key)
    .bind(route)
    .bind(&canonical)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if claimed == 1 {
        return Ok(None);
    }
    let (same, status, body): (bool, Option<i16>, Option<serde_json::Value>) = sqlx::query_as(
        "SELECT route = $2 AND request_hash = sha256(convert_to($3, 'UTF8')),
                response_status, response_body
         FROM idempotency_keys WHERE idempotency_key = $1",
    )
    .bind(key)
    .bind(route)
    .bind(&canonical)
    .fetch_one(&mut *tx)
    .await?;
    if !same {
        return Err(ApiError::IdempotencyKeyReused(key.clone()));
    }
    match (status, body) {
        (Some(status), Some(body)) => Ok(Some(Replay {
            status: StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK),
            body,
        })),
        // Claimed rows are only ever committed together with their answer.
        _ => Err(ApiError::Internal(format!(
            "idempotency key {key:?} has no stored answer"
        ))),
    }
}

/// Stores the answer of a claimed key (no-op without a key); commit follows.
pub async fn store(
    tx: &mut PgConnection,
    key: &IdempotencyKey,
    status: StatusCode,
    body: &serde_json::Value,
) -> Result<(), ApiError> {
    if let Some(key) = &key.0 {
        sqlx::query(
            "UPDATE idempotency_keys SET response_status = $2, response_body = $3
             WHERE idempotency_key = $1",
        )
        .bind(key)
        .bind(status.as_u16() as i16)
        .bind(body)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Forgets keys older than `ttl_hours`; returns how many.
pub async fn expire(pool: &sqlx::PgPool, ttl_hours: u32) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(ttl_hours as i32)
    .execute(pool)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_pattern_is_the_rule() {
        let pattern = regex::Regex::new(KEY_PATTERN).unwrap();
        for c in (0u8..=0x7f)
            .map(char::from)
            .chain(['\u{80}', 'ü', '\u{a0}'])
        {
            let key = format!("k{c}");
            assert_eq!(pattern.is_match(&key), is_valid_key(&key), "{key:?}");
        }
        assert!(is_valid_key(&"k".repeat(MAX_KEY_BYTES)));
        assert!(!is_valid_key(&"k".repeat(MAX_KEY_BYTES + 1)));
        assert!(!is_valid_key("") && !pattern.is_match(""));
    }
}
