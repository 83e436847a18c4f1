//! `edge-shipper`: see the library docs and `edge-shipper --help`.

use anyhow::Context;
use clap::Parser;
use edge_shipper::Config;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // NATS_PASSWORD_FILE, NATS_URL_FILE, ...: secrets from files, before clap reads the
    // environment.
    service::secrets::load()?;
    let config = Config::parse();
    service::telemetry::init(config.log_format);
    // SIGTERM and Ctrl-C: publishes in flight are acknowledged and checkpointed before exit.
    let shutdown = service::shutdown::on_signal();
    let grace = config.shutdown.grace();
    service::shutdown::run_bounded(
        edge_shipper::run(config, shutdown.clone()),
        shutdown,
        grace,
        "lines not acknowledged stay behind the checkpoint and are sent after the next start",
    )
    .await
    .context("edge-shipper failed")
}
