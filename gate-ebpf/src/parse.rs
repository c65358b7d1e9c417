//! Bounded packet parsing: Ethernet with up to two VLAN tags (or nothing, on a layer-3 device),
//! IPv4 or IPv6 (with a bounded walk of extension headers), then the destination port of TCP or
//! UDP. An IPv4-mapped IPv6 source is returned as the IPv4 address it names.
//!
//! One small function a layer, each reading through [`Cursor::read`] (and [`Cursor::holds`] for a
//! header longer than the fields read), the only places that check a header against the end of
//! the packet. Every header, read or skipped, must be wholly in the packet. Every failure to read
//! where an IP packet might be is [`Packet::Unparseable`]: the caller drops it, since it might be
//! for a gated port. tests/tests/differential.rs checks all this against a model on `etherparse`.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use gate_common::{Framing, IPPROTO_TCP, IPPROTO_UDP};

pub use crate::lease::Address;

const ETH_P_IPV4: [u8; 2] = [0x08, 0x00];
const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
const ETH_P_8021Q: [u8; 2] = [0x81, 0x00];
const ETH_P_8021AD: [u8; 2] = [0x88, 0xa8];

/// VLAN tags the parser strips (802.1Q, and 802.1ad outer + 802.1Q inner).
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before the chain counts as unparseable.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;
/// No header chain may reach further into the packet than this (keeps offsets verifier-bounded).
const MAX_HEADER_BYTES: usize = 512;

const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;
const IPV6_MOBILITY: u8 = 135;
const IPV6_HIP: u8 = 139;
const IPV6_SHIM6: u8 = 140;
const IPV6_EXPERIMENT1: u8 = 253;
const IPV6_EXPERIMENT2: u8 = 254;

#[repr(C)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ethertype: [u8; 2],
}

#[repr(C)]
struct VlanHdr {
    tci: [u8; 2],
    ethertype: [u8; 2],
}

#[repr(C)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    total_len: [u8; 2],
    id: [u8; 2],
    flags_frag_off: [u8; 2],
    ttl: u8,
    protocol: u8,
    checksum: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

/// The first two bytes every IPv6 extension header shares (RFC 6564).
#[repr(C)]
struct Ipv6ExtHdr {
    next_header: u8,
    len: u8,
}

#[repr(C)]
struct Ipv6FragHdr {
    next_header: u8,
    reserved: u8,
    offset_flags: [u8; 2],
    id: [u8; 4],
}

/// Source and destination port: the first four bytes of both TCP and UDP.
#[repr(C)]
struct Ports {
    src: [u8; 2],
    dst: [u8; 2],
}

/// What lies above the IP header, as far as a port gate cares.
pub enum Transport {
    /// TCP or UDP with a readable destination port (network byte order), and the packet's
    /// destination address (to tell this host's packets from transit).
    Ports { protocol: u8, dst_port: [u8; 2], destination: Address },
    /// Another protocol (ICMP, ESP, ...): no port to gate.
    Other,
    /// A non-first fragment: no transport header at all.
    NonFirstFragment,
}

pub enum Packet {
    /// Not IPv4 or IPv6.
    NotIp,
    Ip {
        source: Address,
        transport: Transport,
    },
    /// Possibly IP, but the headers do not fit the packet or the parser's bounds.
    Unparseable,
}

/// A read position in the packet.
struct Cursor {
    start: usize,
    end: usize,
    offset: usize,
}

impl Cursor {
    fn new(ctx: &XdpContext) -> Self {
        Self { start: ctx.data(), end: ctx.data_end(), offset: 0 }
    }

    /// The header of type `T` at the current offset, if it lies wholly inside the packet.
    #[inline(always)]
    fn read<T>(&self) -> Option<&T> {
        if self.offset > MAX_HEADER_BYTES {
            return None;
        }
        let at = self.start + self.offset;
        if at + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: [at, at + size_of::<T>()) was just checked to lie inside the packet, and every
        // header type here is made of byte arrays, so any address is aligned for it.
        Some(unsafe { &*(at as *const T) })
    }

    /// Whether `bytes` from the current offset lie wholly inside the packet (a header's whole
    /// length, of which only the first fields are read).
    #[inline(always)]
    fn holds(&self, bytes: usize) -> bool {
        // The offset's bound first: the verifier accepts only bounded sums with a packet pointer.
        self.offset <= MAX_HEADER_BYTES && self.start + self.offset + bytes <= self.end
    }

    #[inline(always)]
    fn advance(&mut self, bytes: usize) {
        self.offset += bytes;
    }
}

/// Parses the packet far enough to name its source and destination port.
#[inline(always)]
pub fn parse(ctx: &XdpContext, framing: Framing) -> Packet {
    let mut cursor = Cursor::new(ctx);
    let ethertype = match framing {
        Framing::Ethernet => ethertype(&mut cursor),
        Framing::Ip => ip_version(&cursor),
    };
    match ethertype {
        Some(ETH_P_IPV4) => ipv4(&mut cursor),
        Some(ETH_P_IPV6) => ipv6(&mut cursor),
        Some(_) => Packet::NotIp,
        None => Packet::Unparseable,
    }
}

