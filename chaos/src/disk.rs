//! Disk faults: `disk-fill` (a file `.faultline-fill-<id>` that takes space until a target
//! used-percentage or for a byte count; fallocate, falling back to writes; reverted by
//! deleting it) and `disk-io` (a helper process that reads or writes at a set rate in a
//! scratch file `.faultline-io-<id>`, deleted on revert).
//!
//! Both file names derive from the fault id, so the plan's provisional revert record
//! already names them: a crash in the middle of apply still leaves the journal able to
//! delete the file. Both are checked against `chaos.disk_free_floor`, at plan time and again
//! right before the space is taken; while a fill is active the engine calls its
//! [`Fault::watch`] every [`FLOOR_WATCH_EVERY`], which shrinks (or removes) the fill when
//! other writers have pushed free space below the floor.
//!
//! Reverts (also journal recovery after a crash) delete only what [`check_owned`] accepts: a
//! regular file named `.faultline-fill-<id>` / `.faultline-io-<id>` for the fault's own id,
//! directly inside the journaled directory. Anything else — a tampered or forged journal
//! entry naming `/etc/passwd`, a symlink, another directory — is refused with the
//! `owned-file` guard and nothing is deleted.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{FallocateFlags, fallocate};
use serde::{Deserialize, Serialize};

use crate::error::FaultError;
use crate::fault::{Context, Effect, Fault, Plan, RevertRecord, Target};
use crate::guard;
use crate::helper;
use crate::units::{ByteSize, HumanDuration, Percent};

/// `disk-fill`: take space in the filesystem holding `path`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct DiskFillSpec {
    /// A directory on the filesystem to fill; the fill file is created in it.
    #[arg(long)]
    pub path: PathBuf,
    /// Fill until the filesystem is this full (used / (used + available), as df shows).
    #[arg(long, conflicts_with = "bytes", required_unless_present = "bytes")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<Percent>,
    /// Fill this many bytes (64MiB, 2G…).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<ByteSize>,
    /// How long the fault lasts (required; capped by chaos.max_duration).
    #[arg(long)]
    pub duration: HumanDuration,
}

/// What a disk fill journals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillState {
    /// The fill file.
    pub file: PathBuf,
    /// Bytes it takes.
    pub bytes: u64,
}

/// The name prefix of fill files.
pub const FILL_PREFIX: &str = ".faultline-fill-";
/// The name prefix of disk-io scratch files.
pub const IO_PREFIX: &str = ".faultline-io-";
/// How often an active fill is checked against `chaos.disk_free_floor`.
pub const FLOOR_WATCH_EVERY: Duration = Duration::from_millis(500);

/// The fill file of fault `id` in `dir`.
pub fn fill_file(dir: &Path, id: &crate::FaultId) -> PathBuf {
    dir.join(format!("{FILL_PREFIX}{id}"))
}

/// Accepts `file` only if it is what this crate creates for fault `id`: named
/// `<prefix><id>`, directly inside `dir` (no `..`), and — when it exists — a regular file,
/// not a symlink. A journal entry is outside input after a crash; this is what stops a
/// tampered one from deleting arbitrary files.
pub fn check_owned(
    file: &Path,
    dir: &Path,
    prefix: &str,
    id: &crate::FaultId,
) -> Result<(), FaultError> {
    let refuse = |why: String| {
        Err(FaultError::refused(
            crate::Guard::OwnedFile,
            format!(
                "{}: {why}; only {}{prefix}{id} is ever deleted for fault {id}; nothing deleted",
                file.display(),
                dir.join("").display()
            ),
        ))
    };
    let want = format!("{prefix}{id}");
    if file.file_name().and_then(|n| n.to_str()) != Some(want.as_str()) {
        return refuse(format!("the name is not {want}"));
    }
    if file
        .components()
        .chain(dir.components())
        .any(|c| matches!(c, std::path::Component::ParentDir))
        || !dir.is_absolute()
    {
        return refuse("the path is relative or contains `..`".into());
    }
    if file.parent() != Some(dir) {
        return refuse(format!("it is not directly inside {}", dir.display()));
    }
    match std::fs::symlink_metadata(file) {
        Ok(m) if !m.file_type().is_file() => refuse("it is not a regular file".into()),
        _ => Ok(()),
    }
}

/// Bytes to add so that `s` reaches `percent` used (df's definition); 0 when it already has.
pub fn bytes_to_reach(s: guard::Space, percent: f64) -> u64 {
    let denom = (s.used() + s.avail) as f64;
    let want = (denom * percent / 100.0).ceil() as u64;
    want.saturating_sub(s.used())
}

