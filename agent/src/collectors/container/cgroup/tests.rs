use super::*;

#[test]
fn cpu_files_parse() {
    let v2 = "usage_usec 1113009\nuser_usec 1081254\nsystem_usec 31754\nnice_usec 0\nnr_periods 5\nnr_throttled 2\nthrottled_usec 300\n";
    let (u, us, sy, t) = parse_cpu_stat_v2(v2).unwrap();
    assert_eq!((u, us, sy), (1_113_009_000, 1_081_254_000, 31_754_000));
    assert_eq!(
        t,
        Some(Throttling {
            periods: 5,
            throttled_periods: 2,
            throttled_ns: 300_000
        })
    );
    assert_eq!(
        parse_cpu_stat_v2("usage_usec 1\nuser_usec 1\nsystem_usec 0\n")
            .unwrap()
            .3,
        None
    );
    assert!(parse_cpu_stat_v2("usage_usec 1\n").is_err());
    assert!(parse_cpu_stat_v2("usage_usec x\nuser_usec 1\nsystem_usec 0\n").is_err());
    let t = parse_cpu_stat_v1("nr_periods 50\nnr_throttled 3\nthrottled_time 12345\nnr_bursts 0\n")
        .unwrap();
    assert_eq!(
        t,
        Throttling {
            periods: 50,
            throttled_periods: 3,
            throttled_ns: 12345
        }
    );
    assert!(parse_cpu_stat_v1("nr_periods 50\n").is_err());
    assert_eq!(
        parse_cpuacct_stat("user 108\nsystem 3\n").unwrap(),
        (108, 3)
    );
    assert!(parse_cpuacct_stat("user 108\n").is_err());
    assert_eq!(parse_cpu_max("max 100000\n").unwrap(), None);
    assert_eq!(parse_cpu_max("50000 100000\n").unwrap(), Some(0.5));
    assert!(parse_cpu_max("50000\n").is_err());
    assert!(parse_cpu_max("5 0\n").is_err());
    assert_eq!(parse_cfs_quota("-1\n", "100000\n").unwrap(), None);
    assert_eq!(parse_cfs_quota("150000\n", "100000\n").unwrap(), Some(1.5));
    assert!(parse_cfs_quota("lots", "100000").is_err());
}

#[test]
fn memory_files_parse() {
    assert_eq!(
        parse_memory_stat("anon 100\nfile 50\ninactive_file 20\n", true).unwrap(),
        (20, 100)
    );
    assert_eq!(
        parse_memory_stat(
            "rss 1\ninactive_file 2\ntotal_rss 100\ntotal_inactive_file 20\n",
            false
        )
        .unwrap(),
        (20, 100)
    );
    assert!(parse_memory_stat("anon 1\n", true).is_err());
    assert_eq!(parse_limit("max\n").unwrap(), None);
    assert_eq!(parse_limit("134217728\n").unwrap(), Some(134_217_728));
    assert_eq!(parse_limit("9223372036854771712\n").unwrap(), None);
    assert!(parse_limit("-1").is_err());
    assert_eq!(
        parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n").unwrap(),
        Some(4)
    );
    assert_eq!(
        parse_oom_kill("low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n").unwrap(),
        Some(1)
    );
    assert_eq!(
        parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n").unwrap(),
        None
    );
    let m = Memory {
        usage: 100,
        inactive_file: 30,
        rss: 50,
        limit: Some(200),
    };
    assert_eq!((m.working_set(), m.available()), (70, Some(130)));
    let m = Memory {
        usage: 10,
        inactive_file: 30,
        rss: 5,
        limit: None,
    };
    assert_eq!((m.working_set(), m.available()), (0, None));
}

#[test]
fn io_files_parse() {
    let v2 = parse_io_stat(
        "254:0 rbytes=4096 wbytes=10485760 rios=1 wios=10 dbytes=0 dios=0\n8:0 rbytes=1 wbytes=2\n",
    )
    .unwrap();
    assert_eq!(
        v2[0],
        IoDevice {
            major: 254,
            minor: 0,
            read_bytes: 4096,
            write_bytes: 10_485_760
        }
    );
    assert_eq!(v2.len(), 2);
    assert!(parse_io_stat("254 rbytes=1\n").is_err());
    assert!(parse_io_stat("254:0 rbytes\n").is_err());
    let v1 = parse_blkio("254:0 Read 10\n254:0 Write 4198400\n254:0 Sync 1\n254:0 Async 0\n254:0 Discard 0\n254:0 Total 4198410\n8:16 Read 5\nTotal 4198415\n").unwrap();
    assert_eq!(
        v1,
        vec![
            IoDevice {
                major: 254,
                minor: 0,
                read_bytes: 10,
                write_bytes: 4_198_400
            },
            IoDevice {
                major: 8,
                minor: 16,
                read_bytes: 5,
                write_bytes: 0
            },
        ]
    );
    assert_eq!(parse_blkio("Total 0\n").unwrap(), vec![]);
    assert!(parse_blkio("254:0 Read\n").is_err());
    assert!(parse_blkio("x:0 Read 1\n").is_err());
}

