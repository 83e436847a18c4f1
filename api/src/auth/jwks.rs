//! The identity provider's signing keys (a JWKS, RFC 7517) for [`super::jwt`]: read from a file
//! or fetched from a URL ([`super::jwks_http`]), kept in memory, looked up by `kid`.
//!
//! Keys are read again every `--jwt-jwks-refresh-seconds`, and at once when a token names a `kid`
//! the set does not hold (the provider rotated its keys), but never more often than every
//! [`JwksSettings::refetch_min`], so tokens with made-up `kid`s cannot make mes-api hammer the
//! provider. A failed read keeps the keys it had: an outage of the provider does not lock out
//! connectors whose keys are known.
//!
//! Only RS256 keys (RSA, at least 2048 bits) and ES256 keys (EC P-256) for signatures are kept;
//! every other key (encryption keys, HMAC secrets, other curves and algorithms) is skipped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::jwks_http::{JwksClient, JwksUrl};

/// Largest JWKS document accepted, in bytes (providers publish a few keys: a few KiB).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// Where the keys come from: a file path, or an `https://` URL (`http://` only on loopback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(JwksUrl),
}

impl FromStr for JwksSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty: a JWKS file path or an https:// URL".to_owned());
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            return JwksUrl::parse(s).map(JwksSource::Url);
        }
        if lower.contains("://") {
            return Err(format!(
                "{s:?}: a JWKS file path or an https:// URL (http:// only on loopback)"
            ));
        }
        Ok(JwksSource::File(PathBuf::from(s)))
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(path) => write!(f, "{}", path.display()),
            JwksSource::Url(url) => write!(f, "{url}"),
        }
    }
}

/// Why the keys could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read the JWKS file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot fetch the JWKS: {0}")]
    Fetch(String),
    #[error("the JWKS URL answered HTTP {0}")]
    Status(u16),
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS: {0}")]
    Parse(String),
    #[error("the JWKS holds no RS256 or ES256 signing key with a kid")]
    NoUsableKeys,
    #[error("TLS for the JWKS URL: {0}")]
    Tls(String),
}

/// A key a token may be verified with: the one algorithm it is for, and the key itself.
pub struct VerifyKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// The usable keys of a JWKS by `kid`.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<VerifyKey>>,
}

impl KeySet {
    /// The usable keys of a JWKS document; the others are skipped (at debug level, with why).
    pub fn parse(json: &[u8]) -> Result<Self, JwksError> {
        let doc: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| JwksError::Parse(e.to_string()))?;
        let entries = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| JwksError::Parse("no \"keys\" array".to_owned()))?;
        let mut keys = HashMap::new();
        for entry in entries {
            match usable(entry) {
                Ok((kid, key)) => {
                    keys.insert(kid, Arc::new(key));
                }
                Err(why) => {
                    let kid = entry.get("kid").and_then(serde_json::Value::as_str);
                    debug!(kid, reason = why, "JWKS key skipped");
                }
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys);
        }
        Ok(Self { keys })
    }

    pub fn get(&self, kid: &str) -> Option<Arc<VerifyKey>> {
        self.keys.get(kid).cloned()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids, sorted (for the log).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

/// A JWKS entry as a key with its `kid`, or why it is not used.
fn usable(entry: &serde_json::Value) -> Result<(String, VerifyKey), &'static str> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|_| "not a JWK")?;
    let kid = jwk.common.key_id.clone().ok_or("no kid")?;
    if kid.is_empty() {
        return Err("empty kid");
    }
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("not a signing key (use)");
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            // Base64url without padding: 4 characters carry 3 bytes.
            if rsa.n.trim_end_matches('=').len() * 3 / 4 < MIN_RSA_MODULUS_BYTES {
                return Err("RSA key shorter than 2048 bits");
            }
            Algorithm::RS256
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::EllipticCurve(_) => return Err("EC curve other than P-256"),
        _ => return Err("neither RSA nor EC"),
    };
    match jwk.common.key_algorithm {
        None => {}
        Some(declared) if declared == KeyAlgorithm::from(alg) => {}
        Some(_) => return Err("alg other than RS256 (RSA) or ES256 (P-256)"),
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "key material unusable")?;
    Ok((kid, VerifyKey { alg, key }))
}

