use super::*;

fn rec(seq: u64, payload: &[u8]) -> Vec<u8> {
    encode_record(seq, 3, payload)
}

#[test]
fn scan_reads_back_what_was_encoded() {
    let mut b = rec(7, b"hello");
    b.extend(rec(8, &[0u8; 1000]));
    let r = scan(&b);
    assert_eq!(r.records.len(), 2);
    assert_eq!(
        (r.records[0].seq, r.records[0].offset, r.records[0].len),
        (7, 0, 29)
    );
    assert_eq!((r.records[1].seq, r.records[1].offset), (8, 29));
    assert_eq!(r.records[1].points, 3);
    assert!(r.skipped.is_empty() && r.torn_tail.is_none());
}

#[test]
fn torn_tail_is_detected_at_every_cut_point() {
    let first = rec(1, b"first batch");
    let second = rec(2, &[9u8; 300]);
    for cut in 1..second.len() {
        let mut b = first.clone();
        b.extend_from_slice(&second[..cut]);
        let r = scan(&b);
        assert_eq!(r.records.len(), 1, "cut at {cut}");
        assert_eq!(r.records[0].seq, 1);
        assert_eq!(r.torn_tail, Some(first.len()), "cut at {cut}");
    }
}

#[test]
fn corrupt_record_mid_file_is_skipped_and_later_ones_kept() {
    let a = rec(1, &[1u8; 100]);
    let b = rec(2, &[2u8; 100]);
    let c = rec(3, &[3u8; 100]);
    // A flipped payload bit (checksum), then a destroyed length field.
    for (at, byte) in [(a.len() + 50, 0xffu8), (a.len() + 5, 0x7f)] {
        let mut bytes = [a.clone(), b.clone(), c.clone()].concat();
        bytes[at] ^= byte;
        let r = scan(&bytes);
        let seqs: Vec<u64> = r.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 3], "damage at {at}");
        assert_eq!(r.skipped, vec![(a.len(), b.len())]);
        assert_eq!(r.torn_tail, None);
    }
}

#[test]
fn garbage_never_panics_and_yields_no_records() {
    for bytes in [
        vec![],
        b"FLQ1".to_vec(),
        vec![0xffu8; 100],
        [b"FLQ1".as_slice(), &[0xff; 20]].concat(),
    ] {
        let r = scan(&bytes);
        assert!(r.records.is_empty());
    }
}

#[test]
fn cursor_slots_take_the_larger_valid_and_survive_a_torn_slot() {
    let mut f = [cursor_slot(5), cursor_slot(9)].concat();
    assert_eq!(parse_cursor(&f), Some(9));
    f[16 + 3] ^= 1;
    assert_eq!(parse_cursor(&f), Some(5));
    assert_eq!(parse_cursor(&[0u8; 32]), None);
    assert_eq!(parse_cursor(&[]), None);
}

fn open(dir: &Path, max: u64) -> (DiskQueue, Vec<Stored>) {
    DiskQueue::open(dir, max).unwrap()
}

#[test]
fn restart_reloads_unconsumed_records_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, stored) = open(dir.path(), 1 << 20);
    assert!(stored.is_empty());
    let refs: Vec<RecordRef> = (0..5u8)
        .map(|i| q.append(&[i; 1000], u32::from(i)).unwrap())
        .collect();
    q.consume_until(refs[2].seq, false);
    drop(q);
    let (q, stored) = open(dir.path(), 1 << 20);
    assert_eq!(stored, refs[2..].to_vec());
    assert_eq!(q.read(&stored[0]).unwrap(), vec![2u8; 1000]);
    assert_eq!(q.next_seq(), refs[4].seq + 1);
}

#[test]
fn second_open_of_a_held_queue_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_q, _) = open(dir.path(), 1 << 20);
    assert!(matches!(
        DiskQueue::open(dir.path(), 1 << 20),
        Err(OpenError::Locked { .. })
    ));
}

#[test]
fn segments_roll_and_consumed_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB segments (the minimum): 20 KB records, three per segment.
    let (mut q, _) = open(dir.path(), 1 << 20);
    let refs: Vec<RecordRef> = (0..7)
        .map(|_| q.append(&[0u8; 20_000], 1).unwrap())
        .collect();
    let segs = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count()
    };
    assert_eq!(segs(dir.path()), 3);
    assert_eq!(refs[3].segment, refs[3].seq);
    q.consume_until(refs[4].seq, false);
    assert_eq!(segs(dir.path()), 2);
    // Everything consumed: the active segment stays for reuse unless space is needed.
    q.consume_until(q.next_seq(), false);
    assert_eq!(segs(dir.path()), 1);
    q.consume_until(q.next_seq(), true);
    assert_eq!(segs(dir.path()), 0);
    assert_eq!(q.disk_bytes(), 0);
    let r = q.append(b"after", 1).unwrap();
    assert_eq!(q.read(&r).unwrap(), b"after");
}

#[test]
fn torn_tail_on_disk_is_cut_and_the_rest_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), 1 << 20);
    let a = q.append(&[1u8; 500], 1).unwrap();
    let b = q.append(&[2u8; 500], 1).unwrap();
    drop(q);
    let seg = dir.path().join(segment_name(a.segment));
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(b.offset + 100).unwrap();
    let (mut q, stored) = open(dir.path(), 1 << 20);
    assert_eq!(stored, vec![a]);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), b.offset);
    // New records go to a new segment and follow the survivors.
    let c = q.append(&[3u8; 10], 1).unwrap();
    assert!(c.seq > a.seq);
    drop(q);
    let (_q, stored) = open(dir.path(), 1 << 20);
    assert_eq!(
        stored.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![a.seq, c.seq]
    );
}

#[test]
fn too_large_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), 1000);
    assert!(matches!(
        q.append(&[0u8; 1000], 1),
        Err(AppendError::TooLarge { .. })
    ));
}
