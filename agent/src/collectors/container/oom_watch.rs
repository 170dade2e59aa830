//! Change notification for cgroup v2 `memory.events`, so that the container collector reads
//! the file only in the cycles after it changed instead of every cycle.
//!
//! The kernel raises a "file modified" event on a cgroup's `memory.events` whenever one of its
//! counters changes (cgroup v2 documentation, "memory.events"), which inotify delivers like any
//! other modification; a regular file (fixture and benchmark trees) raises the same event when
//! written. The collector watches each container's file before its first read, keeps the
//! OOM-kill count it read, and reads the file again only after an event for it, after the
//! kernel's event queue overflowed, every cycle for a container without a watch (none could be
//! added: no inotify, the per-user watch limit reached, no memory controller yet; it tries
//! again every few cycles), and, as a backstop, with the container's limits every
//! `LIMITS_EVERY` cycles whatever the events said.
//!
//! kernfs (before Linux 7.1, as far as is known) reports a changed file but not a removed
//! one: a watch whose file went away (the memory controller disabled for the cgroup) stays,
//! on an inode no longer in the tree. So the collector drops a container's watch itself when
//! its memory figures vanish, and ends a gone container's watch with `rm_watch`; an
//! `IN_IGNORED` the kernel does send (other filesystems, newer kernels) also ends it.
//!
//! Not for cgroup v1: `memory.oom_control` raises no such event.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// One inotify instance for every container's `memory.events`.
#[derive(Debug)]
pub struct OomWatch {
    inotify: Option<Inotify>,
    /// Which container (its cgroup path relative to the root, the collector's key) each watch
    /// is for.
    by_wd: HashMap<WatchDescriptor, String>,
}

/// One container's `memory.events` as the collector follows it: its watch, the OOM-kill count
/// last read, and whether the file is due (it may have changed since).
#[derive(Debug)]
pub struct Followed {
    wd: Option<WatchDescriptor>,
    kills: Option<u64>,
    stale: bool,
}

impl Default for Followed {
    /// A new container: no watch yet, its file due.
    fn default() -> Self {
        Self {
            wd: None,
            kills: None,
            stale: true,
        }
    }
}

impl Followed {
    /// Whether a watch holds.
    pub fn is_watched(&self) -> bool {
        self.wd.is_some()
    }

    /// Whether the file has to be read in the next cycle whatever else holds.
    pub fn is_stale(&self) -> bool {
        self.stale
    }
}

/// What happened since the last [`OomWatch::drain`].
#[derive(Debug, Default)]
pub struct Changes {
    /// The containers whose file changed.
    pub changed: Vec<String>,
    /// The containers whose watch the kernel ended (the file was removed: the cgroup is
    /// gone, or its memory controller was disabled): they read the file every cycle again.
    pub ended: Vec<String>,
    /// Events were lost: every watched container must read its file.
    pub overflowed: bool,
}