/// How often keys are read.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// Read again this often, whatever happens.
    pub refresh: Duration,
    /// Read at most this often, also for an unknown `kid` (and while no keys could be read).
    pub refetch_min: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(300),
            refetch_min: Duration::from_secs(10),
        }
    }
}

/// The current keys and how to read them again.
pub struct Jwks {
    source: JwksSource,
    client: Option<JwksClient>,
    settings: JwksSettings,
    keys: RwLock<Arc<KeySet>>,
    /// When the keys were last read (or tried); held while reading, so readers queue up.
    last_read: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    /// Keys from `source`, none read yet; `ca` is the PEM file of the CA that signs the JWKS
    /// URL's certificate (else the system's roots).
    pub fn new(
        source: JwksSource,
        ca: Option<&std::path::Path>,
        settings: JwksSettings,
    ) -> Result<Self, JwksError> {
        let client = match &source {
            JwksSource::Url(url) => Some(JwksClient::new(url.clone(), ca)?),
            JwksSource::File(_) => None,
        };
        Ok(Self {
            source,
            client,
            settings,
            keys: RwLock::new(Arc::new(KeySet::default())),
            last_read: tokio::sync::Mutex::new(None),
        })
    }

    pub fn source(&self) -> &JwksSource {
        &self.source
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .map_or_else(|p| p.into_inner().clone(), |k| k.clone())
    }

    /// The key with this `kid`; an unknown one makes the keys be read again (at most every
    /// `refetch_min`).
    pub async fn key(&self, kid: &str) -> Option<Arc<VerifyKey>> {
        if let Some(key) = self.current().get(kid) {
            return Some(key);
        }
        let mut last_read = self.last_read.lock().await;
        // Another request may have read them while this one waited.
        if let Some(key) = self.current().get(kid) {
            return Some(key);
        }
        if last_read.is_some_and(|at| at.elapsed() < self.settings.refetch_min) {
            return None;
        }
        info!(
            kid = ?kid,
            "token signed with an unknown key id: reading the JWKS again"
        );
        let _ = self.read_locked(&mut last_read).await;
        self.current().get(kid)
    }

