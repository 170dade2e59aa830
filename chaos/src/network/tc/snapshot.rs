//! Snapshot and replay of an interface's egress qdisc tree that someone else configured (a
//! cloud-tuned root, a CNI's shaping): recorded before a fault replaces the root, kept in the
//! journal with the fault, and written back exactly on revert — also after a SIGKILL.
//!
//! What is recorded ([`Snapshot`]): every visible qdisc of the tree under the root, every
//! class, and every filter attached to them, each as the kernel dumped it (its handle,
//! parent, priority/protocol and raw attributes) minus what is state rather than
//! configuration (statistics, counters, hardware-offload status). What is replayed: the root
//! (replacing the fault's), then classes and qdiscs parent first, then the filters, each
//! created or changed in place, so a replay interrupted half-way can simply run again.
//!
//! What cannot be replayed is refused at plan time ([`take`] says why), and the fault then
//! refuses to displace the root, as before snapshots existed: qdisc kinds whose children the
//! kernel creates by itself (`mq`, `mqprio`, `taprio`, `multiq`), size tables, hardware
//! offload, and filters other than plain `u32` matches (actions, policers, hash-table links).
//! Pure but for the netlink calls in [`take`], [`restore`] and [`is_restored`].

use std::collections::BTreeSet;

use netlink_packet_core::NlasIterator;
use serde::{Deserialize, Serialize};

use super::super::netlink::NlError;
use super::qdisc::nla;
use super::rtnl::{Object, Rtnl, TC_H_ROOT, TCA_OPTIONS, TcObject, Write};

/// Qdisc kinds whose dumped options are known to be taken back (written back and compared
/// by tests/tests/chaos_network_containers.rs); any other kind in a tree is refused rather
/// than guessed at.
const REPLAYABLE_QDISCS: &[&str] = &["htb", "tbf", "pfifo", "bfifo", "pfifo_head_drop"];

/// Qdisc kinds whose classes are made by `tc class add` (the others make their own).
const USER_CLASSES: &[&str] = &["htb"];

/// `TCA_HTB_INIT`: htb dumps its full version (`HTB_VER`, 0x30011) where it takes only the
/// major (3).
const TCA_HTB_INIT: u16 = 2;

// Top-level attributes (linux/rtnetlink.h).
const TCA_STATS: u16 = 3;
const TCA_XSTATS: u16 = 4;
const TCA_FCNT: u16 = 6;
const TCA_STATS2: u16 = 7;
const TCA_PAD: u16 = 9;
const TCA_CHAIN: u16 = 11;
const TCA_HW_OFFLOAD: u16 = 12;
const TCA_DUMP_FLAGS: u16 = 15;
const TCA_EXT_WARN_MSG: u16 = 16;
// u32 options (linux/pkt_cls.h).
const TCA_U32_LINK: u16 = 3;
const TCA_U32_DIVISOR: u16 = 4;
const TCA_U32_POLICE: u16 = 6;
const TCA_U32_ACT: u16 = 7;
const TCA_U32_PCNT: u16 = 9;
const TCA_U32_FLAGS: u16 = 11;
const TCA_U32_PAD: u16 = 12;
/// `TCA_CLS_FLAGS_SKIP_HW | TCA_CLS_FLAGS_SKIP_SW`: the flags a request may carry (the
/// others are status the kernel reports).
const CLS_FLAGS_SETTABLE: u32 = 0b11;

/// One qdisc, class or filter as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    /// Handle (`major << 16 | minor`; a filter's own handle, `800::800`).
    pub handle: u32,
    /// Parent handle (`0xffffffff`: the root).
    pub parent: u32,
    /// Filters: `prio << 16 | ethertype` (network order).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub info: u32,
    /// Kind (`htb`, `pfifo`, `u32`).
    pub kind: String,
    /// The attributes to write back, as netlink bytes in hex.
    pub attrs: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// An interface's egress qdisc tree, without its counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The root first, then the others in the kernel's order.
    pub qdiscs: Vec<Saved>,
    /// Classes of the tree's qdiscs that `tc class add` made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<Saved>,
    /// Filters on the tree's qdiscs and classes, in the kernel's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Saved>,
}

