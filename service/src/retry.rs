//! Waiting out a dependency that is not there yet (the database or NATS starting after us).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Retries `op` with backoff (250 ms doubling to 10 s) until it succeeds, logging each failure,
/// or until `shutdown` is cancelled (then `None`).
pub async fn retry_until<T, E, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    mut op: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(250);
    loop {
        match op().await {
            Ok(v) => return Some(v),
            Err(e) => {
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed, retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_and_stops_on_shutdown() {
        let token = CancellationToken::new();
        let mut calls = 0;
        let got = retry_until(&token, "thing", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err("not yet")
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(got, Some(3));
        token.cancel();
        let never = retry_until(&token, "thing", || async { Err::<(), _>("down") }).await;
        assert_eq!(never, None);
    }
}
