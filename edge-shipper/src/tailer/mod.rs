//! The tailer: finds files, follows them, and cuts their complete lines into chunks. It knows
//! nothing of NATS; it runs on one blocking thread with plain `std` I/O and hands
//! [`TailEvent`]s to an [`EventSink`], which blocks when the publisher is behind.
//!
//! # Identity: open files by inode, sources by content
//!
//! An open file is tracked by `(device, inode)`, and its descriptor stays open after its path
//! goes away, so a renamed or deleted file is still read to its end. The *bytes* of a file are
//! named by a [`SourceKey`]: the edge box plus a CRC of the file's first line
//! ([`Fingerprint::of_head`]). Offsets in the checkpoint and in the ingest ledger belong to that
//! name. So a `copytruncate` copy that still matches the glob, a renamed file, or a re-ship after
//! the state directory was lost all map to the same source and the same offsets, and the worker's
//! ledger drops whatever was already loaded. A file whose first line is still incomplete (and
//! shorter than `max_line_bytes`) cannot be named yet and waits.
//!
//! Two open files with the same name (a copy next to its original) are both read, each from the
//! furthest offset known for the name; any overlap is deduplicated downstream.
//!
//! # Rotation and truncation
//!
//! - Rename (or delete): the open descriptor is read to its end; it is closed once it no longer
//!   matches the glob, is fully read and has not grown for `rotate_wait`.
//! - `copytruncate`: the file is shorter than what was read, or its first line no longer matches
//!   the fingerprint (checked on every rescan with a read of the first line): it is read again
//!   from offset 0 under its new name. Bytes written between the last read and the truncation are
//!   only shipped if the copy matches the glob; a truncation followed by regrowth past the read
//!   position within one rescan interval, with an identical first line, cannot be seen.
//! - A last line without a newline is never shipped: a `lines` message must end with `\n`. If the
//!   file is rotated and idle with such a tail when it is closed, the tail is logged and counted
//!   in `edge_shipper_unterminated_tail_bytes_total`, and dropped.

mod discovery;
mod events;
mod outbox;
mod source_reader;
mod tracked;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::SourceKey;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

pub use discovery::{wake_channel, watch_base, Waker};
pub use events::{Chunk, EventSink, FileOrigin, SinkClosed, TailEvent};
pub use source_reader::{CutLimits, READ_CHUNK_BYTES};

use crate::metrics as m;
use discovery::Discovery;
use outbox::{KnownOffset, Outbox};
use source_reader::ReadError;
use tracked::{head_matches, name, open_for_reading, path_str, restart, FileId, Identity, Tracked};

