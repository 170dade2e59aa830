//! Property test of the fault journal's reader and recovery against hostile entries: **no
//! journal content — truncated, random, mutated to name what it does not own, symlinked,
//! claiming another fault's file or another owner — makes recovery touch anything the entry
//! does not own, or lose another fault's entry.**
//!
//! The world is real and owned by the test. What legitimate entries own: a `sleep` they
//! paused, a fill file in a tmpfs the test mounted, a real helper process (the agent binary's
//! worker mode) and an nftables table in a network namespace the test made — four entries
//! written by a real [`Engine`] whose owner then "died", so their format is the real one. What
//! nothing owns: a running `sleep` and one the test stopped itself (someone else's pause),
//! files in the tmpfs (a plain file, one in a subdirectory, a symlink, a directory symlink,
//! and a fill file of a fault no entry names), and a table of the test's own in a second
//! namespace.
//!
//! Each case writes one to four journal files, each the real entry of one of the four, as is,
//! or mutated: owner alive, gone, or from another boot; a target's pid or start time changed;
//! the exact identity of a bystander as its helper; its fill file pointed at a bystander file
//! (or the fill file replaced by a symlink to one); its namespace named as the other one; the
//! id of another entry in its own file (also beside that entry, its owner alive); another
//! kind, version or phase; or the bytes truncated,
//! flipped, replaced by random ones, emptied, or the file a symlink to a bystander file. Then
//! recovery runs as an agent's start does (`force` off) or as `fault revert --all` (on).
//!
//! After every case: each bystander is as it was (`/proc/<pid>/stat` state, file contents and
//! link targets, `nft list tables` in the second namespace), and the entry of an owner that is
//! alive is still in the journal when `force` is off. Over all cases, recovery did revert
//! legitimate entries (the property is not vacuous).
//!
//! Trusted, and so not generated: an entry naming the *exact* identity (pid, start time, boot)
//! of a process as its pause target, or a namespace by its exact inode — a forged entry that
//! matches a process or namespace in every recorded field is indistinguishable from a real
//! one. A helper is different: only a faultline helper is ever ended (its command line says
//! so), so a bystander's exact identity as a helper is generated. Nor a partition record
//! naming a table that is not faultline's: revert deletes the table it names (a known gap,
//! docs/SECURITY.md).
//!
//! Needs root (tmpfs, namespaces, nft); skips without it unless under CI. Cases:
//! `PROPTEST_CASES` (default 32); the seed is fixed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use faultline_chaos::{
    Audit, ChaosConfig, Engine, Env, FaultSpec, Journal, RecoveryOutcome, Requester, procfs,
};
use faultline_tests::chaos::{HelperWatch, Tmpfs, Victim, require, runtime, state, wait_until};
use faultline_tests::netns::{self, ADDR_B, NetnsPair};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};

/// The four legitimate entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Base {
    Pause,
    Fill,
    Cpu,
    Partition,
}

const BASES: [Base; 4] = [Base::Pause, Base::Fill, Base::Cpu, Base::Partition];

/// A bystander process.
#[derive(Clone, Copy, Debug)]
enum Who {
    Running,
    Stopped,
    /// This test process.
    Test,
    Init,
}

/// A bystander path for a fill record.
#[derive(Clone, Copy, Debug)]
enum FillPath {
    Keep,
    Link,
    Sub,
    DirLink,
    Parent,
    OtherFill,
}

