//! The on-disk export queue: encoded OTLP batches kept in `<state-dir>/queue/` until the
//! backend has accepted them, so an outage survives agent restarts and SIGKILL.
//!
//! # Layout
//! - `NNNNNNNNNNNNNNNNNNNN.seg` — segment files, named after the sequence number of their
//!   first record (zero-padded so names sort in order). A segment is a run of records:
//!
//!   | bytes | field |
//!   | --- | --- |
//!   | 0..4 | magic `FLQ1` |
//!   | 4..8 | payload length (u32 LE) |
//!   | 8..16 | sequence number (u64 LE), strictly increasing across segments |
//!   | 16..20 | data points in the batch (u32 LE), for the drop counters |
//!   | 20..24 | CRC-32 (IEEE) of bytes 4..20 and the payload |
//!   | 24.. | payload: one encoded `ExportMetricsServiceRequest` |
//!
//! - `cursor` — the sequence number of the first record not yet consumed (sent, refused for
//!   good, or dropped by the size bound), in two alternating 16-byte slots (`seq u64`,
//!   `crc32 u32`, magic `FLC1`); the larger valid slot wins, so a torn cursor write falls back
//!   to the previous value (a resend, never a loss).
//! - `lock` — held with an exclusive `flock` while a process uses the queue, so two agents
//!   pointed at one state directory cannot interleave records.
//!
//! # Durability
//! Each record is written with one positioned write before it is handed to the sender, so
//! "written before it is first sent" holds against SIGKILL, a crash or a restart of the agent
//! (the page cache outlives the process). It is made durable against a node crash or power
//! loss with an `fdatasync` ([`DiskQueue::sync`]) as soon as it may have to wait: the pipeline
//! syncs a record written behind a backlog (an earlier batch still unsent), and syncs the queue
//! when an attempt to send fails. On the happy path — the batch is sent and accepted within
//! milliseconds of being written — there is no sync: what a power loss could take is the one
//! batch in flight, the same cycle the agent itself would lose with its memory (the per-cycle
//! sync and the sender's blocking-pool hand-offs together were ~20 % of a host cycle's CPU,
//! docs/PERFORMANCE.md, 2026-12-04). A segment is synced before the next one is started (and
//! the last one left by a killed run, at open), and a new segment's name is made durable with
//! a directory `fsync` (once per segment, not per record). The cursor is *not* synced: the page
//! cache survives SIGKILL, so a killed agent never loses a cursor update; after a power loss
//! the cursor may lag, which resends batches that were already accepted (duplicates), never
//! loses any.
//!
//! # Size bound
//! The segment files together never exceed `max_bytes`: before a record is written, the
//! oldest unconsumed records are dropped (consumed) until a whole segment can be deleted and
//! the new record fits. Segments are `max_bytes / 64` (between 64 KiB and 4 MiB), so a drop
//! frees at most that much at a time. A record larger than the whole bound is not written.
//!
//! # Recovery
//! On open every segment is read and checked record by record. A record whose length runs
//! past the end of the file or whose checksum fails is skipped with a warning: at the end of
//! the last segment (a torn write) the file is truncated to its last good record; in the
//! middle of a file the reader looks for the next valid record (magic + length + checksum) and
//! carries on from there. Records before the cursor are not loaded again.
//!
//! Not here: what to send when, or retries — see [`super::pipeline`]. All of this is blocking
//! file I/O; the pipeline calls it from blocking threads only.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

/// Record magic, `FLQ1`.
const MAGIC: [u8; 4] = *b"FLQ1";
/// Cursor slot magic, `FLC1`.
const CURSOR_MAGIC: [u8; 4] = *b"FLC1";
/// Bytes before the payload.
pub const HEADER_LEN: usize = 24;
/// Largest payload accepted when reading (a batch is tens of KB; this only rejects garbage).
const MAX_PAYLOAD: usize = 64 << 20;
/// Segment size bounds (see the module docs).
const MIN_SEGMENT: u64 = 64 << 10;
const MAX_SEGMENT: u64 = 4 << 20;

/// The queue directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A file or directory operation failed.
    #[error("disk queue {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another process holds the queue.
    #[error(
        "disk queue {path} is in use by another process (two agents share one state directory? give each its own --state-dir)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