fn check_dir(kind: &'static str, path: &Path) -> Result<(), FaultError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(FaultError::Invalid {
            kind,
            message: format!("--path {} is not a directory", path.display()),
        }),
        Err(e) => Err(FaultError::Invalid {
            kind,
            message: format!("--path {}: {e}", path.display()),
        }),
    }
}

impl Fault for DiskFillSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        const KIND: &str = "disk-fill";
        check_dir(KIND, &self.path)?;
        let space = guard::space(&self.path)?;
        let bytes = match (self.percent, self.bytes) {
            (Some(p), None) => {
                let b = bytes_to_reach(space, p.0);
                if b == 0 {
                    return Err(FaultError::Invalid {
                        kind: KIND,
                        message: format!(
                            "{} is already {:.1}% used, at or above the {p} asked for",
                            self.path.display(),
                            space.used_percent()
                        ),
                    });
                }
                b
            }
            (None, Some(b)) if b.0 > 0 => b.0,
            _ => {
                return Err(FaultError::Invalid {
                    kind: KIND,
                    message: "give exactly one of --percent or --bytes (more than 0)".into(),
                });
            }
        };
        let file = fill_file(&self.path, &ctx.id);
        let state = FillState {
            file: file.clone(),
            bytes,
        };
        Ok(Plan {
            id: ctx.id.clone(),
            kind: KIND.into(),
            duration: self.duration,
            targets: vec![Target::DiskFill {
                dir: self.path.clone(),
                file: file.clone(),
                bytes,
            }],
            actions: vec![format!(
                "create {} taking {} ({} is {:.1}% used now)",
                file.display(),
                ByteSize(bytes),
                self.path.display(),
                space.used_percent()
            )],
            reverts: vec![format!("delete {}", file.display())],
            instant: false,
            record: RevertRecord::with_state(&state)?,
            selection: None,
        })
    }

    fn apply(&self, plan: &Plan, ctx: &Context) -> Result<RevertRecord, FaultError> {
        let state: FillState = plan.record.state()?;
        // Free space moves: check the floor again right before taking it.
        guard::check_disk_fill(&self.path, state.bytes, &ctx.config)?;
        write_fill(&state.file, state.bytes)?;
        Ok(plan.record.clone())
    }

    fn check(&self, record: &RevertRecord, _ctx: &Context) -> Result<Effect, FaultError> {
        let state: FillState = record.state()?;
        Ok(match std::fs::metadata(&state.file) {
            Ok(m) => {
                let allocated = m.blocks() * 512;
                if allocated + (1 << 20) >= state.bytes {
                    Effect::in_effect(format!(
                        "{} holds {}",
                        state.file.display(),
                        ByteSize(allocated)
                    ))
                } else {
                    Effect::partial(format!(
                        "{} holds {} of {}",
                        state.file.display(),
                        ByteSize(allocated),
                        ByteSize(state.bytes)
                    ))
                }
            }
            Err(_) => Effect::not_in_effect(format!("{} is gone", state.file.display())),
        })
    }

    fn revert(&self, record: &RevertRecord, ctx: &Context) -> Result<(), FaultError> {
        let state: FillState = record.state()?;
        check_owned(&state.file, &self.path, FILL_PREFIX, &ctx.id)?;
        remove_file(&state.file)
    }

    fn watch_every(&self) -> Option<Duration> {
        Some(FLOOR_WATCH_EVERY)
    }

    fn watch(&self, record: &RevertRecord, ctx: &Context) -> Result<Option<String>, FaultError> {
        let state: FillState = record.state()?;
        check_owned(&state.file, &self.path, FILL_PREFIX, &ctx.id)?;
        let space = guard::space(&self.path)?;
        let floor = ctx.config.disk_free_floor.bytes(space.total);
        let Some(deficit) = floor.checked_sub(space.avail).filter(|d| *d > 0) else {
            return Ok(None);
        };
        shrink_fill(&state.file, deficit).map(|done| {
            done.map(|what| {
                format!(
                    "{what}: {} had {} available, below chaos.disk_free_floor ({} = {})",
                    self.path.display(),
                    ByteSize(space.avail),
                    ctx.config.disk_free_floor,
                    ByteSize(floor)
                )
            })
        })
    }
}

