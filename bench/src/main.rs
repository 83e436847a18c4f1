//! `edge-mes-bench`: see the library docs and `edge-mes-bench --help`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use edge_mes_bench::Config;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            // Not sqlx's warnings about slow CHECKPOINTs and DROP DATABASE, nor about pooled
            // connections ended by DROP DATABASE ... WITH (FORCE).
            EnvFilter::new("info,sqlx::query=error,sqlx_core::pool=error")
        }))
        // Plain text when the report goes to a file or CI's log.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let command = command_line();
    // On SIGINT or SIGTERM the run is dropped: its child processes are killed and the private
    // servers stopped by their Drop impls.
    tokio::select! {
        result = edge_mes_bench::run(config, command) => match result {
            Ok(report) if report.checks_passed() => ExitCode::SUCCESS,
            Ok(_) => {
                tracing::error!("a check failed: not every row arrived exactly once, or a part failed");
                ExitCode::from(1)
            }
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::from(2)
            }
        },
        () = stop_signal() => {
            tracing::warn!("interrupted; stopping the processes and servers");
            ExitCode::from(130)
        }
    }
}

/// The command line as typed, program name shortened.
fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        *first = "edge-mes-bench".to_owned();
    }
    args.join(" ")
}

async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
