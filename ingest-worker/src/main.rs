use anyhow::Context;
use clap::Parser;
use ingest_worker::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // DATABASE_URL_FILE, NATS_PASSWORD_FILE, ...: secrets from files, before clap reads the
    // environment.
    service::secrets::load()?;
    let config = Config::parse();
    service::telemetry::init(config.log_format);
    // SIGTERM (Kubernetes, systemd) and Ctrl-C stop the worker cleanly: batches in flight are
    // committed and acknowledged first.
    let shutdown = service::shutdown::on_signal();
    let grace = config.shutdown.grace();
    service::shutdown::run_bounded(
        ingest_worker::run(config, shutdown.clone()),
        shutdown,
        grace,
        "batches not committed are rolled back and their messages, never acknowledged, are delivered again",
    )
    .await
    .context("ingest-worker failed")
}
