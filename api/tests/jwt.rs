//! JWTs of the plant's identity provider (`--jwt-jwks`, beside API tokens with `--auth tokens`):
//! RS256 and ES256 tokens signed with the throwaway test keys of `tests/fixtures/` are accepted
//! with the role of their claim and recorded as `jwt:<sub>`; every other token is a 401 that says
//! only "invalid token"; keys come from a file or from a real HTTP(S) server started here, and a
//! rotated key is picked up. The binary test also covers the metrics listener.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::Method;
use axum::Router;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mes_api::auth::jwks::{Jwks, JwksSettings, JwksSource};
use mes_api::auth::jwt::{JwtAuth, JwtSettings};
use mes_api::{AppState, Settings};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const ISSUER: &str = "https://idp.plant.test/realms/plant";
const AUDIENCE: &str = "mes-api";

/// A test-only signing key of `tests/fixtures/` and its `kid`.
struct TestKey {
    kid: &'static str,
    alg: Algorithm,
    pem: Vec<u8>,
}

impl TestKey {
    fn load(file: &str, kid: &'static str, alg: Algorithm) -> Self {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(file);
        Self {
            kid,
            alg,
            pem: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    fn encoding(&self) -> EncodingKey {
        match self.alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&self.pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&self.pem).unwrap(),
        }
    }

    /// The public half as a JWK, as an identity provider publishes it.
    fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.encoding(), self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.to_owned());
        let mut v = serde_json::to_value(jwk).unwrap();
        v["use"] = json!("sig");
        v
    }

    /// A token signed with this key, its header naming `kid`.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding()).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.kid, claims)
    }
}

fn rsa_1() -> TestKey {
    TestKey::load("jwt-test-only-rsa-1.pem", "test-rsa-1", Algorithm::RS256)
}
fn rsa_2() -> TestKey {
    TestKey::load("jwt-test-only-rsa-2.pem", "test-rsa-2", Algorithm::RS256)
}
fn ec_1() -> TestKey {
    TestKey::load("jwt-test-only-ec-1.pem", "test-ec-1", Algorithm::ES256)
}
/// A key of another JWKS (another provider, an attacker's).
fn foreign() -> TestKey {
    TestKey::load(
        "jwt-test-only-rsa-foreign.pem",
        "test-rsa-1",
        Algorithm::RS256,
    )
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a client-credentials token for `sub` with `roles`.
fn claims(sub: &str, roles: Value) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now(), "exp": now() + 300,
           "azp": "mes-connector", "roles": roles})
}

fn settings() -> JwtSettings {
    JwtSettings {
        issuer: ISSUER.to_owned(),
        audiences: vec![AUDIENCE.to_owned(), "other-api".to_owned()],
        role_claim: "roles".parse().unwrap(),
        role_prefix: String::new(),
        leeway: Duration::from_secs(60),
    }
}

fn quick_refetch() -> JwksSettings {
    JwksSettings {
        refresh: Duration::from_secs(3600),
        refetch_min: Duration::from_millis(500),
    }
}

/// The API with authentication on and JWTs verified with the keys of `jwks`.
fn jwt_app(pool: &sqlx::PgPool, jwt: JwtSettings, jwks: Jwks) -> Router {
    app_with(pool, Arc::new(JwtAuth::new(jwt, Arc::new(jwks))))
}

fn app_with(pool: &sqlx::PgPool, auth: Arc<JwtAuth>) -> Router {
    mes_api::app(
        AppState::new(
            pool.clone(),
            None,
            Settings {
                default_site: "BKK".to_owned(),
            },
        )
        .with_auth_required()
        .with_jwt(auth),
    )
}

/// A JWKS file holding `keys` (kept while the returned dir lives).
fn jwks_file(keys: &[&TestKey]) -> (tempfile::TempDir, JwksSource) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(keys)).unwrap();
    (dir, JwksSource::File(path))
}

async fn with_bearer(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<&Value>,
    token: &str,
) -> Answer {
    let auth = format!("Bearer {token}");
    let body = body.map(Value::to_string);
    call(
        app,
        method,
        uri,
        body.as_deref(),
        &[("authorization", &auth)],
    )
    .await
}

fn start_body(resource: &str) -> Value {
    json!({"work_order_id": "WO-jwt", "operation_id": "OP10", "resource_id": resource})
}

