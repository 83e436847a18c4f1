//! What the tailer hands to the rest of the shipper.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use protocol::{BatchKind, ByteRange, SourceKey};

/// One message worth of a source: complete lines (`Lines`), or one overlong line (`Oversize`)
/// whose payload is only the line's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub source: SourceKey,
    /// Path the bytes were read through (informational, goes into a header).
    pub path: Arc<str>,
    pub range: ByteRange,
    pub lines: u64,
    pub kind: BatchKind,
    pub payload: Bytes,
}

/// Where an open file comes from, for the checkpoint's informational fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOrigin {
    pub path: PathBuf,
    pub dev: u64,
    pub inode: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailEvent {
    /// A file is now read as `source`, starting at `offset`: bytes below it count as shipped.
    Begin {
        source: SourceKey,
        origin: FileOrigin,
        offset: u64,
    },
    Chunk(Chunk),
    /// Sources that currently have an open file, sorted and without duplicates; their checkpoint
    /// entries must not expire.
    Live(Vec<SourceKey>),
    /// `--until-caught-up`: every matching file has been read to its last complete line.
    CaughtUp,
}

/// The receiving side went away (shutdown): the tailer stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the event receiver is closed")]
pub struct SinkClosed;

/// Where the tailer puts its events, in order, a batch at a time. Blocking: a full sink is how
/// back-pressure reaches the tailer.
pub trait EventSink {
    fn send(&mut self, events: Vec<TailEvent>) -> Result<(), SinkClosed>;
}

impl EventSink for Vec<TailEvent> {
    fn send(&mut self, events: Vec<TailEvent>) -> Result<(), SinkClosed> {
        self.extend(events);
        Ok(())
    }
}

impl EventSink for tokio::sync::mpsc::Sender<Vec<TailEvent>> {
    fn send(&mut self, events: Vec<TailEvent>) -> Result<(), SinkClosed> {
        self.blocking_send(events).map_err(|_| SinkClosed)
    }
}