/// Gives `deficit` bytes (rounded up to 64 KiB) back from the fill file: truncates it, or
/// deletes it when it holds no more than that. `None` when it is already gone.
pub fn shrink_fill(file: &Path, deficit: u64) -> Result<Option<String>, FaultError> {
    const STEP: u64 = 64 << 10;
    let give = deficit.div_ceil(STEP) * STEP;
    let f = match OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(FaultError::Io {
                action: "cannot open fill file",
                path: file.to_path_buf(),
                source,
            });
        }
    };
    let io = |action| {
        move |source| FaultError::Io {
            action,
            path: file.to_path_buf(),
            source,
        }
    };
    let m = f.metadata().map_err(io("cannot stat fill file"))?;
    let held = m.len().max(m.blocks() * 512);
    if held <= give {
        drop(f);
        remove_file(file)?;
        return Ok(Some(format!(
            "removed {} ({} given back)",
            file.display(),
            ByteSize(held)
        )));
    }
    let keep = held - give;
    f.set_len(keep).map_err(io("cannot shrink fill file"))?;
    Ok(Some(format!(
        "shrank {} from {} to {}",
        file.display(),
        ByteSize(held),
        ByteSize(keep)
    )))
}

/// Deletes `file`; already gone is fine.
pub fn remove_file(file: &Path) -> Result<(), FaultError> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FaultError::Io {
            action: "cannot delete",
            path: file.to_path_buf(),
            source,
        }),
    }
}

/// Creates `file` (it must not exist) taking `bytes`: fallocate, or writes where the
/// filesystem does not support it. A failure deletes the partial file.
pub fn write_fill(file: &Path, bytes: u64) -> Result<(), FaultError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|source| FaultError::Io {
            action: "cannot create fill file",
            path: file.to_path_buf(),
            source,
        })?;
    let result = (|| {
        let len = i64::try_from(bytes)
            .map_err(|_| FaultError::Other(format!("fill size {bytes} too large")))?;
        match fallocate(&f, FallocateFlags::empty(), 0, len) {
            Ok(()) => {}
            Err(nix::errno::Errno::EOPNOTSUPP) => {
                // A non-zero pattern, so compressing filesystems cannot shrink it to nothing.
                let chunk = vec![0xA5u8; 1 << 20];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    f.write_all(&chunk[..n]).map_err(|source| FaultError::Io {
                        action: "cannot write fill file",
                        path: file.to_path_buf(),
                        source,
                    })?;
                    left -= n as u64;
                }
            }
            Err(errno) => {
                return Err(FaultError::Sys {
                    action: format!("fallocate {} bytes for {}", bytes, file.display()),
                    errno,
                });
            }
        }
        f.sync_all().map_err(|source| FaultError::Io {
            action: "cannot sync fill file",
            path: file.to_path_buf(),
            source,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(file);
    }
    result
}

/// `disk-io`: read or write at a set rate in `path`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct DiskIoSpec {
    /// The directory to load; a scratch file is created in it.
    #[arg(long)]
    pub path: PathBuf,
    /// Read this many bytes per second (page cache dropped for the scratch file each pass).
    #[arg(
        long,
        conflicts_with = "write_rate",
        required_unless_present = "write_rate"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_rate: Option<ByteSize>,
    /// Write (and fdatasync) this many bytes per second.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_rate: Option<ByteSize>,
    /// How long the fault lasts (required; capped by chaos.max_duration).
    #[arg(long)]
    pub duration: HumanDuration,
}

/// What a disk I/O fault journals (its helper is in the record's `helpers`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoState {
    /// The scratch file.
    pub file: PathBuf,
    /// `read` or `write`.
    pub direction: String,
    /// Bytes per second.
    pub rate: u64,
    /// Scratch file size.
    pub scratch: u64,
}

