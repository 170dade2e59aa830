//! One collection cycle of the [`ContainerCollector`], one method per step: begin (walk the
//! hierarchy, take the `memory.events` changes), then for each container found track it,
//! hold it back while its metadata may still come, refresh its resource, read its control
//! files and record its figures; last, drop the containers not seen and report.

use std::collections::HashMap;
use std::sync::Arc;

use faultline_exporters::model::{Batch, ResourceMetrics};

use super::ContainerCollector;
use super::cgroup::{self, Found, ReadOutcome, Reads};
use super::metadata::{self, MetadataCache};
use super::paths::Runtime;
use super::record;
use super::resource::Sources;
use super::tracked::Tracked;
use crate::collectors::{CollectError, Collector, Context};

/// What one pass over the containers knows from the start and gathers for the end.
#[derive(Debug, Default)]
struct Pass {
    /// Docker is connected: it may name a container it has not named yet.
    docker_live: bool,
    /// The CRI runtime's last listing succeeded: its next one may name a new container.
    cri_live: bool,
    /// The kubelet has answered: it may name a pod's container on its next answer.
    kubelet_live: bool,
    /// The first read error; the other containers are reported all the same.
    first_error: Option<CollectError>,
    /// Containers no source names, and one of their IDs, for the log.
    missing: usize,
    missing_example: Option<String>,
    /// A container was held back for the CRI runtime: list now rather than at the next
    /// refresh.
    ask_cri: bool,
    /// A container was held back for the kubelet: ask it now rather than at its next poll.
    ask_kubelet: bool,
}

impl Pass {
    fn new(cache: &MetadataCache) -> Self {
        Self {
            docker_live: cache.docker_connected(),
            cri_live: cache.cri_listed(),
            kubelet_live: cache.kubelet_answered(),
            ..Self::default()
        }
    }
}

impl Collector for ContainerCollector {
    fn name(&self) -> &'static str {
        "containers"
    }

    fn collect(&mut self, ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        self.begin_cycle(ctx)?;
        let mut pass = Pass::new(&self.cache);
        // Out of `self` for the pass, so that each step can borrow the collector and one
        // container at once.
        let found = std::mem::take(&mut self.found);
        let mut tracked = std::mem::take(&mut self.tracked);
        {
            let cache = Arc::clone(&self.cache);
            let docker = cache.docker();
            let cri = cache.cri();
            let kube = cache.kubelet();
            for f in &found {
                let sources = Sources::of(&docker, &cri, &kube, &f.path);
                self.container(&mut tracked, f, sources, ctx, batch, &mut pass);
            }
        }
        self.found = found;
        self.drop_unseen(&mut tracked);
        if self.network {
            self.net.end_cycle(&mut self.fds);
        }
        self.tracked = tracked;
        self.end_cycle(pass)
    }
}

impl ContainerCollector {
    /// Waits for the metadata sources before the first cycle (bounded), lists the
    /// containers, marks those whose `memory.events` changed and forgets the last cycle's
    /// network reads.
    fn begin_cycle(&mut self, ctx: &Context) -> Result<(), CollectError> {
        if self.cycle == 0
            && let Some(w) = &self.worker
        {
            w.wait_initial(metadata::INITIAL_SYNC_WAIT);
        }
        self.cycle += 1;
        self.walk()?;
        if let Some(w) = &mut self.oom_watch {
            w.apply_events(&mut self.tracked, |t| &mut t.oom);
        }
        if self.network {
            self.net.begin_cycle();
        }
        // The host's counters gate the containers' reads: none to read, nothing to gate (a
        // host without containers pays no extra read per cycle).
        if self.found.is_empty() {
            self.counters.now = Default::default();
        } else {
            self.counters.refresh(&ctx.roots.proc);
        }
        Ok(())
    }

    /// Lists the containers again when a cgroup directory may have appeared or gone since the
    /// last walk (`walk_watch`); otherwise the last walk's list stands.
    fn walk(&mut self) -> Result<(), CollectError> {
        use cgroup::walk_watch::Plan;
        match self.walk_watch.plan() {
            Plan::Keep => Ok(()),
            Plan::Walk => self.hierarchy.walk(&mut self.found),
            Plan::WalkArmed(inotify) => {
                // On an error the set is incomplete: walk again next cycle.
                let complete = self.hierarchy.walk_watched(&mut self.found, Some(&inotify));
                self.walk_watch
                    .walked(matches!(complete, Ok(true)).then_some(inotify));
                complete.map(|_| ())
            }
        }
    }

