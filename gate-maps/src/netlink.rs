//! The kernel's own view of network interfaces, over rtnetlink (in the caller's network
//! namespace): an interface's index, device type and the XDP program actually attached to it
//! (and so whether the gate's pinned link is what runs there); this host's addresses; and a
//! subscription to link and address changes, so the daemon learns within moments that an
//! interface came or went.
//!
//! Hand-written on purpose: two requests (RTM_GETLINK by name, an RTM_GETADDR dump) and their
//! answers are all gate needs, read through one bounds-checked message and attribute walk.
use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
    time::Duration,
};

use nix::sys::{
    socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send, setsockopt, socket,
        sockopt,
    },
    time::{TimeVal, TimeValLike as _},
};

const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;
const NLMSG_ERROR: u16 = 2;
const RTM_GETLINK: u16 = 18;
const RTM_NEWLINK: u16 = 16;
const NLM_F_REQUEST: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_PROG_ID: u16 = 4;
/// Netlink attribute type bits that are flags, not the type.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_DONE: u16 = 3;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const NLM_F_DUMP: u16 = 0x300;
const IFADDRMSG: usize = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
/// The multicast groups of link changes and of IPv4 and IPv6 address changes.
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

/// An interface as the kernel describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    /// The device type (`ARPHRD_*`): 1 Ethernet, 65534 none (tun, WireGuard), 776 sit, ...
    pub device_type: u16,
    /// The id of the XDP program attached to it, if any (whichever mode).
    pub xdp_program: Option<u32>,
}

pub use gate_common::Framing;

fn route_socket(groups: u32) -> io::Result<OwnedFd> {
    let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute)?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    Ok(fd)
}

/// Sends one request of `kind` with `flags` and `body` (the family header and any attributes)
/// on a fresh socket, which it returns for the answer (waited for at most 2 s).
fn ask(kind: u16, flags: u16, body: &[u8]) -> io::Result<OwnedFd> {
    let fd = route_socket(0)?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(2, 0))?;
    let total = NLMSG_HDR + align4(body.len());
    let mut request = Vec::with_capacity(total);
    request.extend_from_slice(&u32::try_from(total).map_err(|_| invalid("request too long"))?.to_ne_bytes());
    request.extend_from_slice(&kind.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    request.extend_from_slice(&1_u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0_u32.to_ne_bytes()); // port id: the kernel
    request.extend_from_slice(body);
    request.resize(total, 0);
    send(fd.as_raw_fd(), &request, MsgFlags::empty())?;
    Ok(fd)
}

/// The interface called `name` in this network namespace, or `None` if there is none.
///
/// # Errors
/// The netlink socket cannot be used, or the kernel's answer cannot be read.
pub fn link(name: &str) -> io::Result<Option<LinkState>> {
    let name_attr_len = 4 + name.len() + 1;
    let mut body = vec![0; IFINFOMSG]; // any family, index 0: look up by name
    body.extend_from_slice(&u16::try_from(name_attr_len).map_err(|_| invalid("name too long"))?.to_ne_bytes());
    body.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    let fd = ask(RTM_GETLINK, 0, &body)?;
    let mut buf = vec![0_u8; 65536];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    parse_answer(&buf[..n])
}

/// Whether an interface runs the gate, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpState {
    /// It runs the program of the gate's pinned link (this id).
    Gated(u32),
    /// It exists, but runs another XDP program or none (re-created, or replaced).
    NotGated(LinkState),
    /// No interface of that name exists now.
    Absent,
}

/// Whether the interface `name` runs `pinned`, the program behind its pinned link (`None`: no
/// usable link is pinned for it).
///
/// # Errors
/// As [`link`].
pub fn xdp_state(name: &str, pinned: Option<u32>) -> io::Result<XdpState> {
    Ok(match link(name)? {
        None => XdpState::Absent,
        Some(link) => match pinned {
            Some(program) if link.xdp_program == Some(program) => XdpState::Gated(program),
            _ => XdpState::NotGated(link),
        },
    })
}

/// Every address of this network namespace's interfaces (their local addresses, and IPv4
/// broadcast addresses): what a packet "addressed to this host" may carry as its destination.
///
/// # Errors
/// The netlink socket cannot be used, or the kernel's answer cannot be read.
pub fn addresses() -> io::Result<Vec<std::net::IpAddr>> {
    let fd = ask(RTM_GETADDR, NLM_F_DUMP, &[0; IFADDRMSG])?; // AF_UNSPEC: both families
    let mut found = Vec::new();
    let mut buf = vec![0_u8; 65536];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        for message in messages(&buf[..n]) {
            let kind = u16::from_ne_bytes([message[4], message[5]]);
            match kind {
                NLMSG_DONE => return Ok(found),
                NLMSG_ERROR => return Err(invalid("address dump refused")),
                RTM_NEWADDR if message.len() >= NLMSG_HDR + IFADDRMSG => {
                    for (kind, value) in attributes(&message[NLMSG_HDR + IFADDRMSG..]) {
                        if matches!(kind, IFA_ADDRESS | IFA_LOCAL | IFA_BROADCAST)
                            && let Some(addr) = ip_of(value)
                            && !found.contains(&addr)
                        {
                            found.push(addr);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The netlink messages in one datagram (a dump packs several).
fn messages(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = usize::try_from(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?)).ok()?;
        if len < NLMSG_HDR || len > bytes.len() {
            return None;
        }
        let message = &bytes[..len];
        bytes = bytes.get(align4(len)..).unwrap_or_default();
        Some(message)
    })
}

fn ip_of(value: &[u8]) -> Option<std::net::IpAddr> {
    match value.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(value).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(value).ok()?)),
        _ => None,
    }
}

