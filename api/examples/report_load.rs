//! Open-loop load on `POST /op_run/report` against a running mes-api, to check the latency
//! target (p99 ≤ 20 ms at 1,000 reports/s). Latency is measured from each request's scheduled
//! time, so a stalled server is not hidden (no coordinated omission).
//!
//! `cargo run --release -p mes-api --example report_load -- 127.0.0.1:8000 1000 10 32`
//! (address, reports per second, seconds, connections). Starts one run per connection on
//! resources `LOAD-<pid>-<n>` and completes them at the end.
//!
//! For the measured figures use `edge-mes-bench --only api` (issue 5, part 3): it starts mes-api
//! against private servers, adds `GET /op_run/active`, a closed-loop maximum, CPU and memory, and
//! checks that every report and event arrived exactly once. This script is for poking at a
//! running instance.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// One keep-alive request; returns (status, body).
    async fn post(&mut self, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: load\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn run_id(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["op_run_id"].as_str().map(str::to_owned)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8000".into());
    let rate: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000.0);
    let seconds: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let connections: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(32);
    let per_conn = rate / connections as f64;
    let count = (per_conn * seconds).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / per_conn);
    let start = Instant::now() + Duration::from_millis(500);
    let mut tasks = Vec::new();
    for n in 0..connections {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            let body = format!(
                r#"{{"work_order_id":"WO-LOAD","operation_id":"OP10","resource_id":"LOAD-{}-{n}","ideal_cycle_time_s":1.0}}"#,
                std::process::id()
            );
            let (status, answer) = conn.post("/op_run/start", &body).await?;
            anyhow::ensure!(status == 201, "start: {status} {answer}");
            let id = run_id(&answer).unwrap_or_default();
            let report = format!(r#"{{"op_run_id":"{id}","good_delta":1,"scrap_delta":0}}"#);
            let mut latencies = Vec::with_capacity(count);
            let mut errors = 0usize;
            for i in 0..count {
                let due = start + interval.mul_f64(i as f64 + n as f64 / connections as f64);
                tokio::time::sleep_until(due.into()).await;
                let (status, _) = conn.post("/op_run/report", &report).await?;
                if status != 200 {
                    errors += 1;
                }
                latencies.push(due.elapsed());
            }
            conn.post("/op_run/complete", &format!(r#"{{"op_run_id":"{id}"}}"#))
                .await?;
            Ok::<_, anyhow::Error>((latencies, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await??;
        all.extend(l);
        errors += e;
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "reports {} at {rate}/s over {seconds} s, {connections} connections: errors {errors}, p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        all.len(),
        pct(0.50),
        pct(0.99),
        pct(0.999),
        all[all.len() - 1]
    );
    Ok(())
}
