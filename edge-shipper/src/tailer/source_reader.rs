//! Reading one open file as one source: complete lines cut into messages, overlong lines
//! streamed past, a partial last line left for later.
//!
//! Bytes are passed through untouched: no JSON parsing, no per-line allocation. A read fills one
//! buffer with up to [`READ_CHUNK_BYTES`]; messages are cut from its front at the last newline that
//! keeps them within `max_message_bytes` and handed out as zero-copy [`Bytes`] slices.
//!
//! A line is overlong when its content, without `\n` or `\r\n`, is longer than `max_line_bytes`
//! (the worker's [`protocol::Limits`] measure). It becomes one `oversize` chunk: the range covers
//! the whole line including its `\n`, the payload is its first [`OVERSIZE_PREFIX_BYTES`]. Once a
//! partial line is certainly overlong, only its prefix is kept and the rest is read and dropped
//! until its newline arrives, so a 10 GB line costs no more memory than a short one.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use protocol::framing::OVERSIZE_PREFIX_BYTES;
use protocol::{BatchKind, ByteRange, SourceKey};

use super::events::{Chunk, SinkClosed};

/// Largest single read.
pub const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// A buffer left with more spare capacity than this after a read pass is shrunk.
const IDLE_BUFFER_BYTES: usize = 64 * 1024;

/// Message and line caps, checked once in the configuration: `max_message_bytes` is at least
/// `max_line_bytes + 2`, so any acceptable line (with `\r\n`) fits a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutLimits {
    pub max_message_bytes: usize,
    pub max_line_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Closed(#[from] SinkClosed),
}

/// How a call to [`SourceReader::read`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    pub bytes_read: u64,
    /// The reader reached the size it was given (or the file returned no more bytes).
    pub at_end: bool,
}

/// A line known to be overlong whose newline has not been read yet.
#[derive(Debug)]
struct OverlongLine {
    start: u64,
    /// The line's first bytes, up to [`OVERSIZE_PREFIX_BYTES`].
    prefix: Vec<u8>,
}

#[derive(Debug)]
pub struct SourceReader {
    source: SourceKey,
    path: Arc<str>,
    limits: CutLimits,
    /// File offset of `buf[0]`.
    buf_start: u64,
    /// Unemitted bytes: complete lines `[..complete]`, then a partial line. Empty while an
    /// overlong line is being skipped.
    buf: BytesMut,
    complete: usize,
    lines: u64,
    /// `buf[complete..scanned]` holds no newline.
    scanned: usize,
    first_line_at: Option<Instant>,
    overlong: Option<OverlongLine>,
}

impl SourceReader {
    pub fn new(source: SourceKey, path: Arc<str>, offset: u64, limits: CutLimits) -> Self {
        Self {
            source,
            path,
            limits,
            buf_start: offset,
            buf: BytesMut::new(),
            complete: 0,
            lines: 0,
            scanned: 0,
            first_line_at: None,
            overlong: None,
        }
    }

    pub fn source(&self) -> &SourceKey {
        &self.source
    }

    pub fn set_path(&mut self, path: Arc<str>) {
        self.path = path;
    }

