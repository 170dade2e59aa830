//! Collectors: each reads one part of the host or its containers and records points into
//! the cycle's [`Batch`].
//!
//! Every collector sits behind the small [`Collector`] trait. Parsing is kept apart from I/O:
//! each module has pure `parse_*` functions that take the file's text and return a value, so
//! fixture trees under `agent/tests/fixtures/` test them; the `collect` method only reads files
//! under the configured [`Roots`] and records. One collector failing never aborts a cycle: the
//! runtime counts and logs the error (once per cause) and goes on with the others.

use std::io;
use std::path::{Path, PathBuf};

use faultline_exporters::model::Batch;

pub mod container;
pub mod file;
pub mod host;

/// Where the host's pseudo filesystems are. Inside a container they are the host's, mounted
/// under `/host` (the `proc_root`, `sys_root` and `rootfs` settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    /// The host's `/proc`.
    pub proc: PathBuf,
    /// The host's `/sys`.
    pub sys: PathBuf,
    /// The host's `/` (for `/etc/machine-id`, `/etc/os-release` and filesystem statistics).
    pub rootfs: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            rootfs: PathBuf::from("/"),
        }
    }
}

impl Roots {
    /// A path under the proc root, for example `proc("stat")`.
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.proc.join(rel)
    }
    /// A path under the sys root.
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sys.join(rel)
    }
    /// A host path (absolute as the host sees it) under the rootfs.
    pub fn host_path(&self, abs: &str) -> PathBuf {
        self.rootfs.join(abs.trim_start_matches('/'))
    }
}

/// Why a collector could not deliver (part of) its metrics.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file was read but its content is not what the kernel documents.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A netlink or other system call failed.
    #[error("{what} failed: {reason}")]
    Sys {
        /// The call.
        what: &'static str,
        /// What it failed on, when that names the cause (the first mount point statvfs
        /// could not read); empty otherwise. Part of the "log once" key, so a new failing
        /// object is logged even after another one was.
        subject: String,
        /// The error.
        reason: String,
    },
}

impl CollectError {
    /// A short stable key for "log once per cause": the same key is logged only once.
    pub fn cause_key(&self) -> String {
        match self {
            CollectError::Read { path, source } => {
                format!("read:{}:{:?}", path.display(), source.kind())
            }
            CollectError::Parse { path, .. } => format!("parse:{}", path.display()),
            CollectError::Sys { what, subject, .. } => format!("sys:{what}:{subject}"),
        }
    }
}

/// Reads a whole file into `buf` (cleared first), mapping errors to [`CollectError::Read`].
/// Collectors keep their buffer between cycles so a cycle does not allocate for file text.
///
/// Four system calls per file (open, read, the read that finds the end, close) instead of
/// the six of `read_to_string`, whose size hint costs a `statx` and an `lseek` that /proc
/// and /sys files cannot answer usefully (they report size 0 or 4096). The reads stop only
/// at end of file, never at a short read: an iterating `seq_file` (`/proc/self/mountinfo`,
/// `/proc/cpuinfo` on many CPUs) returns one page at a time.
pub fn read_into(path: &Path, buf: &mut String) -> Result<(), CollectError> {
    use std::io::Read;
    let err = |source| CollectError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    let mut bytes = std::mem::take(buf).into_bytes();
    bytes.clear();
    let read = loop {
        let len = bytes.len();
        if bytes.capacity() - len < 1024 {
            bytes.reserve(4096);
        }
        // Zeroing the spare capacity is the safe way to hand it to `read` (a few KiB).
        bytes.resize(bytes.capacity(), 0);
        match f.read(&mut bytes[len..]) {
            Ok(0) => {
                bytes.truncate(len);
                break Ok(());
            }
            Ok(n) => bytes.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => bytes.truncate(len),
            Err(e) => {
                bytes.truncate(len);
                break Err(e);
            }
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => *buf = text,
        Err(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            )));
        }
    }
    read.map_err(err)
}

