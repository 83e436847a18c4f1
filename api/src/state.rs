//! What every handler shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

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
}

impl AppState {
    pub fn new(pool: PgPool, nats: Option<async_nats::Client>, settings: Settings) -> Self {
        Self {
            pool,
            nats,
            settings: Arc::new(settings),
            metrics: crate::metrics::handle(),
        }
    }
}
