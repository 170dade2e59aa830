use super::*;

fn snap(id: &str, time: f64) -> Snapshot {
    Snapshot {
        id: id.into(),
        time,
        size: None,
    }
}

#[test]
fn pick_latest_or_within_window() {
    let s = [snap("a", 0.0), snap("b", 100.0), snap("c", 150.0)];
    assert_eq!(pick(&s, None).unwrap().id, "c");
    for _ in 0..20 {
        let p = pick(&s, Some(Duration::from_secs(60))).unwrap();
        assert!(p.id == "b" || p.id == "c");
    }
    assert!(pick(&[], None).is_none());
}

#[test]
fn random_within_draws_only_among_backups_inside_the_window() {
    let s = [snap("a", 0.0), snap("b", 100.0), snap("c", 150.0)];
    let w = Some(Duration::from_secs(60));
    let mut offered = 0;
    let first = pick_with(&s, w, |n| {
        offered = n;
        0
    });
    assert_eq!(offered, 2, "a (150 s before c) is outside a 60 s window");
    assert_eq!(first.unwrap().id, "b");
    assert_eq!(pick_with(&s, w, |_| 1).unwrap().id, "c");
    assert_eq!(
        pick_with(&s, w, |_| 99).unwrap().id,
        "c",
        "out of range: latest"
    );
    let all = pick_with(&s, Some(Duration::from_secs(150)), |n| n - 1);
    assert_eq!(all.unwrap().id, "c");
    assert_eq!(
        pick_with(&s, Some(Duration::from_secs(150)), |_| 0)
            .unwrap()
            .id,
        "a",
        "the window's edge is inside"
    );
    assert_eq!(
        pick_with(&s, None, |_| 0).unwrap().id,
        "c",
        "no window: latest"
    );
}

#[test]
fn sample_keeps_n() {
    let e: Vec<Entry> = (0..10)
        .map(|i| Entry {
            sha256: String::new(),
            path: i.to_string(),
        })
        .collect();
    assert_eq!(sample(e.clone(), Some(3)).len(), 3);
    assert_eq!(sample(e.clone(), None).len(), 10);
    assert_eq!(sample(e, Some(30)).len(), 10);
}

#[tokio::test]
async fn manifest_verification_finds_mismatch_and_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("srv")).unwrap();
    std::fs::write(dir.path().join("srv/a"), b"hello\n").unwrap();
    let good = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    assert_eq!(sha256_file(&dir.path().join("srv/a")).unwrap(), good);
    let entries = vec![
        Entry {
            sha256: good.into(),
            path: "/srv/a".into(),
        },
        Entry {
            sha256: "0".repeat(64),
            path: "srv/a".into(),
        },
        Entry {
            sha256: good.into(),
            path: "/srv/missing".into(),
        },
    ];
    let f = verify_manifest(dir.path(), entries, true, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f[0].contains("mismatch"));
    assert!(f[1].contains("/srv/missing"));
    assert_eq!(tree_size(dir.path()), (1, 6));
}

#[tokio::test]
async fn guard_removes_on_clean_and_on_drop() {
    let base = tempfile::tempdir().unwrap();
    let a = base.path().join("a");
    std::fs::create_dir_all(a.join("x/y")).unwrap();
    std::fs::write(a.join("x/y/f"), b"1").unwrap();
    let mut g = ScratchGuard::new(a.clone());
    g.clean().await.unwrap();
    assert!(!a.exists());
    let b = base.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    drop(ScratchGuard::new(b.clone()));
    assert!(!b.exists());
}

#[test]
fn shell_quoting() {
    assert_eq!(sh_quote("/a b"), "'/a b'");
    assert_eq!(sh_quote("it's"), r"'it'\''s'");
}
