//! tc over rtnetlink: qdiscs, classes and filters as [`TcObject`]s (the kernel's header and
//! raw attributes) sent as `RTM_NEW*`/`RTM_DEL*` and read back with `RTM_GET*` dumps, plus the
//! interface lookups a fault needs (an interface's index, the default route's interface).
//!
//! Messages are `netlink-packet-route`'s; a tc object's options are kept as the raw
//! attribute bytes the kernel takes and dumps (`TCA_OPTIONS`), which is what lets a snapshot
//! of someone else's qdisc tree be replayed exactly ([`super::snapshot`]).

use std::fs::File;

use netlink_packet_core::{
    DefaultNla, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NlasIterator,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcHeader, TcMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::super::netlink::{NETLINK_ROUTE, NlError, NlSocket};
use super::super::netns::socket_in;
use crate::error::FaultError;

/// `TCA_KIND`.
pub(super) const TCA_KIND: u16 = 1;
/// `TCA_OPTIONS`.
pub(super) const TCA_OPTIONS: u16 = 2;
/// The root of an interface's egress tree (`TC_H_ROOT`).
pub(super) const TC_H_ROOT: u32 = 0xffff_ffff;

/// What a [`TcObject`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Object {
    Qdisc,
    Class,
    Filter,
}

impl Object {
    pub(super) fn name(self) -> &'static str {
        match self {
            Object::Qdisc => "qdisc",
            Object::Class => "class",
            Object::Filter => "filter",
        }
    }
}

/// A qdisc, class or filter: the kernel's `struct tcmsg` fields and its attributes, raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TcObject {
    /// Handle (`major << 16 | minor`).
    pub handle: u32,
    /// Parent handle ([`TC_H_ROOT`] for the root qdisc).
    pub parent: u32,
    /// Filters: priority and protocol (`prio << 16 | htons(ethertype)`).
    pub info: u32,
    /// `TCA_KIND`.
    pub kind: String,
    /// Every attribute but the kind, `(type, value)`, in the kernel's order.
    pub attrs: Vec<(u16, Vec<u8>)>,
}

impl TcObject {
    /// A new object of `kind` with options `options`.
    pub(super) fn new(handle: u32, parent: u32, info: u32, kind: &str, options: Vec<u8>) -> Self {
        TcObject {
            handle,
            parent,
            info,
            kind: kind.to_owned(),
            attrs: vec![(TCA_OPTIONS, options)],
        }
    }

    /// The major number of the handle (`1ab` of `1ab:`).
    pub(super) fn major(&self) -> u16 {
        (self.handle >> 16) as u16
    }

    /// Parses one `RTM_NEW*` message of a dump (the whole netlink message); `None` for a
    /// message that is not one. Pure.
    pub(super) fn parse(msg: &[u8]) -> Option<(i32, TcObject)> {
        let body = msg.get(16..)?;
        let header = body.get(..20)?;
        let word = |i: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(header.get(i..i + 4)?.try_into().ok()?))
        };
        let ifindex = word(4)? as i32;
        let mut obj = TcObject {
            handle: word(8)?,
            parent: word(12)?,
            info: word(16)?,
            kind: String::new(),
            attrs: Vec::new(),
        };
        for nla in NlasIterator::new(body.get(20..)?) {
            let nla = nla.ok()?;
            if nla.kind() == TCA_KIND {
                obj.kind = String::from_utf8_lossy(nla.value())
                    .trim_end_matches('\0')
                    .to_owned();
            } else {
                obj.attrs.push((nla.kind(), nla.value().to_vec()));
            }
        }
        Some((ifindex, obj))
    }

    fn message(&self, ifindex: i32) -> TcMessage {
        let header = TcHeader {
            family: AddressFamily::Unspec,
            index: ifindex,
            handle: TcHandle::from(self.handle),
            parent: TcHandle::from(self.parent),
            info: self.info,
        };
        let mut attributes = vec![TcAttribute::Kind(self.kind.clone())];
        attributes.extend(
            self.attrs
                .iter()
                .map(|(k, v)| TcAttribute::Other(DefaultNla::new(*k, v.clone()))),
        );
        TcMessage::from_parts(header, attributes)
    }
}

/// How an object is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Write {
    /// Only where there is none (`tc … add`).
    Add,
    /// Created, or replacing what is there (`tc … replace`).
    Replace,
    /// Removed.
    Delete,
}

fn request(msg: RouteNetlinkMessage, flags: u16) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg))
}

/// An rtnetlink socket in one namespace.
#[derive(Debug)]
pub(super) struct Rtnl(NlSocket);

impl Rtnl {
    /// A socket in `ns` (the agent's own when `None`).
    pub(super) fn open(kind: &'static str, ns: Option<&File>) -> Result<Self, FaultError> {
        socket_in(kind, ns, || NlSocket::new(NETLINK_ROUTE)).map(Rtnl)
    }

