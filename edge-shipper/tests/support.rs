//! Shared pieces of the integration tests: a private NATS with an isolated stream, the shipper
//! binary as a child process, and reading the stream back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use edge_shipper::checkpoint::{CheckpointFile, CheckpointStore};
use protocol::{BatchKind, BatchMeta, Fingerprint, Names, SourceKey};
use testkit::NatsServer;

pub const SITE: &str = "plant-1";
pub const BOX: &str = "box-7";
/// Upper bound for any condition a test polls for.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One test's world: a private nats-server, isolated names, a data dir and a state dir.
pub struct World {
    pub nats: NatsServer,
    pub names: Names,
    pub tag: String,
    pub dir: tempfile::TempDir,
}

impl World {
    pub async fn new(test: &str) -> World {
        let nats = NatsServer::start().await.expect("nats-server starts");
        let tag = testkit::unique_name(test);
        World {
            nats,
            names: Names::isolated(&tag),
            tag,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        let d = self.dir.path().join("hot");
        std::fs::create_dir_all(&d).expect("data dir");
        d
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn watch(&self) -> String {
        format!("{}/*.jsonl", self.data_dir().display())
    }

    pub async fn js(&self) -> jetstream::Context {
        let client = async_nats::connect(self.nats.url())
            .await
            .expect("connect to nats");
        jetstream::new(client)
    }

    /// The readings stream, as the worker would create it.
    pub async fn create_stream(&self) {
        self.js()
            .await
            .create_stream(stream::Config {
                name: self.names.readings_stream.clone(),
                subjects: vec![self.names.readings_filter()],
                storage: stream::StorageType::File,
                discard: stream::DiscardPolicy::New,
                duplicate_window: protocol::streams::DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .expect("create stream");
    }

    /// Every message in the stream, in stream order.
    pub async fn shipped(&self) -> Vec<Shipped> {
        let js = self.js().await;
        let stream = js
            .get_stream(&self.names.readings_stream)
            .await
            .expect("stream exists");
        let info = stream.get_info().await.expect("stream info");
        let mut out = Vec::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if info.state.messages == 0 {
                break;
            }
            let msg = stream.get_raw_message(seq).await.expect("raw message");
            assert_eq!(msg.subject.as_str(), self.names.readings_subject(SITE, BOX));
            let meta = BatchMeta::from_headers(|k| msg.headers.get(k).map(|v| v.as_str()))
                .expect("protocol headers");
            meta.check_payload(&msg.payload)
                .expect("payload matches headers");
            let msg_id = msg
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_owned())
                .expect("Nats-Msg-Id");
            assert_eq!(msg_id, meta.msg_id());
            out.push(Shipped {
                meta,
                payload: msg.payload.to_vec(),
            });
        }
        out
    }

    /// Polls the stream until it holds every complete line of `files`; returns the messages.
    pub async fn wait_for_all(&self, files: &[PathBuf]) -> Vec<Shipped> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let shipped = self.shipped().await;
            if covers_all(&shipped, files) {
                return shipped;
            }
            assert!(
                Instant::now() < deadline,
                "not everything shipped in time: {} messages",
                shipped.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the stream holds at least `n` messages.
    pub async fn wait_for_messages(&self, n: u64) {
        let deadline = Instant::now() + PATIENCE;
        let js = self.js().await;
        loop {
            if let Ok(stream) = js.get_stream(&self.names.readings_stream).await {
                if stream.cached_info().state.messages >= n {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "fewer than {n} messages in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn checkpoint(&self) -> Option<CheckpointFile> {
        CheckpointStore::open(&self.state_dir())
            .expect("state dir")
            .load()
            .expect("checkpoint readable")
    }

    /// The shipper's command line for this world.
    pub fn args(&self) -> Vec<String> {
        [
            "--watch",
            &self.watch(),
            "--state-dir",
            &self.state_dir().display().to_string(),
            "--site",
            SITE,
            "--box-id",
            BOX,
            "--nats-url",
            &self.nats.url(),
            "--namespace",
            &self.tag,
            "--linger-ms",
            "20",
            "--rescan-interval-ms",
            "100",
            "--checkpoint-interval-ms",
            "100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    pub fn spawn(&self, extra: &[&str]) -> Shipper {
        Shipper::spawn(self.args(), extra, &self.dir.path().join("shipper.log"))
    }
}

/// One message read back from the stream.
#[derive(Debug, Clone)]
pub struct Shipped {
    pub meta: BatchMeta,
    pub payload: Vec<u8>,
}

/// The shipper binary running as a child process; killed on drop.
pub struct Shipper {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Shipper {
    fn spawn(args: Vec<String>, extra: &[&str], log: &Path) -> Shipper {
        let bin = testkit::bins::bin_path("edge-shipper").expect("edge-shipper is built");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = tokio::process::Command::new(bin)
            .args(args)
            .args(extra)
            .env("RUST_LOG", "info,edge_shipper=debug,async_nats=warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn edge-shipper");
        Shipper {
            child,
            log: log.to_owned(),
        }
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("shipper still running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the exit, failing the test after [`PATIENCE`].
    pub async fn wait(&mut self) -> ExitStatus {
        match tokio::time::timeout(PATIENCE, self.child.wait()).await {
            Ok(status) => status.expect("wait for shipper"),
            Err(_) => panic!("shipper did not exit; log:\n{}", self.log_text()),
        }
    }

    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill shipper");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A JSONL line unique to `file` and `n` (without its newline).
pub fn line(file: &str, n: usize) -> String {
    format!(
        r#"{{"ts":"2025-08-22T00:00:{:02}Z","resource_id":"{file}","sensor":"temp","value":{n}}}"#,
        n % 60
    )
}

pub fn write_lines(path: &Path, file: &str, range: std::ops::Range<usize>) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open data file");
    let mut buf = String::new();
    for n in range {
        buf.push_str(&line(file, n));
        buf.push('\n');
    }
    f.write_all(buf.as_bytes()).expect("append");
}

pub fn source_of(path: &Path) -> (SourceKey, Vec<u8>) {
    let content = std::fs::read(path).expect("read data file");
    let fp = Fingerprint::of_head(&content, protocol::reading::DEFAULT_MAX_LINE_BYTES)
        .expect("first line complete");
    (SourceKey::new(BOX, fp), content)
}

fn complete_len(content: &[u8]) -> u64 {
    content
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1) as u64
}

/// Byte coverage of one source: merged ranges.
fn coverage(shipped: &[Shipped], source: &SourceKey) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = shipped
        .iter()
        .filter(|s| &s.meta.source == source)
        .map(|s| (s.meta.range.start, s.meta.range.end))
        .collect();
    ranges.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

pub fn covers_all(shipped: &[Shipped], files: &[PathBuf]) -> bool {
    files.iter().all(|f| {
        let (source, content) = source_of(f);
        coverage(shipped, &source) == vec![(0, complete_len(&content))]
    })
}

/// Every message carries the exact bytes of its range, with the right headers, and the union of
/// ranges per file is the whole file (duplicates allowed).
pub fn assert_no_loss(shipped: &[Shipped], files: &[PathBuf]) {
    let mut by_source: BTreeMap<SourceKey, Vec<u8>> = BTreeMap::new();
    for f in files {
        let (source, content) = source_of(f);
        let end = complete_len(&content);
        assert_eq!(
            coverage(shipped, &source),
            vec![(0, end)],
            "coverage of {}",
            f.display()
        );
        by_source.insert(source, content);
    }
    for s in shipped {
        assert_eq!(s.meta.site, SITE);
        assert_eq!(s.meta.box_id, BOX);
        assert_eq!(s.meta.kind, BatchKind::Lines);
        let content = by_source
            .get(&s.meta.source)
            .unwrap_or_else(|| panic!("unknown source {}", s.meta.source));
        let (a, b) = (s.meta.range.start as usize, s.meta.range.end as usize);
        assert_eq!(
            &s.payload[..],
            &content[a..b],
            "payload of {}",
            s.meta.msg_id()
        );
    }
}

/// [`assert_no_loss`], and no byte range was shipped twice.
pub fn assert_exactly_once(shipped: &[Shipped], files: &[PathBuf]) {
    assert_no_loss(shipped, files);
    let mut ranges: Vec<(&SourceKey, u64, u64)> = shipped
        .iter()
        .map(|s| (&s.meta.source, s.meta.range.start, s.meta.range.end))
        .collect();
    ranges.sort();
    for pair in ranges.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert!(
                pair[0].2 <= pair[1].1,
                "range shipped twice: {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
    }
}

/// The checkpoint holds each file's source at the end of its complete lines.
pub fn assert_checkpointed(checkpoint: &CheckpointFile, files: &[PathBuf]) {
    for f in files {
        let (source, content) = source_of(f);
        let entry = checkpoint
            .sources
            .iter()
            .find(|e| e.source == source.as_str())
            .unwrap_or_else(|| panic!("no checkpoint entry for {}", f.display()));
        assert_eq!(entry.offset, complete_len(&content), "{}", f.display());
    }
    assert_eq!(checkpoint.box_id, BOX);
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
