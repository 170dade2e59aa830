//! The fault journal: one JSON file per fault in `<state-dir>/faults/journal/<id>.json`.
//!
//! ## Protocol
//! - **Before apply** the engine writes the entry with the plan's provisional revert record
//!   (`phase: planned`); **after apply** it rewrites it with the final record
//!   (`phase: applied`). Each write goes to `<id>.json.<pid>-<start>.tmp` (the writing
//!   process's pid and start time), is fsynced, renamed over `<id>.json`, and the directory
//!   is fsynced — so an entry is either the old or the new version, never a mix, and it is
//!   on disk before anything is touched.
//! - The entry is **removed only after the revert is confirmed** (unlink + directory fsync).
//! - A leftover `*.tmp` is a write that never completed: its fault was never applied under
//!   that record (the rename is the commit point), so it is deleted — but only once its
//!   writer is gone and the file is older than [`ABANDONED_TMP_AGE`]. Several processes
//!   (the agent, `fault inject` commands, `drill run`) share one journal, and each sweeps it
//!   when it starts: a sweep that deleted another live process's half-done write made that
//!   write's rename fail with ENOENT. The age bound covers a writer in another pid
//!   namespace, whose pid this process cannot look up.
//! - An entry that does not parse (disk corruption, a hand edit, a spec kind this binary
//!   does not know), or that names another fault than its file's, is **reported, never
//!   trusted and never a panic**: it is renamed to `<id>.json.corrupt` for a human, and any
//!   helper processes its JSON still names are ended — those that are faultline helpers
//!   (pid + start time and their command line checked) whose agent is gone.
//!
//! Why a file per fault and not an append log: removal is one unlink, there is no
//! compaction, and a torn write can only damage the one fault being written.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fault::{FaultId, Requester, RevertRecord, Target};
use crate::procfs::ProcessIdentity;
use crate::spec::FaultSpec;

/// The journal format version written by this build.
pub const JOURNAL_VERSION: u32 = 1;

/// A temporary file this old whose writer is not alive is an abandoned write. A write takes
/// milliseconds from create to rename; the bound only has to exceed a stalled `fsync`.
pub const ABANDONED_TMP_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Journal failures; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal directory could not be created or read.
    #[error("fault journal directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An entry could not be written durably; the fault was not applied.
    #[error("cannot write fault journal entry {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An entry could not be removed.
    #[error("cannot remove fault journal entry {path}: {source}")]
    Remove {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An entry could not be encoded.
    #[error("cannot encode fault journal entry {id}: {message}")]
    Encode {
        /// The fault.
        id: FaultId,
        /// Why.
        message: String,
    },
}

/// How far a fault got when its entry was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Written before apply: the record is the plan's provisional one.
    Planned,
    /// Written after apply: the record is final.
    Applied,
}

/// One journaled fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalEntry {
    /// Format version.
    pub version: u32,
    /// The fault.
    pub id: FaultId,
    /// What was asked.
    pub spec: FaultSpec,
    /// Who asked.
    pub requester: Requester,
    /// The agent process that applied it (recovery leaves entries of live owners alone).
    pub owner: ProcessIdentity,
    /// When it was planned, ms since the epoch.
    pub created_unix_ms: u64,
    /// When it must be reverted, ms since the epoch.
    pub deadline_unix_ms: u64,
    /// How far it got.
    pub phase: Phase,
    /// The resolved targets.
    pub targets: Vec<Target>,
    /// How pod selectors picked the targets, when they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<crate::select::Selection>,
    /// How to revert it.
    pub record: RevertRecord,
}

/// An entry that could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct CorruptEntry {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be used.
    pub error: String,
    /// Helper processes its JSON names, if that much could be read.
    pub helpers: Vec<ProcessIdentity>,
}

