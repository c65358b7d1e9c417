//! The kernel's own view of network interfaces, over rtnetlink (in the caller's network
//! namespace): an interface's index, device type and the XDP program actually attached to it;
//! and a subscription to link changes, so the daemon learns within moments that an interface
//! came or went.
//!
//! Hand-written on purpose: two fixed message shapes (RTM_GETLINK by name, and the RTM_NEWLINK
//! answer with its `IFLA_XDP` attributes) are all gate needs, read through one bounds-checked
//! attribute walk.
use std::{io, os::fd::OwnedFd, time::Duration};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send, setsockopt, socket,
    sockopt,
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

/// What an interface's packets start with, as far as the gate's parser cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// An Ethernet header (Ethernet, veth, bridge, bond, VLAN, VXLAN, loopback).
    Ethernet,
    /// The IP header itself: tun, WireGuard, PPP, ipip, ip6tnl, sit, GRE, raw IP.
    Ip,
}

impl Framing {
    /// The framing of a device type (`ARPHRD_*`), or `None` for one gate cannot parse.
    #[must_use]
    pub const fn of(device_type: u16) -> Option<Self> {
        match device_type {
            // ARPHRD_ETHER, ARPHRD_LOOPBACK
            1 | 772 => Some(Self::Ethernet),
            // ARPHRD_PPP, ARPHRD_RAWIP, ARPHRD_TUNNEL, ARPHRD_TUNNEL6, ARPHRD_SIT, ARPHRD_IPGRE,
            // ARPHRD_IP6GRE, ARPHRD_NONE
            512 | 519 | 768 | 769 | 776 | 778 | 823 | 65534 => Some(Self::Ip),
            _ => None,
        }
    }
}

fn route_socket(groups: u32) -> io::Result<OwnedFd> {
    let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute)?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &NetlinkAddr::new(0, groups))?;
    Ok(fd)
}

/// The interface called `name` in this network namespace, or `None` if there is none.
///
/// # Errors
/// The netlink socket cannot be used, or the kernel's answer cannot be read.
pub fn link(name: &str) -> io::Result<Option<LinkState>> {
    let fd = route_socket(0)?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(2, 0))?;
    let mut request = Vec::with_capacity(64);
    let name_attr_len = 4 + name.len() + 1;
    let total = NLMSG_HDR + IFINFOMSG + align4(name_attr_len);
    request.extend_from_slice(&u32::try_from(total).map_err(|_| invalid("name too long"))?.to_ne_bytes());
    request.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    request.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    request.extend_from_slice(&1_u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0_u32.to_ne_bytes()); // port id: the kernel
    request.extend_from_slice(&[0; IFINFOMSG]); // any family, index 0: look up by name
    request.extend_from_slice(&u16::try_from(name_attr_len).map_err(|_| invalid("name too long"))?.to_ne_bytes());
    request.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
    request.extend_from_slice(name.as_bytes());
    request.resize(total, 0);
    send(std::os::fd::AsRawFd::as_raw_fd(&fd), &request, MsgFlags::empty())?;
    let mut buf = vec![0_u8; 65536];
    let n = recv(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut buf, MsgFlags::empty())?;
    parse_answer(&buf[..n])
}

/// Every address of this network namespace's interfaces (their local addresses, and IPv4
/// broadcast addresses): what a packet "addressed to this host" may carry as its destination.
///
/// # Errors
/// The netlink socket cannot be used, or the kernel's answer cannot be read.
pub fn addresses() -> io::Result<Vec<std::net::IpAddr>> {
    let fd = route_socket(0)?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(2, 0))?;
    let mut request = Vec::with_capacity(NLMSG_HDR + IFADDRMSG);
    request.extend_from_slice(&u32::try_from(NLMSG_HDR + IFADDRMSG).unwrap_or(24).to_ne_bytes());
    request.extend_from_slice(&RTM_GETADDR.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&2_u32.to_ne_bytes());
    request.extend_from_slice(&0_u32.to_ne_bytes());
    request.extend_from_slice(&[0; IFADDRMSG]); // AF_UNSPEC: both families
    send(std::os::fd::AsRawFd::as_raw_fd(&fd), &request, MsgFlags::empty())?;
    let mut found = Vec::new();
    let mut buf = vec![0_u8; 65536];
    loop {
        let n = recv(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut buf, MsgFlags::empty())?;
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
}

impl LinkWatch {
    /// Subscribes; messages are waited for at most `tick` at a time.
    ///
    /// # Errors
    /// The netlink socket cannot be made.
    pub fn new(tick: Duration) -> io::Result<Self> {
        let fd = route_socket(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::from(libc_timeval(tick)))?;
        Ok(Self { fd })
    }

    /// Waits up to the tick for link changes; `true` if any arrived (or some were lost, which
    /// also means "look again").
    pub fn changed(&self) -> bool {
        let mut buf = vec![0_u8; 65536];
        match recv(std::os::fd::AsRawFd::as_raw_fd(&self.fd), &mut buf, MsgFlags::empty()) {
            Ok(_) => {
                // Drain whatever else is queued: one look covers them all.
                while recv(std::os::fd::AsRawFd::as_raw_fd(&self.fd), &mut buf, MsgFlags::MSG_DONTWAIT).is_ok() {}
                true
            }
            Err(nix::errno::Errno::ENOBUFS) => true,
            Err(_) => false,
        }
    }
}

fn libc_timeval(tick: Duration) -> nix::libc::timeval {
    nix::libc::timeval {
        tv_sec: nix::libc::time_t::try_from(tick.as_secs()).unwrap_or(1),
        tv_usec: nix::libc::suseconds_t::from(tick.subsec_micros()),
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
