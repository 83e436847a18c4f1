//! What every handler shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::sync::Notify;

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
}

impl AppState {
    pub fn new(pool: PgPool, nats: Option<async_nats::Client>, settings: Settings) -> Self {
        Self {
            pool,
            nats,
            settings: Arc::new(settings),
            metrics: crate::metrics::handle(),
            outbox_signal: Arc::new(Notify::new()),
        }
    }
}
