//! Clean shutdown: SIGTERM (Kubernetes, systemd, docker stop) and Ctrl-C cancel one token that
//! every task of a binary watches.

use std::future::Future;
use std::time::Duration;

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

/// How long a binary may take to stop after SIGTERM, whatever server is down.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ShutdownArgs {
    /// Seconds from SIGTERM/Ctrl-C to exit at the most. Work not finished by then is abandoned
    /// safely: what was not acknowledged is sent or delivered again after the next start. Keep
    /// it below the orchestrator's kill timeout (Kubernetes terminationGracePeriodSeconds,
    /// systemd TimeoutStopSec, compose stop_grace_period).
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_timeout_secs: u64,
}

impl ShutdownArgs {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

impl Default for ShutdownArgs {
    fn default() -> Self {
        Self {
            shutdown_timeout_secs: 10,
        }
    }
}

/// Runs `work` to its end, but no longer than `grace` after `token` is cancelled: `None` when
/// the deadline came first (the caller logs what it abandons and exits).
pub async fn within_grace<T>(
    work: impl Future<Output = T>,
    token: CancellationToken,
    grace: Duration,
) -> Option<T> {
    let deadline = async move {
        token.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        biased;
        r = work => Some(r),
        () = deadline => None,
    }
}

/// A binary's `run`, bounded by `grace` after SIGTERM/Ctrl-C: its result, or `Ok(())` after
/// logging that the deadline came and what is abandoned (`abandoned` says what happens to it).
pub async fn run_bounded<E>(
    work: impl Future<Output = Result<(), E>>,
    token: CancellationToken,
    grace: Duration,
    abandoned: &str,
) -> Result<(), E> {
    match within_grace(work, token, grace).await {
        Some(result) => result,
        None => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "shutdown deadline reached: {abandoned}"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_that_ends_in_time_returns_its_result() {
        let token = CancellationToken::new();
        token.cancel();
        let r = within_grace(
            async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                7
            },
            token,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(r, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_hangs_after_the_signal_is_abandoned_at_the_deadline() {
        let token = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(100)).await;
            cancel.cancel();
        });
        let r = within_grace(std::future::pending::<()>(), token, Duration::from_secs(10)).await;
        assert_eq!(r, None);
        assert_eq!(started.elapsed(), Duration::from_secs(110));
    }
}