impl Default for OomWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl OomWatch {
    /// A watch with its own inotify instance; without one (inotify unavailable, the instance
    /// limit reached) every container reads its file every cycle.
    pub fn new() -> Self {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| {
                tracing::debug!(error = %e, "no inotify instance: memory.events is read every cycle");
            })
            .ok();
        Self {
            inotify,
            by_wd: HashMap::new(),
        }
    }

    /// Starts watching `file` for container `key`; `None` when it cannot be watched (the
    /// container then reads the file every cycle).
    pub fn watch(&mut self, file: &Path, key: &str) -> Option<WatchDescriptor> {
        let wd = self
            .inotify
            .as_ref()?
            .add_watch(file, AddWatchFlags::IN_MODIFY)
            .ok()?;
        self.by_wd.insert(wd, key.to_owned());
        Some(wd)
    }

    /// Stops watching (the container is gone). A watch the kernel already ended with the
    /// cgroup's removal is only forgotten.
    pub fn unwatch(&mut self, wd: WatchDescriptor) {
        if self.by_wd.remove(&wd).is_some()
            && let Some(i) = &self.inotify
        {
            let _ = i.rm_watch(wd);
        }
    }

    /// How many watches are held.
    pub fn len(&self) -> usize {
        self.by_wd.len()
    }

    /// Whether no watch is held.
    pub fn is_empty(&self) -> bool {
        self.by_wd.is_empty()
    }

    /// At the start of a cycle: marks the containers whose file changed (or all, after lost
    /// events) due, and those whose watch the kernel ended unwatched.
    pub fn apply_events<T>(
        &mut self,
        containers: &mut HashMap<String, T>,
        followed: impl Fn(&mut T) -> &mut Followed,
    ) {
        let changes = self.drain();
        for key in &changes.changed {
            if let Some(c) = containers.get_mut(key) {
                followed(c).stale = true;
            }
        }
        for key in &changes.ended {
            if let Some(c) = containers.get_mut(key) {
                let c = followed(c);
                (c.wd, c.stale) = (None, true);
            }
        }
        if changes.overflowed {
            containers
                .values_mut()
                .for_each(|c| followed(c).stale = true);
        }
    }

    /// Before a container's read: watches `file` (the container's key `key`) where no watch
    /// holds and the container is new or due, or at its `backstop` (with its limits), so that
    /// no change after the read is missed; returns whether the file is to be read: when due,
    /// unwatched, or at the backstop — a watch can outlive its file, which kernfs does not
    /// report removed.
    pub fn before_read(
        &mut self,
        c: &mut Followed,
        file: impl FnOnce() -> PathBuf,
        key: &str,
        backstop: bool,
    ) -> bool {
        if c.wd.is_none() && (c.stale || backstop) {
            c.wd = self.watch(&file(), key);
        }
        c.wd.is_none() || c.stale || backstop
    }

    /// After the read: the count to report. `memory` says whether the container has memory
    /// figures at all (without, a watch may be on a file that is gone: it is dropped); `read`
    /// is what the read found when `due`.
    pub fn after_read(
        &mut self,
        c: &mut Followed,
        memory: bool,
        due: bool,
        read: Option<u64>,
    ) -> Option<u64> {
        if !memory {
            self.forget(c);
            (c.kills, c.stale) = (None, true);
        } else if due {
            (c.kills, c.stale) = (read, false);
        }
        c.kills
    }

    /// The container is gone (or replaced): its watch ends.
    pub fn forget(&mut self, c: &mut Followed) {
        if let Some(wd) = c.wd.take() {
            self.unwatch(wd);
        }
    }

    /// Reads every pending event, without waiting.
    pub fn drain(&mut self) -> Changes {
        let mut out = Changes::default();
        let Some(inotify) = &self.inotify else {
            return out;
        };
        loop {
            match inotify.read_events() {
                Ok(events) if !events.is_empty() => {
                    for e in events {
                        if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                            out.overflowed = true;
                        } else if e.mask.contains(AddWatchFlags::IN_IGNORED) {
                            // The file went away: the watch is over.
                            if let Some(key) = self.by_wd.remove(&e.wd) {
                                out.ended.push(key);
                            }
                        } else if let Some(key) = self.by_wd.get(&e.wd) {
                            out.changed.push(key.clone());
                        }
                    }
                }
                Ok(_) | Err(Errno::EAGAIN) => return out,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "reading inotify events failed; every container reads memory.events this cycle");
                    out.overflowed = true;
                    return out;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_to_a_watched_file_names_its_container_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.events"), dir.path().join("b.events"));
        std::fs::write(&a, "oom_kill 0\n").unwrap();
        std::fs::write(&b, "oom_kill 0\n").unwrap();
        let mut w = OomWatch::new();
        let wa = w.watch(&a, "pod/a").unwrap();
        w.watch(&b, "pod/b").unwrap();
        assert!(w.drain().changed.is_empty(), "nothing changed yet");
        std::fs::write(&a, "oom_kill 1\n").unwrap();
        let c = w.drain();
        assert!(!c.overflowed);
        assert!(
            c.changed.iter().all(|k| k == "pod/a") && !c.changed.is_empty(),
            "{c:?}"
        );
        assert!(w.drain().changed.is_empty(), "each event is delivered once");
        // Removed with its cgroup: the kernel ends the watch, and the map forgets it. It does
        // so when the inode goes, which a process forked by a concurrent test can delay while
        // it holds a copy of a descriptor of the file (until its exec closes it): waited for,
        // within a bound.
        std::fs::remove_file(&b).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut ended = Vec::new();
        while ended.is_empty() && std::time::Instant::now() < deadline {
            let c = w.drain();
            assert!(c.changed.is_empty());
            ended.extend(c.ended);
            #[allow(clippy::disallowed_methods)] // a plain test thread waits for the kernel
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(ended, ["pod/b"]);
        assert_eq!(w.len(), 1);
        w.unwatch(wa);
        assert!(w.is_empty());
        std::fs::write(&a, "oom_kill 2\n").unwrap();
        assert!(w.drain().changed.is_empty(), "no event after unwatch");
        assert!(w.watch(&dir.path().join("absent"), "x").is_none());
    }
}
