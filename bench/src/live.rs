//! Part 2: lines appended to many files at a steady rate, each stamped with its write time; the
//! delay of every line from write to committed row (see [`crate::visibility`]), the rate held,
//! and, under the same load, the catch-up after nats-server was stopped for a while.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tracing::info;

use crate::generate::{share, LiveSeries};
use crate::report::{CatchUp, Check, LiveReport};
use crate::stack::Bench;
use crate::steady_load::{LoadShape, SteadyLoad};
use crate::writer::{now_us, LiveFile, WrittenLine};

pub async fn run(bench: &mut Bench) -> anyhow::Result<(LiveReport, Vec<Check>)> {
    let cfg = bench.config.clone();
    let rate = cfg.live_rate();
    let shape = LoadShape {
        label: "live".to_owned(),
        files: cfg.live_files,
        boxes: cfg.live_boxes,
        rate,
        shipper_sample_every: crate::monitored::SAMPLE_EVERY,
    };
    let load =
        SteadyLoad::start(bench, &shape, Duration::from_secs(cfg.live_warmup_secs())).await?;
    let window = load
        .window(bench, Duration::from_secs(cfg.live_secs()))
        .await?;

    let (catch_up_window, catch_up_skipped) = if cfg.outage_secs() == 0 {
        (None, Some("--outage-secs 0".to_owned()))
    } else if let Some(nats) = bench.servers.private_nats() {
        info!(secs = cfg.outage_secs(), "stopping nats-server under load");
        let stopped = now_us();
        nats.stop().await.context("stop nats-server")?;
        tokio::time::sleep(Duration::from_secs(cfg.outage_secs())).await;
        nats.restart().await.context("restart nats-server")?;
        let restarted = now_us();
        info!("nats-server restarted; waiting for the backlog to drain");
        load.wait_visible_before("the backlog to drain", restarted)
            .await?;
        (Some((stopped, restarted)), None)
    } else {
        (
            None,
            Some("nats-server is not ours (--use-env-servers)".to_owned()),
        )
    };

    let done = load.finish().await?;
    bench.retire(done.dep).await?;
    let figures = window.figures(&done.lines);
    Ok((
        LiveReport {
            files: cfg.live_files,
            boxes: cfg.live_boxes,
            requested_rate: rate,
            window_secs: figures.window_secs,
            rate_held: figures.rate_held,
            commit_rate: figures.commit_rate,
            latency_ms: figures.latency_ms,
            poll_interval_ms: cfg.poll_ms,
            poller: done.poller.into(),
            cpu: window.cpu,
            writer_max_gap_ms: done.written.max_gap.as_secs_f64() * 1000.0,
            catch_up: catch_up_window
                .map(|(stopped, restarted)| catch_up(&done.lines, stopped, restarted)),
            catch_up_skipped,
            total_lines: done.written.lines,
        },
        done.checks,
    ))
}

/// The catch-up figures from every line's write and visible times.
fn catch_up(lines: &[WrittenLine], stopped: i64, restarted: i64) -> CatchUp {
    let before: Vec<&WrittenLine> = lines.iter().filter(|l| l.written_us < restarted).collect();
    let backlog = before
        .iter()
        .filter(|l| l.visible_us == 0 || l.visible_us > restarted)
        .count();
    let caught_up = before
        .iter()
        .map(|l| l.visible_us)
        .max()
        .unwrap_or(restarted)
        .max(restarted);
    let first_commit = lines
        .iter()
        .map(|l| l.visible_us)
        .filter(|&v| v > restarted)
        .min()
        .unwrap_or(restarted);
    let committed = lines
        .iter()
        .filter(|l| l.visible_us > restarted && l.visible_us <= caught_up)
        .count();
    let secs = (caught_up - restarted) as f64 / 1e6;
    CatchUp {
        outage_secs: (restarted - stopped) as f64 / 1e6,
        backlog_lines: backlog as u64,
        first_commit_secs: (first_commit - restarted) as f64 / 1e6,
        catch_up_secs: secs,
        catch_up_rate: if secs > 0.0 {
            committed as f64 / secs
        } else {
            0.0
        },
    }
}

/// `files` files spread over `boxes` box dirs (`boxNN/live-NNN.jsonl`), each file one resource.
/// Returns the files and `(box id, dir)` of every box.
#[allow(clippy::type_complexity)]
pub fn layout(
    root: &Path,
    files: u32,
    boxes: u32,
    resources: u32,
    sensors: u32,
) -> anyhow::Result<(Vec<LiveFile>, Vec<(String, std::path::PathBuf)>)> {
    let boxes = boxes.clamp(1, files.max(1));
    let mut out = Vec::new();
    let mut dirs = Vec::new();
    let mut index = 0usize;
    for b in 0..boxes {
        let box_id = format!("box{:02}", b + 1);
        let dir = root.join(&box_id);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        for _ in 0..share(u64::from(files), u64::from(boxes), u64::from(b)) {
            out.push(LiveFile {
                path: dir.join(format!("live-{:03}.jsonl", index + 1)),
                series: LiveSeries {
                    box_id: box_id.clone(),
                    file: index,
                    resource: format!("SMT{:02}", index % resources.max(1) as usize + 1),
                    sensors: sensors as usize,
                },
            });
            index += 1;
        }
        dirs.push((box_id, dir));
    }
    Ok((out, dirs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(written_us: i64, visible_us: i64) -> WrittenLine {
        WrittenLine {
            end: 0,
            written_us,
            visible_us,
        }
    }

    #[test]
    fn catch_up_counts_the_backlog_and_the_drain() {
        // NATS stopped at 100, back at 200; lines written every 10.
        let lines = vec![
            line(50, 80),   // committed before the outage
            line(110, 230), // backlog
            line(150, 240), // backlog, last of it
            line(205, 235), // new line, committed while draining
            line(215, 260), // after the drain
        ];
        let c = catch_up(&lines, 100, 200);
        assert_eq!(c.backlog_lines, 2);
        assert!((c.outage_secs - 100e-6).abs() < 1e-12);
        assert!((c.first_commit_secs - 30e-6).abs() < 1e-12);
        assert!((c.catch_up_secs - 40e-6).abs() < 1e-12);
        // 3 lines committed in (200, 240] over 40 µs.
        assert!((c.catch_up_rate - 3.0 / 40e-6).abs() < 1.0);
    }

    #[test]
    fn files_are_spread_over_boxes_with_unique_names() {
        let dir = tempfile::tempdir().unwrap();
        let (files, boxes) = layout(dir.path(), 10, 4, 50, 5).unwrap();
        assert_eq!(files.len(), 10);
        assert_eq!(boxes.len(), 4);
        let per_box: Vec<usize> = boxes
            .iter()
            .map(|(id, _)| files.iter().filter(|f| &f.series.box_id == id).count())
            .collect();
        assert_eq!(per_box, [3, 3, 2, 2]);
        let mut names: Vec<_> = files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_owned())
            .collect();
        names.dedup();
        assert_eq!(names.len(), 10);
    }
}
