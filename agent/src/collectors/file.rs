//! Reading the small pseudo files collectors read every cycle, with as few system calls and
//! as little copying as the kernel allows.
//!
//! - [`ReadBuf`] and [`read_at_start`]: one `pread` from offset 0 into a buffer zeroed only
//!   when it grows; the container collector's way to read cgroup control files.
//! - [`KeptFile`]: a host file (`/proc/stat`, `/proc/meminfo`, …) opened once and re-read
//!   through the same descriptor every cycle, which saves each cycle the `openat` (a path walk
//!   through procfs) and the `close` of every file.
//!
//! Not for: files that come and go with the objects they describe (per-device or
//! per-process files); their collectors open them each time.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{PROC_SUPER_MAGIC, SYSFS_MAGIC, fstatfs};

use super::CollectError;

/// Bytes asked for per `read`: every cgroup control file fits in one.
const READ_CHUNK: usize = 8192;

/// Scratch for a control file's text, reused for every read of a cycle and between cycles.
/// Its bytes are zeroed once, when it grows, and not before every read: zeroing a `Vec` of
/// [`READ_CHUNK`] bytes per read (the safe way to hand spare capacity to `read`) wrote some
/// 80 MB per cycle at 1000 containers.
#[derive(Debug, Default)]
pub struct ReadBuf {
    /// Initialised bytes; only `..len` hold the last file read.
    bytes: Vec<u8>,
    len: usize,
}

