//! SQL of the API tokens (table `api_tokens`).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{sqlstate, StoreError};
use crate::auth::token::{self, Stored};
use crate::auth::Role;

/// A token as stored.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub stored: Stored,
    pub name: String,
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token as listed (no secret material).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenInfo {
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named {0:?} already exists (revoked tokens keep their names)")]
    NameTaken(String),
    #[error("no token named {0:?} that is not revoked")]
    Unknown(String),
    #[error("token name: 1 to 128 visible characters")]
    BadName,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a token and returns its text (shown once, never stored).
pub async fn create(
    pool: &PgPool,
    name: &str,
    role: Role,
    expires_at: Option<DateTime<Utc>>,
) -> Result<String, TokenError> {
    if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(TokenError::BadName);
    }
    let (text, stored) = token::generate();
    sqlx::query(
        "INSERT INTO api_tokens (id, name, role, salt, secret_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&stored.id)
    .bind(name)
    .bind(role.as_str())
    .bind(&stored.salt)
    .bind(&stored.hash)
    .bind(expires_at)
    .execute(pool)
    .await
    .map_err(|e| match sqlstate(&e).as_deref() {
        Some("23505") => TokenError::NameTaken(name.to_owned()),
        _ => TokenError::Store(e.into()),
    })?;
    Ok(text)
}

pub async fn list(pool: &PgPool) -> Result<Vec<TokenInfo>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT name, role, created_at, expires_at, revoked_at, last_used_at
         FROM api_tokens ORDER BY created_at, name",
    )
    .fetch_all(pool)
    .await?)
}

/// Revokes the token named `name`; whether there was one not yet revoked.
pub async fn revoke(pool: &PgPool, name: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
    )
    .bind(name)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn lookup(pool: &PgPool, id: &str) -> Result<Option<TokenRow>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: String,
        name: String,
        role: String,
        salt: Vec<u8>,
        secret_hash: Vec<u8>,
        expires_at: Option<DateTime<Utc>>,
        revoked_at: Option<DateTime<Utc>>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, name, role, salt, secret_hash, expires_at, revoked_at
         FROM api_tokens WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|r| {
        // A role this release does not know grants nothing.
        let role = r.role.parse().ok()?;
        Some(TokenRow {
            stored: Stored {
                id: r.id,
                salt: r.salt,
                hash: r.secret_hash,
            },
            name: r.name,
            role,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        })
    }))
}

pub async fn touch(pool: &PgPool, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE api_tokens SET last_used_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}
