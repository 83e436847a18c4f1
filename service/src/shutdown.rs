//! Clean shutdown: SIGTERM (Kubernetes, systemd, docker stop) and Ctrl-C cancel one token that
//! every task of a binary watches.

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// A token that is cancelled by the first SIGTERM or Ctrl-C. Spawns the listener on the current
/// Tokio runtime.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    tokio::spawn(cancel_on_signal(token.clone()));
    token
}

/// Waits for SIGTERM or Ctrl-C (SIGINT), then cancels `token`.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                error!(error = %e, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("ctrl-c received; shutting down"),
        () = term => info!("sigterm received; shutting down"),
    }
    token.cancel();
}
