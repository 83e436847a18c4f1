use anyhow::Context;
use clap::Parser;
use mes_api::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    service::telemetry::init(config.log_format);
    // SIGTERM (Kubernetes, systemd) and Ctrl-C stop the API cleanly: in-flight requests finish,
    // the relay completes its batch.
    let shutdown = service::shutdown::on_signal();
    mes_api::run(config, shutdown)
        .await
        .context("mes-api failed")
}