#[derive(Clone, Debug)]
enum Mutation {
    None,
    OwnerLive,
    OwnerPid0,
    OwnerOtherBoot,
    TargetPid(Who),
    TargetStart,
    HelperIs(Who),
    HelperPid(Who),
    FillAt(FillPath),
    FillFileIsSymlink,
    NetnsNamedOther,
    IdOf(Base),
    Kind(&'static str),
    Version(u32),
    Planned,
}

#[derive(Clone, Debug)]
enum Gen {
    Entry(Base, Mutation),
    /// The entry of the first, its owner alive, and the entry of the second in its own file
    /// claiming the first's id.
    Claim(Base, Base),
    Truncated(Base, usize),
    Flipped(Base, usize, u8),
    Garbage(Vec<u8>),
    Empty,
    SymlinkToKeep,
}

fn base() -> impl Strategy<Value = Base> {
    prop::sample::select(&BASES[..])
}

fn who() -> impl Strategy<Value = Who> {
    prop::sample::select(&[Who::Running, Who::Stopped, Who::Test, Who::Init][..])
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let fill_path = prop::sample::select(
        &[
            FillPath::Keep,
            FillPath::Link,
            FillPath::Sub,
            FillPath::DirLink,
            FillPath::Parent,
            FillPath::OtherFill,
        ][..],
    );
    prop_oneof![
        3 => Just(Mutation::None),
        2 => Just(Mutation::OwnerLive),
        1 => Just(Mutation::OwnerPid0),
        1 => Just(Mutation::OwnerOtherBoot),
        2 => who().prop_map(Mutation::TargetPid),
        1 => Just(Mutation::TargetStart),
        2 => who().prop_map(Mutation::HelperIs),
        1 => who().prop_map(Mutation::HelperPid),
        2 => fill_path.prop_map(Mutation::FillAt),
        1 => Just(Mutation::FillFileIsSymlink),
        1 => Just(Mutation::NetnsNamedOther),
        2 => base().prop_map(Mutation::IdOf),
        1 => prop::sample::select(&["process-kill", "disk-io", "partition", "no-such"][..])
            .prop_map(Mutation::Kind),
        1 => prop_oneof![Just(0u32), Just(2), any::<u32>()].prop_map(Mutation::Version),
        1 => Just(Mutation::Planned),
    ]
}

fn gen_() -> impl Strategy<Value = Gen> {
    prop_oneof![
        6 => (base(), mutation()).prop_map(|(b, m)| Gen::Entry(b, m)),
        1 => (base(), base()).prop_map(|(held, other)| Gen::Claim(held, other)),
        1 => (base(), any::<usize>()).prop_map(|(b, n)| Gen::Truncated(b, n)),
        1 => (base(), any::<usize>(), any::<u8>()).prop_map(|(b, n, x)| Gen::Flipped(b, n, x)),
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Gen::Garbage),
        1 => Just(Gen::Empty),
        1 => Just(Gen::SymlinkToKeep),
    ]
}

/// The test's world: what the legitimate entries own and the bystanders.
struct World {
    boot_id: String,
    owned: Victim,
    running: Victim,
    stopped: Victim,
    fs: Tmpfs,
    pair: NetnsPair,
    helpers: HelperWatch,
    /// The real entries, by kind.
    bases: BTreeMap<Base, Value>,
    /// The helper the Cpu entry names now (a new one each case).
    helper: Option<Child>,
    reverted: Cell<usize>,
}

fn identity(pid: i32, boot_id: &str) -> Value {
    let id = procfs::identity(Path::new("/proc"), pid, boot_id)
        .unwrap_or_else(|| panic!("identity of {pid}"));
    serde_json::to_value(id).unwrap()
}

