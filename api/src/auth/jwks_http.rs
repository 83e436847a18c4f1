//! One HTTP GET for the JWKS URL: HTTP/1.1 over rustls (the TLS stack async-nats already builds),
//! a new connection per read (a read every few minutes needs no pool), a time limit, a size
//! limit, no redirects, no proxy. `http://` is accepted only for loopback addresses (a sidecar or
//! a test); everything else needs `https://`, verified against the system's roots or the CA given
//! with `--jwt-jwks-ca`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::jwks::{JwksError, MAX_JWKS_BYTES};

/// Time limit of one read: connect, TLS, request and the whole body.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A JWKS URL: `https://`, or `http://` to a loopback address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUrl {
    uri: Uri,
    tls: bool,
    /// Host without IPv6 brackets (to connect and for SNI).
    host: String,
    port: u16,
}

impl JwksUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{text:?}: https:// (or http:// on loopback)")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{text:?}: no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{text:?}: credentials in the URL are not supported"
            ));
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{text:?}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !tls && !is_loopback(&host) {
            return Err(format!(
                "{text:?}: http:// only for loopback addresses (127.0.0.1, ::1, localhost); \
                 use https://"
            ));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self {
            uri,
            tls,
            host,
            port,
        })
    }

    /// Path and query, as sent in the request line.
    fn target(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }
}

impl std::fmt::Display for JwksUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.uri)
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Reads one JWKS URL.
pub struct JwksClient {
    url: JwksUrl,
    tls: Option<TlsConnector>,
}

impl JwksClient {
    /// A client for `url`; for `https://`, trusting the CA certificates in the PEM file `ca`, or
    /// the system's roots without one.
    pub fn new(url: JwksUrl, ca: Option<&Path>) -> Result<Self, JwksError> {
        let tls = if url.tls {
            Some(TlsConnector::from(Arc::new(tls_config(ca)?)))
        } else {
            None
        };
        Ok(Self { url, tls })
    }

    /// The body of a `200` answer to `GET <url>`.
    pub async fn get(&self) -> Result<Bytes, JwksError> {
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch())
            .await
            .map_err(|_| JwksError::Fetch(format!("no answer within {FETCH_TIMEOUT:?}")))?
    }

    async fn fetch(&self) -> Result<Bytes, JwksError> {
        let fetch_err = |e: &dyn std::fmt::Display| JwksError::Fetch(e.to_string());
        let tcp = TcpStream::connect((self.url.host.as_str(), self.url.port))
            .await
            .map_err(|e| fetch_err(&e))?;
        match &self.tls {
            None => self.exchange(TokioIo::new(tcp)).await,
            Some(connector) => {
                let name = ServerName::try_from(self.url.host.clone())
                    .map_err(|e| JwksError::Tls(e.to_string()))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| JwksError::Tls(e.to_string()))?;
                self.exchange(TokioIo::new(tls)).await
            }
        }
    }

    async fn exchange<T>(&self, io: T) -> Result<Bytes, JwksError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let fetch_err = |e: &dyn std::fmt::Display| JwksError::Fetch(e.to_string());
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| fetch_err(&e))?;
        // Drives the connection; it ends when the answer is read and the sender dropped.
        let driver = tokio::spawn(connection);
        let request = Request::get(self.url.target())
            .header(header::HOST, host_header(&self.url))
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .header(
                header::USER_AGENT,
                concat!("mes-api/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| fetch_err(&e))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| fetch_err(&e))?;
            if response.status() != StatusCode::OK {
                return Err(JwksError::Status(response.status().as_u16()));
            }
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        JwksError::TooLarge
                    } else {
                        JwksError::Fetch(e.to_string())
                    }
                })?;
            Ok(body.to_bytes())
        }
        .await;
        drop(sender);
        driver.abort();
        result
    }
}

fn host_header(url: &JwksUrl) -> String {
    url.uri
        .authority()
        .map_or_else(|| url.host.clone(), |a| a.as_str().to_owned())
}

fn tls_config(ca: Option<&Path>) -> Result<ClientConfig, JwksError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| JwksError::Tls(format!("{}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(JwksError::Tls(format!(
                    "{}: no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| JwksError::Tls(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(JwksError::Tls(
                    "no CA certificates in the system's store; give --jwt-jwks-ca".to_owned(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| JwksError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_host_port_and_path() {
        let u = JwksUrl::parse("https://idp.plant.local/realms/plant/certs?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("idp.plant.local", 443, true)
        );
        assert_eq!(u.target(), "/realms/plant/certs?x=1");
        assert_eq!(host_header(&u), "idp.plant.local");
        let u = JwksUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("::1", 8080, false));
        assert_eq!(u.target(), "/");
        assert_eq!(host_header(&u), "[::1]:8080");
        assert!(is_loopback("127.0.0.9") && is_loopback("LOCALHOST"));
        assert!(!is_loopback("localhost.example.com") && !is_loopback("10.1.2.3"));
    }
}
