//! JSON POSTs to mes-api over HTTP/1.1, one connection per request (a few requests a second).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use thiserror::Error;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("cannot reach mes-api at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    #[error("request failed: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("mes-api answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

#[derive(Debug, Clone)]
pub struct ApiClient {
    addr: String,
    token: Option<String>,
}

impl ApiClient {
    pub fn new(addr: String, token: Option<String>) -> Self {
        Self { addr, token }
    }

    /// POSTs `body`; the answer's JSON on a 2xx.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        tokio::time::timeout(TIMEOUT, self.call(Method::POST, path, Some(body)))
            .await
            .map_err(|_| ApiError::Timeout(TIMEOUT))?
    }

    /// GETs `path`; the answer's JSON on a 2xx.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, ApiError> {
        tokio::time::timeout(TIMEOUT, self.call(Method::GET, path, None))
            .await
            .map_err(|_| ApiError::Timeout(TIMEOUT))?
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ApiError> {
        let stream = tokio::net::TcpStream::connect(self.addr.as_str())
            .await
            .map_err(|source| ApiError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.as_str())
            .header(CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req.body(Full::new(payload))?;
        let answer = sender.send_request(req).await?;
        let status = answer.status().as_u16();
        let bytes = answer.into_body().collect().await?.to_bytes();
        if !(200..300).contains(&status) {
            return Err(ApiError::Status {
                status,
                body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            });
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }
}
