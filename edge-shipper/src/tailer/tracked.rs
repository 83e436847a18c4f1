//! One open file: tracked by (device, inode), named by the content of its first line, renamed
//! afresh after a truncation.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use protocol::{Fingerprint, SourceKey};
use tracing::{debug, info};

use super::outbox::{KnownOffset, Outbox};
use super::source_reader::SourceReader;
use super::{EventSink, FileOrigin, SinkClosed, TailEvent, TailerConfig};
use crate::metrics as m;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FileId {
    pub(super) dev: u64,
    pub(super) inode: u64,
}

impl FileId {
    pub(super) fn of(meta: &fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            inode: meta.ino(),
        }
    }
}

pub(super) enum Identity {
    /// First line incomplete: not nameable yet. Holds the size last tried.
    Waiting { tried_size: Option<u64> },
    Named {
        fingerprint: Fingerprint,
        reader: SourceReader,
    },
}

pub(super) struct Tracked {
    pub(super) file: File,
    pub(super) id: FileId,
    pub(super) path: PathBuf,
    /// Matched the glob on the last rescan.
    pub(super) matched: bool,
    pub(super) size: u64,
    pub(super) last_change: Instant,
    pub(super) identity: Identity,
    pub(super) read_error_logged: bool,
    /// Bytes not read yet, as of the last look.
    pub(super) unread: u64,
}

/// Whether a named file still starts with the line it was named by (a pread of that line).
/// Waiting files, and read errors other than a short file, count as matching.
pub(super) fn head_matches(t: &Tracked, max_prefix: usize, buf: &mut Vec<u8>) -> bool {
    let Identity::Named { fingerprint, .. } = &t.identity else {
        return true;
    };
    buf.resize(fingerprint.len as usize, 0);
    match t.file.read_exact_at(buf, 0) {
        Ok(()) => Fingerprint::of_head(buf, max_prefix) == Some(*fingerprint),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
        Err(e) => {
            debug!(path = %t.path.display(), error = %e, "fingerprint check failed");
            true
        }
    }
}

/// Names a waiting file from its first line and starts reading it where its source left off.
pub(super) fn name<S: EventSink>(
    t: &mut Tracked,
    cfg: &TailerConfig,
    outbox: &mut Outbox<S>,
    size: u64,
    now: Instant,
) -> Result<(), SinkClosed> {
    let max_prefix = cfg.limits.max_line_bytes;
    let mut head = vec![0u8; size.min(max_prefix as u64) as usize];
    let fingerprint = match t.file.read_exact_at(&mut head, 0) {
        Ok(()) => Fingerprint::of_head(&head, max_prefix),
        Err(e) => {
            debug!(path = %t.path.display(), error = %e, "reading the first line failed");
            None
        }
    };
    let Some(fingerprint) = fingerprint else {
        t.identity = Identity::Waiting {
            tried_size: Some(size),
        };
        return Ok(());
    };
    let source = SourceKey::new(&cfg.box_id, fingerprint);
    let known = outbox.known.get(&source).map_or(0, |k| k.end);
    let offset = if size < known {
        info!(path = %t.path.display(), %source, size, known_offset = known,
            "file is shorter than its source's known offset; reading it from the start");
        0
    } else {
        known
    };
    let entry = outbox.known.entry(source.clone()).or_insert(KnownOffset {
        end: offset,
        seen: now,
    });
    entry.seen = now;
    info!(path = %t.path.display(), %source, offset, "reading file");
    outbox.push(TailEvent::Begin {
        source: source.clone(),
        origin: FileOrigin {
            path: t.path.clone(),
            dev: t.id.dev,
            inode: t.id.inode,
        },
        offset,
    })?;
    let reader = SourceReader::new(source, path_str(&t.path), offset, cfg.limits);
    t.identity = Identity::Named {
        fingerprint,
        reader,
    };
    Ok(())
}

/// The file was truncated or rewritten: ship the complete lines already read, then name it
/// afresh and read it from 0.
pub(super) fn restart<S: EventSink>(
    t: &mut Tracked,
    outbox: &mut Outbox<S>,
    reason: &'static str,
) -> Result<(), SinkClosed> {
    if let Identity::Named { reader, .. } = &mut t.identity {
        reader.flush(&mut |c| outbox.emit(c))?;
        info!(path = %t.path.display(), source = %reader.source(), read_to = reader.read_pos(),
            reason, "file truncated; reading it from the start as a new source");
    }
    metrics::counter!(m::TRUNCATIONS_TOTAL).increment(1);
    t.identity = Identity::Waiting { tried_size: None };
    Ok(())
}

/// Opens without updating the access time on every read (saves inode writes on flash storage);
/// falls back to a plain open where `O_NOATIME` is not permitted (files of other users).
pub(super) fn open_for_reading(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        opened => opened,
    }
}

pub(super) fn path_str(path: &std::path::Path) -> Arc<str> {
    Arc::from(path.to_string_lossy().as_ref())
}
