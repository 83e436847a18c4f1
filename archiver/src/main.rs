use anyhow::{bail, Context};
use archiver::config::{Command, Config, SECRET_VARS};
use archiver::store::Store;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // DATABASE_URL_FILE and the S3 keys' _FILE variables: secrets from files, before clap reads
    // the environment.
    service::secrets::load()?;
    for (var, value) in service::secrets::resolve(
        &SECRET_VARS,
        |v| std::env::var(v).ok(),
        |p| std::fs::read_to_string(p),
    )? {
        std::env::set_var(var, value);
    }
    let config = Config::parse();
    service::telemetry::init(config.log_format);
    match config.command.clone() {
        Command::Run(args) => {
            // SIGTERM and Ctrl-C stop between files; a part not recorded is written again.
            let shutdown = service::shutdown::on_signal();
            let grace = config.shutdown.grace();
            let report = service::shutdown::within_grace(
                archiver::run(config, args, shutdown.clone()),
                shutdown,
                grace,
            )
            .await;
            match report {
                Some(r) => {
                    let r = r.context("edge-mes-archiver failed")?;
                    if r.failures > 0 {
                        bail!("{} day(s) failed to archive", r.failures);
                    }
                }
                None => tracing::warn!("shutdown deadline reached; unrecorded parts are written again at the next start"),
            }
        }
        Command::Verify(args) => {
            let store = Store::open(&config.target)?;
            let pool = if args.offline {
                None
            } else {
                Some(archiver::open_database(&config).await?)
            };
            let report =
                archiver::verify::verify_archive(&store, pool.as_ref(), args.from, args.to).await?;
            for f in &report.failures {
                eprintln!("FAILED {f}");
            }
            println!(
                "verified {} part(s), {} row(s), {} failure(s)",
                report.parts,
                report.rows,
                report.failures.len()
            );
            if !report.failures.is_empty() {
                bail!("the archive does not verify");
            }
        }
        Command::Replay(args) => {
            let store = Store::open(&config.target)?;
            let pool = archiver::open_database(&config).await?;
            let r = archiver::replay::replay(&pool, &store, args.from, args.to).await?;
            println!(
                "replayed {} part(s), {} row(s); {} part(s) replayed before, {} hot part(s) skipped",
                r.parts_loaded, r.rows_loaded, r.parts_already, r.parts_hot
            );
        }
    }
    Ok(())
}
