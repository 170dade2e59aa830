//! The guards no request can bypass. The engine runs [`check_plan`] on every plan before
//! the journal is written; faults re-run the checks that depend on a moving quantity (free
//! space) right before they act, and signal targets only through [`signal`], which checks
//! the process guards and the target's identity (pid + start time) at the moment of the
//! signal.
//!
//! A refusal is [`FaultError::Refused`] and names its [`Guard`].

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::config::ChaosConfig;
use crate::error::{FaultError, Guard};
use crate::fault::{Context, Env, Plan, PodRef, Target};
use crate::freezer::FreezerCgroup;
use crate::procfs::{self, ProcessIdentity};
use crate::units::ByteSize;

/// Refuses a duration of zero or above `max_duration`.
pub fn check_duration(
    kind: &'static str,
    d: Duration,
    config: &ChaosConfig,
) -> Result<(), FaultError> {
    if d.is_zero() {
        return Err(FaultError::Invalid {
            kind,
            message: "duration must be more than 0s".into(),
        });
    }
    if d > config.max_duration.0 {
        return Err(FaultError::refused(
            Guard::MaxDuration,
            format!(
                "{} is longer than chaos.max_duration ({})",
                humantime::format_duration(d),
                config.max_duration
            ),
        ));
    }
    Ok(())
}

/// Refuses signalling PID 1, the agent, its parent, kernel threads and protected processes.
pub fn check_process(
    p: &ProcessIdentity,
    config: &ChaosConfig,
    env: &Env,
) -> Result<(), FaultError> {
    if p.pid <= 1 {
        return Err(FaultError::refused(
            Guard::Pid1,
            format!("will not signal {p}: PID 1 (init) and pid <= 0 are never signalled"),
        ));
    }
    if p.pid == env.agent.pid {
        return Err(FaultError::refused(
            Guard::AgentItself,
            format!("will not signal {p}: it is this faultline agent"),
        ));
    }
    if p.pid == env.parent_pid {
        return Err(FaultError::refused(
            Guard::AgentParent,
            format!("will not signal {p}: it is the faultline agent's parent"),
        ));
    }
    let stat = procfs::read_stat(&env.proc_root, p.pid);
    if p.pid == 2 || stat.as_ref().is_some_and(|s| s.ppid == 2) {
        return Err(FaultError::refused(
            Guard::KernelThread,
            format!("will not signal {p}: it is a kernel thread"),
        ));
    }
    let comm = stat.map(|s| s.comm).unwrap_or_else(|| p.name.clone());
    let names = procfs::names(&env.proc_root, p.pid, &comm);
    if let Some(hit) = config
        .protected_processes
        .iter()
        .find(|w| procfs::name_matches(&names, w))
    {
        return Err(FaultError::refused(
            Guard::ProtectedProcess,
            format!("will not signal {p}: {hit:?} is in chaos.protected_processes"),
        ));
    }
    Ok(())
}

/// The cgroup paths of the agent's own process (empty when unreadable).
fn own_cgroups(env: &Env) -> Vec<String> {
    procfs::cgroups(&env.proc_root, env.agent.pid)
}

/// Refuses a container that holds the agent itself (`agent-itself`: its id is in the agent's
/// own cgroup paths) and, when its pod is known, the agent's own pod (`agent-pod`: the pod
/// `POD_NAMESPACE`/`POD_NAME` name, or whose uid is in the agent's cgroup paths) and a pod in
/// a protected namespace (`protected-namespace`). `what` names the container in the message.
pub fn check_container(
    id: &str,
    what: &str,
    pod: Option<&PodRef>,
    config: &ChaosConfig,
    env: &Env,
) -> Result<(), FaultError> {
    let own = own_cgroups(env);
    let id = id.to_ascii_lowercase();
    if id.len() >= 12 && own.iter().any(|p| p.to_ascii_lowercase().contains(&id)) {
        return Err(FaultError::refused(
            Guard::AgentItself,
            format!(
                "container {what} ({id}) holds the agent itself: its id is in the agent's cgroup path"
            ),
        ));
    }
    let Some(pod) = pod else {
        return Ok(());
    };
    if let Some(ns) = config
        .protected_namespaces
        .iter()
        .find(|ns| **ns == pod.namespace)
    {
        return Err(FaultError::refused(
            Guard::ProtectedNamespace,
            format!(
                "will not touch container {what} of pod {pod}: namespace {ns:?} is in chaos.protected_namespaces"
            ),
        ));
    }
    let same_name = env
        .pod
        .as_ref()
        .is_some_and(|me| me.namespace == pod.namespace && me.name == pod.name);
    let uid_in_own = !pod.uid.is_empty() && {
        // cgroupfs names the pod `pod<uid>`; systemd `…-pod<uid with _ for ->.slice`.
        let dashed = pod.uid.to_ascii_lowercase();
        let underscored = dashed.replace('-', "_");
        own.iter().any(|p| {
            let p = p.to_ascii_lowercase();
            p.contains(&format!("pod{dashed}")) || p.contains(&format!("pod{underscored}"))
        })
    };
    if same_name || uid_in_own {
        return Err(FaultError::refused(
            Guard::AgentPod,
            format!(
                "will not touch container {what} of pod {pod}: it is the faultline agent's own pod"
            ),
        ));
    }
    Ok(())
}

