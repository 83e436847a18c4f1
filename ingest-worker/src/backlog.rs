//! Watches how much of `READINGS` is waiting to be loaded, and warns long before it matters.
//!
//! With work-queue retention the stream holds exactly what the consumer has not yet acknowledged,
//! so its bytes are the backlog and its first message is the oldest line not loaded.
//! Two limits end in trouble: `max_bytes` (shippers are refused and wait: no loss, but no
//! ingest either) and `max_age` (JetStream deletes messages older than that, loaded or not:
//! acknowledged lines would be lost). Both are exported as metrics, and a warning is logged when
//! the backlog passes [`FILL_WARN`] of the size limit or [`AGE_WARN`] of the age limit.

use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics;

/// Share of `max_bytes` at which the backlog is reported.
pub const FILL_WARN: f64 = 0.8;
/// Share of `max_age` at which the oldest waiting message is reported.
pub const AGE_WARN: f64 = 0.5;
/// A condition that persists is logged again after this long.
const REPEAT_WARNING: Duration = Duration::from_secs(600);

/// The part of the stream's state the assessment needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub messages: u64,
    pub bytes: u64,
    /// Size limit; 0 or less: none.
    pub max_bytes: i64,
    pub oldest_age: Duration,
    /// Age limit; zero: none.
    pub max_age: Duration,
}

/// What is worth telling an operator about a backlog.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Concern {
    /// The stream is this full (share of `max_bytes`); at 1.0 shippers wait.
    NearlyFull(f64),
    /// The oldest message waiting is this share of `max_age` old; at 1.0 it is deleted unloaded.
    Ageing(f64),
}

impl Backlog {
    pub fn fill(&self) -> Option<f64> {
        (self.max_bytes > 0).then(|| self.bytes as f64 / self.max_bytes as f64)
    }

    pub fn age_share(&self) -> Option<f64> {
        (!self.max_age.is_zero() && self.messages > 0)
            .then(|| self.oldest_age.as_secs_f64() / self.max_age.as_secs_f64())
    }

    pub fn concerns(&self) -> Vec<Concern> {
        let mut out = Vec::new();
        if let Some(f) = self.fill().filter(|f| *f >= FILL_WARN) {
            out.push(Concern::NearlyFull(f));
        }
        if let Some(a) = self.age_share().filter(|a| *a >= AGE_WARN) {
            out.push(Concern::Ageing(a));
        }
        out
    }
}

/// Reads the stream's state every `every` until `shutdown`; exports it and warns.
pub async fn watch(js: Context, stream: String, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    let mut last_warned: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let info = match js.get_stream(&stream).await {
            Ok(mut s) => match s.info().await {
                Ok(i) => i.clone(),
                Err(e) => {
                    debug!(error = %e, "stream info failed");
                    continue;
                }
            },
            Err(e) => {
                debug!(error = %e, "stream lookup failed");
                continue;
            }
        };
        let oldest_age = if info.state.messages == 0 {
            Duration::ZERO
        } else {
            let now = time_now_unix_nanos();
            let first = info.state.first_timestamp.unix_timestamp_nanos();
            Duration::from_nanos(u64::try_from(now - first).unwrap_or(0))
        };
        let backlog = Backlog {
            messages: info.state.messages,
            bytes: info.state.bytes,
            max_bytes: info.config.max_bytes,
            oldest_age,
            max_age: info.config.max_age,
        };
        metrics::backlog(&backlog);
        let concerns = backlog.concerns();
        if concerns.is_empty() {
            last_warned = None;
            continue;
        }
        if last_warned.is_some_and(|t| t.elapsed() < REPEAT_WARNING) {
            continue;
        }
        last_warned = Some(Instant::now());
        for c in concerns {
            match c {
                Concern::NearlyFull(f) => warn!(
                    stream = %stream,
                    bytes = backlog.bytes,
                    max_bytes = backlog.max_bytes,
                    fill_percent = (f * 100.0).round(),
                    "readings backlog nearly fills the stream: shippers wait once it is full (are the workers loading?)"
                ),
                Concern::Ageing(a) => warn!(
                    stream = %stream,
                    oldest_age_secs = backlog.oldest_age.as_secs(),
                    max_age_secs = backlog.max_age.as_secs(),
                    age_percent = (a * 100.0).round(),
                    "oldest readings message not yet loaded is getting old: JetStream deletes it unloaded at max_age"
                ),
            }
        }
    }
}

fn time_now_unix_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(bytes: u64, max_bytes: i64, age_secs: u64, max_age_secs: u64) -> Backlog {
        Backlog {
            messages: u64::from(bytes > 0),
            bytes,
            max_bytes,
            oldest_age: Duration::from_secs(age_secs),
            max_age: Duration::from_secs(max_age_secs),
        }
    }

    #[test]
    fn an_empty_or_small_backlog_is_no_concern() {
        assert!(backlog(0, 1000, 0, 100).concerns().is_empty());
        assert!(backlog(799, 1000, 49, 100).concerns().is_empty());
    }

    #[test]
    fn a_backlog_near_the_size_limit_is_reported() {
        assert_eq!(
            backlog(800, 1000, 0, 100).concerns(),
            vec![Concern::NearlyFull(0.8)]
        );
    }

    #[test]
    fn an_old_message_is_reported_at_half_the_age_limit() {
        assert_eq!(
            backlog(10, 1000, 50, 100).concerns(),
            vec![Concern::Ageing(0.5)]
        );
    }

    #[test]
    fn no_limit_means_no_share() {
        let b = backlog(10, -1, 10_000, 0);
        assert_eq!(b.fill(), None);
        assert_eq!(b.age_share(), None);
        assert!(b.concerns().is_empty());
    }

    #[test]
    fn the_age_of_an_empty_stream_is_not_counted() {
        let mut b = backlog(0, 1000, 90, 100);
        b.messages = 0;
        assert_eq!(b.age_share(), None);
    }
}