#[tokio::test]
async fn rs256_and_es256_jwts_are_accepted_with_the_role_of_their_claim() {
    let t = db().await;
    let (rsa, ec) = (rsa_1(), ec_1());
    let (_dir, source) = jwks_file(&[&rsa, &ec]);
    let app = jwt_app(
        &t.pool,
        settings(),
        Jwks::new(source, None, quick_refetch()).unwrap(),
    );

    // An RS256 operator runs production; what it writes records `jwt:<sub>`.
    let operator = rsa.sign(&claims("connector-line-1", json!(["viewer", "operator"])));
    let a = with_bearer(
        &app,
        Method::POST,
        "/op_run/start",
        Some(&start_body("R-jwt-1")),
        &operator,
    )
    .await;
    assert_eq!(a.status.as_u16(), 201, "{}", a.body);
    let id = a.body["op_run_id"].as_str().unwrap().to_owned();
    let report = json!({"op_run_id": id, "good_delta": 5, "scrap_delta": 1});
    let a = with_bearer(
        &app,
        Method::POST,
        "/op_run/report",
        Some(&report),
        &operator,
    )
    .await;
    assert_eq!(a.status.as_u16(), 200, "{}", a.body);
    let started_by: Option<String> = sqlx::query_scalar("SELECT started_by FROM op_run")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(started_by.as_deref(), Some("jwt:connector-line-1"));
    let actors: Vec<Option<String>> = sqlx::query_scalar("SELECT DISTINCT actor FROM op_run_count")
        .fetch_all(&t.pool)
        .await
        .unwrap();
    assert_eq!(actors, [Some("jwt:connector-line-1".to_owned())]);
    let events: Vec<Value> = sqlx::query_scalar("SELECT payload FROM outbox ORDER BY id")
        .fetch_all(&t.pool)
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "started and counted");
    assert!(
        events.iter().all(|e| e["actor"] == "jwt:connector-line-1"),
        "{events:?}"
    );

    // An ES256 viewer reads, and may not write.
    let viewer = ec.sign(&claims("dashboard", json!("viewer")));
    let a = with_bearer(&app, Method::GET, "/op_run/active", None, &viewer).await;
    assert_eq!(a.status.as_u16(), 200, "{}", a.body);
    let a = with_bearer(
        &app,
        Method::POST,
        "/op_run/start",
        Some(&start_body("R-jwt-2")),
        &viewer,
    )
    .await;
    a.assert_problem(403, None, "a viewer JWT starts a run");
    assert!(
        a.body["detail"].as_str().unwrap().contains("role operator"),
        "{}",
        a.body
    );
    // A valid JWT naming none of the roles reads nothing.
    let nobody = ec.sign(&claims("someone", json!(["offline_access", "Operator"])));
    let a = with_bearer(&app, Method::GET, "/op_run/active", None, &nobody).await;
    a.assert_problem(403, None, "a JWT without a role");
    assert!(
        a.body["detail"].as_str().unwrap().contains("no role"),
        "{}",
        a.body
    );
    // The admin API token keeps working beside JWTs.
    assert_eq!(get(&app, "/op_run/active").await.status.as_u16(), 200);
    assert_eq!(scalar_i64(&t.pool, "SELECT count(*) FROM op_run").await, 1);

    // Keycloak's realm roles: a dotted path, role names mapped with a prefix.
    let (_dir2, source) = jwks_file(&[&rsa]);
    let keycloak = jwt_app(
        &t.pool,
        JwtSettings {
            role_claim: "realm_access.roles".parse().unwrap(),
            role_prefix: "edge-mes-".to_owned(),
            ..settings()
        },
        Jwks::new(source, None, quick_refetch()).unwrap(),
    );
    let mut c = claims("service-account-mes", json!(null));
    c["realm_access"] =
        json!({"roles": ["default-roles-plant", "edge-mes-viewer", "edge-mes-operator"]});
    let token = rsa.sign(&c);
    let a = with_bearer(
        &keycloak,
        Method::POST,
        "/op_run/start",
        Some(&start_body("R-jwt-3")),
        &token,
    )
    .await;
    assert_eq!(a.status.as_u16(), 201, "{}", a.body);
    // The `roles` claim of the default path means nothing there.
    let plain = rsa.sign(&claims("x", json!(["admin"])));
    let a = with_bearer(&keycloak, Method::GET, "/op_run/active", None, &plain).await;
    a.assert_problem(403, None, "roles outside the configured claim");
}