/// The ethertype a bare IP packet would have, from its version nibble; `None` if the packet is
/// empty or neither IPv4 nor IPv6 (on a layer-3 device every packet is IP, so that is
/// unparseable, never "not IP").
#[inline(always)]
fn ip_version(cursor: &Cursor) -> Option<[u8; 2]> {
    // Read as the smallest IP header rather than one byte: the compiler turns a one-byte bound
    // into a comparison the verifier cannot use.
    match cursor.read::<Ipv4Hdr>()?.version_ihl >> 4 {
        4 => Some(ETH_P_IPV4),
        6 => Some(ETH_P_IPV6),
        _ => None,
    }
}

/// The ethertype after at most [`MAX_VLAN_TAGS`] tags; `None` if truncated or tagged deeper.
#[inline(always)]
fn ethertype(cursor: &mut Cursor) -> Option<[u8; 2]> {
    let mut ethertype = cursor.read::<EthHdr>()?.ethertype;
    cursor.advance(size_of::<EthHdr>());
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            return Some(ethertype);
        }
        ethertype = cursor.read::<VlanHdr>()?.ethertype;
        cursor.advance(size_of::<VlanHdr>());
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return None;
    }
    Some(ethertype)
}

#[inline(always)]
fn ipv4(cursor: &mut Cursor) -> Packet {
    let Some(ip) = cursor.read::<Ipv4Hdr>() else {
        return Packet::Unparseable;
    };
    let header_len = usize::from(ip.version_ihl & 0x0f) * 4;
    // The whole header, options included, must be in the packet (as the kernel requires), even
    // for a fragment or a protocol without ports.
    if ip.version_ihl >> 4 != 4 || header_len < size_of::<Ipv4Hdr>() || !cursor.holds(header_len) {
        return Packet::Unparseable;
    }
    let source = Address::v4(ip.src);
    let fragment_offset = u16::from_be_bytes([ip.flags_frag_off[0] & 0x1f, ip.flags_frag_off[1]]);
    if fragment_offset != 0 {
        return Packet::Ip { source, transport: Transport::NonFirstFragment };
    }
    let protocol = ip.protocol;
    let destination = Address::v4(ip.dst);
    cursor.advance(header_len);
    transport(cursor, source, destination, protocol)
}

#[inline(always)]
fn ipv6(cursor: &mut Cursor) -> Packet {
    let Some(ip) = cursor.read::<Ipv6Hdr>() else {
        return Packet::Unparseable;
    };
    if ip.version_class_flow[0] >> 4 != 6 {
        return Packet::Unparseable;
    }
    let source = Address::from_v6(ip.src);
    let mut next_header = ip.next_header;
    let destination = Address::v6(ip.dst);
    cursor.advance(size_of::<Ipv6Hdr>());
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next_header {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_MOBILITY | IPV6_HIP | IPV6_SHIM6 | IPV6_EXPERIMENT1
            | IPV6_EXPERIMENT2 => {
                let Some(ext) = cursor.read::<Ipv6ExtHdr>() else {
                    return Packet::Unparseable;
                };
                let len = (usize::from(ext.len) + 1) * 8;
                if !cursor.holds(len) {
                    return Packet::Unparseable;
                }
                next_header = ext.next_header;
                cursor.advance(len);
            }
            IPV6_AH => {
                let Some(ext) = cursor.read::<Ipv6ExtHdr>() else {
                    return Packet::Unparseable;
                };
                // Counted in 4-byte words minus two; an AH is at least 12 bytes (RFC 4302).
                let len = (usize::from(ext.len) + 2) * 4;
                if ext.len == 0 || !cursor.holds(len) {
                    return Packet::Unparseable;
                }
                next_header = ext.next_header;
                cursor.advance(len);
            }
            IPV6_FRAGMENT => {
                let Some(frag) = cursor.read::<Ipv6FragHdr>() else {
                    return Packet::Unparseable;
                };
                let offset = u16::from_be_bytes(frag.offset_flags) >> 3;
                if offset != 0 {
                    return Packet::Ip { source, transport: Transport::NonFirstFragment };
                }
                next_header = frag.next_header;
                cursor.advance(size_of::<Ipv6FragHdr>());
            }
            _ => return transport(cursor, source, destination, next_header),
        }
    }
    if is_ipv6_extension(next_header) {
        // The chain goes on past the bound: the port is out of reach.
        return Packet::Unparseable;
    }
    transport(cursor, source, destination, next_header)
}

#[inline(always)]
const fn is_ipv6_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        IPV6_HOPOPTS
            | IPV6_ROUTING
            | IPV6_FRAGMENT
            | IPV6_AH
            | IPV6_DSTOPTS
            | IPV6_MOBILITY
            | IPV6_HIP
            | IPV6_SHIM6
            | IPV6_EXPERIMENT1
            | IPV6_EXPERIMENT2
    )
}

/// The destination port of TCP or UDP at the cursor. A TCP or UDP header too short to hold the
/// ports (a tiny first fragment, a truncated packet) is unparseable, never "not gated".
#[inline(always)]
fn transport(cursor: &Cursor, source: Address, destination: Address, protocol: u8) -> Packet {
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return Packet::Ip { source, transport: Transport::Other };
    }
    match cursor.read::<Ports>() {
        Some(ports) => {
            Packet::Ip { source, transport: Transport::Ports { protocol, dst_port: ports.dst, destination } }
        }
        None => Packet::Unparseable,
    }
}
