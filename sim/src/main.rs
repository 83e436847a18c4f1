//! `edge-mes-sim`: see the library docs and `edge-mes-sim --help`.

use anyhow::Context;
use clap::Parser;
use edge_mes_sim::Config;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    service::telemetry::init(config.log_format);
    let shutdown = service::shutdown::on_signal();
    let grace = config.shutdown.grace();
    match service::shutdown::within_grace(
        edge_mes_sim::run(config, shutdown.clone()),
        shutdown,
        grace,
    )
    .await
    {
        Some(result) => result.context("edge-mes-sim failed"),
        None => {
            tracing::warn!(grace_secs = grace.as_secs(), "shutdown deadline reached");
            Ok(())
        }
    }
}