impl ReadBuf {
    /// The text of the last file read.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Reads an open file from offset 0 into `buf`, with `pread`, so that a descriptor kept
/// between cycles reads the content as it is now; `Ok(false)` when the kernel says the file
/// or its cgroup went away (`ENODEV`, or `ESRCH` for a process's file).
///
/// A short read is taken as the end of the file: cgroup control files are `seq_file`s that
/// show their whole content at once, which fill the caller's buffer as far as their content
/// goes, and regular files (the fixture and benchmark trees) do the same. That saves the
/// second, empty `read` per file — a quarter of the system calls of a container collection.
/// Not for iterating `seq_file`s (`/proc/diskstats`, `/proc/net/dev`, `/proc/cpuinfo`), which
/// return at most a page per read: [`KeptFile`] reads those to the end.
pub(crate) fn read_at_start(f: &File, buf: &mut ReadBuf) -> io::Result<bool> {
    read_from_zero(f, buf, READ_CHUNK)
}

/// Reads an open file from offset 0 to its end into `buf`, with `pread`: like
/// [`read_at_start`], but a short read is not taken as the end (an iterating `seq_file`
/// returns at most a page per read), only an empty one; `Ok(false)` on `ENODEV` or `ESRCH`
/// (the process went away).
pub(crate) fn read_to_end(f: &File, buf: &mut ReadBuf) -> io::Result<bool> {
    read_from_zero(f, buf, 1)
}

/// Reads an iterating `seq_file` whose records are each shorter than `max_record` bytes
/// (`/proc/<pid>/net/dev`: a line per interface) from offset 0 to its end into `buf`, as
/// [`read_to_end`] does but without the last, empty read where the content is shorter than
/// a page. The kernel fills a read of such a file with records until the next one would not
/// fit its buffer of at least a page (`seq_read_iter`), so a read that returns fewer than
/// [`MIN_SEQ_BUF`] − `max_record` bytes can only have stopped at the end. `Ok(false)` on
/// `ENODEV` or `ESRCH` (the process went away).
pub(crate) fn read_records_to_end(
    f: &File,
    buf: &mut ReadBuf,
    max_record: usize,
) -> io::Result<bool> {
    read_from_zero(f, buf, MIN_SEQ_BUF.saturating_sub(max_record).max(1))
}

/// The smallest buffer the kernel gives a `seq_file`: a page, at least 4 KiB.
const MIN_SEQ_BUF: usize = 4096;

/// Reads from offset 0 until a read returns fewer than `end_below` bytes (1: until an empty
/// one; [`READ_CHUNK`] + 1: until a short one).
fn read_from_zero(f: &File, buf: &mut ReadBuf, end_below: usize) -> io::Result<bool> {
    buf.len = 0;
    loop {
        let len = buf.len;
        if buf.bytes.len() < len + READ_CHUNK {
            buf.bytes.resize(len + READ_CHUNK, 0);
        }
        match f.read_at(&mut buf.bytes[len..len + READ_CHUNK], len as u64) {
            Ok(n) => {
                buf.len = len + n;
                if n < end_below.min(READ_CHUNK + 1) || n == 0 {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.raw_os_error(), Some(nix::libc::ENODEV | nix::libc::ESRCH)) => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
}

/// A file read whole every cycle through a descriptor kept open between cycles.
///
/// procfs and sysfs generate a file's content on every read from offset 0 (a `seq_file`
/// starts over; a sysfs attribute is shown again), so `pread` at 0 on a kept descriptor
/// reads what a fresh `open` would. Only files on procfs or sysfs are kept (checked once with
/// `fstatfs` after the open): a file anywhere else — a fixture tree a test rewrites by
/// replacing it — is opened, read and closed every time, as before. A kept file whose read
/// fails is closed and the path opened and read once more at once (a device removed and added
/// again under the same name leaves the kept descriptor reading `ENODEV`); only if that fails
/// too is the error returned.
///
/// The path is the caller's: [`KeptFile::read`] takes it every time and reopens when it
/// changes, so collectors keep building their paths from [`super::Roots`] as they did.
/// Cost: one descriptor and the kernel's `seq_file` buffer (a page or a few) per kept file.
///
/// A read ends at a short read when every record of the file (a line of an iterating
/// `seq_file` such as `/proc/diskstats`) is shorter than [`SHORT_RECORD`]
/// ([`read_records_to_end`]): most files the host collectors read come whole in one `pread`,
/// without the empty one that would confirm the end (half the reads of a cycle). A file whose
/// records may be longer (`/proc/cpuinfo`'s flag lines, `/proc/swaps` with its paths) is made
/// with [`KeptFile::long_records`] and read until an empty read.
#[derive(Debug, Default)]
pub struct KeptFile {
    /// The open file, when it is kept, and the path it was opened as.
    kept: Option<(PathBuf, File)>,
    buf: ReadBuf,
    /// Records may be [`SHORT_RECORD`] bytes or longer: read until an empty read.
    long_records: bool,
}

/// Below this many bytes is every record of the files a [`KeptFile`] reads by default (a line
/// of `/proc/diskstats`, `/proc/vmstat`, `/proc/net/dev`; the whole of a single-record file
/// such as `/proc/stat` comes in one read of up to [`READ_CHUNK`] bytes whatever its size).
const SHORT_RECORD: usize = 1024;

impl KeptFile {
    /// Reads the whole file at `path` (to the end of file: iterating `seq_file`s return one
    /// page per read) and returns its text.
    pub fn read(&mut self, path: &Path) -> Result<&str, CollectError> {
        let err = |source| CollectError::Read {
            path: path.to_path_buf(),
            source,
        };
        if let Some((p, file)) = self.kept.take()
            && p == path
            && self.read_all(&file).is_ok()
        {
            self.kept = Some((p, file));
        } else {
            // Not kept, kept for another path, or the kept descriptor failed: open anew. Only
            // a fresh descriptor needs the `fstatfs` that decides whether it is kept.
            let file = File::open(path).map_err(err)?;
            self.read_all(&file).map_err(err)?;
            if is_pseudo_fs(&file) {
                self.kept = Some((path.to_path_buf(), file));
            }
        }
        std::str::from_utf8(self.buf.as_bytes()).map_err(|_| {
            err(io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            ))
        })
    }

    /// Whether a descriptor is kept for the next read.
    pub fn is_kept(&self) -> bool {
        self.kept.is_some()
    }

    /// For a file whose records may be [`SHORT_RECORD`] bytes or longer: read until an empty
    /// read.
    pub fn long_records() -> Self {
        Self {
            long_records: true,
            ..Self::default()
        }
    }

    /// [`read_records_to_end`] (or [`read_to_end`] for long records), with a file or process
    /// that went away as the error it is here.
    fn read_all(&mut self, file: &File) -> io::Result<()> {
        let read = if self.long_records {
            read_to_end(file, &mut self.buf)?
        } else {
            read_records_to_end(file, &mut self.buf, SHORT_RECORD)?
        };
        if read {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(nix::libc::ENODEV))
        }
    }
}

/// Whether `file` is on procfs or sysfs, whose content is made anew on every read.
fn is_pseudo_fs(file: &File) -> bool {
    fstatfs(file).is_ok_and(|s| {
        let t = s.filesystem_type();
        t == PROC_SUPER_MAGIC || t == SYSFS_MAGIC
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a plain test thread waits for the clock to move
    fn a_kept_proc_file_reads_fresh_content_every_time() {
        // /proc/uptime moves every 10 ms: the same descriptor must show that, not the first
        // read's text.
        let mut f = KeptFile::default();
        let path = Path::new("/proc/uptime");
        let first = f.read(path).unwrap().to_owned();
        assert!(f.kept.is_some(), "a procfs file is kept open");
        let parses = |t: &str| {
            let v: Vec<f64> = t
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            v.len() == 2
        };
        assert!(parses(&first), "{first:?}");
        let mut changed = false;
        for _ in 0..200 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            let now = f.read(path).unwrap();
            // The whole text again (a descriptor read on from its end would give ""), newer.
            assert!(parses(now), "{now:?}");
            if now != first {
                changed = true;
                break;
            }
        }
        assert!(
            changed,
            "the kept descriptor kept showing the first read's text: {first:?}"
        );
    }

    #[test]
    fn a_long_iterating_proc_file_is_read_to_its_end() {
        // /proc/self/smaps is an iterating seq_file: one page per read at most. Other test
        // threads may map and unmap memory meanwhile, so texts are not compared: a read that
        // stopped after the first page would have stopped at 4 KiB. Its records (a mapping
        // each, some twenty lines) pass a kilobyte: long records.
        let mut f = KeptFile::long_records();
        let path = Path::new("/proc/self/smaps");
        let fresh = std::fs::read_to_string(path).unwrap();
        assert!(
            fresh.len() > 2 * 4096,
            "the test needs a file of several pages"
        );
        for _ in 0..2 {
            let ours = f.read(path).unwrap();
            assert!(ours.len() > 2 * 4096, "{} bytes: stopped early", ours.len());
            assert!(ours.ends_with('\n') && ours.contains("Rss:"));
        }
        let mut buf = ReadBuf::default();
        let file = File::open(path).unwrap();
        assert!(read_to_end(&file, &mut buf).unwrap());
        assert!(buf.as_bytes().len() > 2 * 4096, "read_to_end stopped early");
    }

    #[test]
    fn an_iterating_file_of_short_records_is_read_to_its_end_in_one_read_when_short() {
        // /proc/self/maps: an iterating seq_file of lines well under 1 KiB. Threads waiting
        // here add two mappings each (stack and guard page), so that it is longer than a page
        // whatever the test binary maps itself. Mappings may change meanwhile: lengths, not
        // texts, are compared.
        let release = std::sync::Arc::new(std::sync::Barrier::new(41));
        let waiting: Vec<_> = (0..40)
            .map(|_| {
                let release = release.clone();
                std::thread::spawn(move || {
                    release.wait();
                })
            })
            .collect();
        let path = Path::new("/proc/self/maps");
        let fresh = std::fs::read_to_string(path).unwrap();
        assert!(fresh.len() > 4096, "the test needs a file of over a page");
        let mut buf = ReadBuf::default();
        let file = File::open(path).unwrap();
        assert!(read_records_to_end(&file, &mut buf, 1024).unwrap());
        let text = std::str::from_utf8(buf.as_bytes()).unwrap();
        assert!(
            text.len() > 4096,
            "{} bytes: stopped at the first page",
            text.len()
        );
        assert!(text.ends_with('\n') && text.lines().count() > 10);
        release.wait();
        for t in waiting {
            t.join().unwrap();
        }
        // Shorter than a page: the whole of it.
        let dev = File::open("/proc/self/net/dev").unwrap();
        assert!(read_records_to_end(&dev, &mut buf, 1024).unwrap());
        let whole = std::fs::read_to_string("/proc/self/net/dev").unwrap();
        assert_eq!(
            std::str::from_utf8(buf.as_bytes()).unwrap().lines().count(),
            whole.lines().count()
        );
    }

    #[test]
    fn a_regular_file_is_read_anew_each_time_and_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stat");
        std::fs::write(&path, "first\n").unwrap();
        let mut f = KeptFile::default();
        assert_eq!(f.read(&path).unwrap(), "first\n");
        assert!(f.kept.is_none(), "a file off procfs/sysfs is not kept");
        // Replaced, not rewritten: a kept descriptor would still read the old inode.
        let tmp = dir.path().join("stat.new");
        std::fs::write(&tmp, "second, longer\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(f.read(&path).unwrap(), "second, longer\n");
    }

    #[test]
    fn a_missing_file_names_its_path_and_a_new_path_is_opened() {
        let mut f = KeptFile::default();
        let e = f.read(Path::new("/proc/no-such-file")).unwrap_err();
        assert!(e.to_string().contains("/proc/no-such-file"), "{e}");
        assert!(f.read(Path::new("/proc/self/stat")).is_ok());
        let uptime = f.read(Path::new("/proc/uptime")).unwrap();
        assert!(
            uptime.split_whitespace().count() == 2,
            "another path reopens: {uptime:?}"
        );
    }
}