fn parse_answer(msg: &[u8]) -> io::Result<Option<LinkState>> {
    let header = msg.get(..NLMSG_HDR).ok_or_else(|| invalid("short netlink header"))?;
    let kind = u16::from_ne_bytes([header[4], header[5]]);
    match kind {
        NLMSG_ERROR => {
            let code = msg.get(NLMSG_HDR..NLMSG_HDR + 4).ok_or_else(|| invalid("short netlink error"))?;
            let errno = -i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
            if errno == nix::errno::Errno::ENODEV as i32 { Ok(None) } else { Err(io::Error::from_raw_os_error(errno)) }
        }
        RTM_NEWLINK => {
            let info = msg.get(NLMSG_HDR..NLMSG_HDR + IFINFOMSG).ok_or_else(|| invalid("short ifinfomsg"))?;
            let device_type = u16::from_ne_bytes([info[2], info[3]]);
            let index = u32::from_ne_bytes([info[4], info[5], info[6], info[7]]);
            let mut xdp_program = None;
            for (kind, value) in attributes(&msg[NLMSG_HDR + IFINFOMSG..]) {
                if kind == IFLA_XDP {
                    for (inner, value) in attributes(value) {
                        if inner == IFLA_XDP_PROG_ID && value.len() >= 4 {
                            let id = u32::from_ne_bytes([value[0], value[1], value[2], value[3]]);
                            xdp_program = (id != 0).then_some(id);
                        }
                    }
                }
            }
            Ok(Some(LinkState { index, device_type, xdp_program }))
        }
        other => Err(invalid(&format!("unexpected netlink message type {other}"))),
    }
}

/// The (type, value) attributes in `bytes`; stops at the first malformed one.
fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*bytes.first()?, *bytes.get(1)?]));
        let kind = u16::from_ne_bytes([*bytes.get(2)?, *bytes.get(3)?]) & NLA_TYPE_MASK;
        if len < 4 || len > bytes.len() {
            return None;
        }
        let value = &bytes[4..len];
        bytes = bytes.get(align4(len)..).unwrap_or_default();
        Some((kind, value))
    })
}

const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("rtnetlink: {what}"))
}

/// A subscription to link and address changes (interfaces created, deleted, renamed, up, down;
/// addresses added or removed) in this network namespace. What changed is not parsed: any
/// message means "look again".
pub struct LinkWatch {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl LinkWatch {
    /// Subscribes; messages are waited for at most `tick` at a time.
    ///
    /// # Errors
    /// The netlink socket cannot be made.
    pub fn new(tick: Duration) -> io::Result<Self> {
        let fd = route_socket(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)?;
        let micros = i64::try_from(tick.as_micros()).unwrap_or(i64::MAX);
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::microseconds(micros))?;
        Ok(Self { fd, buf: vec![0; 65536] })
    }

    /// Waits up to the tick for link changes; `true` if any arrived (or some were lost, which
    /// also means "look again").
    pub fn changed(&mut self) -> bool {
        match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
            Ok(_) => {
                // Drain whatever else is queued: one look covers them all.
                while recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT).is_ok() {}
                true
            }
            Err(nix::errno::Errno::ENOBUFS) => true,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_with_its_type_and_a_missing_name_is_none() {
        let lo = link("lo").expect("ask rtnetlink").expect("lo exists");
        assert_eq!(lo.device_type, 772);
        assert_eq!(Framing::of(lo.device_type), Some(Framing::Ethernet));
        assert!(lo.index >= 1);
        assert_eq!(link("gt-no-such-if").expect("ask rtnetlink"), None);
    }

    #[test]
    fn loopback_addresses_are_listed() {
        let all = addresses().expect("dump addresses");
        assert!(all.contains(&"127.0.0.1".parse().unwrap()), "{all:?}");
    }

    #[test]
    fn device_types_map_to_framings() {
        assert_eq!(Framing::of(1), Some(Framing::Ethernet));
        assert_eq!(Framing::of(65534), Some(Framing::Ip));
        assert_eq!(Framing::of(776), Some(Framing::Ip));
        assert_eq!(Framing::of(32), None, "infiniband");
    }
}
