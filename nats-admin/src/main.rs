//! `edge-mes-nats-admin`: see the library docs and `edge-mes-nats-admin --help`.

use anyhow::Context;
use clap::Parser;
use nats_admin::Cli;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let done = nats_admin::run(&cli).context("edge-mes-nats-admin failed")?;
    // The entry (for a boxes file or Helm values) on standard output, the guidance on standard
    // error, so `... > entry.txt` captures only the entry.
    if let Some(entry) = &done.entry {
        println!("{entry}");
    }
    eprintln!("{}", done.guidance);
    Ok(())
}