#[test]
fn cputime_is_split_to_the_total_and_stays_monotonic() {
    let mut prev = (0, 0);
    // v1: tick-based modes sum above the precise total; the split sums to the total.
    assert_eq!(
        adjust_cputime(1_121_625_539, 1_095_976_160, 31_952_060, &mut prev),
        (1_089_852_022, 31_773_517)
    );
    // Already consistent (v2): unchanged.
    let mut p2 = (0, 0);
    assert_eq!(adjust_cputime(1000, 700, 300, &mut p2), (700, 300));
    // A shift in proportion never makes a mode go backwards.
    let mut p3 = (0, 0);
    let (u1, s1) = adjust_cputime(1000, 500, 500, &mut p3);
    let (u2, s2) = adjust_cputime(1100, 1000, 100, &mut p3);
    assert!(
        u2 >= u1 && s2 >= s1 && u2 + s2 == 1100,
        "{u1} {s1} {u2} {s2}"
    );
    // No progress in the total: the previous split.
    assert_eq!(adjust_cputime(1100, 5, 5, &mut p3), (u2, s2));
    let mut p4 = (0, 0);
    assert_eq!(adjust_cputime(10, 0, 0, &mut p4), (10, 0));
}

#[test]
fn single_values_parse() {
    assert_eq!(parse_u64("42\n").unwrap(), 42);
    assert!(parse_u64("").is_err());
    assert_eq!(parse_first_pid("123\n456\n").unwrap(), Some(123));
    assert_eq!(parse_first_pid("").unwrap(), None);
    assert!(parse_first_pid("abc").is_err());
}

#[test]
fn detection_refuses_a_directory_without_cgroups() {
    let dir = tempfile::tempdir().unwrap();
    let e = Hierarchy::detect(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("no cgroup hierarchy") && e.contains("cgroup_root"),
        "{e}"
    );
    let e = Hierarchy::detect(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read the cgroup root"), "{e}");
}

/// One read of the container directory `c` under `root`, of the files named with their
/// slots, as `Hierarchy::read` makes it; returns what each said.
fn read_files(
    kept: &mut KeptFds,
    budget: &mut KeepBudget,
    root: &std::path::Path,
    names: &[(usize, &str)],
) -> Vec<String> {
    let mut buf = ReadBuf::default();
    kept.begin_read();
    let mut out = Vec::new();
    {
        let mut files = kept.files(budget, files::dir::UNIFIED, Some(root), "c");
        for (slot, name) in names {
            let text = files
                .parse(Some(*slot), name, &mut buf, |t| Ok(t.to_owned()))
                .unwrap()
                .unwrap();
            out.push(text);
        }
    }
    kept.end_read(budget);
    out
}

#[test]
fn a_file_is_kept_from_its_second_read_in_a_row_within_the_budget_and_closed_once_unread() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c");
    std::fs::create_dir(&c).unwrap();
    std::fs::write(c.join("a"), "1").unwrap();
    std::fs::write(c.join("b"), "2").unwrap();
    let both = [(0, "a"), (1, "b")];
    let mut budget = KeepBudget {
        fds: 10,
        files: 1,
        ..KeepBudget::none()
    };
    let mut kept = KeptFds::new(true);
    read_files(&mut kept, &mut budget, dir.path(), &both);
    assert_eq!(
        (kept.open_count(), kept.kept_files()),
        (1, 0),
        "the directory only: no file read twice in a row yet"
    );
    read_files(&mut kept, &mut budget, dir.path(), &both);
    assert_eq!(kept.kept_files(), 1, "both hot, room for one");
    assert!(kept.keeps(0), "the first read first");
    assert_eq!((budget.files_used, budget.fds_used), (1, 1));
    // Through the kept descriptor, the file as it is now.
    std::fs::write(c.join("a"), "3").unwrap();
    std::fs::write(c.join("b"), "4").unwrap();
    assert_eq!(
        read_files(&mut kept, &mut budget, dir.path(), &both),
        ["3", "4"]
    );
    // `a` (the one kept) goes unread: closed after RELEASE_AFTER_SKIPS reads, its room back,
    // which `b`, read all along, then takes.
    for _ in 1..files::RELEASE_AFTER_SKIPS {
        read_files(&mut kept, &mut budget, dir.path(), &[(1, "b")]);
        assert!(kept.keeps(0) && budget.files_used == 1, "still held");
    }
    read_files(&mut kept, &mut budget, dir.path(), &[(1, "b")]);
    assert!(!kept.keeps(0), "closed");
    assert_eq!(budget.files_used, 0, "its room back");
    read_files(&mut kept, &mut budget, dir.path(), &[(1, "b")]);
    assert!(kept.keeps(1), "b kept in a's place");
    assert_eq!((kept.kept_files(), budget.files_used), (1, 1));
    std::fs::write(c.join("b"), "5").unwrap();
    assert_eq!(
        read_files(&mut kept, &mut budget, dir.path(), &[(1, "b")]),
        ["5"]
    );
    // Released with the container: the budget is whole again.
    kept.release(&mut budget);
    assert_eq!((budget.files_used, budget.fds_used), (0, 0));
    // No memory budget: nothing kept, however hot.
    let mut none = KeepBudget {
        fds: 10,
        ..KeepBudget::none()
    };
    let mut kept = KeptFds::new(false);
    for _ in 0..3 {
        read_files(&mut kept, &mut none, dir.path(), &both);
    }
    assert_eq!(kept.open_count(), 0, "no directory kept either (not asked)");
}
