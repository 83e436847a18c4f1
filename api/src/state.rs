//! What every handler shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::auth::jwt::JwtAuth;
use crate::auth::middleware::Authenticator;
use crate::report_batch::{ReportBatcher, ReportBatching};

/// Settings handlers need (a subset of [`crate::Config`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Site of runs whose request and resource name none.
    pub default_site: String,
}

/// Shared state: the pool, the NATS client (for `/ready`), settings and the metrics handle.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub nats: Option<async_nats::Client>,
    pub settings: Arc<Settings>,
    pub metrics: PrometheusHandle,
    /// Wakes this process's outbox relay after a commit that wrote events.
    pub outbox_signal: Arc<Notify>,
    /// Writes count reports without an Idempotency-Key, batched per lane.
    pub reports: Arc<ReportBatcher>,
    /// Checks the bearer token of every request (see [`crate::auth`]).
    pub auth: Arc<Authenticator>,
    /// Whether every route but `/health` needs a token (`--auth tokens`).
    pub auth_required: bool,
}

impl AppState {
    /// State with the default report batching ([`ReportBatching::default`]).
    pub fn new(pool: PgPool, nats: Option<async_nats::Client>, settings: Settings) -> Self {
        let outbox_signal = Arc::new(Notify::new());
        let reports = Arc::new(ReportBatcher::new(
            pool.clone(),
            settings.default_site.clone(),
            ReportBatching::default(),
            outbox_signal.clone(),
        ));
        Self {
            auth: Authenticator::new(pool.clone()),
            auth_required: false,
            pool,
            nats,
            settings: Arc::new(settings),
            metrics: crate::metrics::handle(),
            outbox_signal,
            reports,
        }
    }

    /// The same state with every route but `/health` behind a bearer token.
    pub fn with_auth_required(mut self) -> Self {
        self.auth_required = true;
        self
    }

    /// The same state with at most `per_second` writes per second and token (0: unlimited).
    pub fn with_write_rate(mut self, per_second: u32) -> Self {
        let jwt = self.auth.jwt().cloned();
        self.auth = Authenticator::build(self.pool.clone(), per_second, jwt);
        self
    }

    /// The same state also accepting the identity provider's JWTs (see [`crate::auth::jwt`]).
    pub fn with_jwt(mut self, jwt: Arc<JwtAuth>) -> Self {
        let rate = self.auth.write_rate();
        self.auth = Authenticator::build(self.pool.clone(), rate, Some(jwt));
        self
    }

    /// The same state with other report batching settings.
    pub fn with_report_batching(mut self, batching: ReportBatching) -> Self {
        self.reports = Arc::new(ReportBatcher::new(
            self.pool.clone(),
            self.settings.default_site.clone(),
            batching,
            self.outbox_signal.clone(),
        ));
        self
    }
}
