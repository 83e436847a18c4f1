//! Part 4: peak RSS and CPU of one edge-shipper tailing many files that grow slowly (an edge box
//! is small). A worker drains the stream meanwhile; its cost is not counted here.

use std::time::{Duration, Instant};

use tracing::info;

use crate::live::layout;
use crate::monitored::terminate_all;
use crate::procstat;
use crate::report::{Check, FootprintReport};
use crate::stack::{wait_until, Bench};
use crate::writer::{LineLogs, RateWriter};

const EXIT_LIMIT: Duration = Duration::from_secs(60);

pub async fn run(bench: &Bench) -> anyhow::Result<(FootprintReport, Vec<Check>)> {
    let cfg = &bench.config;
    let total = Duration::from_secs(cfg.footprint_secs());
    let warmup = Duration::from_secs(5).min(total / 2);
    let dep = bench.deploy("footprint").await?;
    let (files, boxes) = layout(
        &bench.dir("footprint")?,
        cfg.footprint_files,
        1,
        cfg.resources,
        cfg.sensors,
    )?;
    let worker = bench.spawn("footprint-worker", bench.worker(&dep))?;
    let logs = LineLogs::new(files.len());
    let writer = RateWriter::start(files, f64::from(cfg.footprint_rate), logs, cfg.seed)?;
    let (box_id, dir) = &boxes[0];
    let shipper = bench.spawn(
        "footprint-shipper",
        bench.shipper(&dep, box_id, dir, false)?,
    )?;
    let t0 = Instant::now();
    info!(
        files = cfg.footprint_files,
        rate = cfg.footprint_rate,
        secs = total.as_secs(),
        "footprint run started"
    );

    tokio::time::sleep(warmup).await;
    let (t_warm, ticks_warm) = (Instant::now(), shipper.cpu_ticks());
    tokio::time::sleep(total.saturating_sub(t0.elapsed())).await;
    let (t_end, ticks_end) = (Instant::now(), shipper.cpu_ticks());
    let peak_now = shipper.peak_rss_kib();

    let written = writer.stop().await?;
    wait_until(
        "the footprint lines to be committed",
        Duration::from_secs(cfg.drain_timeout_secs),
        &[&shipper, &worker],
        || async { Ok(dep.rows_loaded().await? >= written.lines) },
    )
    .await?;
    let exits = terminate_all(vec![shipper, worker], EXIT_LIMIT).await?;
    for e in &exits {
        e.ensure_success()?;
    }
    let checks = vec![
        Check::equal(
            "footprint: ledger sum(rows_loaded)",
            written.lines,
            dep.rows_loaded().await?,
        ),
        Check::equal(
            "footprint: count(*) of readings",
            written.lines,
            dep.readings().await?,
        ),
    ];
    bench.retire(dep).await?;

    let pct =
        |ticks: u64, wall: Duration| 100.0 * procstat::secs(ticks) / wall.as_secs_f64().max(1e-9);
    Ok((
        FootprintReport {
            files: cfg.footprint_files,
            rate: cfg.footprint_rate,
            secs: (t_end - t0).as_secs_f64(),
            lines: written.lines,
            peak_rss_kib: peak_now.max(exits[0].peak_rss_kib),
            cpu_pct_whole: pct(ticks_end, t_end - t0),
            cpu_pct_steady: pct(ticks_end.saturating_sub(ticks_warm), t_end - t_warm),
            warmup_secs: (t_warm - t0).as_secs_f64(),
        },
        checks,
    ))
}
