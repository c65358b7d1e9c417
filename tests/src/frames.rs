//! Crafted Ethernet frames for `BPF_PROG_TEST_RUN`: every layer the gate parses, with knobs for
//! the shapes that break parsers (IPv4 options, VLAN stacks, IPv6 extension chains, fragments,
//! truncation at any byte). Checksums are left zero: the gate never reads them.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gate_common::{IPPROTO_TCP, IPPROTO_UDP};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_ICMPV6: u8 = 58;

const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;
/// The source port of every crafted TCP or UDP packet.
pub const FRAME_SOURCE_PORT: u16 = 40_000;

/// IPv6 extension headers the builder can put in a chain.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    HopByHop,
    Routing,
    DestOpts,
    Auth,
    /// An authentication header whose length field says 0: 8 bytes, shorter than any AH.
    AuthTooShort,
    Mobility,
    /// A fragment header with `offset` (8-byte units) and the more-fragments flag.
    Fragment {
        offset: u16,
        more: bool,
    },
}

impl Ext {
    const fn number(self) -> u8 {
        match self {
            Self::HopByHop => 0,
            Self::Routing => 43,
            Self::Fragment { .. } => 44,
            Self::Auth | Self::AuthTooShort => 51,
            Self::DestOpts => 60,
            Self::Mobility => 135,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            // 8 bytes, padded with one PadN option: the kernel refuses more than 7 bytes of padding
            // in a row (RFC 4942), and these are sent for real.
            Self::HopByHop | Self::DestOpts => vec![next, 0, 1, 4, 0, 0, 0, 0],
            // 16 bytes: hdr ext len counts 8-byte units beyond the first.
            Self::Routing | Self::Mobility => {
                let mut b = vec![next, 1];
                b.resize(16, 0);
                b
            }
            // 24 bytes: AH counts 4-byte units, minus 2.
            Self::Auth => {
                let mut b = vec![next, 4];
                b.resize(24, 0);
                b
            }
            Self::AuthTooShort => vec![next, 0, 0, 0, 0, 0, 0, 0],
            Self::Fragment { offset, more } => {
                let field = (offset << 3) | u16::from(more);
                let [hi, lo] = field.to_be_bytes();
                vec![next, 0, hi, lo, 0, 0, 0x12, 0x34]
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Network {
    V4 {
        src: Ipv4Addr,
        options: usize,
        fragment: Option<(u16, bool)>,
        version_ihl: Option<u8>,
    },
    V6 {
        src: Ipv6Addr,
        exts: Vec<Ext>,
        version: u8,
    },
    /// A non-IP ethertype with some payload.
    Other {
        ethertype: u16,
    },
}

/// A frame under construction.
#[derive(Clone, Debug)]
pub struct Frame {
    vlans: Vec<u16>,
    network: Network,
    protocol: u8,
    dst_port: u16,
    cut: Option<Cut>,
    /// Addressed to another host (…::200) instead of this one (198.51.100.1, 2001:db8:ffff::1).
    other_host: bool,
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Keep this many bytes of the whole frame.
    Total(usize),
    /// Keep this many bytes of the transport header.
    Transport(usize),
}

impl Frame {
    /// A datagram of `protocol` from `src` to `dst_port`.
    pub fn ip(src: IpAddr, protocol: u8, dst_port: u16) -> Self {
        let network = match src {
            IpAddr::V4(src) => Network::V4 { src, options: 0, fragment: None, version_ihl: None },
            IpAddr::V6(src) => Network::V6 { src, exts: Vec::new(), version: 6 },
        };
        Self { vlans: Vec::new(), network, protocol, dst_port, cut: None, other_host: false }
    }

    pub fn udp(src: IpAddr, dst_port: u16) -> Self {
        Self::ip(src, IPPROTO_UDP, dst_port)
    }

    pub fn tcp(src: IpAddr, dst_port: u16) -> Self {
        Self::ip(src, IPPROTO_TCP, dst_port)
    }

    /// A frame of a non-IP `ethertype` (ARP, LLDP, ...).
    pub fn non_ip(ethertype: u16) -> Self {
        Self {
            vlans: Vec::new(),
            network: Network::Other { ethertype },
            protocol: 0,
            dst_port: 0,
            cut: None,
            other_host: false,
        }
    }

    /// Adds an 802.1Q tag (inside any tags already added).
    #[must_use]
    pub fn vlan(mut self) -> Self {
        self.vlans.push(TPID_8021Q);
        self
    }

    /// Adds an 802.1ad outer tag and an 802.1Q inner tag.
    #[must_use]
    pub fn qinq(mut self) -> Self {
        self.vlans.push(TPID_8021AD);
        self.vlans.push(TPID_8021Q);
        self
    }

    /// IPv4 options of `bytes` (a multiple of 4, at most 40).
    #[must_use]
    pub fn ipv4_options(mut self, bytes: usize) -> Self {
        if let Network::V4 { options, .. } = &mut self.network {
            *options = bytes;
        }
        self
    }

    /// Overrides the IPv4 version/IHL byte.
    #[must_use]
    pub fn ipv4_version_ihl(mut self, value: u8) -> Self {
        if let Network::V4 { version_ihl, .. } = &mut self.network {
            *version_ihl = Some(value);
        }
        self
    }

    /// Overrides the IPv6 version nibble.
    #[must_use]
    pub fn ipv6_version(mut self, value: u8) -> Self {
        if let Network::V6 { version, .. } = &mut self.network {
            *version = value;
        }
        self
    }

    /// Appends an IPv6 extension header to the chain.
    #[must_use]
    pub fn ext(mut self, ext: Ext) -> Self {
        if let Network::V6 { exts, .. } = &mut self.network {
            exts.push(ext);
        }
        self
    }

    /// Addressed to another host, as a packet this one forwards.
    #[must_use]
    pub const fn to_other_host(mut self) -> Self {
        self.other_host = true;
        self
    }

    /// Makes the packet a fragment at `offset` (8-byte units) with the more-fragments flag.
    #[must_use]
    pub fn fragment(self, offset: u16, more: bool) -> Self {
        match self.network {
            Network::V4 { src, options, version_ihl, .. } => {
                Self { network: Network::V4 { src, options, fragment: Some((offset, more)), version_ihl }, ..self }
            }
            Network::V6 { .. } => self.ext(Ext::Fragment { offset, more }),
            Network::Other { .. } => self,
        }
    }

    /// Keeps only the first `bytes` of the frame.
    #[must_use]
    pub const fn truncate(mut self, bytes: usize) -> Self {
        self.cut = Some(Cut::Total(bytes));
        self
    }

    /// Keeps only the first `bytes` of the transport header.
    #[must_use]
    pub const fn transport_bytes(mut self, bytes: usize) -> Self {
        self.cut = Some(Cut::Transport(bytes));
        self
    }

    fn transport(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend(FRAME_SOURCE_PORT.to_be_bytes());
        l4.extend(self.dst_port.to_be_bytes());
        match self.protocol {
            IPPROTO_TCP => {
                l4.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
            }
            _ => {
                l4.extend(16_u16.to_be_bytes());
                l4.extend([0, 0]);
                l4.extend(*b"gateprob");
            }
        }
        if let Some(Cut::Transport(bytes)) = self.cut {
            l4.truncate(bytes);
        }
        l4
    }

    /// The IP packet alone, without the Ethernet header (and tags), with a valid IPv4 header
    /// checksum: what a layer-3 device such as tun carries, and the kernel accepts.
    pub fn ip_packet(&self) -> Vec<u8> {
        let mut packet = self.bytes().split_off(14 + 4 * self.vlans.len());
        if packet.first().is_some_and(|b| b >> 4 == 4) {
            let header_len = usize::from(packet[0] & 0x0f) * 4;
            packet[10..12].copy_from_slice(&[0, 0]);
            let checksum = ones_complement_sum(&packet[..header_len]);
            packet[10..12].copy_from_slice(&checksum.to_be_bytes());
        }
        packet
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for tpid in &self.vlans {
            frame.extend(tpid.to_be_bytes());
            frame.extend([0x00, 0x2a]); // TCI: VLAN 42
        }
        let l4 = self.transport();
        match &self.network {
            Network::V4 { src, options, fragment, version_ihl } => {
                frame.extend(0x0800_u16.to_be_bytes());
                let header_len = 20 + options;
                let ihl = u8::try_from(header_len / 4).expect("IPv4 header fits");
                let total = u16::try_from(header_len + l4.len()).expect("small packet");
                let (offset, more) = fragment.unwrap_or((0, false));
                let flags_frag = (u16::from(more) << 13) | offset;
                frame.push(version_ihl.unwrap_or(0x40 | ihl));
                frame.push(0);
                frame.extend(total.to_be_bytes());
                frame.extend([0x12, 0x34]);
                frame.extend(flags_frag.to_be_bytes());
                frame.extend([64, self.protocol, 0, 0]);
                frame.extend(src.octets());
                frame.extend([198, 51, 100, if self.other_host { 200 } else { 1 }]);
                frame.extend(std::iter::repeat_n(1_u8, *options)); // NOP options
                frame.extend(&l4);
            }
            Network::V6 { src, exts, version } => {
                frame.extend(0x86dd_u16.to_be_bytes());
                let mut chain = Vec::new();
                for (i, ext) in exts.iter().enumerate() {
                    let next = exts.get(i + 1).map_or(self.protocol, |e| e.number());
                    chain.extend(ext.bytes(next));
                }
                let first = exts.first().map_or(self.protocol, |e| e.number());
                let payload = u16::try_from(chain.len() + l4.len()).expect("small packet");
                let last = if self.other_host { 0x200 } else { 1 };
                let dst = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, last);
                // A whole UDP datagram gets its checksum (mandatory over IPv6), so the kernel
                // delivers it when a test sends it for real.
                let mut l4 = l4.clone();
                if self.protocol == IPPROTO_UDP
                    && l4.len() >= 8
                    && !exts.iter().any(|e| matches!(e, Ext::Fragment { .. }))
                {
                    let sum = udp6_checksum(src, &dst, &l4);
                    l4[6..8].copy_from_slice(&sum.to_be_bytes());
                }
                frame.extend([version << 4, 0, 0, 0]);
                frame.extend(payload.to_be_bytes());
                frame.extend([first, 64]);
                frame.extend(src.octets());
                frame.extend(dst.octets());
                frame.extend(chain);
                frame.extend(&l4);
            }
            Network::Other { ethertype } => {
                frame.extend(ethertype.to_be_bytes());
                frame.extend([0; 28]);
            }
        }
        if let Some(Cut::Total(bytes)) = self.cut {
            frame.truncate(bytes);
        }
        frame
    }
}

/// The UDP checksum over IPv6 (RFC 8200 8.1): pseudo-header, then the datagram.
pub fn udp6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, datagram: &[u8]) -> u16 {
    let mut bytes = Vec::with_capacity(40 + datagram.len() + 1);
    bytes.extend(src.octets());
    bytes.extend(dst.octets());
    bytes.extend(u32::try_from(datagram.len()).expect("small").to_be_bytes());
    bytes.extend([0, 0, 0, IPPROTO_UDP]);
    bytes.extend(datagram);
    bytes[40 + 6..40 + 8].copy_from_slice(&[0, 0]);
    let sum = ones_complement_sum(&bytes);
    if sum == 0 { 0xffff } else { sum }
}

/// The one's complement of the one's complement sum of 16-bit words (odd length padded).
fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 =
        bytes.chunks(2).map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).expect("folded to 16 bits")
}