/// A record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The record alone is larger than the queue's bound.
    #[error("a {size}-byte batch does not fit a disk queue of {max_bytes} bytes")]
    TooLarge {
        /// The record's size with its header.
        size: u64,
        /// The bound.
        max_bytes: u64,
    },
    /// Writing or syncing failed (disk full, I/O error).
    #[error("writing the disk queue {path}: {source}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A stored record could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("reading {path} at offset {offset}: {source}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// Why.
        source: io::Error,
    },
    /// The bytes no longer pass the checks they passed when written or loaded.
    #[error("record {seq} in {path} at offset {offset} is damaged: {reason}")]
    Damaged {
        /// The record.
        seq: u64,
        /// The segment file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What failed.
        reason: &'static str,
    },
}

/// Where one record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef {
    /// Its sequence number.
    pub seq: u64,
    /// The first sequence number of its segment (the segment's name).
    pub segment: u64,
    /// Byte offset of its header in the segment.
    pub offset: u64,
    /// Header plus payload.
    pub len: u64,
    /// Data points in the batch.
    pub points: u32,
}

/// One record found by [`scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Byte offset of the header.
    pub offset: usize,
    /// Header plus payload.
    pub len: usize,
    /// Sequence number.
    pub seq: u64,
    /// Data points.
    pub points: u32,
}

/// What [`scan`] found in one segment's bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Valid records, in file order.
    pub records: Vec<Scanned>,
    /// Damaged stretches followed by a valid record: `(offset, length)`.
    pub skipped: Vec<(usize, usize)>,
    /// A damaged or incomplete stretch running to the end of the file: its offset. A crash
    /// in the middle of a write leaves exactly this.
    pub torn_tail: Option<usize>,
}

/// Why the bytes at an offset are not a record.
#[derive(Debug, PartialEq, Eq)]
enum Bad {
    Magic,
    Short,
    Length,
    Checksum,
}

impl Bad {
    fn reason(&self) -> &'static str {
        match self {
            Bad::Magic => "bad magic",
            Bad::Short => "shorter than its header says",
            Bad::Length => "implausible length",
            Bad::Checksum => "checksum mismatch",
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[4..20]);
    h.update(payload);
    h.finalize()
}

/// Parses the record at the start of `b`.
fn parse_record(b: &[u8]) -> Result<Scanned, Bad> {
    if b.len() < HEADER_LEN {
        return Err(if b.len() >= 4 && b[..4] != MAGIC {
            Bad::Magic
        } else {
            Bad::Short
        });
    }
    if b[..4] != MAGIC {
        return Err(Bad::Magic);
    }
    let payload_len = u32_at(b, 4) as usize;
    if payload_len > MAX_PAYLOAD {
        return Err(Bad::Length);
    }
    let len = HEADER_LEN + payload_len;
    if b.len() < len {
        return Err(Bad::Short);
    }
    if checksum(&b[..HEADER_LEN], &b[HEADER_LEN..len]) != u32_at(b, 20) {
        return Err(Bad::Checksum);
    }
    Ok(Scanned {
        offset: 0,
        len,
        seq: u64_at(b, 8),
        points: u32_at(b, 16),
    })
}

/// Checks a segment's bytes record by record (pure; see the module docs for the rules).
pub fn scan(bytes: &[u8]) -> ScanReport {
    let mut report = ScanReport::default();
    let mut pos = 0;
    while pos < bytes.len() {
        if let Ok(mut r) = parse_record(&bytes[pos..]) {
            r.offset = pos;
            pos += r.len;
            report.records.push(r);
            continue;
        }
        // Look for the next valid record after the damage.
        let next = (pos + 1..bytes.len().saturating_sub(HEADER_LEN - 1))
            .filter(|&p| bytes[p..p + 4] == MAGIC)
            .find(|&p| parse_record(&bytes[p..]).is_ok());
        match next {
            Some(p) => {
                report.skipped.push((pos, p - pos));
                pos = p;
            }
            None => {
                report.torn_tail = Some(pos);
                break;
            }
        }
    }
    report
}

/// Encodes one record (header + payload) into a fresh buffer (the queue itself writes the two
/// parts with one `pwritev`).
#[cfg(test)]
fn encode_record(seq: u64, points: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.extend_from_slice(&record_header(seq, points, payload));
    buf.extend_from_slice(payload);
    buf
}

