//! An independent model of the XDP program's verdict, for the differential test
//! ([`crate::differential`]): the headers are read by `etherparse`, not by gate-ebpf's parse.rs,
//! and the lease decision from a plain table of what the test granted, not from the maps.
//!
//! What it shares with the program is the policy, written out here from docs/architecture.md
//! ("the path of a packet") rather than from the program's code:
//! - Ethernet with at most two VLAN tags (802.1Q or 802.1ad, the tags the kernel strips); a third
//!   tag, or a header cut short, is unparseable. Other ethertypes are not IP: not gated.
//! - IPv4 whose whole header (options included) is in the frame; IPv6 with at most six
//!   extension headers of the kinds RFC 8200 and the IANA registry list, each wholly in the
//!   frame. A header that does not fit, a wrong version or a longer chain is unparseable.
//! - No header is read further than 512 bytes into the frame.
//! - A non-first fragment has no port: passed as a fragment.
//! - The ports are the transport header's first four bytes (a first fragment may carry no
//!   more); TCP or UDP with fewer is unparseable.
//! - An IPv4-mapped IPv6 source is the IPv4 host it names (the kernel drops such packets; the
//!   gate judges them as that host's).
//! - The IP length fields are not consulted: bytes after the packet are never delivered, so a
//!   verdict on them opens nothing.
//! - A drop for want of a lease becomes a pass (transit) when the packet is addressed to another
//!   host and its gate does not guard transit.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use etherparse::{
    EtherType, Ethernet2HeaderSlice, IpAuthHeaderSlice, IpNumber, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice,
    Ipv6HeaderSlice, Ipv6RawExtHeaderSlice, SingleVlanHeaderSlice,
};
use gate_common::{Framing, Reason};

/// VLAN tags stripped before the IP header.
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before the chain is too long to follow.
pub const MAX_IPV6_EXTENSIONS: usize = 6;
/// No header may start further into the frame than this.
pub const MAX_HEADER_OFFSET: usize = 512;

/// IPv6 extension headers (RFC 8200 section 4, the IANA "IPv6 Extension Header Types" registry;
/// ESP excluded: nothing readable follows it).
const IPV6_EXTENSIONS: [IpNumber; 10] = [
    IpNumber::IPV6_HEADER_HOP_BY_HOP,
    IpNumber::IPV6_ROUTE_HEADER,
    IpNumber::IPV6_FRAGMENTATION_HEADER,
    IpNumber::AUTHENTICATION_HEADER,
    IpNumber::IPV6_DESTINATION_OPTIONS,
    IpNumber::MOBILITY_HEADER,
    IpNumber::HIP,
    IpNumber::SHIM6,
    IpNumber::EXPERIMENTAL_AND_TESTING_0,
    IpNumber::EXPERIMENTAL_AND_TESTING_1,
];

/// What the headers say, as far as a port gate cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    NotIp,
    Unparseable,
    Fragment,
    /// IP, but not TCP or UDP.
    OtherProtocol,
    Ports {
        protocol: u8,
        dst_port: u16,
        source: IpAddr,
        destination: IpAddr,
    },
}

/// A lease as the test granted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseKind {
    Live,
    /// Past its hard expiry.
    Expired,
    /// Within its expiry, past its idle deadline.
    Idle,
}

/// What the lease a source holds on a gate (or none) means for its packets there.
#[must_use]
pub const fn lease_reason(lease: Option<LeaseKind>) -> Reason {
    match lease {
        Some(LeaseKind::Live) => Reason::PassedLease,
        Some(LeaseKind::Expired) => Reason::DroppedExpired,
        Some(LeaseKind::Idle) => Reason::DroppedIdle,
        None => Reason::DroppedNoLease,
    }
}

#[derive(Clone, Copy, Debug)]
pub struct GatedPort {
    pub gate: u32,
    pub transit: bool,
}

/// What the gate was told: its ports, its leases, this host's addresses.
#[derive(Debug, Default)]
pub struct World {
    /// By (IP protocol number, port).
    pub ports: HashMap<(u8, u16), GatedPort>,
    pub leases: HashMap<(u32, IpAddr), LeaseKind>,
    pub local: Vec<IpAddr>,
    pub unparseable_passes: bool,
}

impl World {
    /// The gate id (0 for none) and reason the program should count for `frame`.
    #[must_use]
    pub fn classify(&self, frame: &[u8], framing: Framing) -> (u32, Reason) {
        match parse(frame, framing) {
            Parsed::NotIp | Parsed::OtherProtocol => (0, Reason::NotGated),
            Parsed::Fragment => (0, Reason::Fragment),
            Parsed::Unparseable if self.unparseable_passes => (0, Reason::PassedUnparseable),
            Parsed::Unparseable => (0, Reason::DroppedUnparseable),
            Parsed::Ports { protocol, dst_port, source, destination } => {
                let Some(port) = self.ports.get(&(protocol, dst_port)) else { return (0, Reason::NotGated) };
                let reason = lease_reason(self.leases.get(&(port.gate, source)).copied());
                if reason.drops() && !port.transit && !self.addressed_here(destination) {
                    return (port.gate, Reason::Transit);
                }
                (port.gate, reason)
            }
        }
    }