    /// One container found by the walk, named by `sources`: tracked, read and recorded.
    fn container(
        &mut self,
        tracked: &mut HashMap<String, Tracked>,
        f: &Found,
        sources: Sources,
        ctx: &Context,
        batch: &mut Batch,
        pass: &mut Pass,
    ) {
        self.track(tracked, f, batch.time_unix_nanos);
        let Some(t) = tracked.get_mut(&f.rel) else {
            return;
        };
        t.seen_cycle = self.cycle;
        if sources.is_empty() && self.hold_back_unnamed(t, pass) {
            return;
        }
        t.refresh_resource(&self.host, sources);
        let reads = match self.read(t, &f.rel) {
            Ok(Some(reads)) => reads,
            // Dropped at the end of the cycle.
            Ok(None) => {
                t.seen_cycle = 0;
                return;
            }
            Err(e) => {
                pass.first_error.get_or_insert(e);
                return;
            }
        };
        self.record(t, &f.rel, ctx, batch, reads, pass);
    }

    /// Starts tracking a container first seen now, at the start time of its directory. A
    /// container restarted under the same path (its directory recreated, another inode) is a
    /// new one: its predecessor's state goes first (its watch too: a new watch on the same
    /// file would get the same descriptor, which removing the old one afterwards would end).
    fn track(&mut self, tracked: &mut HashMap<String, Tracked>, f: &Found, now: u64) {
        if matches!(tracked.get(&f.rel), Some(t) if t.ino == f.ino) {
            return;
        }
        if let Some(mut old) = tracked.remove(&f.rel) {
            old.release(&mut self.fds, self.oom_watch.as_mut());
        }
        let (keep_dirs, charge) = self.fds.dirs_for_new(&self.hierarchy);
        // Never after the cycle's time: a container created between the cycle's timestamp and
        // the walk would otherwise start after its first points (OTLP requires start ≤ time).
        let start = self
            .hierarchy
            .walk_root()
            .and_then(|r| cgroup::dir_time_unix_nanos(&r.join(&f.rel)).ok())
            .map_or(now, |t| t.min(now));
        tracked.insert(
            f.rel.clone(),
            Tracked::new(f, start, keep_dirs, charge, self.cycle),
        );
    }

    /// For a container no source names: whether it is held back this cycle, its first but
    /// not the collector's first, because a connected source may still name it (the source
    /// is asked about it); else it counts as missing and is reported by ID.
    fn hold_back_unnamed(&self, t: &Tracked, pass: &mut Pass) -> bool {
        // The Engine API answers for podman's containers where podman's socket is configured.
        let docker_may_know = pass.docker_live
            && matches!(
                t.path.runtime,
                None | Some(Runtime::Docker | Runtime::Podman)
            );
        let cri_may_know = pass.cri_live
            && matches!(
                t.path.runtime,
                None | Some(Runtime::Containerd | Runtime::CriO)
            );
        let kubelet_may_know = pass.kubelet_live && t.path.pod_uid.is_some();
        if t.first_cycle == self.cycle
            && self.cycle > 1
            && (docker_may_know || cri_may_know || kubelet_may_know)
        {
            // Docker is asked only about a container it may know: on a CRI node every new
            // pod would otherwise cost an inspect that answers 404.
            if docker_may_know
                && let Some(tx) = self
                    .worker
                    .as_ref()
                    .and_then(|w| w.docker_requests.as_ref())
            {
                let _ = tx.try_send(t.path.id.clone());
            }
            pass.ask_cri |= cri_may_know;
            pass.ask_kubelet |= kubelet_may_know;
            return true;
        }
        pass.missing += 1;
        pass.missing_example
            .get_or_insert_with(|| t.path.id.clone());
        false
    }

