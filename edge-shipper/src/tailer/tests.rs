use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use protocol::framing::OVERSIZE_PREFIX_BYTES;
use protocol::{BatchKind, ByteRange, Fingerprint};

use super::*;

const BOX: &str = "box1";

fn config(dir: &Path) -> TailerConfig {
    TailerConfig {
        pattern: format!("{}/*.jsonl", dir.display()),
        box_id: BOX.into(),
        limits: CutLimits {
            max_message_bytes: 256 * 1024,
            max_line_bytes: 64 * 1024,
        },
        linger: Duration::ZERO,
        rescan_interval: Duration::from_millis(500),
        rotate_wait: Duration::from_secs(5),
        forget_after: Duration::from_secs(7 * 24 * 3600),
        until_caught_up: false,
    }
}

/// Drives a tailer with a simulated clock: every `pass` advances it by one rescan interval.
struct Harness {
    tailer: Tailer<Vec<TailEvent>>,
    now: Instant,
}

impl Harness {
    fn new(cfg: TailerConfig) -> Self {
        Self::resuming(cfg, HashMap::new())
    }

    fn resuming(cfg: TailerConfig, resume: HashMap<SourceKey, u64>) -> Self {
        let (tailer, _waker) = Tailer::new(cfg, Vec::new(), resume);
        Self {
            tailer,
            now: Instant::now(),
        }
    }

    /// One rescan and reads until nothing more is ready.
    fn pass(&mut self) -> StepOutcome {
        self.now += Duration::from_secs(1);
        loop {
            let outcome = self.tailer.step(self.now).unwrap();
            if !outcome.more_now {
                return outcome;
            }
        }
    }

    fn events(&mut self) -> Vec<TailEvent> {
        std::mem::take(self.tailer.sink_mut())
    }

    fn chunks(&mut self) -> Vec<Chunk> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                TailEvent::Chunk(c) => Some(c),
                _ => None,
            })
            .collect()
    }
}

fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn line(file: &str, n: usize) -> String {
    format!("{{\"file\":\"{file}\",\"n\":{n}}}\n")
}

fn key_of(content: &[u8]) -> SourceKey {
    SourceKey::new(BOX, Fingerprint::of_head(content, 64 * 1024).unwrap())
}

/// Every chunk's payload is the exact bytes of its range, and per source the ranges tile
/// `[from, end)` without gap or overlap.
fn assert_tiles(chunks: &[Chunk], source: &SourceKey, content: &[u8], from: u64) {
    let mut mine: Vec<&Chunk> = chunks.iter().filter(|c| &c.source == source).collect();
    mine.sort_by_key(|c| c.range.start);
    let mut pos = from;
    for c in &mine {
        assert_eq!(c.range.start, pos, "gap or overlap at {pos}");
        let bytes = &content[c.range.start as usize..c.range.end as usize];
        if c.kind == BatchKind::Lines {
            assert_eq!(&c.payload[..], bytes);
            assert_eq!(c.lines, protocol::framing::count_lines(bytes));
        }
        pos = c.range.end;
    }
    assert_eq!(pos, content.len() as u64, "not read to the end");
}

#[test]
fn appended_lines_are_read_once_with_exact_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let mut content = Vec::new();
    for n in 0..3 {
        content.extend_from_slice(line("a", n).as_bytes());
    }
    append(&path, &content);
    let mut h = Harness::new(config(dir.path()));
    h.pass();
    let events = h.events();
    let source = key_of(&content);
    assert!(matches!(&events[0], TailEvent::Begin { source: s, offset: 0, .. } if *s == source));
    let first: Vec<Chunk> = events
        .into_iter()
        .filter_map(|e| match e {
            TailEvent::Chunk(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].lines, 3);
    for n in 3..10 {
        let l = line("a", n);
        append(&path, l.as_bytes());
        content.extend_from_slice(l.as_bytes());
        h.pass();
    }
    let mut all = first;
    all.extend(h.chunks());
    assert_tiles(&all, &source, &content, 0);
    assert_eq!(all.iter().map(|c| c.lines).sum::<u64>(), 10);
    h.pass();
    assert!(h.chunks().is_empty(), "nothing is read twice");
}

#[test]
fn a_partial_line_is_shipped_only_once_completed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    append(&path, b"{\"first\":1}\n{\"second\":");
    let mut h = Harness::new(config(dir.path()));
    h.pass();
    let chunks = h.chunks();
    assert_eq!(chunks.len(), 1);
    assert_eq!(&chunks[0].payload[..], b"{\"first\":1}\n");
    append(&path, b"2}");
    h.pass();
    assert!(h.chunks().is_empty());
    append(&path, b"\n");
    h.pass();
    let chunks = h.chunks();
    assert_eq!(chunks.len(), 1);
    assert_eq!(&chunks[0].payload[..], b"{\"second\":2}\n");
    assert_eq!(chunks[0].range, ByteRange { start: 12, end: 25 });
}

