use anyhow::Context;
use clap::Parser;
use ingest_worker::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    service::telemetry::init(config.log_format);
    // SIGTERM (Kubernetes, systemd) and Ctrl-C stop the worker cleanly: batches in flight are
    // committed and acknowledged first.
    let shutdown = service::shutdown::on_signal();
    let grace = config.shutdown.grace();
    match service::shutdown::within_grace(
        ingest_worker::run(config, shutdown.clone()),
        shutdown,
        grace,
    )
    .await
    {
        Some(result) => result.context("ingest-worker failed"),
        None => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "shutdown deadline reached: batches not committed are rolled back and their \
                 messages, never acknowledged, are delivered again"
            );
            Ok(())
        }
    }
}