    /// Reads the container's control files into `self.sample`: the limits and `cgroup.procs`
    /// only when due (else the kept ones), the OOM count and the costlier files (`memo`) only
    /// when they may have changed (else their last figures). Returns what was read;
    /// `Ok(None)` when the cgroup is gone.
    fn read(&mut self, t: &mut Tracked, rel: &str) -> Result<Option<Reads>, CollectError> {
        let read_limits = t.limits_due(self.cycle);
        let backstop = t.backstop_due(self.cycle);
        // The pid whose network namespace is read comes from `cgroup.procs` with the
        // limits, or when none is known (new container, or its process went away):
        // one file less per container and cycle.
        let known_pid = t.netns.map(|(pid, _)| pid);
        let read_pid = self.network && (read_limits || known_pid.is_none());
        // The OOM count only when it may have changed, with the limits as a backstop:
        // `memory.events` (cgroup v2) after a change notification, v1's
        // `memory.oom_control` after the host's count moved.
        let oom_due = match (&mut self.oom_watch, self.hierarchy.walk_root()) {
            (Some(w), Some(root)) => w.before_read(
                &mut t.oom,
                || root.join(rel).join("memory.events"),
                rel,
                read_limits,
            ),
            (Some(_), None) => true,
            (None, _) => t.memo.oom_v1_due(self.counters.now.ooms, backstop),
        };
        let pressure = if self.pressure {
            t.memo.pressure_due(&self.counters.now, backstop)
        } else {
            [false; 3]
        };
        let reads = Reads {
            pressure,
            limits: read_limits,
            pid: read_pid,
            oom_events: oom_due,
            throttling: t.memo.throttling_due(t.has_cpu_quota(), backstop),
            memory_stat: t.memo.memory_stat_due(read_limits),
            unless_cpu_total: t.memo.idle_unless(backstop),
        };
        match self.hierarchy.read(
            rel,
            &mut t.fds,
            &mut self.fds,
            &mut self.buf,
            &mut self.sample,
            reads,
        )? {
            ReadOutcome::Read => {}
            ReadOutcome::Gone => return Ok(None),
        }
        if !read_pid {
            self.sample.pid = known_pid;
        }
        if let Some(w) = &mut self.oom_watch {
            let memory = self.sample.memory.is_some();
            self.sample.oom_kills =
                w.after_read(&mut t.oom, memory, oom_due, self.sample.oom_kills);
        }
        let v1 = self.oom_watch.is_none();
        t.memo
            .after_read(&mut self.sample, reads, v1, &self.counters.now);
        t.cache_limits(&mut self.sample, self.cycle, read_limits);
        t.split_cpu(&mut self.sample);
        Ok(Some(reads))
    }

    /// Records the container's sample into its own resource, metric family by family.
    fn record(
        &mut self,
        t: &mut Tracked,
        rel: &str,
        ctx: &Context,
        batch: &mut Batch,
        reads: Reads,
        pass: &mut Pass,
    ) {
        let now = batch.time_unix_nanos;
        let s = &self.sample;
        let start = t.start_unix_nanos;
        let rm = batch.add_resource(t.resource.clone(), start);
        rm.metrics.reserve_exact(t.metric_count);
        record::cpu(rm, s, t.prev_cpu, now);
        record::memory(rm, s);
        record::tasks(rm, s);
        if self.pressure {
            record::pressure(rm, s);
        }
        record::uptime(rm, now, start);
        if let (Some(u), Some(sy)) = (s.cpu_user_ns, s.cpu_system_ns) {
            t.prev_cpu = Some((now, u, sy));
        }
        record::disk(rm, &s.io, &mut self.devices, &ctx.roots);
        if let Err(e) = self.record_network(t, rel, rm, ctx, reads.pid) {
            pass.first_error.get_or_insert(e);
        }
        t.metric_count = rm.metrics.len();
    }

    /// Network bytes from the namespace of the container's process, if it has its own.
    fn record_network(
        &mut self,
        t: &mut Tracked,
        rel: &str,
        rm: &mut ResourceMetrics,
        ctx: &Context,
        procs_read: bool,
    ) -> Result<(), CollectError> {
        let (true, Some(pid)) = (self.network, self.sample.pid) else {
            return Ok(());
        };
        let ifaces = self.net.interfaces(
            &ctx.roots.proc,
            pid,
            &mut t.netns,
            procs_read,
            &mut self.fds,
            || self.hierarchy.first_pid(rel, &mut self.buf),
        )?;
        record::network(rm, ifaces);
        Ok(())
    }

    /// Drops the state of every container not seen this cycle (stopped, or gone while read):
    /// no stale series, its descriptors closed.
    fn drop_unseen(&mut self, tracked: &mut HashMap<String, Tracked>) {
        let cycle = self.cycle;
        let fds = &mut self.fds;
        let oom_watch = &mut self.oom_watch;
        tracked.retain(|_, t| {
            let stays = t.seen_cycle == cycle;
            if !stays {
                t.release(fds, oom_watch.as_mut());
            }
            stays
        });
    }

    /// Asks the CRI runtime and the kubelet about containers held back for them, logs
    /// (once) that containers without metadata are reported by ID, and returns the cycle's
    /// first read error.
    fn end_cycle(&mut self, pass: Pass) -> Result<(), CollectError> {
        if let Some(w) = &self.worker {
            for (asked, requests) in [
                (pass.ask_cri, &w.cri_requests),
                (pass.ask_kubelet, &w.kubelet_requests),
            ] {
                if let (true, Some(tx)) = (asked, requests) {
                    let _ = tx.try_send(());
                }
            }
        }
        if pass.missing > 0 && !self.logged_missing {
            self.logged_missing = true;
            tracing::info!(
                containers = pass.missing,
                example = pass.missing_example.as_deref().unwrap_or(""),
                "containers without metadata (no reachable runtime source knows them) are reported by ID only (logged once)"
            );
        }
        match pass.first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
