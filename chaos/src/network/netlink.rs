//! A netlink socket and the two exchanges the kernel network faults make over it: requests
//! answered by acknowledgements (one message, or an nftables batch), and dumps.
//!
//! The messages themselves are the netlink crates' types (`netlink-packet-route` for tc,
//! `netlink-packet-netfilter` for nftables; ADR 0018); this module frames them, numbers
//! them, and reads the answers back as raw messages, which the caller parses. A kernel
//! error becomes [`NlError`] with the errno and the kernel's extended-ack text ("Specified
//! qdisc kind is unknown."), so callers can name the missing module.
//!
//! Which namespace a socket talks to is decided when it is created
//! ([`super::netns::socket_in`]). Blocking, with a receive timeout so a kernel that never
//! answers cannot hang a fault.

use std::fmt;
use std::io;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer,
    NetlinkMessage, NetlinkSerializable, NlasIterator,
};
use netlink_sys::{Socket, SocketAddr};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

pub(crate) use netlink_sys::protocols::{NETLINK_NETFILTER, NETLINK_ROUTE};

/// How long one answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// `NLMSGERR_ATTR_MSG`: the extended ack's text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// The kernel refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NlError {
    /// The errno it answered.
    pub errno: Errno,
    /// Its extended-ack text, when it gave one.
    pub message: Option<String>,
}

impl NlError {
    fn io(e: &io::Error) -> Self {
        NlError {
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)),
            message: Some(e.to_string()),
        }
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => write!(f, "{} ({})", m.trim_end_matches('.'), self.errno.desc()),
            None => f.write_str(self.errno.desc()),
        }
    }
}

impl std::error::Error for NlError {}

/// One netlink socket of one protocol, in the namespace it was created in.
pub(crate) struct NlSocket {
    sock: Socket,
    seq: u32,
}

impl fmt::Debug for NlSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NlSocket").field("seq", &self.seq).finish()
    }
}