    /// Whether a packet to `destination` is this host's own: one of its addresses, or a kind of
    /// address no router forwards (unspecified, loopback, multicast, broadcast, IPv4-compatible).
    fn addressed_here(&self, destination: IpAddr) -> bool {
        let special = match destination {
            IpAddr::V4(a) => a.octets()[0] == 0 || a.is_loopback() || a.octets()[0] >= 224,
            IpAddr::V6(a) => a.is_multicast() || a.octets()[..12].iter().all(|&b| b == 0),
        };
        special || self.local.contains(&destination)
    }
}

/// Reads `frame` as the program must, with `etherparse` doing the reading.
#[must_use]
pub fn parse(frame: &[u8], framing: Framing) -> Parsed {
    let (at, ether_type) = match framing {
        Framing::Ethernet => match link(frame) {
            Some(found) => found,
            None => return Parsed::Unparseable,
        },
        // A layer-3 device carries only IP: its version nibble names the header.
        Framing::Ip => match frame.first().map(|b| b >> 4) {
            Some(4) => (0, EtherType::IPV4),
            Some(6) => (0, EtherType::IPV6),
            _ => return Parsed::Unparseable,
        },
    };
    match ether_type {
        EtherType::IPV4 => ipv4(frame, at),
        EtherType::IPV6 => ipv6(frame, at),
        _ => Parsed::NotIp,
    }
}

/// The offset of the network header and its ethertype, past the VLAN tags.
fn link(frame: &[u8]) -> Option<(usize, EtherType)> {
    let ethernet = Ethernet2HeaderSlice::from_slice(frame).ok()?;
    let (mut at, mut ether_type) = (ethernet.slice().len(), ethernet.ether_type());
    let mut tags = 0;
    while ether_type == EtherType::VLAN_TAGGED_FRAME || ether_type == EtherType::PROVIDER_BRIDGING {
        if tags == MAX_VLAN_TAGS {
            return None;
        }
        let tag = SingleVlanHeaderSlice::from_slice(&frame[at..]).ok()?;
        ether_type = tag.ether_type();
        at += tag.slice().len();
        tags += 1;
    }
    Some((at, ether_type))
}

fn ipv4(frame: &[u8], at: usize) -> Parsed {
    let Ok(header) = Ipv4HeaderSlice::from_slice(&frame[at..]) else { return Parsed::Unparseable };
    if header.fragments_offset().value() != 0 {
        return Parsed::Fragment;
    }
    let (source, destination) = (IpAddr::V4(header.source_addr()), IpAddr::V4(header.destination_addr()));
    ports(frame, at + header.slice().len(), header.protocol(), source, destination)
}

fn ipv6(frame: &[u8], at: usize) -> Parsed {
    let Ok(header) = Ipv6HeaderSlice::from_slice(&frame[at..]) else { return Parsed::Unparseable };
    let source = unmapped(header.source_addr());
    let destination = IpAddr::V6(header.destination_addr());
    let mut next = header.next_header();
    let mut at = at + header.slice().len();
    for walked in 0.. {
        if !IPV6_EXTENSIONS.contains(&next) {
            return ports(frame, at, next, source, destination);
        }
        if walked == MAX_IPV6_EXTENSIONS || at > MAX_HEADER_OFFSET {
            return Parsed::Unparseable;
        }
        let rest = &frame[at..];
        let (following, len) = match next {
            IpNumber::AUTHENTICATION_HEADER => match IpAuthHeaderSlice::from_slice(rest) {
                Ok(auth) => (auth.next_header(), auth.slice().len()),
                Err(_) => return Parsed::Unparseable,
            },
            IpNumber::IPV6_FRAGMENTATION_HEADER => match Ipv6FragmentHeaderSlice::from_slice(rest) {
                Ok(fragment) if fragment.fragment_offset().value() != 0 => return Parsed::Fragment,
                Ok(fragment) => (fragment.next_header(), fragment.slice().len()),
                Err(_) => return Parsed::Unparseable,
            },
            _ => match Ipv6RawExtHeaderSlice::from_slice(rest) {
                Ok(extension) => (extension.next_header(), extension.slice().len()),
                Err(_) => return Parsed::Unparseable,
            },
        };
        next = following;
        at += len;
    }
    unreachable!("the walk returns by its bound")
}

/// The destination port of TCP or UDP at `at`.
fn ports(frame: &[u8], at: usize, protocol: IpNumber, source: IpAddr, destination: IpAddr) -> Parsed {
    if protocol != IpNumber::TCP && protocol != IpNumber::UDP {
        return Parsed::OtherProtocol;
    }
    if at > MAX_HEADER_OFFSET {
        return Parsed::Unparseable;
    }
    match frame.get(at..at + 4) {
        Some(ports) => Parsed::Ports {
            protocol: protocol.0,
            dst_port: u16::from_be_bytes([ports[2], ports[3]]),
            source,
            destination,
        },
        None => Parsed::Unparseable,
    }
}

/// An IPv6 source, or the IPv4 host an IPv4-mapped one names.
fn unmapped(source: Ipv6Addr) -> IpAddr {
    source.to_ipv4_mapped().map_or(IpAddr::V6(source), |v4: Ipv4Addr| IpAddr::V4(v4))
}