/// The header of the record of `payload`; its checksum covers the header's fields and the
/// payload.
fn record_header(seq: u64, points: u32, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    // Payloads above 4 GiB cannot occur (a batch is tens of KB); saturating keeps the
    // checksum honest if one ever did: the reader then refuses the record as damaged.
    h[4..8].copy_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..20].copy_from_slice(&points.to_le_bytes());
    let crc = checksum(&h, payload);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Writes `header` and then `payload` at `offset` with one `pwritev`, so the payload is not
/// first copied into a record buffer (a batch is tens of KiB, every cycle). A short write is
/// completed with positioned writes of what is left.
fn write_record_at(file: &File, header: &[u8], payload: &[u8], offset: u64) -> io::Result<()> {
    let start = i64::try_from(offset).map_err(|_| io::Error::other("offset beyond i64"))?;
    let slices = [io::IoSlice::new(header), io::IoSlice::new(payload)];
    let n = loop {
        match nix::sys::uio::pwritev(file, &slices, start) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    // What the first write left of each part (an empty rest writes nothing).
    let (in_header, in_payload) = (n.min(header.len()), n.saturating_sub(header.len()));
    file.write_all_at(
        header.get(in_header..).unwrap_or(&[]),
        offset + in_header as u64,
    )?;
    let payload_at = offset + header.len() as u64;
    file.write_all_at(
        payload.get(in_payload..).unwrap_or(&[]),
        payload_at + in_payload as u64,
    )
}

/// Encodes a cursor slot.
fn cursor_slot(seq: u64) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&s[..8]);
    s[8..12].copy_from_slice(&crc.to_le_bytes());
    s[12..16].copy_from_slice(&CURSOR_MAGIC);
    s
}

/// The cursor in a cursor file's bytes: the larger valid slot, `None` if neither is valid.
fn parse_cursor(b: &[u8]) -> Option<u64> {
    b.chunks_exact(16)
        .take(2)
        .filter(|s| s[12..16] == CURSOR_MAGIC && crc32fast::hash(&s[..8]) == u32_at(s, 8))
        .map(|s| u64_at(s, 0))
        .max()
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// Largest sequence number in it (`first_seq - 1` while empty).
    last_seq: u64,
    size: u64,
    path: PathBuf,
}

/// One stored batch, as loaded at open.
pub type Stored = RecordRef;