impl NlSocket {
    /// A socket of `protocol` ([`NETLINK_ROUTE`], [`NETLINK_NETFILTER`]) in the calling
    /// thread's network namespace.
    pub(crate) fn new(protocol: isize) -> io::Result<Self> {
        let mut sock = Socket::new(protocol)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Errors carry the kernel's text, and not a copy of the request.
        sock.set_ext_ack(true)?;
        sock.set_cap_ack(true)?;
        setsockopt(
            &sock,
            sockopt::ReceiveTimeout,
            &TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0),
        )
        .map_err(io::Error::from)?;
        Ok(NlSocket { sock, seq: 0 })
    }

    /// Sends `msgs` in one datagram, each with the request flag and a sequence number; those
    /// flagged `ack` (or a dump) are waited for. Returns the data messages answered, raw.
    fn exchange<I: NetlinkSerializable>(
        &mut self,
        msgs: Vec<(NetlinkMessage<I>, bool)>,
    ) -> Result<Vec<Vec<u8>>, NlError> {
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for (mut m, wait) in msgs {
            self.seq = self.seq.wrapping_add(1);
            m.header.sequence_number = self.seq;
            m.header.flags |= NLM_F_REQUEST;
            let dump = m.header.flags & NLM_F_DUMP == NLM_F_DUMP;
            if wait && !dump {
                m.header.flags |= NLM_F_ACK;
            }
            if wait || dump {
                pending.push(self.seq);
            }
            m.finalize();
            let start = out.len();
            out.resize(start + m.buffer_len(), 0);
            m.serialize(&mut out[start..]);
        }
        self.sock.send(&out, 0).map_err(|e| NlError::io(&e))?;
        let mut data = Vec::new();
        let mut first_error: Option<NlError> = None;
        while !pending.is_empty() {
            let (buf, _) = self.sock.recv_from_full().map_err(|e| NlError::io(&e))?;
            let mut at = 0;
            while at < buf.len() {
                let Ok(nl) = NetlinkBuffer::new_checked(&buf[at..]) else {
                    break;
                };
                let len = (nl.length() as usize).max(16);
                let msg = &buf[at..(at + len).min(buf.len())];
                at += (len + 3) & !3;
                let seq = nl.sequence_number();
                match nl.message_type() {
                    NLMSG_ERROR => {
                        pending.retain(|s| *s != seq);
                        if let Some(e) = parse_error(msg) {
                            first_error.get_or_insert(e);
                            // An error for a message nobody waits for (a batch's begin)
                            // ends the batch: nothing else will be answered.
                            pending.clear();
                        }
                    }
                    NLMSG_DONE => pending.retain(|s| *s != seq),
                    _ => data.push(msg.to_vec()),
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(data),
        }
    }

    /// One request, acknowledged.
    pub(crate) fn request<I: NetlinkSerializable>(
        &mut self,
        msg: NetlinkMessage<I>,
    ) -> Result<(), NlError> {
        self.exchange(vec![(msg, true)]).map(drop)
    }

    /// Several messages in one datagram (an nftables batch: begin, the changes, end); the
    /// ones flagged `true` are acknowledged.
    pub(crate) fn batch<I: NetlinkSerializable>(
        &mut self,
        msgs: Vec<(NetlinkMessage<I>, bool)>,
    ) -> Result<(), NlError> {
        self.exchange(msgs).map(drop)
    }

    /// A dump request (`NLM_F_DUMP` is set here); every answer, raw, up to `NLMSG_DONE`.
    pub(crate) fn dump<I: NetlinkSerializable>(
        &mut self,
        mut msg: NetlinkMessage<I>,
    ) -> Result<Vec<Vec<u8>>, NlError> {
        msg.header.flags |= NLM_F_DUMP;
        self.exchange(vec![(msg, true)])
    }
}

/// The error of an `NLMSG_ERROR` message (`None` for an acknowledgement). The socket caps
/// acks, so the extended-ack attributes follow the original request's header. Pure.
pub(crate) fn parse_error(msg: &[u8]) -> Option<NlError> {
    let code = i32::from_ne_bytes(msg.get(16..20)?.try_into().ok()?);
    if code == 0 {
        return None;
    }
    let flags = u16::from_ne_bytes(msg.get(6..8)?.try_into().ok()?);
    let message = if flags & NLM_F_ACK_TLVS != 0 {
        msg.get(36..).and_then(|tlvs| {
            NlasIterator::new(tlvs)
                .filter_map(Result::ok)
                .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
                .map(|nla| {
                    String::from_utf8_lossy(nla.value())
                        .trim_end_matches('\0')
                        .to_owned()
                })
        })
    } else {
        None
    };
    Some(NlError {
        errno: Errno::from_raw(-code),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_kernels_text() {
        // nlmsghdr (len 60, NLMSG_ERROR, flags CAPPED|ACK_TLVS), error -2, the request's
        // header, then NLMSGERR_ATTR_MSG "Specified qdisc kind is unknown."
        let text = b"Specified qdisc kind is unknown.\0";
        let mut m = Vec::new();
        let tlv_len = 4 + text.len();
        let len = 36 + ((tlv_len + 3) & !3);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&(0x100u16 | NLM_F_ACK_TLVS).to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&(-2i32).to_ne_bytes());
        m.extend_from_slice(&[0; 16]);
        m.extend_from_slice(&(tlv_len as u16).to_ne_bytes());
        m.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        m.extend_from_slice(text);
        m.resize(len, 0);
        let e = parse_error(&m).unwrap();
        assert_eq!(e.errno, Errno::ENOENT);
        assert_eq!(
            e.to_string(),
            "Specified qdisc kind is unknown (No such file or directory)"
        );
        // An acknowledgement is not an error.
        let mut ack = m.clone();
        ack[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(parse_error(&ack), None);
    }
}
