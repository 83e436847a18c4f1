//! mes-api: the production-run REST API of edge-mes.
//!
//! - [`config`]: flags and environment.
//! - [`db`]: connect (create the database if missing), migrations, the default site.
//! - [`http`]: the router, `pub fn app(state) -> Router`, limits, fallbacks, OpenAPI document.
//! - [`error`]: `ApiError` → `application/problem+json`.
//! - [`extract`]: JSON body, query and path extractors whose errors name the field.
//! - [`idempotency`]: `Idempotency-Key` claims and stored answers.
//! - [`domain`]: the production run — typed values and the state machine (no HTTP, no SQL).
//! - [`store`]: the run domain's SQL (its own error type); [`report_batch`]: the report lanes.
//! - [`runs`]: run lifecycle endpoints (thin: extract → domain → store → answer);
//!   [`run_schema`]: their bodies.
//! - [`relay`]: the outbox relay to JetStream.
//! - [`kpi`]: `GET /kpi/oee` (OEE per shift, roll-up, MTBF/MTTR) from the SQL of the MES views.
//! - [`trace`]: `GET /trace/*` — by work order, run, resource and window, reading; run exports.
//! - [`spc`]: `GET /spc` (I-MR, X̄-R and X̄-S charts, Nelson and Western Electric rules,
//!   Cp/Cpk beside Pp/Ppk); the stored limits `POST`/`GET /spc/limits`.
//! - [`board`]: the live shop-floor page `GET /board`, its snapshot and server-sent events.
//! - [`auth`]: API tokens and the identity provider's JWTs, roles, the board's cookie.
//! - [`health`]: `/health`, `/ready`, `/metrics`, `/openapi.json`.
//! - [`metrics`]: Prometheus metrics, and the listener that serves only them.
//! - [`seed`]: the demo run (`mes-api seed-demo`).
//! - [`state`]: shared handler state.

pub mod auth;
pub mod board;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod extract;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod kpi;
pub mod machine_state;
pub mod metrics;
pub mod relay;
pub mod report_batch;
pub mod run_schema;
pub mod runs;
pub mod seed;
pub mod spc;
pub mod state;
pub mod store;
pub mod trace;

use service::retry::retry_until;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use auth::jwks::{Jwks, JwksSource};
use auth::jwt::JwtAuth;

pub use config::Config;
pub use http::{app, app_with_board, app_with_limits, openapi, Limits};
pub use state::{AppState, Settings};