/// The on-disk queue. Not thread-safe by itself: the pipeline keeps it behind its lock.
#[derive(Debug)]
pub struct DiskQueue {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    /// Oldest first. The last one is the segment being appended to when `active` is set.
    segments: VecDeque<Segment>,
    active: Option<File>,
    /// The active segment has records written since its last `fdatasync`.
    unsynced: bool,
    cursor_file: File,
    cursor_slot: u64,
    cursor: u64,
    next_seq: u64,
    /// Held for the `flock`; released when the queue is dropped.
    _lock: File,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl DiskQueue {
    /// Opens (creating if needed) the queue in `dir`, checks every stored record and returns
    /// the queue with the unconsumed records, oldest first. Damage is logged and skipped.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Self, Vec<Stored>), OpenError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }

        let cursor_path = dir.join("cursor");
        let mut cursor_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&cursor_path)
            .map_err(io_err(&cursor_path))?;
        let mut raw = Vec::new();
        cursor_file
            .read_to_end(&mut raw)
            .map_err(io_err(&cursor_path))?;
        let cursor = match parse_cursor(&raw) {
            Some(c) => c,
            None if raw.is_empty() => 0,
            None => {
                warn!(path = %cursor_path.display(), "disk queue cursor is damaged; resending every stored batch (the backend may see some twice)");
                0
            }
        };

        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(stem) = name.strip_suffix(".seg") else {
                continue;
            };
            match stem.parse::<u64>() {
                Ok(first) => names.push((first, entry.path())),
                Err(_) => {
                    warn!(path = %entry.path().display(), "ignoring a file in the disk queue that is not a segment");
                }
            }
        }
        names.sort_unstable_by_key(|(first, _)| *first);

        let mut segments = VecDeque::new();
        let mut stored = Vec::new();
        let mut last_seq: Option<u64> = None;
        let count = names.len();
        for (i, (first_seq, path)) in names.into_iter().enumerate() {
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            let report = scan(&bytes);
            for &(offset, len) in &report.skipped {
                warn!(path = %path.display(), offset, bytes = len, "disk queue: damaged record skipped (checksum or length wrong); later records are kept");
            }
            if let Some(offset) = report.torn_tail {
                let bytes_lost = bytes.len() - offset;
                warn!(path = %path.display(), offset, bytes = bytes_lost, "disk queue: torn write at the end of a segment (crash while writing?) skipped");
                if i + 1 == count {
                    // Cut it off so it is not reported again; failing to is harmless.
                    if let Err(e) = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(offset as u64))
                    {
                        warn!(path = %path.display(), error = %e, "cannot truncate the torn tail");
                    }
                }
            }
            let mut seg_last = None;
            for r in &report.records {
                if r.seq < cursor {
                    continue;
                }
                if last_seq.is_some_and(|l| r.seq <= l) {
                    warn!(path = %path.display(), seq = r.seq, "disk queue: record out of sequence skipped");
                    continue;
                }
                last_seq = Some(r.seq);
                seg_last = Some(r.seq);
                stored.push(RecordRef {
                    seq: r.seq,
                    segment: first_seq,
                    offset: r.offset as u64,
                    len: r.len as u64,
                    points: r.points,
                });
            }
            match seg_last {
                Some(last) => segments.push_back(Segment {
                    first_seq,
                    last_seq: last,
                    size: std::fs::metadata(&path)
                        .map(|m| m.len())
                        .unwrap_or(bytes.len() as u64),
                    path,
                }),
                None => {
                    // Nothing left to send in it: consumed, empty or all damaged.
                    if let Err(e) = std::fs::remove_file(&path) {
                        warn!(path = %path.display(), error = %e, "cannot remove a consumed disk queue segment");
                    }
                }
            }
        }
        let next_seq = last_seq.map_or(cursor, |l| l + 1).max(cursor);
        if !stored.is_empty() {
            let bytes: u64 = stored.iter().map(|r| r.len).sum();
            info!(batches = stored.len(), bytes, dir = %dir.display(), "disk queue: unsent batches from a previous run will be sent first");
        }
        // The last segment of a killed run may hold records that were never synced (its batch
        // in flight): they wait behind this run's batches now, so they are made durable once.
        if let Some(last) = segments.back()
            && let Err(e) = File::open(&last.path).and_then(|f| f.sync_data())
        {
            warn!(path = %last.path.display(), error = %e, "cannot sync the disk queue's last segment");
        }
        let queue = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_max: (max_bytes / 64).clamp(MIN_SEGMENT, MAX_SEGMENT),
            segments,
            active: None,
            unsynced: false,
            cursor_file,
            cursor_slot: 0,
            cursor,
            next_seq,
            _lock: lock,
        };
        Ok((queue, stored))
    }

    /// The bound.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes the segment files take now.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a record of `record_len` bytes (header included) can be written without
    /// dropping anything.
    pub fn fits(&self, record_len: u64) -> bool {
        self.disk_bytes() + record_len <= self.max_bytes
    }

    /// Appends one batch (written, not synced: see [`Self::sync`]). Does not enforce the
    /// bound: the caller drops the oldest records first (with [`Self::consume_until`] and
    /// `pressure`) until [`Self::fits`].
    pub fn append(&mut self, payload: &[u8], points: u32) -> Result<RecordRef, AppendError> {
        let len = (HEADER_LEN + payload.len()) as u64;
        if len > self.max_bytes {
            return Err(AppendError::TooLarge {
                size: len,
                max_bytes: self.max_bytes,
            });
        }
        let seq = self.next_seq;
        let roll = match self.segments.back() {
            Some(s) if self.active.is_some() => s.size > 0 && s.size + len > self.segment_max,
            _ => true,
        };
        if roll {
            // The segment left behind is synced first: only the active one can hold records
            // that were never synced.
            self.sync().map_err(|e| AppendError::Io {
                path: self.dir.clone(),
                source: e,
            })?;
            self.active = None;
            let path = self.dir.join(segment_name(seq));
            let io = |source| AppendError::Io {
                path: path.clone(),
                source,
            };
            let file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&path)
                .map_err(io)?;
            sync_dir(&self.dir).map_err(io)?;
            self.segments.push_back(Segment {
                first_seq: seq,
                last_seq: seq.wrapping_sub(1),
                size: 0,
                path: path.clone(),
            });
            self.active = Some(file);
        }
        let (Some(file), Some(seg)) = (self.active.as_ref(), self.segments.back_mut()) else {
            // Both were just set above when missing.
            return Err(AppendError::Io {
                path: self.dir.clone(),
                source: io::Error::other("no active segment"),
            });
        };
        let header = record_header(seq, points, payload);
        let offset = seg.size;
        let written = write_record_at(file, &header, payload, offset);
        if let Err(source) = written {
            // Cut a partial write off so the next record follows good bytes; the reader would
            // skip the damage anyway.
            let _ = file.set_len(offset);
            // What it already holds is made durable, best effort.
            if self.unsynced {
                let _ = file.sync_data();
            }
            let path = seg.path.clone();
            // A failing segment is not appended to again.
            self.active = None;
            self.unsynced = false;
            if seg.size == 0 {
                let _ = std::fs::remove_file(&path);
                self.segments.pop_back();
            }
            return Err(AppendError::Io { path, source });
        }
        seg.size += len;
        seg.last_seq = seq;
        self.next_seq = seq + 1;
        self.unsynced = true;
        Ok(RecordRef {
            seq,
            segment: seg.first_seq,
            offset,
            len,
            points,
        })
    }

    /// Makes every record written so far durable (one `fdatasync` of the active segment, if it
    /// holds records written since the last one; nothing otherwise).
    pub fn sync(&mut self) -> io::Result<()> {
        if let (true, Some(file)) = (self.unsynced, self.active.as_ref())
            && let Err(e) = file.sync_data()
        {
            // A retried `fdatasync` after a failed writeback reports success without the data
            // (the kernel's error is consumed once): the segment is not appended to again, and
            // the next record starts a new one.
            self.active = None;
            self.unsynced = false;
            return Err(e);
        }
        self.unsynced = false;
        Ok(())
    }

    /// Whether records were written since the last [`Self::sync`].
    pub fn has_unsynced(&self) -> bool {
        self.unsynced && self.active.is_some()
    }

    /// Reads one record's payload back, checking it again.
    pub fn read(&self, r: &RecordRef) -> Result<Vec<u8>, ReadError> {
        let path = self.dir.join(segment_name(r.segment));
        let io = |source| ReadError::Io {
            path: path.clone(),
            offset: r.offset,
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let mut buf = vec![0u8; usize::try_from(r.len).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut buf, r.offset).map_err(io)?;
        match parse_record(&buf) {
            Ok(s) if s.seq == r.seq && s.len == buf.len() => {
                buf.drain(..HEADER_LEN);
                Ok(buf)
            }
            Ok(_) => Err(ReadError::Damaged {
                seq: r.seq,
                path,
                offset: r.offset,
                reason: "a different record is stored there",
            }),
            Err(bad) => Err(ReadError::Damaged {
                seq: r.seq,
                path,
                offset: r.offset,
                reason: bad.reason(),
            }),
        }
    }

    /// Marks every record below `cursor` consumed: records the cursor and deletes segments
    /// that hold nothing else. The segment being appended to is kept (and reused) unless
    /// `pressure` says space must be freed now.
    pub fn consume_until(&mut self, cursor: u64, pressure: bool) {
        let cursor = cursor.min(self.next_seq);
        if cursor > self.cursor {
            self.cursor = cursor;
            let slot = self.cursor_slot % 2;
            self.cursor_slot = self.cursor_slot.wrapping_add(1);
            if let Err(e) = self
                .cursor_file
                .write_all_at(&cursor_slot(cursor), slot * 16)
            {
                warn!(dir = %self.dir.display(), error = %e, "cannot record the disk queue cursor; accepted batches may be sent again after a restart");
            }
        }
        while let Some(front) = self.segments.front() {
            let is_active = self.active.is_some() && self.segments.len() == 1;
            // `last_seq + 1` wraps to 0 only for an empty first segment (first_seq 0).
            if front.last_seq.wrapping_add(1) > self.cursor {
                break;
            }
            if is_active && !pressure {
                break;
            }
            if is_active {
                // Deleted below: nothing of it needs syncing.
                self.active = None;
                self.unsynced = false;
            }
            if let Some(seg) = self.segments.pop_front()
                && let Err(e) = std::fs::remove_file(&seg.path)
                && e.kind() != io::ErrorKind::NotFound
            {
                warn!(path = %seg.path.display(), error = %e, "cannot remove a consumed disk queue segment");
            }
        }
    }

    /// The next sequence number to be written (the cursor when nothing is unconsumed).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests;