#[test]
fn a_file_whose_first_line_is_incomplete_waits_to_be_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    append(&path, b"{\"first\":");
    let mut h = Harness::new(config(dir.path()));
    h.pass();
    assert!(h.events().iter().all(|e| matches!(e, TailEvent::Live(_))));
    append(&path, b"1}\n");
    h.pass();
    let chunks = h.chunks();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].source, key_of(b"{\"first\":1}\n"));
}

#[test]
fn rename_rotation_while_writing_reads_every_line_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.jsonl");
    let rotated = dir.path().join("app.jsonl.1");
    let mut cfg = config(dir.path());
    cfg.rotate_wait = Duration::from_secs(3);
    let mut h = Harness::new(cfg);
    let mut writer = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let mut old = Vec::new();
    let mut chunks = Vec::new();
    for n in 0..50 {
        let l = line("old", n);
        writer.write_all(l.as_bytes()).unwrap();
        old.extend_from_slice(l.as_bytes());
        if n == 20 {
            h.pass();
            chunks.extend(h.chunks());
        }
    }
    // Rotate: the writer keeps its descriptor and writes a few more lines into the renamed file.
    std::fs::rename(&path, &rotated).unwrap();
    for n in 50..60 {
        let l = line("old", n);
        writer.write_all(l.as_bytes()).unwrap();
        old.extend_from_slice(l.as_bytes());
    }
    drop(writer);
    let mut new = Vec::new();
    for n in 0..30 {
        let l = line("new", n);
        append(&path, l.as_bytes());
        new.extend_from_slice(l.as_bytes());
        if n == 10 {
            h.pass();
            chunks.extend(h.chunks());
        }
    }
    for _ in 0..5 {
        h.pass();
        chunks.extend(h.chunks());
    }
    assert_tiles(&chunks, &key_of(&old), &old, 0);
    assert_tiles(&chunks, &key_of(&new), &new, 0);
    assert_eq!(chunks.iter().map(|c| c.lines).sum::<u64>(), 90);
    assert_eq!(h.tailer.files.len(), 1, "the idle rotated file is closed");
}

#[test]
fn copytruncate_restarts_at_zero_under_a_new_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.jsonl");
    let before = format!("{}{}", line("before", 0), line("before", 1));
    append(&path, before.as_bytes());
    let mut h = Harness::new(config(dir.path()));
    h.pass();
    let chunks = h.chunks();
    assert_tiles(&chunks, &key_of(before.as_bytes()), before.as_bytes(), 0);

    // Truncate and write more than was there before: only the first line tells.
    std::fs::copy(&path, dir.path().join("app.jsonl.1.bak")).unwrap();
    std::fs::write(&path, b"").unwrap();
    let mut after = Vec::new();
    for n in 0..5 {
        after.extend_from_slice(line("after", n).as_bytes());
    }
    append(&path, &after);
    h.pass();
    let chunks = h.chunks();
    let source = key_of(&after);
    assert_ne!(source, key_of(before.as_bytes()));
    assert_tiles(&chunks, &source, &after, 0);
    assert_eq!(chunks.len(), 1);
}

#[test]
fn truncation_to_a_shorter_file_is_detected_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.jsonl");
    let mut before = Vec::new();
    for n in 0..20 {
        before.extend_from_slice(line("x", n).as_bytes());
    }
    append(&path, &before);
    let mut h = Harness::new(config(dir.path()));
    h.pass();
    h.chunks();
    std::fs::write(&path, line("y", 0)).unwrap();
    h.pass();
    let chunks = h.chunks();
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        chunks[0].range,
        ByteRange {
            start: 0,
            end: line("y", 0).len() as u64
        }
    );
}

#[test]
fn a_file_deleted_while_being_read_is_read_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.jsonl");
    let mut content = Vec::new();
    let mut n = 0;
    while content.len() < 3 * READ_BUDGET_BYTES as usize {
        content.extend_from_slice(line("big", n).as_bytes());
        n += 1;
    }
    append(&path, &content);
    let mut h = Harness::new(config(dir.path()));
    h.now += Duration::from_secs(1);
    let first = h.tailer.step(h.now).unwrap();
    assert!(first.more_now, "one step reads only one budget");
    std::fs::remove_file(&path).unwrap();
    h.pass();
    let chunks = h.chunks();
    assert_tiles(&chunks, &key_of(&content), &content, 0);
    assert_eq!(chunks.iter().map(|c| c.lines).sum::<u64>(), n as u64);
    assert!(chunks.iter().all(|c| c.payload.len() <= 256 * 1024));
}