fn in_ns(ns: &str, args: &[&str]) -> String {
    let out = NetnsPair::exec(ns, "nft", args);
    assert!(
        out.status.success(),
        "nft {args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl World {
    fn new() -> Self {
        let fs = Tmpfs::mount("4m");
        fs::write(fs.path().join("keep.txt"), "precious").unwrap();
        fs::create_dir(fs.path().join("sub")).unwrap();
        fs::write(fs.path().join("sub/keep.txt"), "precious too").unwrap();
        std::os::unix::fs::symlink("keep.txt", fs.path().join("link")).unwrap();
        std::os::unix::fs::symlink("sub", fs.path().join("subl")).unwrap();
        fs::write(
            fs.path().join(".faultline-fill-disk-fill-ffffffff"),
            "no one's",
        )
        .unwrap();
        let pair = NetnsPair::create("hostile");
        in_ns(&pair.b, &["add", "table", "inet", "keep"]);
        let mut world = World {
            boot_id: procfs::boot_id(Path::new("/proc")),
            owned: Victim::sleep(),
            running: Victim::sleep(),
            stopped: Victim::sleep(),
            helpers: HelperWatch::new(fs.path()),
            fs,
            pair,
            bases: BTreeMap::new(),
            helper: None,
            reverted: Cell::new(0),
        };
        world.record_bases();
        world
    }

    /// Applies one fault of each kind through a real engine, which then stops without
    /// reverting anything: the four journal entries, as written, their owner then made a
    /// process that has died (the test process, the engine's owner, cannot die).
    fn record_bases(&mut self) {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::detect("/proc".into(), self.helpers.worker_command());
        let engine = Engine::new(
            ChaosConfig {
                disk_free_floor: "10%".parse().unwrap(),
                ..ChaosConfig::default()
            },
            env,
            Journal::open(dir.path()).unwrap(),
            Audit::default(),
        );
        let rt = runtime();
        for (b, spec) in [
            (
                Base::Pause,
                json!({"kind": "process-pause", "pid": self.owned.pid(), "duration": "1h"}),
            ),
            (
                Base::Fill,
                json!({"kind": "disk-fill", "path": self.fs.path(), "bytes": "8KiB", "duration": "1h"}),
            ),
            (
                Base::Cpu,
                json!({"kind": "cpu-stress", "workers": 1, "load": 1, "duration": "1h"}),
            ),
            (
                Base::Partition,
                json!({"kind": "partition", "netns": self.pair.a, "dest": [format!("{ADDR_B}/32")], "duration": "1h"}),
            ),
        ] {
            let spec: FaultSpec = serde_json::from_value(spec).unwrap();
            let f = rt
                .block_on(engine.inject(spec, Requester::cli()))
                .unwrap_or_else(|e| panic!("{b:?}: {e}"));
            let text = fs::read(engine.journal().path(&f.id)).unwrap();
            self.bases.insert(b, serde_json::from_slice(&text).unwrap());
        }
        // The engine's own helper goes; each case starts a new one for the Cpu entry.
        for h in helper_identities(&self.bases[&Base::Cpu]) {
            let _ = kill(Pid::from_raw(h), Signal::SIGKILL);
        }
        drop(engine);
        rt.shutdown_background();
        let stand_in = Victim::sleep();
        let dead = identity(stand_in.pid(), &self.boot_id);
        drop(stand_in);
        for entry in self.bases.values_mut() {
            entry["owner"] = dead.clone();
        }
    }

    /// Puts back what the legitimate entries own (the engine's effects), and new bystander
    /// processes (a failed case must not poison the next, nor its shrinking).
    fn restore(&mut self) {
        let _ = kill(Pid::from_raw(self.owned.pid()), Signal::SIGSTOP);
        self.running = Victim::sleep();
        self.stopped = Victim::sleep();
        let _ = kill(Pid::from_raw(self.stopped.pid()), Signal::SIGSTOP);
        let fill = self.fill_file();
        let _ = fs::remove_file(&fill);
        fs::write(&fill, vec![0u8; 8192]).unwrap();
        if let Some(mut h) = self.helper.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        let worker = self.helpers.worker_command();
        let child = Command::new(&worker.program)
            .args(&worker.args)
            .args(["--parent", &std::process::id().to_string()])
            .args(["cpu", "--workers", "1", "--load", "1"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert!(wait_until(Duration::from_secs(5), || {
            procfs::cmdline(Path::new("/proc"), pid).contains("__chaos-worker")
        }));
        self.bases.get_mut(&Base::Cpu).unwrap()["record"]["helpers"] =
            json!([identity(pid, &self.boot_id)]);
        self.helper = Some(child);
        let table = self.table();
        if !in_ns(&self.pair.a, &["list", "tables"]).contains(&table) {
            in_ns(&self.pair.a, &["add", "table", "inet", &table]);
        }
        wait_until(Duration::from_secs(5), || {
            state(self.owned.pid()) == Some('T') && state(self.stopped.pid()) == Some('T')
        });
    }

    fn fill_file(&self) -> PathBuf {
        PathBuf::from(
            self.bases[&Base::Fill]["record"]["state"]["file"]
                .as_str()
                .unwrap(),
        )
    }

    fn table(&self) -> String {
        self.bases[&Base::Partition]["record"]["state"]["table"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn id(&self, b: Base) -> String {
        self.bases[&b]["id"].as_str().unwrap().to_owned()
    }

    fn pid_of(&self, who: Who) -> i32 {
        match who {
            Who::Running => self.running.pid(),
            Who::Stopped => self.stopped.pid(),
            Who::Test => i32::try_from(std::process::id()).unwrap(),
            Who::Init => 1,
        }
    }

    fn fill_path(&self, p: FillPath) -> String {
        let root = self.fs.path();
        let id = self.id(Base::Fill);
        match p {
            FillPath::Keep => root.join("keep.txt"),
            FillPath::Link => root.join("link"),
            FillPath::Sub => root.join("sub/keep.txt"),
            FillPath::DirLink => root.join(format!("subl/.faultline-fill-{id}")),
            FillPath::Parent => root.join(format!("sub/../.faultline-fill-{id}")),
            FillPath::OtherFill => root.join(".faultline-fill-disk-fill-ffffffff"),
        }
        .to_string_lossy()
        .into_owned()
    }

    /// The entry `b` with `m` applied (a mutation that does not fit the kind changes nothing).
    fn mutated(&self, b: Base, m: &Mutation) -> Value {
        let mut v = self.bases[&b].clone();
        let set = |v: &mut Value, pointer: &str, to: Value| {
            if let Some(slot) = v.pointer_mut(pointer) {
                *slot = to;
            }
        };
        match m {
            Mutation::None => {}
            Mutation::OwnerLive => v["owner"] = identity(self.running.pid(), &self.boot_id),
            Mutation::OwnerPid0 => set(&mut v, "/owner/pid", json!(0)),
            Mutation::OwnerOtherBoot => {
                v["owner"] = identity(self.running.pid(), &self.boot_id);
                set(
                    &mut v,
                    "/owner/boot_id",
                    json!("00000000-0000-0000-0000-000000000000"),
                );
            }
            Mutation::TargetPid(who) => {
                set(
                    &mut v,
                    "/record/state/targets/0/pid",
                    json!(self.pid_of(*who)),
                );
            }
            Mutation::TargetStart => {
                let start = v.pointer("/record/state/targets/0/start_time").cloned();
                if let Some(s) = start.and_then(|s| s.as_u64()) {
                    set(&mut v, "/record/state/targets/0/start_time", json!(s + 1));
                }
            }
            Mutation::HelperIs(who) => {
                let pid = self.pid_of(*who);
                let id = procfs::identity(Path::new("/proc"), pid, &self.boot_id);
                v["record"]["helpers"] = json!([serde_json::to_value(id).unwrap()]);
            }
            Mutation::HelperPid(who) => {
                let pid = self.pid_of(*who);
                set(&mut v, "/record/helpers/0/pid", json!(pid));
            }
            Mutation::FillAt(p) => set(&mut v, "/record/state/file", json!(self.fill_path(*p))),
            Mutation::FillFileIsSymlink => {} // done to the file itself, in `write`
            Mutation::NetnsNamedOther => {
                set(&mut v, "/record/state/ns/name", json!(self.pair.b));
                set(&mut v, "/spec/netns", json!(self.pair.b));
            }
            Mutation::IdOf(other) => v["id"] = json!(self.id(*other)),
            Mutation::Kind(kind) => v["spec"]["kind"] = json!(kind),
            Mutation::Version(n) => v["version"] = json!(n),
            Mutation::Planned => v["phase"] = json!("planned"),
        }
        v
    }

    /// Writes the case's files into `journal`; the names whose entry belongs to a live owner.
    fn write(&self, journal: &Path, gens: &[Gen]) -> Vec<String> {
        let mut files: BTreeMap<String, (Vec<u8>, bool)> = BTreeMap::new();
        let mut links = Vec::new();
        for (i, g) in gens.iter().enumerate() {
            let bytes = |b: Base| serde_json::to_vec_pretty(&self.bases[&b]).unwrap();
            let own = |b: Base| format!("{}.json", self.id(b));
            match g {
                Gen::Entry(b, m) => {
                    let live = matches!(m, Mutation::OwnerLive);
                    let v = serde_json::to_vec_pretty(&self.mutated(*b, m)).unwrap();
                    files.insert(own(*b), (v, live));
                    if matches!(m, Mutation::FillFileIsSymlink) && *b == Base::Fill {
                        let fill = self.fill_file();
                        let _ = fs::remove_file(&fill);
                        std::os::unix::fs::symlink(self.fs.path().join("keep.txt"), &fill).unwrap();
                    }
                }
                Gen::Claim(held, other) => {
                    let live = self.mutated(*held, &Mutation::OwnerLive);
                    files.insert(
                        own(*held),
                        (serde_json::to_vec_pretty(&live).unwrap(), true),
                    );
                    if other != held {
                        let claim = self.mutated(*other, &Mutation::IdOf(*held));
                        files.insert(
                            own(*other),
                            (serde_json::to_vec_pretty(&claim).unwrap(), false),
                        );
                    }
                }
                Gen::Truncated(b, n) => {
                    let mut v = bytes(*b);
                    v.truncate(n % v.len());
                    files.insert(own(*b), (v, false));
                }
                Gen::Flipped(b, n, x) => {
                    let mut v = bytes(*b);
                    let at = n % v.len();
                    v[at] ^= x | 1;
                    files.insert(own(*b), (v, false));
                }
                Gen::Garbage(v) => {
                    files.insert(format!("garbage-{i}.json"), (v.clone(), false));
                }
                Gen::Empty => {
                    files.insert(format!("empty-{i}.json"), (Vec::new(), false));
                }
                Gen::SymlinkToKeep => links.push(format!("link-{i}.json")),
            }
        }
        for (name, (bytes, _)) in &files {
            fs::write(journal.join(name), bytes).unwrap();
        }
        for name in links {
            std::os::unix::fs::symlink(self.fs.path().join("keep.txt"), journal.join(name))
                .unwrap();
        }
        files
            .into_iter()
            .filter(|(_, (_, live))| *live)
            .map(|(name, _)| name)
            .collect()
    }

    /// The bystanders as they must stay.
    fn bystanders(&self) -> Vec<String> {
        let mut wrong = Vec::new();
        if !matches!(state(self.running.pid()), Some('S' | 'R')) {
            wrong.push(format!(
                "the running bystander is {:?}",
                state(self.running.pid())
            ));
        }
        if state(self.stopped.pid()) != Some('T') {
            wrong.push(format!(
                "the bystander the test stopped is {:?}",
                state(self.stopped.pid())
            ));
        }
        let root = self.fs.path();
        for (file, text) in [
            ("keep.txt", "precious"),
            ("sub/keep.txt", "precious too"),
            (".faultline-fill-disk-fill-ffffffff", "no one's"),
        ] {
            let meta = fs::symlink_metadata(root.join(file));
            if fs::read_to_string(root.join(file)).ok().as_deref() != Some(text)
                || !meta.is_ok_and(|m| m.file_type().is_file() && m.nlink() == 1)
            {
                wrong.push(format!("{file} changed"));
            }
        }
        for (link, to) in [("link", "keep.txt"), ("subl", "sub")] {
            if fs::read_link(root.join(link)).ok() != Some(PathBuf::from(to)) {
                wrong.push(format!("symlink {link} changed"));
            }
        }
        if !in_ns(&self.pair.b, &["list", "tables"]).contains("table inet keep") {
            wrong.push("the test's own table inet keep is gone".into());
        }
        wrong
    }

    /// Whether the legitimate effects are gone (what recovery reverted), for the count.
    fn note_reverts(&self) {
        let gone = [
            !matches!(state(self.owned.pid()), Some('T')),
            !self.fill_file().exists(),
            !in_ns(&self.pair.a, &["list", "tables"]).contains(&self.table()),
        ];
        self.reverted
            .set(self.reverted.get() + gone.iter().filter(|g| **g).count());
    }
}

fn helper_identities(entry: &Value) -> Vec<i32> {
    entry["record"]["helpers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["pid"].as_i64())
        .filter_map(|p| i32::try_from(p).ok())
        .collect()
}

fn run_case(world: &mut World, gens: &[Gen], force: bool) -> Result<(), TestCaseError> {
    world.restore();
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let live = world.write(journal.dir(), gens);
    let engine = Engine::new(
        ChaosConfig::default(),
        Env::detect("/proc".into(), world.helpers.worker_command()),
        journal.clone(),
        Audit::default(),
    );
    let reports = if force {
        engine.revert_journaled(|_| true)
    } else {
        runtime().block_on(engine.recover())
    };
    let wrong = world.bystanders();
    prop_assert!(
        wrong.is_empty(),
        "{}; recovery said {:#?}",
        wrong.join("; "),
        reports
    );
    if !force {
        for name in &live {
            prop_assert!(
                journal.dir().join(name).exists(),
                "the entry {name} of a live owner is gone; recovery said {:#?}",
                reports
            );
        }
    }
    if reports
        .iter()
        .any(|r| r.outcome == RecoveryOutcome::Reverted)
    {
        world.note_reverts();
    }
    Ok(())
}

#[test]
fn no_hostile_journal_entry_makes_recovery_touch_what_it_does_not_own() {
    if !require(
        faultline_tests::chaos::is_root(),
        "root (tmpfs, namespaces)",
    ) || !netns::require_kernel_tools()
    {
        return;
    }
    let world = std::cell::RefCell::new(World::new());
    let (mut runner, cases) = faultline_tests::props::runner(32, 64);
    let result = runner.run(
        &(prop::collection::vec(gen_(), 1..5), any::<bool>()),
        |(gens, force)| run_case(&mut world.borrow_mut(), &gens, force),
    );
    let mut world = world.into_inner();
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "{cases} journals: {} legitimate effects reverted by recovery",
        world.reverted.get()
    );
    assert!(world.reverted.get() > 0, "recovery never reverted anything");
    if let Some(mut h) = world.helper.take() {
        let _ = h.kill();
        let _ = h.wait();
    }
}