/// Refuses to freeze a cgroup that holds the agent (the agent's own freezer cgroup is it
/// or below it): the agent could not thaw it again.
pub fn check_freezer(cgroup: &FreezerCgroup, env: &Env) -> Result<(), FaultError> {
    let own = crate::freezer::of_process(&env.proc_root, env.agent.pid);
    if own.is_some_and(|me| me.cgroup.dir.starts_with(&cgroup.dir)) {
        return Err(FaultError::refused(
            Guard::AgentItself,
            format!(
                "will not freeze cgroup {}: the faultline agent runs in it",
                cgroup.dir.display()
            ),
        ));
    }
    Ok(())
}

/// Sends `sig` to `p` if it passes the process guards and is still the same process (pid +
/// start time). `Ok(false)` when it is gone.
pub fn signal(p: &ProcessIdentity, sig: Signal, ctx: &Context) -> Result<bool, FaultError> {
    check_process(p, &ctx.config, &ctx.env)?;
    signal_if_alive(p, sig, &ctx.env)
}

/// Sends `sig` to `p` if it is still the same process, without the process guards: for
/// reverting (SIGCONT to a process we stopped) and for our own helper processes.
pub fn signal_if_alive(p: &ProcessIdentity, sig: Signal, env: &Env) -> Result<bool, FaultError> {
    if p.pid <= 1 || p.pid == env.agent.pid {
        return Err(FaultError::refused(
            Guard::Pid1,
            format!("will not signal {p}"),
        ));
    }
    if !procfs::is_alive(&env.proc_root, p, &env.boot_id) {
        return Ok(false);
    }
    match kill(Pid::from_raw(p.pid), sig) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(errno) => Err(FaultError::Sys {
            action: format!("cannot send {sig} to {p}"),
            errno,
        }),
    }
}

/// Space figures of the filesystem holding a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Size in bytes.
    pub total: u64,
    /// Free bytes (`f_bfree`).
    pub free: u64,
    /// Bytes available to unprivileged users (`f_bavail`).
    pub avail: u64,
}

impl Space {
    /// Used bytes (`total - free`).
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.free)
    }
    /// Used percentage as `df` shows it: used / (used + avail).
    pub fn used_percent(&self) -> f64 {
        let denom = self.used() + self.avail;
        if denom == 0 {
            0.0
        } else {
            self.used() as f64 * 100.0 / denom as f64
        }
    }
}

/// statvfs of `path`.
pub fn space(path: &Path) -> Result<Space, FaultError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|errno| FaultError::Sys {
        action: format!("statvfs {}", path.display()),
        errno,
    })?;
    let f = st.fragment_size() as u64;
    Ok(Space {
        total: st.blocks() as u64 * f,
        free: st.blocks_free() as u64 * f,
        avail: st.blocks_available() as u64 * f,
    })
}

/// Refuses a fill of `bytes` that would leave less than `chaos.disk_free_floor` available.
pub fn check_disk_fill(dir: &Path, bytes: u64, config: &ChaosConfig) -> Result<(), FaultError> {
    let s = space(dir)?;
    check_fill_against(dir, bytes, s, config)
}

/// The pure part of [`check_disk_fill`].
pub fn check_fill_against(
    dir: &Path,
    bytes: u64,
    s: Space,
    config: &ChaosConfig,
) -> Result<(), FaultError> {
    let floor = config.disk_free_floor.bytes(s.total);
    let left = s.avail.saturating_sub(bytes);
    if bytes > s.avail || left < floor {
        return Err(FaultError::refused(
            Guard::DiskFreeFloor,
            format!(
                "filling {} in {} would leave {} available, below chaos.disk_free_floor ({} = {}); at most {} may be filled",
                ByteSize(bytes),
                dir.display(),
                ByteSize(left),
                config.disk_free_floor,
                ByteSize(floor),
                ByteSize(s.avail.saturating_sub(floor)),
            ),
        ));
    }
    Ok(())
}

/// Refuses a memory stress above `chaos.memory_max_share` of MemAvailable.
pub fn check_memory(bytes: u64, config: &ChaosConfig, env: &Env) -> Result<(), FaultError> {
    let available = procfs::mem_available(&env.proc_root).map_err(|source| FaultError::Io {
        action: "cannot read MemAvailable from",
        path: env.proc_root.join("meminfo"),
        source,
    })?;
    check_memory_against(bytes, available, config)
}

