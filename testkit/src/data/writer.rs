//! Writing lines while a tailer reads them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

/// Appends `lines` to `path` (created if missing) at about `per_sec` lines per second from a
/// tokio task, each line terminated with `\n`; resolves to the number of lines written.
///
/// Writes come every 10 ms with the lines due by then, each batch in two `write` calls cut inside
/// a line, so a tailer regularly sees a partial last line, as with a real writer.
pub fn append_lines_at_rate(
    path: impl Into<PathBuf>,
    lines: Vec<String>,
    per_sec: u32,
) -> JoinHandle<anyhow::Result<u64>> {
    let path = path.into();
    tokio::spawn(async move {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .with_context(|| format!("open {}", path.display()))?;
        let per_sec = f64::from(per_sec.max(1));
        let started = tokio::time::Instant::now();
        let mut written = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while written < lines.len() {
            tick.tick().await;
            let due = ((started.elapsed().as_secs_f64() * per_sec) as usize + 1).min(lines.len());
            if due <= written {
                continue;
            }
            let mut batch = Vec::new();
            for line in &lines[written..due] {
                batch.extend_from_slice(line.as_bytes());
                batch.push(b'\n');
            }
            let cut = batch.len() - lines[due - 1].len() / 2 - 1;
            file.write_all(&batch[..cut]).await?;
            file.flush().await?;
            tokio::task::yield_now().await;
            file.write_all(&batch[cut..]).await?;
            file.flush().await?;
            written = due;
        }
        file.sync_data().await?;
        Ok(written as u64)
    })
}

#[cfg(test)]
mod tests {
    use crate::data::{GenSpec, ReadingGen};

    use super::*;

    #[tokio::test]
    async fn append_lines_at_rate_writes_every_line_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.jsonl");
        let lines = ReadingGen::new(3, GenSpec::default().start_ts, 1, 2).lines(300);
        let started = std::time::Instant::now();
        let written = append_lines_at_rate(&path, lines.clone(), 2_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(written, 300);
        assert!(
            started.elapsed() >= Duration::from_millis(120),
            "{:?}",
            started.elapsed()
        );
        let content = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            content,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>()
        );
    }
}
