//! API errors as RFC 9457 `application/problem+json`.
//!
//! Every handler returns [`ApiError`]; its `IntoResponse` writes a problem document with a stable
//! `type` (`urn:edge-mes:problem:<code>`), the HTTP status, a human `detail` and, where one field is
//! at fault, its name in `field`. Database text never reaches the client: constraint violations
//! map to 409 or 422 with our own wording, everything else is logged and answered 500/503.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::DomainError;
use crate::store::StoreError;

/// The problem document (RFC 9457) every error response carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of problem, `urn:edge-mes:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What exactly was wrong, naming the field and the value's problem.
    pub detail: String,
    /// The request field at fault (JSON path, query parameter, path segment or header), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be parsed (JSON syntax, query string, path, header).
    #[error("{detail}")]
    Malformed {
        field: Option<String>,
        detail: String,
    },
    /// Parsed, but a value is invalid (missing, unknown, wrong type, out of range).
    #[error("{detail}")]
    Invalid {
        field: Option<String>,
        detail: String,
    },
    /// No token, or one that is malformed, unknown, expired or revoked (which of these is
    /// logged, never answered).
    #[error("authentication required: send Authorization: Bearer <token>")]
    Unauthorized { token_given: bool },
    /// A valid token without the role the operation needs.
    #[error("{0}")]
    Forbidden(String),
    /// The token's writes are over its rate (`--write-rate-per-token`).
    #[error("too many writes with this token; retry after {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (completed run, overlapping run, ...).
    #[error("{detail}")]
    Conflict {
        field: Option<String>,
        detail: String,
    },
    /// The Idempotency-Key was used before for a different request.
    #[error("Idempotency-Key {0:?} was already used for a different request")]
    IdempotencyKeyReused(String),
    #[error("body: request body larger than the configured limit (--max-body-bytes)")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("route not found: {0}")]
    RouteNotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A dependency (database, NATS) is down or overloaded; retry later.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let field = field.into();
        ApiError::Invalid {
            detail: format!("{field}: {}", detail.into()),
            field: Some(field),
        }
    }

    pub fn malformed(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let field = field.into();
        ApiError::Malformed {
            detail: format!("{field}: {}", detail.into()),
            field: Some(field),
        }
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        ApiError::Conflict {
            field: None,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed { .. } => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } | ApiError::IdempotencyKeyReused(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `(code, title)` of the problem type.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Malformed { .. } => ("malformed-request", "Malformed request"),
            ApiError::Invalid { .. } => ("invalid-field", "Invalid field"),
            ApiError::Unauthorized { .. } => ("unauthorized", "Authentication required"),
            ApiError::Forbidden(_) => ("forbidden", "Role too low"),
            ApiError::TooManyRequests { .. } => ("too-many-requests", "Rate limit"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::Conflict { .. } => ("conflict", "Conflict with the current state"),
            ApiError::IdempotencyKeyReused(_) => (
                "idempotency-key-reused",
                "Idempotency-Key reused with a different request",
            ),
            ApiError::PayloadTooLarge => ("payload-too-large", "Request body too large"),
            ApiError::UnsupportedMediaType(_) => {
                ("unsupported-media-type", "Unsupported media type")
            }
            ApiError::RouteNotFound(_) => ("route-not-found", "No such route"),
            ApiError::MethodNotAllowed => ("method-not-allowed", "Method not allowed"),
            ApiError::Unavailable(_) => ("unavailable", "Service unavailable"),
            ApiError::Internal(_) => ("internal", "Internal error"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (code, title) = self.kind();
        let field = match self {
            ApiError::Malformed { field, .. }
            | ApiError::Invalid { field, .. }
            | ApiError::Conflict { field, .. } => field.clone(),
            ApiError::IdempotencyKeyReused(_) => Some("Idempotency-Key".to_owned()),
            ApiError::PayloadTooLarge => Some("body".to_owned()),
            _ => None,
        };
        let detail = match self {
            // The cause is logged, never sent.
            ApiError::Internal(_) => "internal error; see the server log".to_owned(),
            ApiError::Unauthorized { token_given: true } => "invalid token".to_owned(),
            other => other.to_string(),
        };
        Problem {
            kind: format!("urn:edge-mes:problem:{code}"),
            title: title.to_owned(),
            status: self.status().as_u16(),
            detail,
            field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => tracing::error!(error = %cause, "request failed"),
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "dependency unavailable")
            }
            _ => {}
        }
        let mut response = problem_response(self.status(), &self.problem());
        if let ApiError::TooManyRequests { retry_after_secs } = self {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if let ApiError::Unauthorized { token_given } = self {
            // RFC 6750: the scheme, and why when a token was sent.
            let value = if token_given {
                r#"Bearer realm="edge-mes", error="invalid_token""#
            } else {
                r#"Bearer realm="edge-mes""#
            };
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        response
    }
}

pub fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match &e {
            DomainError::Invalid { field, .. } => ApiError::Invalid {
                field: Some((*field).to_owned()),
                detail: e.to_string(),
            },
            DomainError::UnknownReason(_) => ApiError::Invalid {
                field: Some("reason_code".to_owned()),
                detail: e.to_string(),
            },
            DomainError::WrongStatus { .. } => ApiError::Conflict {
                field: Some("op_run_id".to_owned()),
                detail: e.to_string(),
            },
            DomainError::FinalBelowReported { field, .. } => ApiError::Conflict {
                field: Some((*field).to_owned()),
                detail: e.to_string(),
            },
        }
    }
}