/// The journal directory.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens (creating, mode 0700) `<state_dir>/faults/journal`.
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        let dir = state_dir.join("faults").join("journal");
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&dir).map_err(|source| JournalError::Dir {
            path: dir.clone(),
            source,
        })?;
        Ok(Journal { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of fault `id`.
    pub fn path(&self, id: &FaultId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes `entry` durably (tmp file, fsync, rename, directory fsync).
    pub fn write(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        let path = self.path(&entry.id);
        let tmp = self
            .dir
            .join(format!("{}.json.{}.tmp", entry.id, writer_tag()));
        let bytes = serde_json::to_vec_pretty(entry).map_err(|e| JournalError::Encode {
            id: entry.id.clone(),
            message: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&self.dir)
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&tmp);
            JournalError::Write {
                path: path.clone(),
                source,
            }
        })
    }

    /// Removes fault `id`'s entry (absent is fine) and fsyncs the directory.
    pub fn remove(&self, id: &FaultId) -> Result<(), JournalError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(JournalError::Remove { path, source }),
        }
        sync_dir(&self.dir).map_err(|source| JournalError::Remove { path, source })
    }

    /// Reads fault `id`'s entry, `Ok(None)` when there is none.
    pub fn read(&self, id: &FaultId) -> Result<Option<JournalEntry>, CorruptEntry> {
        let path = self.path(id);
        match fs::read(&path) {
            Ok(bytes) => parse_entry(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CorruptEntry {
                path,
                error: e.to_string(),
                helpers: Vec::new(),
            }),
        }
    }

    /// Every entry, oldest first, with unreadable ones as [`CorruptEntry`]. Leftover
    /// `.tmp` files are deleted (see the module docs).
    pub fn entries(&self) -> Result<Vec<Result<JournalEntry, CorruptEntry>>, JournalError> {
        let rd = fs::read_dir(&self.dir).map_err(|source| JournalError::Dir {
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for dent in rd {
            let dent = dent.map_err(|source| JournalError::Dir {
                path: self.dir.clone(),
                source,
            })?;
            let path = dent.path();
            let name = dent.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                if tmp_is_abandoned(&name, &path) {
                    tracing::info!(path = %path.display(), "removing an incomplete fault journal write (never committed, nothing was applied under it)");
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            out.push(match fs::read(&path) {
                Ok(bytes) => parse_entry(&path, &bytes),
                // Removed by its owner between the listing and the read: reverted, not corrupt.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => Err(CorruptEntry {
                    path,
                    error: e.to_string(),
                    helpers: Vec::new(),
                }),
            });
        }
        out.sort_by_key(|e| match e {
            Ok(e) => (0, e.created_unix_ms, e.id.to_string()),
            Err(c) => (1, 0, c.path.display().to_string()),
        });
        Ok(out)
    }

    /// Moves a corrupt entry aside to `<name>.corrupt` so it is reported once, kept for a
    /// human, and not re-read.
    pub fn quarantine(&self, entry: &CorruptEntry) -> std::io::Result<PathBuf> {
        let mut to = entry.path.clone().into_os_string();
        to.push(".corrupt");
        let to = PathBuf::from(to);
        fs::rename(&entry.path, &to)?;
        sync_dir(&self.dir)?;
        Ok(to)
    }
}

/// Parses an entry file's bytes; pure. An entry must be the file of the fault it names
/// (`<id>.json`): one that names another fault is not trusted, since its revert would end by
/// removing that other fault's entry.
pub fn parse_entry(path: &Path, bytes: &[u8]) -> Result<JournalEntry, CorruptEntry> {
    let file_of = |e: &JournalEntry| {
        path.file_name().and_then(|n| n.to_str()) == Some(format!("{}.json", e.id).as_str())
    };
    match serde_json::from_slice::<JournalEntry>(bytes) {
        Ok(e) if e.version == JOURNAL_VERSION && file_of(&e) => Ok(e),
        Ok(e) if e.version == JOURNAL_VERSION => Err(CorruptEntry {
            path: path.to_path_buf(),
            error: format!(
                "the entry names fault {} but is not its file {}.json",
                e.id, e.id
            ),
            helpers: e.record.helpers,
        }),
        Ok(e) => Err(CorruptEntry {
            path: path.to_path_buf(),
            error: format!(
                "journal version {} (this build reads {JOURNAL_VERSION})",
                e.version
            ),
            helpers: e.record.helpers,
        }),
        Err(err) => {
            // Salvage the helper list if the JSON is whole but the spec is not understood.
            let helpers = serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| v.get("record").and_then(|r| r.get("helpers")).cloned())
                .and_then(|h| serde_json::from_value::<Vec<ProcessIdentity>>(h).ok())
                .unwrap_or_default();
            Err(CorruptEntry {
                path: path.to_path_buf(),
                error: err.to_string(),
                helpers,
            })
        }
    }
}

