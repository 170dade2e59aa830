//! Change notification for the walk, so that the hierarchy is listed only in the cycles after
//! a cgroup directory appeared or went away instead of every cycle.
//!
//! Runtimes create and remove cgroups with `mkdir` and `rmdir`, and the VFS raises
//! `IN_CREATE` / `IN_DELETE` on the parent directory for both (checked on a cgroup v1 memory
//! hierarchy, kernel 6.18; cgroup2 goes through the same VFS calls but was not checked apart)
//! and on the regular directories of fixture and benchmark trees. A full walk adds a watch on
//! every directory it lists (the root and every directory it descends into, never a container's own: the walk does not descend into those,
//! and their removal is an event on their parent); between walks the collector reads the
//! queued events, which costs one `read` that finds none when nothing changed. Listing the
//! hierarchy was ~15 % of a default cycle's CPU on a host without containers (the memory
//! controller's directories hold 30-odd control files each, which `getdents` lists).
//!
//! The walk runs in full:
//! - in the first cycle, and whenever an event is queued (a directory created, removed or
//!   renamed anywhere the walk looks, or the kernel's queue overflowed);
//! - every [`FULL_WALK_EVERY`] cycles whatever the events said, as a backstop;
//! - every cycle while no watch set could be completed (no inotify; the per-user watch limit
//!   reached), trying again to complete one every [`FULL_WALK_EVERY`] cycles.
//!
//! Each full walk builds a new inotify instance and drops the last one, so that no watch
//! outlives the directories of the walk that set it. A directory's watch is added before the
//! directory is listed: an entry created after the listing raises an event, one created before
//! is in the listing.

use std::path::Path;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// A full walk at least this often, in cycles, whatever the events said.
pub const FULL_WALK_EVERY: u64 = 30;

/// What changes a directory's watch reports: entries created, removed or renamed in it.
const MASK: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

/// The watches of the last full walk.
#[derive(Debug)]
pub struct WalkWatch {
    /// Every directory of the last full walk holds a watch in this instance.
    armed: Option<Inotify>,
    /// Cycles since the last walk that tried to set watches.
    since_attempt: u64,
}

impl Default for WalkWatch {
    /// Due to try at once: the first cycle's walk sets the watches.
    fn default() -> Self {
        Self {
            armed: None,
            since_attempt: FULL_WALK_EVERY,
        }
    }
}

/// How this cycle's walk goes.
#[derive(Debug)]
pub enum Plan {
    /// Nothing changed: keep the last walk's containers.
    Keep,
    /// Walk, and watch every directory listed in this new instance.
    WalkArmed(Inotify),
    /// Walk without watches.
    Walk,
}

impl WalkWatch {
    /// Decides this cycle's walk; reads (and so clears) the queued events.
    pub fn plan(&mut self) -> Plan {
        self.since_attempt += 1;
        let armed = self.armed.is_some();
        if armed && self.since_attempt < FULL_WALK_EVERY && !self.changed() {
            return Plan::Keep;
        }
        self.armed = None;
        if !armed && self.since_attempt < FULL_WALK_EVERY {
            return Plan::Walk;
        }
        self.since_attempt = 0;
        match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
            Ok(i) => Plan::WalkArmed(i),
            Err(e) => {
                tracing::debug!(error = %e, "no inotify instance: the cgroup hierarchy is walked every cycle");
                Plan::Walk
            }
        }
    }

    /// After a walk: `Some(instance)` when every directory listed holds a watch in it.
    pub fn walked(&mut self, armed: Option<Inotify>) {
        self.armed = armed;
    }

    /// Whether any event is queued (or the queue cannot be read: walk to be safe).
    fn changed(&self) -> bool {
        let Some(inotify) = &self.armed else {
            return true;
        };
        let mut any = false;
        loop {
            match inotify.read_events() {
                Ok(events) if !events.is_empty() => any = true,
                Ok(_) | Err(Errno::EAGAIN) => return any,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "reading the walk's inotify events failed; walking");
                    return true;
                }
            }
        }
    }
}