impl Snapshot {
    /// The root qdisc's kind and major handle.
    pub(crate) fn root(&self) -> Option<(&str, u16)> {
        self.qdiscs
            .iter()
            .find(|q| q.parent == TC_H_ROOT)
            .map(|q| (q.kind.as_str(), (q.handle >> 16) as u16))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("not hex at {i}"))
        })
        .collect()
}

fn handle_text(h: u32) -> String {
    format!("{:x}:{:x}", h >> 16, h & 0xffff)
}

/// The configuration attributes of a dumped object: counters and status dropped, `u32`
/// options cleaned; `Err` names what cannot be written back. Pure.
fn config_attrs(what: &str, o: &TcObject) -> Result<Vec<(u16, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for (kind, value) in &o.attrs {
        match *kind {
            TCA_STATS | TCA_XSTATS | TCA_FCNT | TCA_STATS2 | TCA_PAD | TCA_DUMP_FLAGS
            | TCA_EXT_WARN_MSG => {}
            TCA_HW_OFFLOAD if value.iter().all(|b| *b == 0) => {}
            TCA_HW_OFFLOAD => {
                return Err(format!(
                    "{what} {} {} is offloaded to hardware",
                    o.kind,
                    handle_text(o.handle)
                ));
            }
            TCA_OPTIONS if o.kind == "u32" => out.push((TCA_OPTIONS, u32_options(o, value)?)),
            TCA_OPTIONS if o.kind == "htb" && o.parent == TC_H_ROOT => {
                out.push((TCA_OPTIONS, htb_options(value)));
            }
            TCA_OPTIONS | TCA_CHAIN => out.push((*kind, value.clone())),
            other => {
                return Err(format!(
                    "{what} {} {} has attribute {other} (a size table or block), which faultline does not write back",
                    o.kind,
                    handle_text(o.handle)
                ));
            }
        }
    }
    Ok(out)
}

/// An htb root's options as htb takes them: the version's major only, the direct-queue
/// packet counter zeroed. Pure.
fn htb_options(value: &[u8]) -> Vec<u8> {
    NlasIterator::new(value)
        .filter_map(Result::ok)
        .flat_map(|a| {
            let mut v = a.value().to_vec();
            if a.kind() == TCA_HTB_INIT && v.len() >= 20 {
                let version = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]);
                if version > 0xffff {
                    v[..4].copy_from_slice(&(version >> 16).to_ne_bytes());
                }
                v[16..20].copy_from_slice(&0u32.to_ne_bytes());
            }
            nla(a.kind(), &v)
        })
        .collect()
}

/// A `u32` filter's options without counters and status flags. Pure.
fn u32_options(o: &TcObject, value: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for a in NlasIterator::new(value) {
        let a = a.map_err(|e| format!("u32 filter {}: {e}", handle_text(o.handle)))?;
        match a.kind() {
            TCA_U32_PCNT | TCA_U32_PAD => {}
            TCA_U32_FLAGS => {
                let flags = a
                    .value()
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_ne_bytes)
                    .unwrap_or(0)
                    & CLS_FLAGS_SETTABLE;
                if flags != 0 {
                    out.extend(nla(TCA_U32_FLAGS, &flags.to_ne_bytes()));
                }
            }
            TCA_U32_LINK | TCA_U32_POLICE | TCA_U32_ACT => {
                return Err(format!(
                    "u32 filter {} links hash tables or has actions",
                    handle_text(o.handle)
                ));
            }
            k => out.extend(nla(k, a.value())),
        }
    }
    Ok(out)
}

fn saved(o: &TcObject, attrs: &[(u16, Vec<u8>)]) -> Saved {
    let bytes: Vec<u8> = attrs.iter().flat_map(|(k, v)| nla(*k, v)).collect();
    Saved {
        handle: o.handle,
        parent: o.parent,
        info: o.info,
        kind: o.kind.clone(),
        attrs: hex(&bytes),
    }
}

