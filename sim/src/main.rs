//! `edge-mes-sim`: see the library docs and `edge-mes-sim --help`.

use anyhow::Context;
use clap::Parser;
use edge_mes_sim::Config;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // SIM_API_TOKEN_FILE: the token from a file (a compose or Kubernetes secret), before clap
    // reads the environment.
    service::secrets::load()?;
    let config = Config::parse();
    service::telemetry::init(config.log_format);
    let shutdown = service::shutdown::on_signal();
    let grace = config.shutdown.grace();
    service::shutdown::run_bounded(
        edge_mes_sim::run(config, shutdown.clone()),
        shutdown,
        grace,
        "the simulated line stops where it is",
    )
    .await
    .context("edge-mes-sim failed")
}
