//! Request extractors whose every failure is a problem document naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use serde::de::DeserializeOwned;

use crate::domain::Ident;
use crate::error::ApiError;

/// A JSON body: `application/json` (or `+json`) required, unknown fields refused by the types
/// themselves (`deny_unknown_fields`), errors name the JSON path of the offending field.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::malformed("body", format!("cannot read the body: {e}"))
            }
        })?;
        if !is_json(&content_type) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type: expected application/json, got {:?}",
                content_type
            )));
        }
        parse_json(&bytes).map(ApiJson)
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Deserializes `bytes`, turning serde's message into a problem naming the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::malformed("body", "empty; expected a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        json_error(&path, &inner)
    })?;
    de.end().map_err(|e| json_error(".", &e))?;
    Ok(value)
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    let full = e.to_string();
    let message = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(m, _)| m)
        .to_owned();
    let prefix = if path == "." || path.is_empty() {
        String::new()
    } else {
        format!("{path}.")
    };
    // serde names a missing field only in its message (the path is its parent); an unknown
    // field's path already ends with it.
    let named = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| format!("{prefix}{name}"));
    let field = named.unwrap_or_else(|| {
        if prefix.is_empty() {
            "body".to_owned()
        } else {
            path.to_owned()
        }
    });
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            ApiError::malformed("body", format!("not valid JSON: {message}"))
        }
        serde_json::error::Category::Io | serde_json::error::Category::Data => {
            // Numbers out of range (1e400) are syntax errors in serde_json; NaN cannot be JSON.
            ApiError::invalid(field, message)
        }
    }
}

/// Query parameters taken one by one by name; leftovers are refused, so a misspelt filter is an
/// error instead of being silently ignored.
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::malformed("query", e.body_text()))?;
        Ok(Self { pairs })
    }
}

impl QueryParams {
    /// The value of `name`, if given (once). An empty value (`?from=`, what an HTML form sends for
    /// an empty field) is the same as leaving the parameter out.
    pub fn take(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        let mut found: Vec<String> = Vec::new();
        self.pairs.retain(|(k, v)| {
            if k == name {
                found.push(v.clone());
                false
            } else {
                true
            }
        });
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop().filter(|v| !v.is_empty())),
            _ => Err(ApiError::malformed(name, "given more than once")),
        }
    }

    pub fn require(&mut self, name: &str) -> Result<String, ApiError> {
        self.take(name)?
            .ok_or_else(|| ApiError::malformed(name, "required query parameter is missing"))
    }

    /// An identifier (site, resource, sensor), if given: the same rule as in bodies, so no text
    /// PostgreSQL cannot store (a NUL) reaches a query.
    pub fn take_ident(&mut self, name: &str) -> Result<Option<Ident>, ApiError> {
        self.take_parsed(name, |raw| Ident::parse(raw).map_err(|e| e.to_string()))
    }

    pub fn require_ident(&mut self, name: &str) -> Result<Ident, ApiError> {
        self.take_ident(name)?
            .ok_or_else(|| ApiError::malformed(name, "required query parameter is missing"))
    }

    /// Parses `name` with `parse`, whose error text explains what was expected.
    pub fn take_parsed<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        match self.take(name)? {
            None => Ok(None),
            Some(raw) => parse(&raw)
                .map(Some)
                .map_err(|why| ApiError::malformed(name, why)),
        }
    }

    /// Refuses parameters nobody took.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.pairs.first() {
            None => Ok(()),
            Some((k, _)) => Err(ApiError::malformed(k.clone(), "unknown query parameter")),
        }
    }
}

/// The OpenAPI responses of an operation taking an [`ApiJson`] body (and an `Idempotency-Key`):
/// what the extractors refuse before the handler runs. An operation's own tuples listed after it
/// replace these with more specific descriptions.
pub struct JsonBodyRefusals;

impl utoipa::IntoResponses for JsonBodyRefusals {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        use crate::http::problem_doc;
        utoipa::openapi::ResponsesBuilder::new()
            .response(
                "400",
                problem_doc("malformed: not JSON, or a bad `Idempotency-Key`"),
            )
            .response(
                "413",
                problem_doc("body larger than the configured limit (--max-body-bytes)"),
            )
            .response(
                "415",
                problem_doc("body not `application/json` (or `+json`)"),
            )
            .response(
                "422",
                problem_doc("a field is missing, unknown, of the wrong type or out of range"),
            )
            .build()
            .responses
    }
}

/// RFC 3339 timestamp with offset, as a query value.
pub fn parse_timestamp(raw: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("expected an RFC 3339 timestamp with offset, got {raw:?} ({e})"))
}

/// An identifier in a path segment (see [`QueryParams::take_ident`]).
pub fn parse_ident(field: &str, raw: &str) -> Result<Ident, ApiError> {
    Ident::parse(raw).map_err(|e| ApiError::malformed(field, e.to_string()))
}

pub fn parse_uuid(field: &str, raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map_err(|_| ApiError::malformed(field, format!("expected a UUID, got {raw:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        id: String,
        n: i64,
    }

    fn field_of(json: &str) -> (u16, Option<String>) {
        let e = parse_json::<Body>(json.as_bytes()).unwrap_err();
        let p = e.problem();
        (p.status, p.field)
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"n":1}"#), (422, Some("id".into())));
        assert_eq!(field_of(r#"{"id":"a","n":"x"}"#), (422, Some("n".into())));
        assert_eq!(
            field_of(r#"{"id":"a","n":1,"x":2}"#),
            (422, Some("x".into()))
        );
        assert_eq!(
            field_of(r#"{"id":"a","n":1e400}"#),
            (400, Some("body".into()))
        );
        assert_eq!(field_of(r#"{"id":"a","#), (400, Some("body".into())));
        assert_eq!(field_of(r#"[]"#), (422, Some("body".into())));
        assert_eq!(field_of(""), (400, Some("body".into())));
        assert_eq!(
            field_of(r#"{"id":"a","n":1} {}"#),
            (400, Some("body".into()))
        );
    }

    #[test]
    fn an_empty_query_value_is_an_absent_one() {
        let mut q = QueryParams {
            pairs: vec![("from".into(), String::new()), ("site".into(), "A".into())],
        };
        assert_eq!(q.take("from").unwrap(), None);
        assert_eq!(q.take("site").unwrap().as_deref(), Some("A"));
        assert!(q.finish().is_ok());
        let mut q = QueryParams {
            pairs: vec![("site".into(), String::new()), ("site".into(), "A".into())],
        };
        assert!(q.take("site").is_err(), "repeated, even if one is empty");
        let mut q = QueryParams {
            pairs: vec![("sensor".into(), String::new())],
        };
        let e = q.require("sensor").unwrap_err().problem();
        assert_eq!((e.status, e.field.as_deref()), (400, Some("sensor")));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