/// Whether a dumped `u32` entry is one the kernel makes by itself: the classifier instance
/// (handle 0) or a hash table (`divisor`). Pure.
fn is_automatic_filter(o: &TcObject) -> Result<bool, String> {
    if o.kind != "u32" {
        return Ok(o.handle == 0);
    }
    if o.handle == 0 {
        return Ok(true);
    }
    let divisor = o
        .attrs
        .iter()
        .filter(|(k, _)| *k == TCA_OPTIONS)
        .flat_map(|(_, v)| NlasIterator::new(v.as_slice()).filter_map(Result::ok))
        .find(|a| a.kind() == TCA_U32_DIVISOR)
        .and_then(|a| a.value().get(..4).and_then(|b| b.try_into().ok()))
        .map(u32::from_ne_bytes);
    match divisor {
        None => Ok(false),
        Some(d) if d <= 1 => Ok(true),
        Some(d) => Err(format!(
            "u32 hash table {} with {d} buckets",
            handle_text(o.handle)
        )),
    }
}

/// Records the egress tree of `ifindex` under a configured root (handle not 0). `Ok(Err(why))`
/// when it cannot be written back.
pub(super) fn take(rtnl: &mut Rtnl, ifindex: i32) -> Result<Result<Snapshot, String>, NlError> {
    let qdiscs = rtnl.dump(Object::Qdisc, ifindex, 0)?;
    let Some(root) = qdiscs.iter().find(|q| q.parent == TC_H_ROOT).cloned() else {
        return Ok(Err("the interface has no root qdisc to record".into()));
    };
    // The tree: the root, and every qdisc below one of the tree's classes.
    let mut majors: BTreeSet<u16> = BTreeSet::from([root.major()]);
    let mut tree = vec![root];
    loop {
        let before = tree.len();
        for q in &qdiscs {
            let parent_major = (q.parent >> 16) as u16;
            if q.parent != TC_H_ROOT
                && q.handle != 0
                && majors.contains(&parent_major)
                && !tree.iter().any(|t| t.handle == q.handle)
            {
                majors.insert(q.major());
                tree.push(q.clone());
            }
        }
        if tree.len() == before {
            break;
        }
    }
    let mut snap = Snapshot::default();
    for q in &tree {
        if !REPLAYABLE_QDISCS.contains(&q.kind.as_str()) {
            return Ok(Err(format!(
                "qdisc {} {} makes its own children, which faultline does not write back",
                q.kind,
                handle_text(q.handle)
            )));
        }
        match config_attrs("qdisc", q) {
            Ok(a) => snap.qdiscs.push(saved(q, &a)),
            Err(why) => return Ok(Err(why)),
        }
    }
    let classes: Vec<TcObject> = rtnl
        .dump(Object::Class, ifindex, 0)?
        .into_iter()
        .filter(|c| majors.contains(&((c.handle >> 16) as u16)))
        .collect();
    let owner_kind = |c: &TcObject| {
        tree.iter()
            .find(|q| q.major() == (c.handle >> 16) as u16)
            .map(|q| q.kind.as_str())
    };
    let mut parents: Vec<u32> = tree.iter().map(|q| q.handle).collect();
    for c in &classes {
        parents.push(c.handle);
        if owner_kind(c).is_some_and(|k| USER_CLASSES.contains(&k)) {
            match config_attrs("class", c) {
                Ok(a) => snap.classes.push(saved(c, &a)),
                Err(why) => return Ok(Err(why)),
            }
        }
    }
    for parent in parents {
        for f in rtnl.dump(Object::Filter, ifindex, parent)? {
            match is_automatic_filter(&f) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(why) => return Ok(Err(why)),
            }
            if f.kind != "u32" {
                return Ok(Err(format!(
                    "a {} filter on {}, which faultline does not write back",
                    f.kind,
                    handle_text(parent)
                )));
            }
            match config_attrs("filter", &f) {
                Ok(a) => snap.filters.push(saved(&f, &a)),
                Err(why) => return Ok(Err(why)),
            }
        }
    }
    Ok(Ok(snap))
}