/// Most bytes read from one file before the next file gets its turn.
const READ_BUDGET_BYTES: u64 = 4 * 1024 * 1024;
/// Wake-ups closer together than this are coalesced into one read pass.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(20);
/// Longest sleep between two looks at the cancellation token while a batching window is open.
const CANCEL_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// `Live` is re-sent at least this often even when nothing changed.
const LIVE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct TailerConfig {
    pub pattern: String,
    pub box_id: String,
    pub limits: CutLimits,
    pub linger: Duration,
    pub rescan_interval: Duration,
    pub rotate_wait: Duration,
    /// A source without an open file is forgotten after this long (the checkpoint's TTL).
    pub forget_after: Duration,
    pub until_caught_up: bool,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOutcome {
    /// Some file has more bytes ready: pass again without waiting.
    pub more_now: bool,
    /// When the next pass is due at the latest.
    pub next_due: Instant,
    /// `until_caught_up` only: everything has been read and handed out.
    pub caught_up: bool,
}

pub struct Tailer<S> {
    cfg: TailerConfig,
    discovery: Discovery,
    wake_rx: Receiver<()>,
    files: HashMap<FileId, Tracked>,
    /// Current path of every file that matches the glob.
    by_path: HashMap<PathBuf, FileId>,
    /// Files with more bytes ready than their last read took.
    more: HashSet<FileId>,
    /// Files holding complete lines until the batching window closes.
    lingering: HashSet<FileId>,
    /// When the current batching window opened: the first change noticed (a wake-up) or the
    /// first complete line read since the last flush. It closes `linger` later, and then the
    /// lines of *every* file go out together.
    window_open: Option<Instant>,
    outbox: Outbox<S>,
    unreadable: HashSet<PathBuf>,
    next_rescan: Option<Instant>,
    live_sent: Option<LiveSent>,
    head: Vec<u8>,
    unread_bytes: Arc<AtomicU64>,
}

impl<S: EventSink> Tailer<S> {
    /// `resume` holds the checkpointed offset of each known source.
    pub fn new(cfg: TailerConfig, sink: S, resume: HashMap<SourceKey, u64>) -> (Self, Waker) {
        let (waker, wake_rx) = wake_channel();
        let seen = Instant::now();
        let known = resume
            .into_iter()
            .map(|(source, end)| (source, KnownOffset { end, seen }))
            .collect();
        let discovery = Discovery::new(&cfg.pattern, waker.clone());
        let tailer = Self {
            cfg,
            discovery,
            wake_rx,
            files: HashMap::new(),
            by_path: HashMap::new(),
            more: HashSet::new(),
            lingering: HashSet::new(),
            window_open: None,
            outbox: Outbox {
                sink,
                known,
                batch: Vec::new(),
                batch_bytes: 0,
            },
            unreadable: HashSet::new(),
            next_rescan: None,
            live_sent: None,
            head: Vec::new(),
            unread_bytes: Arc::new(AtomicU64::new(0)),
        };
        (tailer, waker)
    }

    /// Bytes in tracked files not read yet, updated after every pass.
    pub fn unread_bytes(&self) -> Arc<AtomicU64> {
        self.unread_bytes.clone()
    }

    pub fn sink(&self) -> &S {
        &self.outbox.sink
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.outbox.sink
    }

    /// Runs passes until `cancel` fires, the sink closes, or (with `until_caught_up`) all is read.
    pub fn run(mut self, cancel: &CancellationToken) {
        info!(pattern = %self.cfg.pattern, "tailer started");
        while !cancel.is_cancelled() {
            let now = Instant::now();
            let last_pass = now;
            let outcome = match self.step(now) {
                Ok(o) => o,
                Err(SinkClosed) => break,
            };
            if outcome.caught_up {
                info!("caught up: every file read to its last complete line");
                let _ = self
                    .outbox
                    .push(TailEvent::CaughtUp)
                    .and_then(|()| self.outbox.flush());
                break;
            }
            if outcome.more_now {
                continue;
            }
            let timeout = outcome.next_due.saturating_duration_since(Instant::now());
            match self.wake_rx.recv_timeout(timeout) {
                Ok(()) => {
                    // A change opens the batching window; the pass waits for it to close so
                    // that the changes of all files in the meantime are read and sent in one
                    // pass, as one burst of messages (one wake-up of the publisher, one write
                    // to NATS) instead of one per file.
                    let open = *self.window_open.get_or_insert_with(Instant::now);
                    let close = (open + self.cfg.linger).max(last_pass + MIN_PASS_INTERVAL);
                    self.wait_until(close, cancel);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(timeout),
            }
        }
        info!("tailer stopped");
    }

    /// Sleeps until `until` (in slices, to notice `cancel`), then drops the wake-ups that came
    /// meanwhile. Sleeping rather than waiting on the channel: the change events of a window
    /// then cost the notify thread a failed `try_send` each, not a wake-up of this thread.
    fn wait_until(&self, until: Instant, cancel: &CancellationToken) {
        while !cancel.is_cancelled() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(CANCEL_CHECK_INTERVAL));
        }
        while self.wake_rx.try_recv().is_ok() {}
    }

    /// One pass: rescan if due, then read every file as far as its budget allows.
    pub fn step(&mut self, now: Instant) -> Result<StepOutcome, SinkClosed> {
        let hints = self.discovery.take_hints();
        let mut full =
            self.cfg.until_caught_up || hints.overflow || self.next_rescan.is_none_or(|t| now >= t);
        // Between full passes, read only files that changed or have more to read; files with
        // lines waiting for their linger are only checked for it.
        let mut look: HashSet<FileId> = std::mem::take(&mut self.more);
        let lingering = std::mem::take(&mut self.lingering);
        if !full {
            for path in &hints.paths {
                match self.by_path.get(path) {
                    Some(id) => {
                        look.insert(*id);
                    }
                    None if self.discovery.matches(path) => full = true,
                    None => {}
                }
            }
        }
        if full {
            self.rescan(now)?;
            self.next_rescan = Some(now + self.cfg.rescan_interval);
            look = self.files.keys().copied().collect();
        }
        let mut next_due = self.next_rescan.unwrap_or(now);
        let mut more_now = false;
        let mut pending: Vec<FileId> = lingering
            .into_iter()
            .filter(|id| !look.contains(id))
            .collect();
        for id in look {
            let served = self.serve(id, now, full)?;
            let Some(t) = self.files.get_mut(&id) else {
                continue;
            };
            t.unread = served.unread;
            if !served.at_end {
                more_now = true;
                self.more.insert(id);
            }
            pending.push(id);
        }
        if let Some(due) = self.flush_window(pending, now)? {
            next_due = next_due.min(due);
        }
        let unread = self.files.values().map(|t| t.unread).sum();
        self.unread_bytes.store(unread, Ordering::Relaxed);
        if full {
            self.send_live(now)?;
        }
        self.outbox.flush()?;
        Ok(StepOutcome {
            more_now,
            next_due,
            caught_up: self.cfg.until_caught_up
                && full
                && self.more.is_empty()
                && self.lingering.is_empty(),
        })
    }

    #[instrument(skip_all)]
    fn rescan(&mut self, now: Instant) -> Result<(), SinkClosed> {
        self.discovery.ensure_watch();
        let tracked_before = self.files.len();
        // Whether a path, a match or the set of files changed (a file opened or closed):
        // `by_path` is rebuilt only then.
        let mut changed = false;
        let mut seen = HashSet::new();
        let paths = self.discovery.scan();
        if !self.unreadable.is_empty() {
            self.unreadable.retain(|p| paths.contains(p));
        }
        for path in paths {
            let meta = match fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) => {
                    debug!(path = %path.display(), error = %e, "matched path vanished");
                    continue;
                }
            };
            if !meta.is_file() {
                continue;
            }
            let id = FileId::of(&meta);
            if let Some(t) = self.files.get_mut(&id) {
                seen.insert(id);
                if t.path != path {
                    changed = true;
                    t.path = path;
                    if let Identity::Named { reader, .. } = &mut t.identity {
                        reader.set_path(path_str(&t.path));
                    }
                }
                if !t.matched {
                    info!(path = %t.path.display(), "file matches the glob again");
                    t.matched = true;
                    changed = true;
                }
                continue;
            }
            if let Some(id) = self.open(path, now) {
                seen.insert(id);
            }
        }
        changed |= self.files.len() != tracked_before;
        for t in self.files.values_mut() {
            if t.matched && !seen.contains(&t.id) {
                changed = true;
                t.matched = false;
                metrics::counter!(m::ROTATIONS_TOTAL).increment(1);
                info!(path = %t.path.display(), inode = t.id.inode,
                    "file no longer matches the glob (renamed or deleted); reading it to the end");
            }
        }
        self.check_fingerprints()?;
        let open_before_close = self.files.len();
        self.close_idle_rotated(now)?;
        changed |= self.files.len() != open_before_close;
        if changed {
            self.by_path = self
                .files
                .values()
                .filter(|t| t.matched)
                .map(|t| (t.path.clone(), t.id))
                .collect();
        }
        metrics::gauge!(m::FILES_TRACKED).set(self.files.len() as f64);
        Ok(())
    }

    fn open(&mut self, path: PathBuf, now: Instant) -> Option<FileId> {
        let opened = open_for_reading(&path).and_then(|f| {
            let meta = f.metadata()?;
            Ok((f, meta))
        });
        let (file, meta) = match opened {
            Ok(ok) => ok,
            Err(e) => {
                if self.unreadable.insert(path.clone()) {
                    warn!(path = %path.display(), error = %e, "cannot open file; retrying on later rescans");
                }
                return None;
            }
        };
        if self.unreadable.remove(&path) {
            info!(path = %path.display(), "file is readable now");
        }
        let id = FileId::of(&meta);
        if !meta.is_file() || self.files.contains_key(&id) {
            return Some(id);
        }
        info!(path = %path.display(), inode = id.inode, size = meta.len(), "tracking file");
        self.files.insert(
            id,
            Tracked {
                file,
                id,
                path,
                matched: true,
                size: 0,
                last_change: now,
                identity: Identity::Waiting { tried_size: None },
                read_error_logged: false,
                unread: meta.len(),
            },
        );
        Some(id)
    }

    /// Re-reads the first line of every named file that no longer matches the glob (before it
    /// may be closed): a different one means it was truncated and rewritten. Matched files are
    /// checked by [`serve`](Self::serve) in the same full pass.
    fn check_fingerprints(&mut self) -> Result<(), SinkClosed> {
        let max_prefix = self.cfg.limits.max_line_bytes;
        for t in self.files.values_mut().filter(|t| !t.matched) {
            if !head_matches(t, max_prefix, &mut self.head) {
                restart(t, &mut self.outbox, "first line changed")?;
            }
        }
        Ok(())
    }

    fn close_idle_rotated(&mut self, now: Instant) -> Result<(), SinkClosed> {
        let rotate_wait = self.cfg.rotate_wait;
        let mut closing = Vec::new();
        for t in self.files.values_mut() {
            if t.matched {
                continue;
            }
            let size = t.file.metadata().map_or(t.size, |m| m.len());
            let read_to = match &t.identity {
                Identity::Named { reader, .. } => reader.read_pos(),
                Identity::Waiting { .. } => size,
            };
            if size != t.size || size > read_to || now.duration_since(t.last_change) < rotate_wait {
                continue;
            }
            let tail = match &mut t.identity {
                Identity::Named { reader, .. } => {
                    reader.flush(&mut |c| self.outbox.emit(c))?;
                    reader.unterminated_bytes()
                }
                Identity::Waiting { .. } => size,
            };
            if tail > 0 {
                warn!(path = %t.path.display(), offset = read_to - tail, len = tail,
                    "closing rotated file whose last line has no newline; dropping that tail");
                metrics::counter!(m::UNTERMINATED_TAIL_BYTES_TOTAL).increment(tail);
            }
            info!(path = %t.path.display(), inode = t.id.inode, "closing rotated file");
            closing.push(t.id);
        }
        for id in closing {
            self.files.remove(&id);
        }
        Ok(())
    }

    fn send_live(&mut self, now: Instant) -> Result<(), SinkClosed> {
        // An order-independent digest of the live sources: when it is unchanged and `Live` was
        // sent less than LIVE_INTERVAL ago there is nothing to do, without collecting, cloning
        // and sorting every source on every rescan.
        let digest = self
            .files
            .values()
            .filter_map(|t| match &t.identity {
                Identity::Named { reader, .. } => Some(source_digest(reader.source())),
                Identity::Waiting { .. } => None,
            })
            .fold(0u64, u64::wrapping_add);
        let recent = self.live_sent.as_ref().is_some_and(|sent| {
            sent.digest == digest && now.duration_since(sent.at) < LIVE_INTERVAL
        });
        if recent {
            return Ok(());
        }
        let mut live: Vec<SourceKey> = self
            .files
            .values()
            .filter_map(|t| match &t.identity {
                Identity::Named { reader, .. } => Some(reader.source().clone()),
                Identity::Waiting { .. } => None,
            })
            .collect();
        live.sort();
        live.dedup();
        for source in &live {
            if let Some(known) = self.outbox.known.get_mut(source) {
                known.seen = now;
            }
        }
        let forget_after = self.cfg.forget_after;
        self.outbox
            .known
            .retain(|_, k| now.saturating_duration_since(k.seen) < forget_after);
        self.live_sent = Some(LiveSent { digest, at: now });
        self.outbox.push(TailEvent::Live(live))
    }

    /// Sends the complete lines of every file in `candidates` once the batching window is over
    /// (all of them at once), else keeps them lingering; returns when the window closes.
    fn flush_window(
        &mut self,
        candidates: Vec<FileId>,
        now: Instant,
    ) -> Result<Option<Instant>, SinkClosed> {
        let pending_since = |t: &Tracked| match &t.identity {
            Identity::Named { reader, .. } => reader.pending_since(),
            Identity::Waiting { .. } => None,
        };
        let mut waiting = Vec::with_capacity(candidates.len());
        let mut opened = self.window_open;
        for id in candidates {
            if let Some(since) = self.files.get(&id).and_then(pending_since) {
                opened = Some(opened.map_or(since, |o| o.min(since)));
                waiting.push(id);
            }
        }
        let Some(opened) = opened.filter(|_| !waiting.is_empty()) else {
            // Nothing lingers: the next window opens with the next change.
            self.window_open = None;
            return Ok(None);
        };
        let due = opened + self.cfg.linger;
        if now < due && !self.cfg.until_caught_up {
            self.window_open = Some(opened);
            self.lingering.extend(waiting);
            return Ok(Some(due));
        }
        let outbox = &mut self.outbox;
        for id in waiting {
            if let Some(Tracked {
                identity: Identity::Named { reader, .. },
                ..
            }) = self.files.get_mut(&id)
            {
                reader.flush(&mut |c| outbox.emit(c))?;
                reader.shrink();
            }
        }
        self.window_open = None;
        Ok(None)
    }

    /// Reads one file: names it if needed, detects truncation, reads up to its budget. Its
    /// first line is compared with its fingerprint when it grew, and on every full pass (`full`)
    /// also when it did not.
    fn serve(&mut self, id: FileId, now: Instant, full: bool) -> Result<Served, SinkClosed> {
        let Self {
            cfg,
            files,
            outbox,
            head,
            ..
        } = self;
        let Some(t) = files.get_mut(&id) else {
            return Ok(Served::idle(0));
        };
        let size = match t.file.metadata() {
            Ok(meta) => meta.len(),
            Err(e) => {
                debug!(path = %t.path.display(), error = %e, "stat failed");
                return Ok(Served::idle(0));
            }
        };
        if size != t.size {
            t.size = size;
            t.last_change = now;
        }
        if let Identity::Named { reader, .. } = &t.identity {
            if size < reader.read_pos() {
                restart(t, outbox, "file shrank")?;
            } else if (full || size > reader.read_pos())
                && !head_matches(t, cfg.limits.max_line_bytes, head)
            {
                // Truncated and rewritten (on a full pass: to any size; else past the read
                // position): the new bytes belong to a new source.
                restart(t, outbox, "first line changed")?;
            }
        }
        if let Identity::Waiting { tried_size } = &t.identity {
            if size == 0 || *tried_size == Some(size) {
                return Ok(Served::idle(0));
            }
            name(t, cfg, outbox, size, now)?;
        }
        let Identity::Named { reader, .. } = &mut t.identity else {
            return Ok(Served::idle(0));
        };
        let mut emit = |c| outbox.emit(c);
        let outcome = match reader.read(&t.file, size, READ_BUDGET_BYTES, now, &mut emit) {
            Ok(outcome) => {
                t.read_error_logged = false;
                outcome
            }
            Err(ReadError::Closed(closed)) => return Err(closed),
            Err(ReadError::Io(e)) => {
                if !t.read_error_logged {
                    warn!(path = %t.path.display(), offset = reader.read_pos(), error = %e,
                        "read failed; retrying");
                    t.read_error_logged = true;
                }
                return Ok(Served::idle(size.saturating_sub(reader.read_pos())));
            }
        };
        if !outcome.at_end || cfg.until_caught_up {
            // A reader with more to read is not kept waiting for the window.
            reader.flush(&mut emit)?;
        }
        reader.shrink();
        Ok(Served {
            at_end: outcome.at_end,
            unread: size.saturating_sub(reader.read_pos()),
        })
    }
}

/// What the last `Live` event said, as a digest of its sources, and when.
struct LiveSent {
    digest: u64,
    at: Instant,
}

/// A source's share of the live digest (a sum of these, so file order does not matter).
fn source_digest(source: &SourceKey) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    h.finish()
}

struct Served {
    at_end: bool,
    unread: u64,
}

impl Served {
    fn idle(unread: u64) -> Self {
        Self {
            at_end: true,
            unread,
        }
    }
}

#[cfg(test)]
mod tests;