#[tokio::test]
async fn every_invalid_jwt_is_refused_with_401_that_says_only_invalid_token() {
    let t = db().await;
    let (rsa, ec) = (rsa_1(), ec_1());
    let (_dir, source) = jwks_file(&[&rsa, &ec]);
    let auth = Arc::new(JwtAuth::new(
        settings(),
        Arc::new(Jwks::new(source, None, quick_refetch()).unwrap()),
    ));
    let app = app_with(&t.pool, auth.clone());
    let good = claims("connector", json!(["admin"]));
    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(key);
        c
    };
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    // The RSA public key (as published) as an HMAC secret: the classic algorithm confusion.
    let public_key = rsa.jwk().to_string();
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(rsa.kid.to_owned());
        jsonwebtoken::encode(
            &header,
            &good,
            &EncodingKey::from_secret(public_key.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let rs_signed = rsa.sign(&good);
    let signature = rs_signed.rsplit('.').next().unwrap();
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT", "kid": rsa.kid})),
            b64(&good)
        )
    };
    let tampered = {
        // The claims of another caller under a valid signature.
        let mut parts: Vec<String> = rs_signed.split('.').map(str::to_owned).collect();
        parts[1] = b64(&with("sub", json!("intruder")));
        parts.join(".")
    };
    let mut no_kid_header = Header::new(Algorithm::RS256);
    no_kid_header.kid = None;
    let no_kid = jsonwebtoken::encode(&no_kid_header, &good, &rsa.encoding()).unwrap();

    let cases: Vec<(&str, String)> = vec![
        ("expired", rsa.sign(&with("exp", json!(now() - 600)))),
        (
            "expired 2 minutes ago, beyond the leeway",
            ec.sign(&with("exp", json!(now() - 120))),
        ),
        ("not yet valid", rsa.sign(&with("nbf", json!(now() + 600)))),
        (
            "wrong issuer",
            rsa.sign(&with("iss", json!("https://evil.example/realms/plant"))),
        ),
        (
            "wrong audience",
            rsa.sign(&with("aud", json!("another-service"))),
        ),
        ("no audience", rsa.sign(&without("aud"))),
        ("no exp", rsa.sign(&without("exp"))),
        ("no sub", rsa.sign(&without("sub"))),
        ("sub not a string", rsa.sign(&with("sub", json!(42)))),
        (
            "sub too long",
            rsa.sign(&with("sub", json!("s".repeat(121)))),
        ),
        (
            "key of another JWKS under a known kid",
            foreign().sign(&good),
        ),
        ("claims changed after signing", tampered),
        (
            "signature of another token",
            format!("{}.{}", unsigned("RS256").trim_end_matches('.'), signature),
        ),
        ("alg none", unsigned("none")),
        ("alg None", unsigned("None")),
        ("HS256 with the public key as secret", hs256),
        (
            "RS256 header on the EC key's kid",
            rsa.sign_as(ec.kid, &good),
        ),
        (
            "ES256 header on the RSA key's kid",
            ec.sign_as(rsa.kid, &good),
        ),
        ("unknown kid", rsa_2().sign(&good)),
        ("no kid", no_kid),
        ("malformed", "a.b.c".to_owned()),
        ("not base64", "!!!.???.***".to_owned()),
        ("garbage", "garbage".to_owned()),
        ("an API token's shape", "emt_0123456789abcdef_zz".to_owned()),
    ];
    // Within the leeway (60 s) an expired token still passes; beyond it not.
    let a = with_bearer(
        &app,
        Method::GET,
        "/op_run/active",
        None,
        &ec.sign(&with("exp", json!(now() - 30))),
    )
    .await;
    assert_eq!(
        a.status.as_u16(),
        200,
        "expired 30 s ago, within the leeway: {}",
        a.body
    );
    // Why each is refused (logged, never answered).
    let reason = |what: &str| match what {
        "expired" | "expired 2 minutes ago, beyond the leeway" => "expired",
        "not yet valid" => "nbf",
        "wrong issuer" => "another issuer",
        "wrong audience" => "another audience",
        "no audience" | "no exp" | "no sub" | "sub not a string" => "lacks a valid",
        "sub too long" => "longer than 120 bytes",
        "key of another JWKS under a known kid"
        | "claims changed after signing"
        | "signature of another token" => "signature does not verify",
        "HS256 with the public key as secret" => "RS256 and ES256 only",
        "RS256 header on the EC key's kid" | "ES256 header on the RSA key's kid" => "not its key's",
        "unknown kid" => "unknown kid",
        "no kid" => "without kid",
        _ => "not a JWT",
    };
    for (what, token) in &cases {
        let why = auth.identify(token).await.expect_err(what);
        assert!(why.contains(reason(what)), "{what}: refused because {why}");
        for (method, uri) in [
            (Method::GET, "/op_run/active"),
            (Method::POST, "/op_run/start"),
        ] {
            let body = (method == Method::POST).then(|| start_body("R-bad"));
            let a = with_bearer(&app, method, uri, body.as_ref(), token).await;
            a.assert_problem(401, None, what);
            assert_eq!(a.body["detail"], "invalid token", "{what}");
            let challenge = a.headers["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Bearer "), "{what}: {challenge}");
            assert!(challenge.contains(r#"error="invalid_token""#), "{what}");
            assert!(
                !a.body.to_string().contains(token.as_str()) || token.len() < 8,
                "{what}"
            );
        }
    }
    assert_eq!(
        scalar_i64(&t.pool, "SELECT count(*) FROM op_run").await,
        0,
        "nothing refused wrote"
    );
    // The same valid token passes: the refusals were the tokens', not the setup's.
    let a = with_bearer(&app, Method::GET, "/op_run/active", None, &rsa.sign(&good)).await;
    assert_eq!(a.status.as_u16(), 200, "{}", a.body);
    // Without --jwt-jwks, JWTs are not tokens at all.
    let plain = app_without_jwt(&t.pool);
    let a = with_bearer(
        &plain,
        Method::GET,
        "/op_run/active",
        None,
        &rsa.sign(&good),
    )
    .await;
    a.assert_problem(401, None, "a JWT where JWTs are not configured");
}