fn object(s: &Saved) -> Result<TcObject, String> {
    let bytes = unhex(&s.attrs)?;
    let mut attrs = Vec::new();
    for a in NlasIterator::new(bytes.as_slice()) {
        let a = a.map_err(|e| format!("recorded attributes of {}: {e}", s.kind))?;
        attrs.push((a.kind(), a.value().to_vec()));
    }
    Ok(TcObject {
        handle: s.handle,
        parent: s.parent,
        info: s.info,
        kind: s.kind.clone(),
        attrs,
    })
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum RestoreError {
    /// The kernel refused one object.
    #[error("writing back {what} {kind} {handle}: {source}")]
    Write {
        what: &'static str,
        kind: String,
        handle: String,
        source: NlError,
    },
    /// The record cannot be used.
    #[error("the recorded qdisc tree cannot be read: {0}")]
    Record(String),
}

/// Writes `snap` back on `ifindex`: the root (replacing whatever root is there), classes and
/// qdiscs parent first, then the filters. Each write creates or changes in place, so running
/// it again after an interruption is safe.
pub(super) fn restore(rtnl: &mut Rtnl, ifindex: i32, snap: &Snapshot) -> Result<(), RestoreError> {
    let decode = |v: &[Saved]| -> Result<Vec<TcObject>, RestoreError> {
        v.iter()
            .map(|s| object(s).map_err(RestoreError::Record))
            .collect()
    };
    let qdiscs = decode(&snap.qdiscs)?;
    let classes = decode(&snap.classes)?;
    let filters = decode(&snap.filters)?;
    let mut write = |what: Object, o: &TcObject| {
        rtnl.write(what, Write::Replace, ifindex, o)
            .map_err(|source| RestoreError::Write {
                what: what.name(),
                kind: o.kind.clone(),
                handle: handle_text(o.handle),
                source,
            })
    };
    let Some(root) = qdiscs.iter().find(|q| q.parent == TC_H_ROOT) else {
        return Err(RestoreError::Record("no root qdisc".into()));
    };
    write(Object::Qdisc, root)?;
    // Parents that exist: the tree's qdiscs as they are written, classes as they are written,
    // and the classes of qdiscs that make their own.
    let mut done_qdiscs: BTreeSet<u32> = BTreeSet::from([root.handle]);
    let mut done_classes: BTreeSet<u32> = BTreeSet::new();
    let owns_classes =
        |major: u16, done: &BTreeSet<u32>| done.iter().any(|h| (h >> 16) as u16 == major);
    loop {
        let mut progress = false;
        for c in &classes {
            if done_classes.contains(&c.handle) {
                continue;
            }
            let major = (c.handle >> 16) as u16;
            let ready = if c.parent == TC_H_ROOT {
                owns_classes(major, &done_qdiscs)
            } else {
                done_classes.contains(&c.parent)
            };
            if ready {
                let mut c = c.clone();
                if c.parent == TC_H_ROOT {
                    c.parent = u32::from(major) << 16;
                }
                write(Object::Class, &c)?;
                done_classes.insert(c.handle);
                progress = true;
            }
        }
        for q in &qdiscs {
            if done_qdiscs.contains(&q.handle) {
                continue;
            }
            let parent_major = (q.parent >> 16) as u16;
            let user_class = classes.iter().any(|c| c.handle == q.parent);
            let ready = if user_class {
                done_classes.contains(&q.parent)
            } else {
                owns_classes(parent_major, &done_qdiscs)
            };
            if ready {
                write(Object::Qdisc, q)?;
                done_qdiscs.insert(q.handle);
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    if done_qdiscs.len() != qdiscs.len() || done_classes.len() != classes.len() {
        return Err(RestoreError::Record(
            "some recorded qdiscs or classes have no recorded parent".into(),
        ));
    }
    for f in &filters {
        write(Object::Filter, f)?;
    }
    Ok(())
}

/// The shape of a tree for comparison: kind, handle and parent of each qdisc and class, and
/// handle, parent and priority of each filter. Counters may differ; the shape may not.
fn shape(s: &Snapshot) -> BTreeSet<(u8, String, u32, u32, u32)> {
    let each = |tag: u8, v: &[Saved], with_info: bool| {
        v.iter()
            .map(move |o| {
                (
                    tag,
                    o.kind.clone(),
                    o.handle,
                    o.parent,
                    if with_info { o.info } else { 0 },
                )
            })
            .collect::<Vec<_>>()
    };
    each(0, &s.qdiscs, false)
        .into_iter()
        .chain(each(1, &s.classes, false))
        .chain(each(2, &s.filters, true))
        .collect()
}

/// Whether `ifindex` has the recorded tree now (same qdiscs, classes and filters).
pub(super) fn is_restored(rtnl: &mut Rtnl, ifindex: i32, snap: &Snapshot) -> Result<bool, NlError> {
    Ok(match take(rtnl, ifindex)? {
        Ok(now) => shape(&now) == shape(snap),
        Err(_) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: &str, handle: u32, attrs: Vec<(u16, Vec<u8>)>) -> TcObject {
        TcObject {
            handle,
            parent: TC_H_ROOT,
            info: 0,
            kind: kind.into(),
            attrs,
        }
    }

    #[test]
    fn counters_are_dropped_and_configuration_kept() {
        let o = obj(
            "tbf",
            0x10000,
            vec![
                (TCA_OPTIONS, vec![1, 2, 3, 4]),
                (TCA_STATS2, vec![9; 8]),
                (TCA_STATS, vec![9; 8]),
                (TCA_HW_OFFLOAD, vec![0]),
            ],
        );
        assert_eq!(
            config_attrs("qdisc", &o).unwrap(),
            vec![(TCA_OPTIONS, vec![1, 2, 3, 4])]
        );
        let offloaded = obj("htb", 0x10000, vec![(TCA_HW_OFFLOAD, vec![1])]);
        assert!(
            config_attrs("qdisc", &offloaded)
                .unwrap_err()
                .contains("offloaded")
        );
        let stab = obj("htb", 0x10000, vec![(8, vec![0; 4])]);
        assert!(
            config_attrs("qdisc", &stab)
                .unwrap_err()
                .contains("attribute 8")
        );
    }

    #[test]
    fn u32_status_flags_and_counters_are_not_written_back() {
        let mut opts = nla(5, &[1; 16]);
        opts.extend(nla(TCA_U32_PCNT, &[7; 16]));
        opts.extend(nla(TCA_U32_FLAGS, &0b1000u32.to_ne_bytes())); // not_in_hw
        let f = obj("u32", 0x8000_0800, vec![(TCA_OPTIONS, opts)]);
        assert_eq!(u32_options(&f, &f.attrs[0].1).unwrap(), nla(5, &[1; 16]));
        let mut with_act = nla(5, &[1; 16]);
        with_act.extend(nla(TCA_U32_ACT, &[]));
        assert!(u32_options(&f, &with_act).is_err());
        let ht = obj(
            "u32",
            0x8000_0000,
            vec![(TCA_OPTIONS, nla(TCA_U32_DIVISOR, &1u32.to_ne_bytes()))],
        );
        assert_eq!(is_automatic_filter(&ht), Ok(true));
        let big = obj(
            "u32",
            0x8010_0000,
            vec![(TCA_OPTIONS, nla(TCA_U32_DIVISOR, &256u32.to_ne_bytes()))],
        );
        assert!(is_automatic_filter(&big).is_err());
    }

    #[test]
    fn an_htb_root_is_written_back_with_the_version_htb_takes() {
        let mut glob = Vec::new();
        for v in [0x30011u32, 10, 0x10, 0, 42] {
            glob.extend_from_slice(&v.to_ne_bytes());
        }
        let mut opts = nla(TCA_HTB_INIT, &glob);
        opts.extend(nla(5, &1000u32.to_ne_bytes()));
        let out = htb_options(&opts);
        assert_eq!(&out[4..8], &3u32.to_ne_bytes(), "version 3");
        assert_eq!(&out[12..16], &0x10u32.to_ne_bytes(), "default class kept");
        assert_eq!(
            &out[20..24],
            &0u32.to_ne_bytes(),
            "direct packets counter zeroed"
        );
        assert_eq!(&out[24..], nla(5, &1000u32.to_ne_bytes()).as_slice());
    }

    #[test]
    fn saved_objects_round_trip_through_hex() {
        let o = obj("pfifo", 0x200000, vec![(TCA_OPTIONS, vec![50, 0, 0, 0])]);
        let s = saved(&o, &o.attrs);
        assert_eq!(s.attrs, "08000200".to_owned() + "32000000");
        assert_eq!(object(&s).unwrap(), o);
        assert!(unhex("abc").is_err());
    }
}
