use anyhow::Context;
use clap::Parser;
use mes_api::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // DATABASE_URL_FILE, NATS_PASSWORD_FILE, ...: secrets from files, before clap reads the
    // environment.
    service::secrets::load()?;
    let config = Config::parse();
    service::telemetry::init(config.log_format);
    // SIGTERM (Kubernetes, systemd) and Ctrl-C stop the API cleanly: in-flight requests finish,
    // the relay completes its batch.
    let shutdown = service::shutdown::on_signal();
    let grace = config.shutdown.grace();
    let database_url = config.database_url.clone();
    match service::shutdown::within_grace(mes_api::run(config, shutdown.clone()), shutdown, grace)
        .await
    {
        Some(result) => result.context("mes-api failed"),
        None => {
            let unsent = mes_api::relay::unsent_events(database_url.expose()).await;
            tracing::warn!(
                grace_secs = grace.as_secs(),
                unsent_events = ?unsent,
                "shutdown deadline reached: events left in the outbox are published after the \
                 next start"
            );
            Ok(())
        }
    }
}