    /// Reads the keys now; on failure the previous keys stay.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let mut last_read = self.last_read.lock().await;
        self.read_locked(&mut last_read).await
    }

    async fn read_locked(&self, last_read: &mut Option<Instant>) -> Result<usize, JwksError> {
        *last_read = Some(Instant::now());
        match self.load().await {
            Ok(set) => {
                let n = set.len();
                if self.current().kids() != set.kids() {
                    info!(source = %self.source, kids = ?set.kids(), "JWKS keys loaded");
                }
                crate::metrics::jwks_keys(n);
                if let Ok(mut keys) = self.keys.write() {
                    *keys = Arc::new(set);
                }
                Ok(n)
            }
            Err(e) => {
                crate::metrics::jwks_refresh_failed();
                warn!(source = %self.source, error = %e, kept = self.current().len(),
                      "cannot read the JWKS, keeping the keys it had");
                Err(e)
            }
        }
    }

    async fn load(&self) -> Result<KeySet, JwksError> {
        let bytes = match (&self.source, &self.client) {
            (JwksSource::File(path), _) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|source| JwksError::Read {
                        path: path.clone(),
                        source,
                    })?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err(JwksError::TooLarge);
                }
                bytes
            }
            (JwksSource::Url(_), Some(client)) => client.get().await?.to_vec(),
            (JwksSource::Url(url), None) => {
                return Err(JwksError::Fetch(format!("no client for {url}")))
            }
        };
        KeySet::parse(&bytes)
    }

    /// Reads the keys every `refresh` (every `refetch_min` while none could be read yet) until
    /// `shutdown`.
    pub async fn keep_fresh(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let wait = if self.current().is_empty() {
                self.settings.refetch_min
            } else {
                self.settings.refresh
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = self.refresh() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The base64url of an all-ones (so odd) modulus of `bytes` bytes: not a real key, but one
    /// the RSA implementation takes.
    fn modulus(bytes: usize) -> String {
        let bits = bytes * 8;
        let last = match bits % 6 {
            2 => "w",
            4 => "8",
            _ => "",
        };
        format!("{}{last}", "_".repeat(bits / 6))
    }

    fn ec(kid: &str, crv: &str) -> serde_json::Value {
        // The P-256 base point: a valid public key.
        json!({"kty":"EC","crv":crv,"kid":kid,
               "x":"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
               "y":"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"})
    }

    #[test]
    fn only_rs256_and_es256_signing_keys_with_a_kid_are_kept() {
        let doc = json!({"keys": [
            {"kty":"RSA","kid":"rsa","alg":"RS256","use":"sig","n":modulus(256),"e":"AQAB"},
            {"kty":"RSA","kid":"rsa-no-alg","n":modulus(256),"e":"AQAB"},
            ec("ec", "P-256"),
            {"kty":"RSA","kid":"short","n":modulus(128),"e":"AQAB"},
            {"kty":"RSA","kid":"enc","use":"enc","n":modulus(256),"e":"AQAB"},
            {"kty":"RSA","kid":"ps","alg":"PS256","n":modulus(256),"e":"AQAB"},
            {"kty":"RSA","n":modulus(256),"e":"AQAB"},
            {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
            ec("p384", "P-384"),
            {"kty":"OKP","kid":"ed","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"whatever","kid":"odd"},
            "not even an object"
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.kids(), ["ec", "rsa", "rsa-no-alg"]);
        assert_eq!(set.get("rsa").unwrap().alg, Algorithm::RS256);
        assert_eq!(set.get("ec").unwrap().alg, Algorithm::ES256);
    }

    #[test]
    fn a_document_without_usable_keys_is_an_error() {
        for doc in [
            "not json",
            "{}",
            r#"{"keys": {}}"#,
            r#"{"keys": []}"#,
            r#"{"keys": [{"kty":"oct","kid":"a","k":"c2VjcmV0"}]}"#,
        ] {
            assert!(KeySet::parse(doc.as_bytes()).is_err(), "{doc}");
        }
    }

    #[test]
    fn sources_are_files_or_https_urls_and_http_only_on_loopback() {
        let file = |s: &str| JwksSource::File(PathBuf::from(s));
        assert_eq!(
            "/etc/edge-mes/jwks.json".parse(),
            Ok(file("/etc/edge-mes/jwks.json"))
        );
        assert_eq!("jwks.json".parse(), Ok(file("jwks.json")));
        for ok in [
            "https://login.example.com/realms/plant/protocol/openid-connect/certs",
            "https://idp.plant.local:8443/jwks",
            "http://127.0.0.1:8080/certs",
            "http://localhost/certs",
            "http://[::1]:9000/certs",
        ] {
            assert!(
                matches!(ok.parse::<JwksSource>(), Ok(JwksSource::Url(_))),
                "{ok}"
            );
        }
        for bad in [
            "",
            "http://idp.plant.local/jwks",
            "http://10.0.0.5/jwks",
            "ftp://idp/jwks",
            "https://",
            "https://user:pw@idp/jwks",
        ] {
            assert!(bad.parse::<JwksSource>().is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_kids_read_the_keys_again_at_most_every_refetch_min() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let write = |kids: &[&str]| {
            let keys: Vec<_> = kids.iter().map(|k| ec(k, "P-256")).collect();
            std::fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
        };
        write(&["a"]);
        let jwks = Jwks::new(
            JwksSource::File(path.clone()),
            None,
            JwksSettings {
                refresh: Duration::from_secs(3600),
                refetch_min: Duration::from_millis(300),
            },
        )
        .unwrap();
        assert!(
            jwks.key("a").await.is_some(),
            "the first use reads the file"
        );
        write(&["a", "b"]);
        // Read just now: not again for an unknown kid until refetch_min has passed.
        assert!(jwks.key("b").await.is_none());
        tokio::time::advance(Duration::from_millis(350)).await;
        assert!(jwks.key("b").await.is_some(), "rotation picked up");
        // A broken file keeps the keys.
        std::fs::write(&path, "garbage").unwrap();
        assert!(jwks.refresh().await.is_err());
        assert!(jwks.key("a").await.is_some() && jwks.key("b").await.is_some());
    }
}