/// The pure part of [`check_memory`].
pub fn check_memory_against(
    bytes: u64,
    available: u64,
    config: &ChaosConfig,
) -> Result<(), FaultError> {
    let max = (available as f64 * config.memory_max_share.0 / 100.0) as u64;
    if bytes > max {
        return Err(FaultError::refused(
            Guard::MemoryShare,
            format!(
                "{} is more than chaos.memory_max_share ({}) of MemAvailable ({}): at most {}",
                ByteSize(bytes),
                config.memory_max_share,
                ByteSize(available),
                ByteSize(max)
            ),
        ));
    }
    Ok(())
}

/// Checks every target of `plan` and its duration.
pub fn check_plan(plan: &Plan, ctx: &Context) -> Result<(), FaultError> {
    let kind: &'static str = crate::spec::FaultSpec::KINDS
        .iter()
        .find(|k| **k == plan.kind)
        .copied()
        .unwrap_or("fault");
    check_duration(kind, plan.duration.0, &ctx.config)?;
    let mut fill_per_dir: Vec<(&Path, u64)> = Vec::new();
    for t in &plan.targets {
        match t {
            Target::Process { process, container } => {
                check_process(process, &ctx.config, &ctx.env)?;
                if let Some(c) = container {
                    check_container(&c.id, &c.name, c.pod.as_ref(), &ctx.config, &ctx.env)?;
                }
            }
            Target::Container { id, name, pod } => check_container(
                id,
                name.as_deref().unwrap_or(id),
                pod.as_ref(),
                &ctx.config,
                &ctx.env,
            )?,
            Target::DiskFill { dir, bytes, .. } => {
                match fill_per_dir.iter_mut().find(|(d, _)| d == dir) {
                    Some((_, b)) => *b += bytes,
                    None => fill_per_dir.push((dir, *bytes)),
                }
            }
            Target::Memory { bytes } => check_memory(*bytes, &ctx.config, &ctx.env)?,
            Target::Cpu { .. } | Target::Path { .. } | Target::Network { .. } => {}
        }
    }
    for (dir, bytes) in fill_per_dir {
        check_disk_fill(dir, bytes, &ctx.config)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{HumanDuration, Percent};

    fn env() -> Env {
        Env::for_tests()
    }

    #[test]
    fn process_guards_name_themselves() {
        let env = env();
        let cfg = ChaosConfig::default();
        let id = |pid| {
            procfs::identity(Path::new("/proc"), pid, &env.boot_id).unwrap_or(ProcessIdentity {
                pid,
                start_time: 0,
                boot_id: String::new(),
                name: "?".into(),
            })
        };
        assert_eq!(
            check_process(&id(1), &cfg, &env).unwrap_err().guard(),
            Some(Guard::Pid1)
        );
        assert_eq!(
            check_process(&env.agent, &cfg, &env).unwrap_err().guard(),
            Some(Guard::AgentItself)
        );
        assert_eq!(
            check_process(&id(env.parent_pid), &cfg, &env)
                .unwrap_err()
                .guard(),
            Some(Guard::AgentParent)
        );
        assert_eq!(
            check_process(&id(2), &cfg, &env).unwrap_err().guard(),
            Some(Guard::KernelThread)
        );
        let msg = check_process(&id(1), &cfg, &env).unwrap_err().to_string();
        assert!(msg.contains("refused by guard pid-1"), "{msg}");
    }

    /// A child of the test, killed and reaped on drop (also when an assertion fails).
    struct Sleeper(std::process::Child);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a plain #[test] thread, no async runtime to block
    fn a_reused_pid_is_never_signalled_on_revert() {
        let env = env();
        let mut sleeper = Sleeper(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        );
        let pid = sleeper.0.id() as i32;
        let real = procfs::identity(Path::new("/proc"), pid, &env.boot_id).unwrap();
        // The journaled identity of an earlier process that had this pid: start time differs.
        let forged = ProcessIdentity {
            start_time: real.start_time + 1,
            ..real.clone()
        };
        let state = || procfs::read_stat(Path::new("/proc"), pid).map(|st| st.state);
        for sig in [Signal::SIGSTOP, Signal::SIGKILL] {
            assert!(
                !signal_if_alive(&forged, sig, &env).unwrap(),
                "{sig} was sent"
            );
        }
        // The revert of a helper from an earlier agent run goes the same way.
        crate::helper::end_all(std::slice::from_ref(&forged), &env).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            sleeper.0.try_wait().unwrap().is_none(),
            "the process was killed"
        );
        assert!(
            matches!(state(), Some('S' | 'R')),
            "the process is not running: {:?}",
            state()
        );
        // The control: the true identity is signalled, and the test sees it.
        assert!(signal_if_alive(&real, Signal::SIGSTOP, &env).unwrap());
        let stopped = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            state() == Some('T')
        });
        assert!(
            stopped,
            "SIGSTOP to the true identity not seen: {:?}",
            state()
        );
    }

    #[test]
    fn pods_in_protected_namespaces_and_the_agents_own_pod_are_refused() {
        // A /proc of the test's own where the agent (pid 4242) runs in a kubelet pod cgroup.
        let proc_root = tempfile::tempdir().unwrap();
        std::fs::create_dir(proc_root.path().join("4242")).unwrap();
        std::fs::write(
            proc_root.path().join("4242/cgroup"),
            "6:freezer:/kubepods/besteffort/pod0a1b-2c/\
             cafecafecafecafe\n0::/kubepods/besteffort/pod0a1b-2c/cafecafecafecafe\n",
        )
        .unwrap();
        let mut env = env();
        env.proc_root = proc_root.path().to_owned();
        env.agent.pid = 4242;
        let cfg = ChaosConfig::default();
        let pod = |ns: &str, name: &str, uid: &str| PodRef {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
        };
        let refused = |id: &str, p: Option<PodRef>, env: &Env| {
            check_container(id, "app", p.as_ref(), &cfg, env)
                .err()
                .and_then(|e| e.guard())
        };
        let other = "d".repeat(64);
        assert_eq!(
            refused(&other, Some(pod("kube-system", "coredns-1", "")), &env),
            Some(Guard::ProtectedNamespace)
        );
        let e = check_container(
            &other,
            "app",
            Some(&pod("kube-system", "dns", "")),
            &cfg,
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("refused by guard protected-namespace") && e.contains("kube-system/dns"),
            "{e}"
        );
        assert_eq!(
            refused(&other, Some(pod("shop", "web-1", "9f9f")), &env),
            None
        );
        assert_eq!(refused(&other, None, &env), None);
        // The agent's pod by uid in its cgroup path, and its container by id.
        assert_eq!(
            refused(
                &other,
                Some(pod("faultline", "faultline-x", "0a1b-2c")),
                &env
            ),
            Some(Guard::AgentPod)
        );
        assert_eq!(
            refused("cafecafecafecafe", None, &env),
            Some(Guard::AgentItself)
        );
        // The agent's pod by the downward API's names.
        env.pod = PodRef::from_downward_api(Some("faultline".into()), Some("faultline-x".into()));
        assert_eq!(
            refused(&other, Some(pod("faultline", "faultline-x", "")), &env),
            Some(Guard::AgentPod)
        );
        // The list is configuration: emptied, kube-system may be touched.
        let open = ChaosConfig {
            protected_namespaces: Vec::new(),
            ..ChaosConfig::default()
        };
        assert!(
            check_container(
                &other,
                "app",
                Some(&pod("kube-system", "x", "")),
                &open,
                &env
            )
            .is_ok()
        );
    }

    #[test]
    fn protected_name_is_refused() {
        let env = env();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let p = procfs::identity(Path::new("/proc"), child.id() as i32, &env.boot_id).unwrap();
        let cfg = ChaosConfig {
            protected_processes: vec!["sleep".into()],
            ..ChaosConfig::default()
        };
        let e = check_process(&p, &cfg, &env).unwrap_err();
        assert_eq!(e.guard(), Some(Guard::ProtectedProcess), "{e}");
        assert!(check_process(&p, &ChaosConfig::default(), &env).is_ok());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn floor_and_memory_share() {
        let cfg = ChaosConfig {
            disk_free_floor: "10%".parse().unwrap(),
            ..ChaosConfig::default()
        };
        let s = Space {
            total: 1000,
            free: 600,
            avail: 600,
        };
        assert!(check_fill_against(Path::new("/d"), 500, s, &cfg).is_ok());
        let e = check_fill_against(Path::new("/d"), 501, s, &cfg).unwrap_err();
        assert_eq!(e.guard(), Some(Guard::DiskFreeFloor));
        assert!(e.to_string().contains("at most 500"), "{e}");
        let cfg = ChaosConfig {
            memory_max_share: Percent(50.0),
            ..ChaosConfig::default()
        };
        assert!(check_memory_against(100, 200, &cfg).is_ok());
        assert_eq!(
            check_memory_against(101, 200, &cfg).unwrap_err().guard(),
            Some(Guard::MemoryShare)
        );
        let cfg = ChaosConfig {
            max_duration: HumanDuration(Duration::from_secs(60)),
            ..ChaosConfig::default()
        };
        assert_eq!(
            check_duration("x", Duration::from_secs(61), &cfg)
                .unwrap_err()
                .guard(),
            Some(Guard::MaxDuration)
        );
        assert!(check_duration("x", Duration::ZERO, &cfg).is_err());
    }
}