#[derive(Debug, Error)]
pub enum ApiRunError {
    /// Flags that cannot work together.
    #[error("{0}")]
    Config(String),
    #[error("JWT keys (--jwt-jwks): {0}")]
    Jwks(#[from] auth::jwks::JwksError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("cannot connect to NATS: {0}")]
    Nats(#[from] async_nats::ConnectError),
    #[error(transparent)]
    NatsConfig(#[from] service::nats::NatsConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("token: {0}")]
    Token(#[source] store::tokens::TokenError),
    #[error("demo seed failed: {0}")]
    Seed(#[source] store::StoreError),
}

/// Connects, migrates and ensures the default site; `None` when shut down while waiting.
pub async fn prepare_database(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<sqlx::PgPool>, ApiRunError> {
    let Some(pool) = retry_until(shutdown, "database connection", || {
        db::connect(config.database_url.expose(), config.db_max_connections)
    })
    .await
    else {
        return Ok(None);
    };
    let mode = match config.command {
        Some(config::Command::Migrate) => service::db::MigrateMode::Always,
        _ => config.migrate,
    };
    db::prepare(&pool, mode).await?;
    db::ensure_site(&pool, &config.default_site, &config.default_site_time_zone).await?;
    Ok(Some(pool))
}

/// Serves the API (and runs the outbox relay) until `shutdown` is cancelled, then drains
/// in-flight requests and stops the relay after its current batch.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ApiRunError> {
    if config.command == Some(config::Command::SeedDemo) {
        return seed_demo(&config, &shutdown).await;
    }
    if let Some(config::Command::Token { action }) = &config.command {
        return token_command(&config, action, &shutdown).await;
    }
    if config.command == Some(config::Command::Migrate) {
        if let Some(pool) = prepare_database(&config, &shutdown).await? {
            info!("migrations applied");
            pool.close().await;
        }
        return Ok(());
    }
    check(&config)?;
    let Some(pool) = prepare_database(&config, &shutdown).await? else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ApiRunError::Listen {
            addr: config.listen,
            source,
        })?;
    serve(config, pool, listener, shutdown).await
}

/// Refuses flags that cannot work together, and a JWKS file without usable keys, before
/// anything connects.
fn check(config: &Config) -> Result<(), ApiRunError> {
    if config.jwt_jwks.is_some() && config.auth != config::AuthMode::Tokens {
        return Err(ApiRunError::Config(
            "--jwt-jwks (API_JWT_JWKS) needs --auth tokens (API_AUTH=tokens)".to_owned(),
        ));
    }
    if let Some(JwksSource::File(path)) = &config.jwt_jwks {
        let bytes = std::fs::read(path).map_err(|source| auth::jwks::JwksError::Read {
            path: path.clone(),
            source,
        })?;
        auth::jwks::KeySet::parse(&bytes)?;
    }
    Ok(())
}

/// The identity provider's JWTs, when `--jwt-jwks` is set: keys read now (a file that cannot be
/// read stops the start; a URL that does not answer yet is retried, JWTs being refused until
/// it does, while API tokens work) and kept fresh until `shutdown`.
async fn jwt_auth(
    config: &Config,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<Option<Arc<JwtAuth>>, ApiRunError> {
    let Some((source, settings, jwks_settings)) = config.jwt_settings() else {
        return Ok(None);
    };
    let jwks = Arc::new(Jwks::new(
        source.clone(),
        config.jwt_jwks_ca.as_deref(),
        jwks_settings,
    )?);
    match (jwks.refresh().await, &source) {
        (Ok(keys), _) => {
            info!(jwks = %source, keys, issuer = %settings.issuer, "accepting JWTs")
        }
        (Err(e), JwksSource::File(_)) => return Err(e.into()),
        (Err(_), JwksSource::Url(_)) => warn!(
            jwks = %source,
            "no JWT keys yet: JWTs are refused until the JWKS URL answers (retried); API tokens work"
        ),
    }
    tracker.spawn(jwks.clone().keep_fresh(shutdown.clone()));
    Ok(Some(Arc::new(JwtAuth::new(settings, jwks))))
}

/// Serves `GET /metrics` without authentication on `--metrics-listen` until `shutdown`. An
/// address that cannot be bound is logged, and the API serves without it (its main port's
/// `/metrics` remains).
async fn metrics_listener(
    config: &Config,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) {
    let Some(addr) = config.metrics_listen.0 else {
        return;
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            info!(%addr, "serving metrics (no authentication)");
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                if let Err(e) = metrics::serve(listener, handle, shutdown).await {
                    error!(%addr, error = %e, "metrics listener failed");
                }
            });
        }
        Err(e) => error!(
            %addr, error = %e,
            "cannot listen for metrics (--metrics-listen): serving without that listener"
        ),
    }
}

/// Serves on an already bound listener (tests bind port 0).
pub async fn serve(
    config: Config,
    pool: sqlx::PgPool,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ApiRunError> {
    check(&config)?;
    // The recorder first, so what is measured while starting is kept.
    let metrics_handle = metrics::handle();
    let tracker = TaskTracker::new();
    let jwt = jwt_auth(&config, &shutdown, &tracker).await?;
    let nats = connect_nats(&config).await?;
    let state = AppState::new(
        pool.clone(),
        Some(nats.clone()),
        Settings {
            default_site: config.default_site.clone(),
        },
    )
    .with_report_batching(config.report_batching());
    let state = match config.auth {
        config::AuthMode::Tokens => {
            let state = state
                .with_auth_required()
                .with_write_rate(config.write_rate_per_token);
            match jwt {
                Some(jwt) => state.with_jwt(jwt),
                None => state,
            }
        }
        config::AuthMode::Off => {
            tracing::warn!(
                "authentication is off (--auth off): anyone who reaches this port may start, \
                 report and complete runs; set API_AUTH=tokens (docs/api.md, Authentication)"
            );
            state
        }
    };
    metrics_listener(&config, metrics_handle, &shutdown, &tracker).await;
    let relay_stop = CancellationToken::new();
    if !config.no_relay {
        tracker.spawn(relay::run(
            pool.clone(),
            nats.clone(),
            relay::RelaySettings {
                names: config.op_run_names(),
                poll: config.relay_poll(),
                linger: Duration::from_millis(config.relay_linger_ms),
                batch: config.relay_batch.max(1),
                ack_timeout: Duration::from_millis(config.relay_ack_timeout_ms),
                stream_replicas: config.stream_replicas,
                idempotency_ttl_hours: config.idempotency_ttl_hours,
                outbox_retention_days: config.outbox_retention_days,
            },
            state.outbox_signal.clone(),
            relay_stop.clone(),
        ));
    }
    if let Some(settings) = config.machine_state() {
        tracker.spawn(machine_state::run_detector(
            pool.clone(),
            settings,
            shutdown.clone(),
        ));
    }
    tracker.close();
    // Board feeds run on the tracker and, like the board's SSE streams, end at shutdown.
    let board = board::Board::new(
        &state,
        config.op_run_names(),
        board::BoardSettings::default(),
        shutdown.clone(),
        tracker.clone(),
    );
    let router = app_with_board(
        state,
        Limits {
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout(),
        },
        board,
    );
    let addr = listener.local_addr().ok();
    info!(addr = ?addr, "serving");
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .map_err(ApiRunError::Serve);
    info!("http server stopped, stopping the relay");
    // The relay finishes its batch, so every committed event is either sent or still unsent.
    relay_stop.cancel();
    tracker.wait().await;
    // With NATS down a flush waits for a reconnect that may never come; whatever it would
    // have sent is a board notification, not an event (those are in the outbox).
    let _ = tokio::time::timeout(Duration::from_secs(1), nats.flush()).await;
    pool.close().await;
    info!("stopped");
    result
}

async fn connect_nats(config: &Config) -> Result<async_nats::Client, ApiRunError> {
    let options = config.nats.connect_options("mes-api").await?;
    Ok(options.connect(config.nats.servers()?).await?)
}

/// `mes-api token create|list|revoke`: what an operator types, answered on standard output.
async fn token_command(
    config: &Config,
    action: &config::TokenAction,
    shutdown: &CancellationToken,
) -> Result<(), ApiRunError> {
    let Some(pool) = prepare_database(config, shutdown).await? else {
        return Ok(());
    };
    let result = match action {
        config::TokenAction::Create {
            role,
            name,
            expires_in_days,
        } => {
            let expires =
                expires_in_days.map(|d| chrono::Utc::now() + chrono::Duration::days(i64::from(d)));
            store::tokens::create(&pool, name, *role, expires)
                .await
                .map(|token| {
                    info!(name = %name, role = %role, "token created");
                    println!("token {name:?} (role {role}) created; it is shown only now:");
                    println!("{token}");
                })
        }
        config::TokenAction::List => store::tokens::list(&pool)
            .await
            .map_err(store::tokens::TokenError::from)
            .map(|tokens| {
                println!("name\trole\tcreated\texpires\trevoked\tlast used");
                let t = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map_or("-".to_owned(), |t| t.to_rfc3339())
                };
                for k in tokens {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        k.name,
                        k.role,
                        k.created_at.to_rfc3339(),
                        t(k.expires_at),
                        t(k.revoked_at),
                        t(k.last_used_at)
                    );
                }
            }),
        config::TokenAction::Revoke { name } => store::tokens::revoke(&pool, name)
            .await
            .map_err(store::tokens::TokenError::from)
            .and_then(|found| {
                if found {
                    info!(name = %name, "token revoked");
                    println!("token {name:?} revoked");
                    Ok(())
                } else {
                    Err(store::tokens::TokenError::Unknown(name.clone()))
                }
            }),
    };
    pool.close().await;
    result.map_err(ApiRunError::Token)
}

async fn seed_demo(config: &Config, shutdown: &CancellationToken) -> Result<(), ApiRunError> {
    let Some(pool) = prepare_database(config, shutdown).await? else {
        return Ok(());
    };
    let id = seed::demo_run(&pool, &config.default_site)
        .await
        .map_err(ApiRunError::Seed)?;
    info!(op_run_id = %id, "demo run created");
    pool.close().await;
    Ok(())
}