impl Fault for DiskIoSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        const KIND: &str = "disk-io";
        check_dir(KIND, &self.path)?;
        let (direction, rate) = match (self.read_rate, self.write_rate) {
            (Some(r), None) if r.0 > 0 => ("read", r.0),
            (None, Some(w)) if w.0 > 0 => ("write", w.0),
            _ => {
                return Err(FaultError::Invalid {
                    kind: KIND,
                    message: "give exactly one of --read-rate or --write-rate (more than 0)".into(),
                });
            }
        };
        // The scratch file holds one second of I/O, between 1 MiB and 64 MiB.
        let scratch = rate.clamp(1 << 20, 64 << 20);
        let file = self.path.join(format!("{IO_PREFIX}{}", ctx.id));
        let state = IoState {
            file: file.clone(),
            direction: direction.into(),
            rate,
            scratch,
        };
        Ok(Plan {
            id: ctx.id.clone(),
            kind: KIND.into(),
            duration: self.duration,
            targets: vec![
                Target::Path {
                    path: self.path.clone(),
                },
                Target::DiskFill {
                    dir: self.path.clone(),
                    file: file.clone(),
                    bytes: scratch,
                },
            ],
            actions: vec![format!(
                "start a helper that {direction}s {}/s in {} ({} scratch file)",
                ByteSize(rate),
                file.display(),
                ByteSize(scratch)
            )],
            reverts: vec![
                "end the helper".into(),
                format!("delete {}", file.display()),
            ],
            instant: false,
            record: RevertRecord::with_state(&state)?,
            selection: None,
        })
    }

    fn apply(&self, plan: &Plan, ctx: &Context) -> Result<RevertRecord, FaultError> {
        let state: IoState = plan.record.state()?;
        guard::check_disk_fill(&self.path, state.scratch, &ctx.config)?;
        let args = vec![
            "io".to_owned(),
            "--file".into(),
            state.file.display().to_string(),
            "--direction".into(),
            state.direction.clone(),
            "--rate".into(),
            state.rate.to_string(),
            "--scratch".into(),
            state.scratch.to_string(),
        ];
        let worker = helper::spawn(&ctx.env, &args, Duration::from_secs(30))?;
        let mut record = plan.record.clone();
        record.helpers.push(worker);
        Ok(record)
    }

    fn check(&self, record: &RevertRecord, ctx: &Context) -> Result<Effect, FaultError> {
        let state: IoState = record.state()?;
        let alive = helper::alive(&record.helpers, &ctx.env);
        Ok(if alive > 0 {
            Effect::in_effect(format!(
                "helper {} {}/s ({})",
                if state.direction == "read" {
                    "reading"
                } else {
                    "writing"
                },
                ByteSize(state.rate),
                state.file.display()
            ))
        } else {
            Effect::not_in_effect("the I/O helper is not running")
        })
    }

    fn revert(&self, record: &RevertRecord, ctx: &Context) -> Result<(), FaultError> {
        let state: IoState = record.state()?;
        helper::end_all(&record.helpers, &ctx.env)?;
        check_owned(&state.file, &self.path, IO_PREFIX, &ctx.id)?;
        remove_file(&state.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_arithmetic_matches_df() {
        let s = guard::Space {
            total: 1000,
            free: 700,
            avail: 700,
        };
        assert_eq!(bytes_to_reach(s, 50.0), 200);
        assert_eq!(bytes_to_reach(s, 30.0), 0);
        // Reserved blocks: avail < free; df's percentage uses used + avail.
        let s = guard::Space {
            total: 1000,
            free: 300,
            avail: 250,
        };
        assert_eq!(bytes_to_reach(s, 80.0), 60);
    }

    #[test]
    fn only_the_faults_own_fill_file_in_the_journaled_directory_is_accepted() {
        let id: crate::FaultId = "disk-fill-0000abcd".to_owned().try_into().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ok = fill_file(d, &id);
        assert!(check_owned(&ok, d, FILL_PREFIX, &id).is_ok());
        let other: crate::FaultId = "disk-fill-ffff0000".to_owned().try_into().unwrap();
        let precious = d.join("precious");
        std::fs::write(&precious, "x").unwrap();
        for bad in [
            precious.clone(),
            PathBuf::from("/etc/passwd"),
            fill_file(d, &other),
            fill_file(&d.join("sub"), &id),
            d.join("sub/../").join(format!("{FILL_PREFIX}{id}")),
            PathBuf::from(format!("{FILL_PREFIX}{id}")),
        ] {
            let e = check_owned(&bad, d, FILL_PREFIX, &id).unwrap_err();
            assert_eq!(e.guard(), Some(crate::Guard::OwnedFile), "{bad:?}");
            assert!(e.to_string().contains("nothing deleted"), "{e}");
        }
        // A symlink with the right name is refused too (its target is never touched).
        std::os::unix::fs::symlink(&precious, &ok).unwrap();
        assert!(check_owned(&ok, d, FILL_PREFIX, &id).is_err());
        assert!(precious.exists());
    }

    #[test]
    fn shrinking_gives_back_the_deficit_and_removes_a_small_fill() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(".faultline-fill-shrink");
        write_fill(&f, 1 << 20).unwrap();
        let what = shrink_fill(&f, 100_000).unwrap().unwrap();
        assert!(what.starts_with("shrank"), "{what}");
        assert_eq!(
            std::fs::metadata(&f).unwrap().len(),
            (1 << 20) - (128 << 10)
        );
        let what = shrink_fill(&f, 1 << 20).unwrap().unwrap();
        assert!(what.starts_with("removed"), "{what}");
        assert!(!f.exists());
        assert_eq!(shrink_fill(&f, 1).unwrap(), None);
    }

    #[test]
    fn fill_file_is_created_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(".faultline-fill-test");
        // A small ordinary temp file, not a fill of a real filesystem (the integration
        // tests fill a tmpfs they mount themselves).
        write_fill(&f, 64 << 10).unwrap();
        assert!(std::fs::metadata(&f).unwrap().len() >= 64 << 10);
        assert!(
            write_fill(&f, 1).is_err(),
            "an existing file is never overwritten"
        );
        remove_file(&f).unwrap();
        remove_file(&f).unwrap();
    }
}
