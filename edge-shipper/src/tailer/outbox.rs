//! Hands the tailer's events over in batches and remembers how far each source was read.

use std::collections::HashMap;
use std::time::Instant;

use protocol::SourceKey;

use super::{Chunk, EventSink, SinkClosed, TailEvent};

/// A batch of events is handed over once it holds this many chunk bytes or events, and at the
/// end of every pass.
const BATCH_BYTES: usize = 1024 * 1024;
const BATCH_EVENTS: usize = 256;

/// How far a source has been read (or was checkpointed), and when it last had an open file.
#[derive(Debug, Clone, Copy)]
pub(super) struct KnownOffset {
    pub(super) end: u64,
    pub(super) seen: Instant,
}

/// Collects a pass's events into batches for the sink (one hand-over per batch, not per chunk)
/// and remembers how far each source has been read.
pub(super) struct Outbox<S> {
    pub(super) sink: S,
    pub(super) known: HashMap<SourceKey, KnownOffset>,
    pub(super) batch: Vec<TailEvent>,
    pub(super) batch_bytes: usize,
}

impl<S: EventSink> Outbox<S> {
    pub(super) fn emit(&mut self, chunk: Chunk) -> Result<(), SinkClosed> {
        if let Some(known) = self.known.get_mut(&chunk.source) {
            known.end = known.end.max(chunk.range.end);
        }
        self.batch_bytes += chunk.payload.len();
        self.push(TailEvent::Chunk(chunk))
    }

    pub(super) fn push(&mut self, event: TailEvent) -> Result<(), SinkClosed> {
        self.batch.push(event);
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_EVENTS {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the batch over; blocks while the sink is full.
    pub(super) fn flush(&mut self) -> Result<(), SinkClosed> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        self.sink.send(std::mem::take(&mut self.batch))
    }
}