    /// Next file offset to read.
    pub fn read_pos(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    /// End of everything handed out so far.
    pub fn emitted_end(&self) -> u64 {
        self.overlong.as_ref().map_or(self.buf_start, |l| l.start)
    }

    /// When the oldest complete line not yet handed out was read.
    pub fn pending_since(&self) -> Option<Instant> {
        self.first_line_at
    }

    /// Bytes read after the last complete line: a line still waiting for its `\n`.
    pub fn unterminated_bytes(&self) -> u64 {
        self.read_pos() - self.emitted_end() - self.complete as u64
    }

    /// Reads from `pos` up to `size` (or `budget` bytes), handing out every full message.
    pub fn read(
        &mut self,
        file: &File,
        size: u64,
        budget: u64,
        now: Instant,
        emit: &mut dyn FnMut(Chunk) -> Result<(), SinkClosed>,
    ) -> Result<ReadOutcome, ReadError> {
        let mut bytes_read = 0u64;
        loop {
            let pos = self.read_pos();
            if pos >= size {
                return Ok(ReadOutcome {
                    bytes_read,
                    at_end: true,
                });
            }
            if bytes_read >= budget {
                return Ok(ReadOutcome {
                    bytes_read,
                    at_end: false,
                });
            }
            let want = (size - pos)
                .min(budget - bytes_read)
                .min(READ_CHUNK_BYTES as u64) as usize;
            let old_len = self.buf.len();
            self.buf.resize(old_len + want, 0);
            let n = match file.read_at(&mut self.buf[old_len..], pos) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    self.buf.truncate(old_len);
                    return Err(e.into());
                }
            };
            self.buf.truncate(old_len + n);
            if n == 0 {
                // The file is shorter than `size` said: truncated under us; the caller checks.
                return Ok(ReadOutcome {
                    bytes_read,
                    at_end: true,
                });
            }
            bytes_read += n as u64;
            self.scan(now, emit)?;
        }
    }

    /// Hands out the complete lines read so far as one message.
    pub fn flush(
        &mut self,
        emit: &mut dyn FnMut(Chunk) -> Result<(), SinkClosed>,
    ) -> Result<(), SinkClosed> {
        if self.complete == 0 {
            return Ok(());
        }
        let payload = self.buf.split_to(self.complete).freeze();
        let range = ByteRange {
            start: self.buf_start,
            end: self.buf_start + self.complete as u64,
        };
        let lines = self.lines;
        self.buf_start = range.end;
        self.scanned -= self.complete;
        self.complete = 0;
        self.lines = 0;
        self.first_line_at = None;
        emit(Chunk {
            source: self.source.clone(),
            path: self.path.clone(),
            range,
            lines,
            kind: BatchKind::Lines,
            payload,
        })
    }

    /// Gives back memory held by a large buffer that now holds little.
    pub fn shrink(&mut self) {
        if self.buf.capacity() - self.buf.len() > IDLE_BUFFER_BYTES {
            self.buf = BytesMut::from(&self.buf[..]);
        }
    }

    fn scan(
        &mut self,
        now: Instant,
        emit: &mut dyn FnMut(Chunk) -> Result<(), SinkClosed>,
    ) -> Result<(), SinkClosed> {
        if let Some(overlong) = &mut self.overlong {
            let nl = memchr::memchr(b'\n', &self.buf);
            let line_part = nl.map_or(self.buf.len(), |nl| nl + 1);
            let room = OVERSIZE_PREFIX_BYTES.saturating_sub(overlong.prefix.len());
            overlong
                .prefix
                .extend_from_slice(&self.buf[..line_part.min(room)]);
            let Some(nl) = nl else {
                self.buf_start += self.buf.len() as u64;
                self.buf.clear();
                return Ok(());
            };
            let end = self.buf_start + nl as u64 + 1;
            let prefix = Bytes::from(std::mem::take(&mut overlong.prefix));
            let start = overlong.start;
            let chunk = self.oversize_chunk(start, end, prefix);
            self.buf.advance(nl + 1);
            self.buf_start = end;
            self.overlong = None;
            self.scanned = 0;
            emit(chunk)?;
        }
        let max_line = self.limits.max_line_bytes;
        while let Some(i) = memchr::memchr(b'\n', &self.buf[self.scanned..]) {
            let nl = self.scanned + i;
            let line_len = nl + 1 - self.complete;
            let mut content = line_len - 1;
            if content > 0 && self.buf[nl - 1] == b'\r' {
                content -= 1;
            }
            if content > max_line {
                self.flush(emit)?;
                let line = self.buf.split_to(line_len).freeze();
                let start = self.buf_start;
                self.buf_start += line_len as u64;
                self.scanned = 0;
                let prefix = line.slice(..line_len.min(OVERSIZE_PREFIX_BYTES));
                emit(self.oversize_chunk(start, self.buf_start, prefix))?;
                continue;
            }
            if nl + 1 > self.limits.max_message_bytes {
                self.flush(emit)?;
            }
            self.complete += line_len;
            self.scanned = self.complete;
            self.lines += 1;
            self.first_line_at.get_or_insert(now);
            if self.complete >= self.limits.max_message_bytes {
                self.flush(emit)?;
            }
        }
        self.scanned = self.buf.len();
        // Longer than any acceptable line even if a `\r\n` follows: stream past it.
        if self.buf.len() - self.complete >= max_line + 2 {
            self.flush(emit)?;
            let prefix = self.buf[..self.buf.len().min(OVERSIZE_PREFIX_BYTES)].to_vec();
            self.overlong = Some(OverlongLine {
                start: self.buf_start,
                prefix,
            });
            self.buf_start += self.buf.len() as u64;
            self.buf.clear();
            self.scanned = 0;
        }
        Ok(())
    }

    fn oversize_chunk(&self, start: u64, end: u64, prefix: Bytes) -> Chunk {
        Chunk {
            source: self.source.clone(),
            path: self.path.clone(),
            range: ByteRange { start, end },
            lines: 1,
            kind: BatchKind::Oversize,
            payload: prefix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use protocol::{BatchMeta, Fingerprint};
    use std::io::Write;

    fn key() -> SourceKey {
        SourceKey::new("box", Fingerprint { crc: 1, len: 1 })
    }

    /// Reads `content` through a reader, growing the visible size by `steps`.
    fn read_in_steps(
        content: &[u8],
        steps: &[usize],
        limits: CutLimits,
    ) -> (Vec<Chunk>, SourceReader) {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(content).unwrap();
        let mut reader = SourceReader::new(key(), Arc::from("f"), 0, limits);
        let mut chunks = Vec::new();
        let mut size = 0usize;
        let now = Instant::now();
        for step in steps.iter().copied().chain(std::iter::once(content.len())) {
            size = (size + step).min(content.len());
            loop {
                let out = reader
                    .read(&file, size as u64, 7, now, &mut |c| {
                        chunks.push(c);
                        Ok(())
                    })
                    .unwrap();
                if out.at_end {
                    break;
                }
            }
            reader
                .flush(&mut |c| {
                    chunks.push(c);
                    Ok(())
                })
                .unwrap();
        }
        (chunks, reader)
    }

    fn check_chunks(content: &[u8], chunks: &[Chunk], limits: CutLimits) {
        let mut pos = 0u64;
        for c in chunks {
            assert_eq!(c.range.start, pos, "chunks must tile the source");
            pos = c.range.end;
            let bytes = &content[c.range.start as usize..c.range.end as usize];
            let meta = BatchMeta {
                site: "s".into(),
                box_id: "b".into(),
                source: c.source.clone(),
                path: "f".into(),
                range: c.range,
                lines: c.lines,
                kind: c.kind,
            };
            meta.check_payload(&c.payload).unwrap();
            match c.kind {
                BatchKind::Lines => {
                    assert_eq!(&c.payload[..], bytes);
                    assert!(bytes.len() <= limits.max_message_bytes);
                    for line in protocol::framing::split_lines(bytes, c.range.start) {
                        assert!(line.content.len() <= limits.max_line_bytes);
                    }
                }
                BatchKind::Oversize => {
                    assert_eq!(
                        &c.payload[..],
                        &bytes[..bytes.len().min(OVERSIZE_PREFIX_BYTES)]
                    );
                    assert_eq!(memchr::memchr(b'\n', bytes), Some(bytes.len() - 1));
                    let line = protocol::framing::split_lines(bytes, 0).next().unwrap();
                    assert!(line.content.len() > limits.max_line_bytes);
                }
            }
        }
        let last_nl = content
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        assert_eq!(
            pos, last_nl as u64,
            "everything up to the last newline is shipped"
        );
    }

    const SMALL: CutLimits = CutLimits {
        max_message_bytes: 64,
        max_line_bytes: 20,
    };

    #[test]
    fn lines_are_cut_at_newlines_within_the_message_cap() {
        let content = b"0123456789\n0123456789\n0123456789\n0123456789\n0123456789\n0123456789\n";
        let (chunks, _) = read_in_steps(content, &[], SMALL);
        check_chunks(content, &chunks, SMALL);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].range, ByteRange { start: 0, end: 55 });
        assert_eq!(chunks[0].lines, 5);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_with_lf_or_crlf() {
        let line = "x".repeat(20);
        let content = format!("{line}\n{line}\r\n{line}x\n");
        let (chunks, _) = read_in_steps(content.as_bytes(), &[5, 10], SMALL);
        check_chunks(content.as_bytes(), &chunks, SMALL);
        let kinds: Vec<_> = chunks.iter().map(|c| (c.kind, c.range)).collect();
        assert_eq!(
            kinds,
            vec![
                (BatchKind::Lines, ByteRange { start: 0, end: 43 }),
                (BatchKind::Oversize, ByteRange { start: 43, end: 65 }),
            ]
        );
    }

    #[test]
    fn a_partial_line_is_kept_until_its_newline() {
        let content = b"abc\ndef";
        let (chunks, reader) = read_in_steps(content, &[], SMALL);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].range, ByteRange { start: 0, end: 4 });
        assert_eq!(reader.unterminated_bytes(), 3);
        assert_eq!(reader.read_pos(), 7);
    }

    #[test]
    fn an_overlong_line_is_streamed_and_keeps_only_its_prefix() {
        let limits = CutLimits {
            max_message_bytes: 256 * 1024,
            max_line_bytes: 64 * 1024,
        };
        let mut content = b"first\n".to_vec();
        content.extend(std::iter::repeat_n(b'y', 10 * 1024 * 1024));
        content.extend_from_slice(b"\nlast\n");
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&content).unwrap();
        let mut reader = SourceReader::new(key(), Arc::from("f"), 0, limits);
        let mut chunks = Vec::new();
        let now = Instant::now();
        while !reader
            .read(&file, content.len() as u64, u64::MAX, now, &mut |c| {
                chunks.push(c);
                Ok(())
            })
            .unwrap()
            .at_end
        {}
        // Memory stays bounded while the line streams past.
        assert!(reader.buf.capacity() <= 2 * READ_CHUNK_BYTES);
        reader
            .flush(&mut |c| {
                chunks.push(c);
                Ok(())
            })
            .unwrap();
        check_chunks(&content, &chunks, limits);
        let over: Vec<_> = chunks
            .iter()
            .filter(|c| c.kind == BatchKind::Oversize)
            .collect();
        assert_eq!(over.len(), 1);
        assert_eq!(
            over[0].range,
            ByteRange {
                start: 6,
                end: 6 + 10 * 1024 * 1024 + 1
            }
        );
        assert_eq!(over[0].payload.len(), OVERSIZE_PREFIX_BYTES);
        assert_eq!(
            chunks.last().unwrap().payload,
            Bytes::from_static(b"last\n")
        );
    }

    #[test]
    fn reading_starts_at_the_given_offset() {
        let content = b"aaa\nbbb\nccc\n";
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(content).unwrap();
        let mut reader = SourceReader::new(key(), Arc::from("f"), 4, SMALL);
        let mut chunks = Vec::new();
        let mut emit = |c| {
            chunks.push(c);
            Ok(())
        };
        reader
            .read(&file, 12, u64::MAX, Instant::now(), &mut emit)
            .unwrap();
        reader.flush(&mut emit).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].range, ByteRange { start: 4, end: 12 });
        assert_eq!(&chunks[0].payload[..], b"bbb\nccc\n");
    }

    fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
        (0usize..50, any::<bool>(), any::<bool>()).prop_map(|(len, crlf, blank)| {
            let mut l = if blank { Vec::new() } else { vec![b'a'; len] };
            if crlf {
                l.push(b'\r');
            }
            l.push(b'\n');
            l
        })
    }

    proptest! {
        #[test]
        fn any_content_read_in_any_steps_is_tiled_exactly(
            lines in prop::collection::vec(line_strategy(), 0..40),
            tail in 0usize..60,
            steps in prop::collection::vec(0usize..90, 0..20),
        ) {
            let mut content: Vec<u8> = lines.concat();
            content.extend(std::iter::repeat_n(b'z', tail));
            let (chunks, reader) = read_in_steps(&content, &steps, SMALL);
            check_chunks(&content, &chunks, SMALL);
            prop_assert_eq!(reader.read_pos(), content.len() as u64);
            let expected_over = lines.iter().filter(|l| {
                let c = l.len() - 1 - usize::from(l.len() >= 2 && l[l.len() - 2] == b'\r');
                c > SMALL.max_line_bytes
            }).count();
            prop_assert_eq!(chunks.iter().filter(|c| c.kind == BatchKind::Oversize).count(), expected_over);
            prop_assert_eq!(
                chunks.iter().map(|c| c.lines).sum::<u64>(),
                lines.len() as u64
            );
        }
    }
}