fn app_without_jwt(pool: &sqlx::PgPool) -> Router {
    app(pool)
}

#[tokio::test]
async fn jwt_callers_have_their_own_write_rate() {
    let t = db().await;
    let rsa = rsa_1();
    let (_dir, source) = jwks_file(&[&rsa]);
    let auth = Arc::new(JwtAuth::new(
        settings(),
        Arc::new(Jwks::new(source, None, quick_refetch()).unwrap()),
    ));
    // 1 write per second and caller, bursts of 2.
    let app = mes_api::app(
        AppState::new(
            t.pool.clone(),
            None,
            Settings {
                default_site: "BKK".to_owned(),
            },
        )
        .with_auth_required()
        .with_write_rate(1)
        .with_jwt(auth),
    );
    let fast = rsa.sign(&claims("fast-connector", json!(["operator"])));
    let mut statuses = Vec::new();
    for i in 0..4 {
        let a = with_bearer(
            &app,
            Method::POST,
            "/op_run/start",
            Some(&start_body(&format!("R-rate-{i}"))),
            &fast,
        )
        .await;
        statuses.push(a.status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        2,
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    // Another subject has its own budget.
    let other = rsa.sign(&claims("other-connector", json!(["operator"])));
    let a = with_bearer(
        &app,
        Method::POST,
        "/op_run/start",
        Some(&start_body("R-rate-x")),
        &other,
    )
    .await;
    assert_eq!(a.status.as_u16(), 201, "{}", a.body);
}

/// A tiny HTTP server answering every request with the current `body` (and counting requests);
/// with `tls`, over TLS.
struct JwksServer {
    port: u16,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(body: String, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = Arc::new(Mutex::new(body));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (b, h, tls) = (b.clone(), h.clone(), tls.clone());
                tokio::spawn(async move {
                    let answer = |b: &Arc<Mutex<String>>| {
                        let body = b.lock().unwrap().clone();
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    match tls {
                        None => {
                            let mut s = tcp;
                            if read_request(&mut s).await {
                                h.fetch_add(1, Ordering::SeqCst);
                                let _ = s.write_all(answer(&b).as_bytes()).await;
                                let _ = s.shutdown().await;
                            }
                        }
                        Some(acceptor) => {
                            let Ok(mut s) = acceptor.accept(tcp).await else {
                                return;
                            };
                            if read_request(&mut s).await {
                                h.fetch_add(1, Ordering::SeqCst);
                                let _ = s.write_all(answer(&b).as_bytes()).await;
                                let _ = s.shutdown().await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            port,
            body,
            hits,
            task,
        }
    }

    fn set(&self, body: String) {
        *self.body.lock().unwrap() = body;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request's head; whether one came.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head.starts_with(b"GET /realms/plant/protocol/openid-connect/certs ")
}

#[tokio::test]
async fn a_rotated_key_is_fetched_from_the_jwks_url_when_its_kid_appears() {
    let t = db().await;
    let (old, new) = (rsa_1(), rsa_2());
    let server = JwksServer::start(jwks(&[&old]), None).await;
    let url = format!(
        "http://127.0.0.1:{}/realms/plant/protocol/openid-connect/certs",
        server.port
    );
    let keys = Jwks::new(url.parse().unwrap(), None, quick_refetch()).unwrap();
    let app = jwt_app(&t.pool, settings(), keys);
    let read = |token: String| {
        let app = app.clone();
        async move {
            with_bearer(&app, Method::GET, "/op_run/active", None, &token)
                .await
                .status
                .as_u16()
        }
    };
    let c = claims("connector", json!(["viewer"]));
    assert_eq!(
        read(old.sign(&c)).await,
        200,
        "the first token reads the keys"
    );
    assert_eq!(server.hits(), 1);
    assert_eq!(
        read(new.sign(&c)).await,
        401,
        "a kid the provider does not publish"
    );
    // Tokens with made-up kids do not make mes-api hammer the provider: at most one read per
    // refetch_min.
    let started = std::time::Instant::now();
    let made_up = new.sign_as("made-up", &c);
    for _ in 0..20 {
        assert_eq!(read(made_up.clone()).await, 401);
    }
    let allowed =
        2 + (started.elapsed().as_millis() / quick_refetch().refetch_min.as_millis()) as usize;
    assert!(
        server.hits() <= allowed,
        "{} reads for 21 unknown kids in a row (at most {allowed})",
        server.hits()
    );

    // The provider rotates: the new key appears, the old one goes.
    server.set(jwks(&[&new]));
    wait_until("the rotated key accepted", Duration::from_secs(20), || {
        let answer = read(new.sign(&c));
        async move { answer.await == 200 }
    })
    .await;
    assert_eq!(read(old.sign(&c)).await, 401, "a key the provider withdrew");
}

#[tokio::test]
async fn the_jwks_url_may_be_https_signed_by_the_plants_ca() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let t = db().await;
    let rsa = rsa_1();
    // A plant CA and the identity provider's certificate for 127.0.0.1 and localhost.
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params
        .distinguished_name
        .push(DnType::CommonName, "edge-mes test plant CA");
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("plant-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    use tokio_rustls::rustls;
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server = JwksServer::start(jwks(&[&rsa]), Some(acceptor)).await;
    let token = rsa.sign(&claims("connector", json!(["viewer"])));

    for host in ["localhost", "127.0.0.1"] {
        let url = format!(
            "https://{host}:{}/realms/plant/protocol/openid-connect/certs",
            server.port
        );
        let source: JwksSource = url.parse().unwrap();
        let jwks = Jwks::new(source.clone(), Some(&ca_file), quick_refetch()).unwrap();
        assert_eq!(jwks.refresh().await.unwrap(), 1, "{url}");
        let app = jwt_app(&t.pool, settings(), jwks);
        let a = with_bearer(&app, Method::GET, "/op_run/active", None, &token).await;
        assert_eq!(a.status.as_u16(), 200, "{url}: {}", a.body);
        // The system's roots do not know the plant CA: no keys, JWTs refused.
        if let Ok(untrusting) = Jwks::new(source, None, quick_refetch()) {
            assert!(untrusting.refresh().await.is_err(), "{url}");
            let app = jwt_app(&t.pool, settings(), untrusting);
            let a = with_bearer(&app, Method::GET, "/op_run/active", None, &token).await;
            a.assert_problem(401, None, "keys from a server nobody trusts");
        }
    }
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_accepts_jwts_and_serves_metrics_without_a_token_on_its_own_port() {
    let t = db().await;
    let nats = testkit::NatsServer::start().await.unwrap();
    let (rsa, ec) = (rsa_1(), ec_1());
    let (_dir, source) = jwks_file(&[&rsa, &ec]);
    let JwksSource::File(jwks_path) = source else {
        unreachable!()
    };
    let (port, metrics_port) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mes-api"))
        .env("DATABASE_URL", &t.url)
        .env("NATS_URL", nats.url())
        .env("EDGE_NAMESPACE", &t.name)
        .env("API_LISTEN", format!("127.0.0.1:{port}"))
        .env("API_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .env("API_AUTH", "tokens")
        .env("API_JWT_JWKS", &jwks_path)
        .env("API_JWT_ISSUER", ISSUER)
        .env("API_JWT_AUDIENCE", format!("other,{AUDIENCE}"))
        .env("API_JWT_ROLE_CLAIM", "realm_access.roles")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until(
        "mes-api to answer /health",
        Duration::from_secs(60),
        || async {
            matches!(
                http_request(port, "GET", "/health", None, None).await,
                Some((200, _))
            )
        },
    )
    .await;

    // Metrics: on their own port without a token; on the main port only with one.
    let (status, text) = http_request(metrics_port, "GET", "/metrics", None, None)
        .await
        .expect("metrics listener");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("mes_api_jwks_keys 2"), "{text}");
    assert_eq!(
        http_request(metrics_port, "GET", "/op_run/active", None, None)
            .await
            .unwrap()
            .0,
        404
    );
    assert_eq!(
        http_request(port, "GET", "/metrics", None, None)
            .await
            .unwrap()
            .0,
        401
    );
    let mut c = claims("line-2-connector", json!(null));
    c["realm_access"] = json!({"roles": ["operator"]});
    let operator = ec.sign(&c);
    let (status, text) = http_request(port, "GET", "/metrics", Some(&operator), None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("mes_api_http_requests_total"), "{text}");

    let (status, body) = http_request(
        port,
        "POST",
        "/op_run/start",
        Some(&operator),
        Some(&start_body("R-bin")),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let started_by: Option<String> = sqlx::query_scalar("SELECT started_by FROM op_run")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(started_by.as_deref(), Some("jwt:line-2-connector"));
    let expired = {
        let mut c = c.clone();
        c["exp"] = json!(now() - 3600);
        rsa.sign(&c)
    };
    assert_eq!(
        http_request(port, "GET", "/op_run/active", Some(&expired), None)
            .await
            .unwrap()
            .0,
        401
    );

    // SIGTERM stops both listeners.
    let pid = child.id().unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("mes-api did not stop within 15 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        http_request(metrics_port, "GET", "/metrics", None, None)
            .await
            .is_none(),
        "the metrics port closed"
    );
}

#[tokio::test]
async fn the_binary_refuses_jwt_settings_that_cannot_work() {
    let (_dir, source) = jwks_file(&[&rsa_1()]);
    let JwksSource::File(jwks_path) = source else {
        unreachable!()
    };
    let missing = jwks_path.with_file_name("missing.json");
    let bad_file = jwks_path.with_file_name("bad.json");
    std::fs::write(
        &bad_file,
        r#"{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0"}]}"#,
    )
    .unwrap();
    let jwks = jwks_path.to_str().unwrap();
    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[
                ("API_AUTH", "tokens"),
                ("API_JWT_JWKS", jwks),
                ("API_JWT_AUDIENCE", AUDIENCE),
            ],
            "--jwt-issuer",
        ),
        (
            &[
                ("API_AUTH", "tokens"),
                ("API_JWT_JWKS", jwks),
                ("API_JWT_ISSUER", ISSUER),
            ],
            "--jwt-audience",
        ),
        (
            &[
                ("API_AUTH", "off"),
                ("API_JWT_JWKS", jwks),
                ("API_JWT_ISSUER", ISSUER),
                ("API_JWT_AUDIENCE", AUDIENCE),
            ],
            "--auth tokens",
        ),
        (
            &[
                ("API_AUTH", "tokens"),
                ("API_JWT_JWKS", "http://idp.plant.test/certs"),
                ("API_JWT_ISSUER", ISSUER),
                ("API_JWT_AUDIENCE", AUDIENCE),
            ],
            "loopback",
        ),
        (
            &[
                ("API_AUTH", "tokens"),
                ("API_JWT_JWKS", missing.to_str().unwrap()),
                ("API_JWT_ISSUER", ISSUER),
                ("API_JWT_AUDIENCE", AUDIENCE),
            ],
            "missing.json",
        ),
        (
            &[
                ("API_AUTH", "tokens"),
                ("API_JWT_JWKS", bad_file.to_str().unwrap()),
                ("API_JWT_ISSUER", ISSUER),
                ("API_JWT_AUDIENCE", AUDIENCE),
            ],
            "no RS256 or ES256",
        ),
    ];
    for (env, expected) in cases {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mes-api"))
            // Nothing to connect to: the settings are refused before any connection.
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env("API_METRICS_LISTEN", "off")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .unwrap_or_else(|_| panic!("{env:?}: still running after 30 s"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?}");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
    }
}
