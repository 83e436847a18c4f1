//! The board's sign-in: the page asks once for a viewer token and posts it here; a valid one is
//! answered with an HttpOnly, SameSite=Strict cookie limited to `/board`, which the page's reads
//! and its event stream then carry (a browser's EventSource cannot send a header). The token
//! never appears in a URL, and page scripts cannot read the cookie.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::extract::ApiJson;
use crate::idempotency::IdempotencyKey;
use crate::state::AppState;

pub const PATH: &str = "/board/session";
pub const COOKIE: &str = "edge_mes_board";
/// The cookie lasts a shift and a half; the page asks again after that.
const MAX_AGE_SECS: u32 = 12 * 3600;

/// `POST /board/session` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BoardSession {
    /// An API token of role viewer or higher.
    #[schema(max_length = 200)]
    pub token: String,
}

/// The token in the board cookie of a request, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Signs the board in: checks the token and sets the board cookie.
#[utoipa::path(post, path = "/board/session", tag = "board", request_body = BoardSession,
    params(crate::idempotency::IdempotencyKey),
    responses(crate::extract::JsonBodyRefusals, crate::http::ServerFaults,
        (status = 204, description = "signed in; the board cookie is set (HttpOnly, SameSite=Strict, Path=/board)"),
        (status = 401, description = "invalid token", body = Problem, content_type = "application/problem+json")))]
pub async fn board_session(
    State(state): State<AppState>,
    // Parsed like on every POST, so a malformed key is refused the same way.
    _key: IdempotencyKey,
    ApiJson(body): ApiJson<BoardSession>,
) -> Result<Response, ApiError> {
    if body.token.len() > 200 {
        return Err(ApiError::invalid("token", "longer than 200 bytes"));
    }
    if state.auth.verify(&body.token).await?.is_none() {
        return Err(ApiError::Unauthorized { token_given: true });
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/board; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_SECS}",
        body.token
    );
    let value =
        HeaderValue::from_str(&cookie).map_err(|_| ApiError::invalid("token", "not a token"))?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, value)]).into_response())
}