    /// Every interface: `(index, name)`.
    pub(super) fn links(&mut self) -> Result<Vec<(i32, String)>, NlError> {
        let msgs = self.0.dump(request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            0,
        ))?;
        Ok(msgs
            .iter()
            .filter_map(
                |m| match NetlinkMessage::<RouteNetlinkMessage>::deserialize(m) {
                    Ok(NetlinkMessage {
                        payload: NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)),
                        ..
                    }) => l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some((l.header.index as i32, n.clone())),
                        _ => None,
                    }),
                    _ => None,
                },
            )
            .collect())
    }

    /// The interface of the main table's default route (IPv4, else IPv6), if any.
    pub(super) fn default_route_ifindex(&mut self) -> Result<Option<i32>, NlError> {
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut rm = RouteMessage::default();
            rm.header.address_family = family;
            let msgs = self.0.dump(request(RouteNetlinkMessage::GetRoute(rm), 0))?;
            for m in &msgs {
                let Ok(NetlinkMessage {
                    payload: NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)),
                    ..
                }) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(m)
                else {
                    continue;
                };
                if r.header.destination_prefix_length != 0
                    || r.header.kind != RouteType::Unicast
                    || r.header.table != RouteHeader::RT_TABLE_MAIN
                {
                    continue;
                }
                if let Some(oif) = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i as i32),
                    _ => None,
                }) {
                    return Ok(Some(oif));
                }
            }
        }
        Ok(None)
    }

    /// Every `what` of interface `ifindex` (filters: those attached to `parent`).
    pub(super) fn dump(
        &mut self,
        what: Object,
        ifindex: i32,
        parent: u32,
    ) -> Result<Vec<TcObject>, NlError> {
        let mut tc = TcMessage::with_index(ifindex);
        tc.header.parent = TcHandle::from(parent);
        let msg = match what {
            Object::Qdisc => RouteNetlinkMessage::GetQueueDiscipline(tc),
            Object::Class => RouteNetlinkMessage::GetTrafficClass(tc),
            Object::Filter => RouteNetlinkMessage::GetTrafficFilter(tc),
        };
        let msgs = self.0.dump(request(msg, 0))?;
        Ok(msgs
            .iter()
            .filter_map(|m| TcObject::parse(m))
            .filter(|(i, _)| *i == ifindex)
            .map(|(_, o)| o)
            .collect())
    }

    /// The root qdisc of `ifindex` (the kernel's default has handle 0).
    pub(super) fn root(&mut self, ifindex: i32) -> Result<Option<TcObject>, NlError> {
        Ok(self
            .dump(Object::Qdisc, ifindex, 0)?
            .into_iter()
            .find(|q| q.parent == TC_H_ROOT))
    }

    /// Writes `obj` on `ifindex`.
    pub(super) fn write(
        &mut self,
        what: Object,
        how: Write,
        ifindex: i32,
        obj: &TcObject,
    ) -> Result<(), NlError> {
        let tc = obj.message(ifindex);
        let (msg, flags) = match (what, how) {
            (Object::Qdisc, Write::Add) => (
                RouteNetlinkMessage::NewQueueDiscipline(tc),
                NLM_F_CREATE | NLM_F_EXCL,
            ),
            (Object::Qdisc, Write::Replace) => (
                RouteNetlinkMessage::NewQueueDiscipline(tc),
                NLM_F_CREATE | NLM_F_REPLACE,
            ),
            (Object::Qdisc, Write::Delete) => (RouteNetlinkMessage::DelQueueDiscipline(tc), 0),
            (Object::Class, Write::Add) => (
                RouteNetlinkMessage::NewTrafficClass(tc),
                NLM_F_CREATE | NLM_F_EXCL,
            ),
            (Object::Class, Write::Replace) => {
                (RouteNetlinkMessage::NewTrafficClass(tc), NLM_F_CREATE)
            }
            (Object::Class, Write::Delete) => (RouteNetlinkMessage::DelTrafficClass(tc), 0),
            (Object::Filter, Write::Add) => (
                RouteNetlinkMessage::NewTrafficFilter(tc),
                NLM_F_CREATE | NLM_F_EXCL,
            ),
            (Object::Filter, Write::Replace) => {
                (RouteNetlinkMessage::NewTrafficFilter(tc), NLM_F_CREATE)
            }
            (Object::Filter, Write::Delete) => (RouteNetlinkMessage::DelTrafficFilter(tc), 0),
        };
        self.0.request(request(msg, flags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_parse_from_a_dumped_message() {
        // nlmsghdr, tcmsg (ifindex 3, handle 1:, parent root), TCA_KIND "htb",
        // TCA_OPTIONS with one nested attribute.
        let mut m = vec![0u8; 16];
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&3i32.to_ne_bytes());
        m.extend_from_slice(&0x0001_0000u32.to_ne_bytes());
        m.extend_from_slice(&TC_H_ROOT.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend(super::super::qdisc::nla(TCA_KIND, b"htb\0"));
        m.extend(super::super::qdisc::nla(
            TCA_OPTIONS,
            &[8, 0, 5, 0, 0xe8, 3, 0, 0],
        ));
        let (ifindex, o) = TcObject::parse(&m).unwrap();
        assert_eq!(ifindex, 3);
        assert_eq!(o.kind, "htb");
        assert_eq!((o.handle, o.parent, o.major()), (0x10000, TC_H_ROOT, 1));
        assert_eq!(
            o.attrs,
            vec![(TCA_OPTIONS, vec![8, 0, 5, 0, 0xe8, 3, 0, 0])]
        );
    }
}