/// A parse error for `path`.
pub fn parse_error(path: &Path, reason: impl Into<String>) -> CollectError {
    CollectError::Parse {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// What every collector is given each cycle besides the batch.
#[derive(Clone, Debug)]
pub struct Context {
    /// Where the host's files are.
    pub roots: Roots,
    /// Host boot time, Unix nanoseconds: start time of every kernel counter.
    pub boot_time_unix_nanos: u64,
}

/// One source of metrics.
pub trait Collector: Send {
    /// Short stable name used in logs and in `faultline.collector.errors{collector=…}`.
    fn name(&self) -> &'static str;
    /// Reads and records this cycle's points. Partial results already recorded stay in the
    /// batch when an error is returned.
    fn collect(&mut self, ctx: &Context, batch: &mut Batch) -> Result<(), CollectError>;
}

/// Paces costly work to at most once per `every`: due the first time, then once `every` has
/// passed since the last [`Pace::done`] (a zero `every` is always due). Used by [`Throttled`]
/// and by the CPU collector's `/proc/cpuinfo` fallback.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    pub(crate) every: std::time::Duration,
    last: Option<std::time::Instant>,
}

impl Pace {
    /// Due at once, then every `every`.
    pub(crate) const fn new(every: std::time::Duration) -> Self {
        Self { every, last: None }
    }
    /// Whether the work is due now.
    pub(crate) fn due(&self) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= self.every)
    }
    /// The work was just done: the next is due `every` from now.
    pub(crate) fn done(&mut self) {
        self.last = Some(std::time::Instant::now());
    }
}

/// Runs an expensive collector at most once per `every` and repeats its last points in the
/// cycles between, so its series stay continuous (the Prometheus endpoint always shows them)
/// while its cost is paid once per interval. Used for the process-state scan and the
/// connection-state dump, whose cost grows with the process count and the kernel's TCP hash
/// table size rather than with anything we export (see docs/PERFORMANCE.md).
pub struct Throttled {
    inner: Box<dyn Collector>,
    pace: Pace,
    cache: Vec<faultline_exporters::model::Metric>,
}

impl std::fmt::Debug for Throttled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttled")
            .field("inner", &self.inner.name())
            .field("pace", &self.pace)
            .finish_non_exhaustive()
    }
}

impl Throttled {
    /// Wraps `inner` to run at most once per `every` (a zero interval runs every cycle).
    pub fn new(inner: Box<dyn Collector>, every: std::time::Duration) -> Self {
        Self {
            inner,
            pace: Pace::new(every),
            cache: Vec::new(),
        }
    }
}

impl Collector for Throttled {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn collect(&mut self, ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        let mut result = Ok(());
        if self.pace.due() {
            let host = batch.host().resource.clone();
            let mut scratch = Batch::new(batch.time_unix_nanos, host, ctx.boot_time_unix_nanos);
            result = self.inner.collect(ctx, &mut scratch);
            self.pace.done();
            self.cache = std::mem::take(&mut scratch.host().metrics);
        }
        batch.host().metrics.extend(self.cache.iter().cloned());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_into_reads_whole_files_and_iterating_proc_files_to_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        // Larger than the first read and than one page: more than one read is needed.
        let text: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let mut buf = String::from("left over from the last cycle");
        read_into(&path, &mut buf).unwrap();
        assert_eq!(buf, text);
        // An iterating seq_file answers a page at a time: the end is the zero-byte read.
        let mut mounts = String::new();
        read_into(Path::new("/proc/self/mountinfo"), &mut mounts).unwrap();
        let expected = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert_eq!(mounts.lines().count(), expected.lines().count());
    }

    #[test]
    fn read_into_names_the_file_it_could_not_read_or_decode() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, [0xff, 0xfe, b'\n']).unwrap();
        let mut buf = String::new();
        let e = read_into(&bad, &mut buf).unwrap_err();
        assert!(e.to_string().contains("bad"), "{e}");
        let e = read_into(&dir.path().join("missing"), &mut buf).unwrap_err();
        assert!(matches!(e, CollectError::Read { ref path, .. } if path.ends_with("missing")));
    }
}