#[test]
fn a_10_mb_line_is_one_oversize_chunk_and_later_lines_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let mut content = line("a", 0).into_bytes();
    let long_start = content.len() as u64;
    content.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    content.push(b'\n');
    let long_end = content.len() as u64;
    content.extend_from_slice(line("a", 2).as_bytes());
    content.extend_from_slice(line("a", 3).as_bytes());
    // Written in pieces so the long line is seen unfinished first.
    let mut h = Harness::new(config(dir.path()));
    append(&path, &content[..5 * 1024 * 1024]);
    h.pass();
    append(&path, &content[5 * 1024 * 1024..]);
    h.pass();
    let chunks = h.chunks();
    let over: Vec<&Chunk> = chunks
        .iter()
        .filter(|c| c.kind == BatchKind::Oversize)
        .collect();
    assert_eq!(over.len(), 1);
    assert_eq!(
        over[0].range,
        ByteRange {
            start: long_start,
            end: long_end
        }
    );
    assert_eq!(over[0].lines, 1);
    assert_eq!(over[0].payload.len(), OVERSIZE_PREFIX_BYTES);
    assert!(over[0].payload.iter().all(|&b| b == b'x'));
    assert_tiles(&chunks, &key_of(&content), &content, 0);
    let last = chunks.last().unwrap();
    assert_eq!(last.kind, BatchKind::Lines);
    assert_eq!(last.lines, 2);
}

#[test]
fn an_empty_file_yields_nothing_until_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    append(&path, b"");
    let mut h = Harness::new(config(dir.path()));
    h.pass();
    assert!(h.chunks().is_empty());
    assert_eq!(h.tailer.files.len(), 1);
    append(&path, line("a", 0).as_bytes());
    h.pass();
    assert_eq!(h.chunks().len(), 1);
}

#[test]
fn crlf_and_blank_lines_pass_through_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let content = b"{\"a\":1}\r\n\n\r\n{\"b\":2}\r\n";
    append(&path, content);
    let mut h = Harness::new(config(dir.path()));
    h.pass();
    let chunks = h.chunks();
    assert_eq!(chunks.len(), 1);
    assert_eq!(&chunks[0].payload[..], content);
    assert_eq!(chunks[0].lines, 4);
}

#[test]
fn directories_and_non_matching_files_are_skipped_and_new_files_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dir.jsonl")).unwrap();
    append(&dir.path().join("other.txt"), line("txt", 0).as_bytes());
    let mut h = Harness::new(config(dir.path()));
    h.pass();
    assert!(h.chunks().is_empty());
    assert!(h.tailer.files.is_empty());
    let later = line("later", 0);
    append(&dir.path().join("later.jsonl"), later.as_bytes());
    h.pass();
    let chunks = h.chunks();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].source, key_of(later.as_bytes()));
}

#[test]
fn a_checkpointed_source_resumes_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let content = format!("{}{}{}", line("a", 0), line("a", 1), line("a", 2));
    append(&path, content.as_bytes());
    let source = key_of(content.as_bytes());
    let offset = line("a", 0).len() as u64;
    let mut h = Harness::resuming(
        config(dir.path()),
        HashMap::from([(source.clone(), offset)]),
    );
    h.pass();
    let chunks = h.chunks();
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        chunks[0].range,
        ByteRange {
            start: offset,
            end: content.len() as u64
        }
    );
}

#[test]
fn a_file_shorter_than_its_checkpoint_is_read_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let content = line("a", 0);
    append(&path, content.as_bytes());
    let source = key_of(content.as_bytes());
    let mut h = Harness::resuming(config(dir.path()), HashMap::from([(source, 10_000)]));
    h.pass();
    let chunks = h.chunks();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].range.start, 0);
}

#[test]
fn a_copy_with_the_same_first_line_reads_from_the_furthest_known_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let mut content = Vec::new();
    for n in 0..4 {
        content.extend_from_slice(line("a", n).as_bytes());
    }
    append(&path, &content);
    let mut h = Harness::new(config(dir.path()));
    h.pass();
    h.chunks();
    // The copy has two more lines than the original had when it was read.
    let mut copy = content.clone();
    copy.extend_from_slice(line("a", 4).as_bytes());
    copy.extend_from_slice(line("a", 5).as_bytes());
    append(&dir.path().join("a.copy.jsonl"), &copy);
    h.pass();
    let chunks = h.chunks();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].source, key_of(&content));
    assert_eq!(
        chunks[0].range,
        ByteRange {
            start: content.len() as u64,
            end: copy.len() as u64
        }
    );
}