/// An `AF_PACKET` socket bound to `interface` (in the calling thread's namespace): frames sent
/// on it leave the interface as they are, skipping the sender's UDP and IP layers.
pub fn packet_socket(interface: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd};
    let socket = socket2::Socket::new(socket2::Domain::PACKET, socket2::Type::RAW, None).expect("a packet socket");
    let index = nix::net::if_::if_nametoindex(interface).expect("the interface index");
    let address = libc::sockaddr_ll {
        sll_family: u16::try_from(libc::AF_PACKET).expect("small"),
        sll_protocol: 0,
        sll_ifindex: i32::try_from(index).expect("an index"),
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    let length = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).expect("small");
    // SAFETY: bind(2) reads `length` bytes of a valid, initialised sockaddr_ll on the stack.
    #[expect(unsafe_code, reason = "binding a packet socket to an interface has no safe wrapper")]
    let bound = unsafe { libc::bind(socket.as_raw_fd(), std::ptr::from_ref(&address).cast(), length) };
    assert_eq!(bound, 0, "bind the packet socket: {}", std::io::Error::last_os_error());
    // SAFETY: the descriptor is ours and open; ownership moves out of `socket`.
    #[expect(unsafe_code, reason = "turning the socket into an OwnedFd")]
    unsafe {
        std::os::fd::OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(socket))
    }
}