impl ApiError {
    /// The answer to a store error (also for one shared by reference, as a batch's answers are).
    pub fn from_store_ref(e: &StoreError) -> Self {
        let conflict = |field: &str| ApiError::Conflict {
            field: Some(field.to_owned()),
            detail: e.to_string(),
        };
        match e {
            StoreError::RunNotFound(_) => ApiError::NotFound(e.to_string()),
            StoreError::RunExists(_) => conflict("op_run_id"),
            StoreError::RunOverlap => conflict("resource_id"),
            StoreError::SiteMismatch { .. } => conflict("site_id"),
            StoreError::DowntimeOverlap => conflict("at"),
            StoreError::UnknownSite(_) => ApiError::Invalid {
                field: Some("site_id".to_owned()),
                detail: e.to_string(),
            },
            StoreError::Refused(d) => d.clone().into(),
            StoreError::Contended(_) | StoreError::Unavailable(_) => {
                ApiError::Unavailable(e.to_string())
            }
            StoreError::Corrupt { .. } | StoreError::Database(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // Constraint violations keep their own wording (see From<sqlx::Error>).
            StoreError::Database(db) => db.into(),
            other => ApiError::from_store_ref(&other),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // exclusion_violation: op_run_no_overlap is the only exclusion constraint we write.
                Some("23P01") => ApiError::Conflict {
                    field: Some("resource_id".to_owned()),
                    detail: "resource_id: the resource has another run overlapping this time \
                             range (one run per resource at a time)"
                        .to_owned(),
                },
                Some("23505") => ApiError::conflict(format!(
                    "the record already exists ({})",
                    db.constraint().unwrap_or("unique constraint")
                )),
                Some("23503") => ApiError::Invalid {
                    field: None,
                    detail: format!(
                        "a referenced record does not exist ({})",
                        db.constraint().unwrap_or("foreign key")
                    ),
                },
                Some("23514") | Some("22003") | Some("22008") | Some("22007") => {
                    ApiError::Invalid {
                        field: None,
                        detail: format!(
                            "a value is out of range ({})",
                            db.constraint().unwrap_or("check")
                        ),
                    }
                }
                // serialization_failure, deadlock_detected, lock_not_available, too many connections
                Some("40001") | Some("40P01") | Some("55P03") | Some("53300") => {
                    ApiError::Unavailable(e.to_string())
                }
                _ => ApiError::Internal(e.to_string()),
            },
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ApiError::Unavailable(format!("database unavailable: {e}"))
            }
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let p = ApiError::Internal("relation \"secret\" does not exist".into()).problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("secret"));
    }

    #[test]
    fn invalid_fields_are_named() {
        let p = ApiError::invalid("good_delta", "must be >= 0, got -1").problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.field.as_deref(), Some("good_delta"));
        assert_eq!(p.detail, "good_delta: must be >= 0, got -1");
        assert_eq!(p.kind, "urn:edge-mes:problem:invalid-field");
    }
}