#[test]
fn lines_linger_until_due_then_go_as_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let mut cfg = config(dir.path());
    cfg.linger = Duration::from_millis(50);
    let mut h = Harness::new(cfg);
    append(&path, line("a", 0).as_bytes());
    append(&path, line("a", 1).as_bytes());
    h.now += Duration::from_secs(1);
    let outcome = h.tailer.step(h.now).unwrap();
    assert!(h.chunks().is_empty());
    assert_eq!(outcome.next_due, h.now + Duration::from_millis(50));
    let outcome = h.tailer.step(h.now + Duration::from_millis(10)).unwrap();
    assert!(h.chunks().is_empty());
    assert_eq!(outcome.next_due, h.now + Duration::from_millis(50));
    h.tailer.step(h.now + Duration::from_millis(50)).unwrap();
    let chunks = h.chunks();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].lines, 2);
}

#[test]
fn lines_of_all_files_go_out_together_when_the_first_window_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.linger = Duration::from_millis(50);
    // Every step is a full pass, so each one reads every file without waiting for notify.
    cfg.rescan_interval = Duration::from_millis(1);
    let mut h = Harness::new(cfg);
    let ms = Duration::from_millis;
    let t0 = h.now + Duration::from_secs(1);
    append(&dir.path().join("a.jsonl"), line("a", 0).as_bytes());
    h.tailer.step(t0).unwrap();
    assert!(h.chunks().is_empty());

    // b's line is read 30 ms later; it does not get a window of its own.
    append(&dir.path().join("b.jsonl"), line("b", 0).as_bytes());
    h.tailer.step(t0 + ms(30)).unwrap();
    h.tailer.step(t0 + ms(49)).unwrap();
    assert!(h.chunks().is_empty());

    h.tailer.step(t0 + ms(50)).unwrap();
    let mut sent: Vec<String> = h
        .chunks()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.payload).into_owned())
        .collect();
    sent.sort();
    assert_eq!(sent, [line("a", 0), line("b", 0)]);

    // The next line opens a new window from when it is read.
    append(&dir.path().join("b.jsonl"), line("b", 1).as_bytes());
    let t1 = t0 + ms(70);
    h.tailer.step(t1).unwrap();
    h.tailer.step(t1 + ms(49)).unwrap();
    assert!(h.chunks().is_empty());
    h.tailer.step(t1 + ms(50)).unwrap();
    assert_eq!(h.chunks().len(), 1);
}

#[test]
fn until_caught_up_reports_once_everything_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.until_caught_up = true;
    cfg.linger = Duration::from_secs(10);
    let mut totals = BTreeMap::new();
    for f in 0..3 {
        let mut content = String::new();
        for n in 0..1000 {
            content.push_str(&line(&f.to_string(), n));
        }
        content.push_str("{\"unterminated\":");
        append(&dir.path().join(format!("{f}.jsonl")), content.as_bytes());
        totals.insert(f, content);
    }
    let mut h = Harness::new(cfg);
    let outcome = h.pass();
    assert!(outcome.caught_up);
    let chunks = h.chunks();
    assert_eq!(chunks.iter().map(|c| c.lines).sum::<u64>(), 3000);
}

#[test]
fn a_rotated_file_with_an_unterminated_tail_is_closed_after_rotate_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    append(&path, format!("{}{{\"cut", line("a", 0)).as_bytes());
    let mut cfg = config(dir.path());
    cfg.rotate_wait = Duration::from_secs(3);
    let mut h = Harness::new(cfg);
    h.pass();
    assert_eq!(h.chunks().len(), 1);
    std::fs::rename(&path, dir.path().join("a.old")).unwrap();
    h.pass();
    assert_eq!(h.tailer.files.len(), 1, "kept open during rotate_wait");
    for _ in 0..4 {
        h.pass();
    }
    assert!(h.tailer.files.is_empty());
    assert!(
        h.chunks().is_empty(),
        "the unterminated tail is not shipped"
    );
}

#[test]
fn live_lists_the_sources_with_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let content = line("a", 0);
    append(&dir.path().join("a.jsonl"), content.as_bytes());
    let mut h = Harness::new(config(dir.path()));
    h.pass();
    h.pass();
    let lives: Vec<Vec<SourceKey>> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            TailEvent::Live(l) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(lives.last().unwrap(), &vec![key_of(content.as_bytes())]);
}