/// `<pid>-<start time>` of this process, naming its temporary files so that other processes
/// sharing the journal can tell whether their writer still runs. The start time is read
/// once; `0` where `/proc/self/stat` cannot be read (the age bound still applies).
fn writer_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let pid = std::process::id();
        let start = i32::try_from(pid)
            .ok()
            .and_then(|p| crate::procfs::read_stat(Path::new("/proc"), p))
            .map_or(0, |st| st.start_time);
        format!("{pid}-{start}")
    })
}

/// Whether temporary file `name` (at `path`) is an abandoned write: older than
/// [`ABANDONED_TMP_AGE`] and, where its name carries its writer (`….<pid>-<start>.tmp`),
/// that process is not running any more. Pure but for the two reads it names.
fn tmp_is_abandoned(name: &str, path: &Path) -> bool {
    let old_enough = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= ABANDONED_TMP_AGE);
    if !old_enough {
        return false;
    }
    match parse_writer_tag(name) {
        Some((pid, start_time)) => {
            let writer = ProcessIdentity {
                pid,
                start_time,
                boot_id: String::new(),
                name: String::new(),
            };
            !crate::procfs::is_alive(Path::new("/proc"), &writer, "")
        }
        None => true,
    }
}

/// The writer's `(pid, start time)` from `<id>.json.<pid>-<start>.tmp`; `None` for any other
/// shape (an older build's `<id>.json.tmp`).
fn parse_writer_tag(name: &str) -> Option<(i32, u64)> {
    let tag = name.strip_suffix(".tmp")?.rsplit_once(".json.")?.1;
    let (pid, start) = tag.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::RevertRecord;

    pub(crate) fn entry(id: &str) -> JournalEntry {
        JournalEntry {
            version: JOURNAL_VERSION,
            id: id.parse().unwrap(),
            spec: serde_json::from_str(r#"{"kind":"process-pause","pid":1234567,"duration":"1s"}"#)
                .unwrap(),
            requester: Requester::cli(),
            owner: ProcessIdentity {
                pid: 1,
                start_time: 1,
                boot_id: String::new(),
                name: "x".into(),
            },
            created_unix_ms: 1,
            deadline_unix_ms: 2,
            phase: Phase::Planned,
            targets: Vec::new(),
            selection: None,
            record: RevertRecord::default(),
        }
    }

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let e = entry("process-pause-00000001");
        j.write(&e).unwrap();
        assert_eq!(j.read(&e.id).unwrap(), Some(e.clone()));
        let mut applied = e.clone();
        applied.phase = Phase::Applied;
        j.write(&applied).unwrap();
        let all = j.entries().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].as_ref().unwrap().phase, Phase::Applied);
        j.remove(&e.id).unwrap();
        j.remove(&e.id).unwrap();
        assert!(j.entries().unwrap().is_empty());
        assert_eq!(j.read(&e.id).unwrap(), None);
    }

    #[test]
    fn torn_and_corrupt_entries_are_reported_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let good = entry("process-pause-00000002");
        j.write(&good).unwrap();
        let full = serde_json::to_vec(&good).unwrap();
        // A torn write (half the bytes), garbage, an empty file, an unknown kind with a
        // salvageable helper list, a leftover tmp file.
        fs::write(j.dir().join("torn-1.json"), &full[..full.len() / 2]).unwrap();
        fs::write(j.dir().join("garbage-1.json"), b"\x00\xffnot json").unwrap();
        fs::write(j.dir().join("empty-1.json"), b"").unwrap();
        let mut v = serde_json::to_value(&good).unwrap();
        v["spec"] = serde_json::json!({"kind": "meteor", "duration": "1s"});
        v["record"]["helpers"] =
            serde_json::json!([{"pid": 99, "start_time": 5, "boot_id": "", "name": "w"}]);
        fs::write(
            j.dir().join("unknown-1.json"),
            serde_json::to_vec(&v).unwrap(),
        )
        .unwrap();
        let tmp = j.dir().join("x-1.json.tmp");
        fs::write(&tmp, b"{").unwrap();
        age(&tmp);
        let all = j.entries().unwrap();
        assert_eq!(all.iter().filter(|e| e.is_ok()).count(), 1);
        let corrupt: Vec<_> = all.into_iter().filter_map(Result::err).collect();
        assert_eq!(corrupt.len(), 4);
        let unknown = corrupt
            .iter()
            .find(|c| c.path.ends_with("unknown-1.json"))
            .unwrap();
        assert_eq!(unknown.helpers.len(), 1);
        assert!(!j.dir().join("x-1.json.tmp").exists());
        for c in &corrupt {
            let to = j.quarantine(c).unwrap();
            assert!(to.to_string_lossy().ends_with(".json.corrupt"));
        }
        assert_eq!(j.entries().unwrap().len(), 1);
    }

    /// Backdates `path` past [`ABANDONED_TMP_AGE`].
    fn age(path: &Path) {
        let then = std::time::SystemTime::now() - ABANDONED_TMP_AGE * 2;
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(then)
            .unwrap();
    }

    #[test]
    fn sweep_keeps_live_writers_and_fresh_files_and_removes_abandoned_ones() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        // A child that has exited: its pid and start time name no live process.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id() as i32;
        let dead_start =
            crate::procfs::read_stat(Path::new("/proc"), dead_pid).map_or(1, |st| st.start_time);
        child.wait().unwrap();
        let ours = format!("a-1.json.{}.tmp", writer_tag());
        let dead = format!("b-1.json.{dead_pid}-{dead_start}.tmp");
        let fresh_dead = format!("c-1.json.{dead_pid}-{dead_start}.tmp");
        for name in [&ours, &dead, &fresh_dead] {
            fs::write(j.dir().join(name), b"{").unwrap();
        }
        age(&j.dir().join(&ours));
        age(&j.dir().join(&dead));
        assert!(j.entries().unwrap().is_empty());
        assert!(
            j.dir().join(&ours).exists(),
            "a live writer's old file was swept"
        );
        assert!(j.dir().join(&fresh_dead).exists(), "a fresh file was swept");
        assert!(!j.dir().join(&dead).exists(), "an abandoned file was kept");
    }

    #[test]
    fn writes_survive_another_handle_sweeping_the_same_journal() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let sweeper = Journal::open(dir.path()).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sweeping = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for e in sweeper.entries().unwrap() {
                        e.unwrap();
                    }
                }
            })
        };
        for n in 0..300 {
            let e = entry(&format!("process-pause-{n:08x}"));
            j.write(&e).unwrap();
            j.remove(&e.id).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sweeping.join().unwrap();
    }

    #[test]
    fn writer_tag_parses_back() {
        assert_eq!(parse_writer_tag("x-1.json.42-7.tmp"), Some((42, 7)));
        assert_eq!(parse_writer_tag("x-1.json.tmp"), None);
        assert_eq!(parse_writer_tag("x-1.json.4x-7.tmp"), None);
    }

    #[test]
    fn an_entry_in_another_faults_file_is_not_trusted() {
        let e = entry("process-pause-00000004");
        let bytes = serde_json::to_vec(&e).unwrap();
        assert!(parse_entry(Path::new("/j/process-pause-00000004.json"), &bytes).is_ok());
        let err = parse_entry(Path::new("/j/process-pause-00000005.json"), &bytes).unwrap_err();
        assert!(
            err.error.contains("names fault process-pause-00000004"),
            "{}",
            err.error
        );
    }

    #[test]
    fn future_version_is_not_trusted() {
        let mut e = entry("process-pause-00000003");
        e.version = 99;
        let bytes = serde_json::to_vec(&e).unwrap();
        let err = parse_entry(Path::new("f.json"), &bytes).unwrap_err();
        assert!(err.error.contains("version 99"), "{}", err.error);
    }
}