/// Sends `frame` as it is out of `interface` in `ns`. Its destination MAC is 02:00:00:00:00:01.
pub fn send_frame(ns: &crate::netns::Netns, interface: &str, frame: &[u8]) {
    ns.run(|| {
        let fd = packet_socket(interface);
        nix::unistd::write(&fd, frame).expect("send the frame");
    });
}

/// The MAC address frames are sent to (their first six bytes).
pub const FRAME_DST_MAC: &str = "02:00:00:00:00:01";

/// `bytes` in lowercase hex, two digits a byte: how the tests print a frame.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, b| {
        let _ = write!(text, "{b:02x}");
        text
    })
}

/// A MAC address written `02:00:00:00:00:01`, as bytes.
#[must_use]
pub fn parse_mac(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text.split(':').map(|b| u8::from_str_radix(b, 16).expect("hex")).collect();
    bytes.try_into().unwrap_or_else(|_| panic!("{text:?} is not six bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_udp4_has_the_textbook_layout() {
        let f = Frame::udp("192.0.2.7".parse().unwrap(), 1194).bytes();
        assert_eq!(f.len(), 14 + 20 + 16);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(f[14], 0x45);
        assert_eq!(f[23], IPPROTO_UDP);
        assert_eq!(&f[26..30], &[192, 0, 2, 7]);
        assert_eq!(&f[36..38], &1194_u16.to_be_bytes());
    }

    #[test]
    fn ipv6_chain_links_each_next_header() {
        let f = Frame::tcp("2001:db8::7".parse().unwrap(), 443).ext(Ext::HopByHop).ext(Ext::Auth).bytes();
        assert_eq!(f[14 + 6], 0, "first next header: hop-by-hop");
        assert_eq!(f[54], 51, "hop-by-hop points at AH");
        assert_eq!(f[54 + 8], IPPROTO_TCP, "AH points at TCP");
        assert_eq!(&f[54 + 8 + 24 + 2..54 + 8 + 24 + 4], &443_u16.to_be_bytes());
    }

    #[test]
    fn vlan_tags_precede_the_ethertype() {
        let f = Frame::udp("192.0.2.7".parse().unwrap(), 1).qinq().bytes();
        assert_eq!(&f[12..14], &[0x88, 0xa8]);
        assert_eq!(&f[16..18], &[0x81, 0x00]);
        assert_eq!(&f[20..22], &[0x08, 0x00]);
    }
}