/// Adds the watch for one directory about to be listed. `Ok` also when the directory is gone
/// (removed since its parent was listed: that removal is an event on the parent).
pub fn watch(inotify: &Inotify, dir: &Path) -> Result<(), Errno> {
    match inotify.add_watch(dir, MASK) {
        Ok(_) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot watch a cgroup directory; the hierarchy is walked every cycle");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Found, Hierarchy};
    use super::*;

    const ID: &str = "4a57c14d26338e3942ed0c74fa408ccc2b867eb66855835dbda05e806e749147";
    const ID2: &str = "5b57c14d26338e3942ed0c74fa408ccc2b867eb66855835dbda05e806e749147";

    /// A v2 tree with one pod of one container, in `dir`.
    fn tree(dir: &Path) -> Hierarchy {
        std::fs::write(dir.join("cgroup.controllers"), "cpu memory\n").unwrap();
        let pod = dir.join("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8a9b_acbdcedf0011.slice");
        std::fs::create_dir_all(pod.join(format!("cri-containerd-{ID}.scope"))).unwrap();
        std::fs::create_dir_all(dir.join("system.slice/ssh.service")).unwrap();
        Hierarchy::detect(dir).unwrap()
    }

    /// One cycle as the collector runs it; true when the hierarchy was listed.
    fn cycle(w: &mut WalkWatch, h: &Hierarchy, found: &mut Vec<Found>) -> bool {
        match w.plan() {
            Plan::Keep => false,
            Plan::Walk => {
                h.walk(found).unwrap();
                true
            }
            Plan::WalkArmed(i) => {
                let complete = h.walk_watched(found, Some(&i)).unwrap();
                w.walked(complete.then_some(i));
                true
            }
        }
    }

    fn ids(found: &[Found]) -> Vec<&str> {
        let mut v: Vec<&str> = found.iter().map(|f| f.path.id.as_str()).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn the_hierarchy_is_listed_again_only_after_a_directory_changed_or_as_a_backstop() {
        let dir = tempfile::tempdir().unwrap();
        let h = tree(dir.path());
        let pod = dir.path().join("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8a9b_acbdcedf0011.slice");
        let (mut w, mut found) = (WalkWatch::default(), Vec::new());
        assert!(cycle(&mut w, &h, &mut found), "the first cycle walks");
        assert_eq!(ids(&found), [ID]);
        assert!(!cycle(&mut w, &h, &mut found), "nothing changed: no walk");
        assert!(!cycle(&mut w, &h, &mut found));
        assert_eq!(ids(&found), [ID], "the last walk's containers stand");

        // A container created deep in the tree (in a directory the walk descended into).
        std::fs::create_dir(pod.join(format!("cri-containerd-{ID2}.scope"))).unwrap();
        assert!(
            cycle(&mut w, &h, &mut found),
            "a new container's directory: walk"
        );
        assert_eq!(ids(&found), [ID, ID2]);
        assert!(!cycle(&mut w, &h, &mut found));

        // A container removed.
        std::fs::remove_dir(pod.join(format!("cri-containerd-{ID}.scope"))).unwrap();
        assert!(cycle(&mut w, &h, &mut found), "a removed container: walk");
        assert_eq!(ids(&found), [ID2]);

        // A new pod directory, then a container in it: both are seen, the second through the
        // watch the walk after the first set on the new directory.
        let pod2 = dir.path().join("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f1e2d3c_4b5a_6978_8a9b_acbdcedf0011.slice");
        std::fs::create_dir(&pod2).unwrap();
        assert!(cycle(&mut w, &h, &mut found));
        assert!(!cycle(&mut w, &h, &mut found));
        std::fs::create_dir(pod2.join(format!("cri-containerd-{ID}.scope"))).unwrap();
        assert!(cycle(&mut w, &h, &mut found));
        assert_eq!(ids(&found), [ID, ID2]);

        // A renamed directory.
        std::fs::rename(
            dir.path().join("system.slice/ssh.service"),
            dir.path().join("system.slice/sshd.service"),
        )
        .unwrap();
        assert!(cycle(&mut w, &h, &mut found), "a rename: walk");

        // The backstop: a full walk every FULL_WALK_EVERY cycles whatever the events said.
        let walks = (0..FULL_WALK_EVERY * 2)
            .filter(|_| cycle(&mut w, &h, &mut found))
            .count();
        assert_eq!(walks, 2);
    }

    #[test]
    fn without_watches_the_hierarchy_is_listed_every_cycle() {
        let dir = tempfile::tempdir().unwrap();
        let h = tree(dir.path());
        let (mut w, mut found) = (WalkWatch::default(), Vec::new());
        // A walk whose watch set was incomplete (as when the watch limit is reached).
        let Plan::WalkArmed(_) = w.plan() else {
            panic!("the first cycle tries to set watches")
        };
        h.walk(&mut found).unwrap();
        w.walked(None);
        for _ in 0..5 {
            assert!(
                cycle(&mut w, &h, &mut found),
                "no watches: every cycle walks"
            );
        }
    }
}
