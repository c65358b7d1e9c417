//! The delivery backstop against an independent model, on real deliveries: `BPF_PROG_TEST_RUN`
//! gives a `cgroup_skb` program no socket with a local port (what the backstop judges by), so the
//! datagrams are sent for real, as Ethernet frames into an interface no XDP program watches, to
//! UDP sockets of the backstop's cgroup. Seeded datagrams from sources of every lease kind (live,
//! expired, idle, none, random), both families, to the gated port and to an open one, plain or
//! behind IPv4 options or IPv6 extension headers, whole or in two fragments the kernel puts
//! together. The frames are built with `etherparse` and the model is a table of what the test
//! granted; per batch, the backstop's counters by (gate, reason) and the datagrams that reached
//! the sockets must equal the model's; a batch that differs is replayed datagram by datagram and
//! the failure prints the first that differs, with the seed (`GATE_BACKSTOP_DIFF_SEED`,
//! `GATE_BACKSTOP_DIFF_DATAGRAMS`).
//!
//! The daemon attaches the backstop and is then killed: the backstop holds without it, and no
//! sweep removes the expired leases the model still counts as expired.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use etherparse::{IpNumber, Ipv4Header, Ipv4Options, Ipv6FragmentHeader, Ipv6Header, PacketBuilder};
use gate_common::Reason;
use gate_maps::GateState;
use gate_tests::{
    bed::TestBed,
    cgroup::CgroupListeners,
    daemon::Daemon,
    differential::{granted, moved},
    frames::{FRAME_DST_MAC, hex, parse_mac},
    netns::veth,
    probe::udp_at_sockets,
    reference::{LeaseKind, lease_reason},
    unique::{self, PREFIX},
};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha20Rng;

const GATED: u16 = 1194;
/// A port with a listener and no gate.
const OPEN: u16 = 5353;
const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const BATCH: usize = 64;

/// What the backstop should count for a datagram: (gate, reason).
type Verdict = (u32, Reason);

/// A datagram: its frames (one, or two fragments) and what the model says of it.
struct Datagram {
    frames: Vec<Vec<u8>>,
    verdict: Verdict,
    what: String,
}

struct Model {
    gate: u32,
    leases: BTreeMap<IpAddr, LeaseKind>,
}

impl Model {
    fn verdict(&self, source: IpAddr, port: u16) -> Verdict {
        if port != GATED {
            return (0, Reason::NotGated);
        }
        (self.gate, lease_reason(self.leases.get(&source).copied()))
    }
}

struct Generator {
    rng: ChaCha20Rng,
    sources: Vec<IpAddr>,
}

impl Generator {
    fn source(&mut self) -> IpAddr {
        if self.rng.gen_ratio(3, 4) {
            return *self.sources.choose(&mut self.rng).expect("a source");
        }
        // A random unicast source the kernel takes: IPv4 1-223 but 127, 198.51.100.1; IPv6 in 2000::/3.
        if self.rng.r#gen() {
            loop {
                let a = Ipv4Addr::from(self.rng.r#gen::<u32>());
                let first = a.octets()[0];
                if (1..224).contains(&first) && first != 127 && a != GATEWAY_V4 {
                    return a.into();
                }
            }
        }
        let bits = (self.rng.r#gen::<u128>() & !(0xe << 124)) | (0x2 << 124);
        IpAddr::V6(Ipv6Addr::from(bits))
    }

    fn datagram(&mut self, model: &Model) -> Datagram {
        let source = self.source();
        let port = if self.rng.gen_ratio(3, 5) { GATED } else { OPEN };
        let payload: Vec<u8> = (0..self.rng.gen_range(8..64)).map(|_| self.rng.r#gen()).collect();
        let dressed = self.rng.gen_ratio(1, 3);
        let fragmented = self.rng.gen_ratio(1, 4);
        // Hop-by-hop must come before a fragment header, and [`fragments`] puts every extension after it.
        let hop_by_hop = dressed && !fragmented && self.rng.r#gen();
        let builder = PacketBuilder::ethernet2(CLIENT_MAC, parse_mac(FRAME_DST_MAC));
        let mut frame = Vec::new();
        let mut what = format!("{source} -> {port}");
        match source {
            IpAddr::V4(source) => {
                let mut header =
                    Ipv4Header::new(0, 64, IpNumber::UDP, source.octets(), GATEWAY_V4.octets()).expect("a header");
                if dressed {
                    // NOPs and an end of options: what the kernel accepts from anyone.
                    let words = self.rng.gen_range(1..=10);
                    let mut options = vec![1_u8; words * 4];
                    options[words * 4 - 1] = 0;
                    header.options = Ipv4Options::try_from(&options[..]).expect("options");
                    what.push_str(&format!(", {} bytes of options", words * 4));
                }
                header.identification = self.rng.r#gen();
                builder
                    .ip(etherparse::IpHeaders::Ipv4(header, Default::default()))
                    .udp(40_000, port)
                    .write(&mut frame, &payload)
            }
            IpAddr::V6(source) => {
                let header = Ipv6Header {
                    source: source.octets(),
                    destination: GATEWAY_V6.octets(),
                    hop_limit: 64,
                    ..Default::default()
                };
                let mut extensions = etherparse::Ipv6Extensions::default();
                if dressed {
                    // Hop-by-hop and destination options, each one PadN: any number of them the
                    // kernel walks (padding alone, at most 7 bytes in a row).
                    let pad = etherparse::Ipv6RawExtHeader::new_raw(IpNumber::UDP, &[1, 4, 0, 0, 0, 0]).expect("pad");
                    if hop_by_hop {
                        extensions.hop_by_hop_options = Some(pad.clone());
                        what.push_str(", hop-by-hop");
                    }
                    if self.rng.r#gen() || !hop_by_hop {
                        extensions.destination_options = Some(pad);
                        what.push_str(", destination options");
                    }
                }
                builder
                    .ip(etherparse::IpHeaders::Ipv6(header, extensions))
                    .udp(40_000, port)
                    .write(&mut frame, &payload)
            }
        }
        .expect("a frame");
        let frames = if fragmented {
            what.push_str(", in two fragments");
            let mut pieces = fragments(&frame, self.rng.r#gen());
            if self.rng.r#gen() {
                pieces.reverse();
                what.push_str(" (last first)");
            }
            pieces
        } else {
            vec![frame]
        };
        Datagram { frames, verdict: model.verdict(source, port), what }
    }
}

/// `frame` (Ethernet, then IPv4 or IPv6 with its extensions, then the UDP datagram) as two
/// fragments: the first 8 bytes of the datagram (its header), then the rest.
fn fragments(frame: &[u8], id: u32) -> Vec<Vec<u8>> {
    let ethernet = &frame[..14];
    let sliced = etherparse::SlicedPacket::from_ethernet(frame).expect("a frame we built");
    let datagram = match &sliced.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => ip.payload().payload,
        Some(etherparse::NetSlice::Ipv6(ip)) => ip.payload().payload,
        _ => unreachable!("built as IP"),
    };
    let (head, tail) = datagram.split_at(8);
    let mut pieces = Vec::new();
    for (offset, more, piece) in [(0_u16, true, head), (1, false, tail)] {
        let mut out = ethernet.to_vec();
        match &sliced.net {
            Some(etherparse::NetSlice::Ipv4(ip)) => {
                let mut header = ip.header().to_header();
                header.more_fragments = more;
                header.dont_fragment = false;
                header.fragment_offset = etherparse::IpFragOffset::try_new(offset).expect("an offset");
                header.identification = u16::try_from(id & 0xffff).expect("16 bits");
                header.set_payload_len(piece.len()).expect("a length");
                header.header_checksum = header.calc_header_checksum();
                header.write(&mut out).expect("write");
            }
            Some(etherparse::NetSlice::Ipv6(ip)) => {
                // The fragment header follows the fixed header (no hop-by-hop here, see
                // `Generator::datagram`); the extensions and the datagram are what is cut.
                let mut header = ip.header().to_header();
                let inner = header.next_header;
                header.next_header = IpNumber::IPV6_FRAGMENTATION_HEADER;
                let extensions = &frame[14 + 40..frame.len() - datagram.len()];
                let fragmentable: Vec<u8> = if offset == 0 { [extensions, piece].concat() } else { piece.to_vec() };
                // In 8-byte units: the extensions' and the datagram's header before this piece.
                assert!(extensions.len().is_multiple_of(8), "extensions are whole 8-byte units");
                let offset = if offset == 0 { 0 } else { u16::try_from(extensions.len() / 8 + 1).expect("small") };
                let fragment = Ipv6FragmentHeader::new(
                    inner,
                    etherparse::IpFragOffset::try_new(offset).expect("an offset"),
                    more,
                    id,
                );
                header.payload_length = u16::try_from(8 + fragmentable.len()).expect("small");
                header.write(&mut out).expect("write");
                fragment.write(&mut out).expect("write");
                out.extend(&fragmentable);
                pieces.push(out);
                continue;
            }
            _ => unreachable!("built as IP"),
        }
        out.extend(piece);
        pieces.push(out);
    }
    pieces
}

struct Rig {
    bed: TestBed,
    interface: String,
    state: GateState,
    _listeners: CgroupListeners,
}

impl Rig {
    fn counters(&self) -> gate_maps::StatsTable {
        self.state.backstop_stats().expect("read the counters").expect("the backstop is attached")
    }

    /// Sends `datagrams`, waits for the backstop to have judged them all and for `delivered` to
    /// have met a socket (or 3 s: a datagram is counted there when the listener reads it), and
    /// 20 ms more for any beyond; returns what moved and how many datagrams met a socket.
    fn send(&self, datagrams: &[&Datagram], delivered: u64) -> (BTreeMap<Verdict, u64>, u64) {
        let before = self.counters();
        let at_sockets = udp_at_sockets(&self.bed.gateway);
        let interface = self.interface.clone();
        self.bed.client.run(|| {
            let socket = gate_tests::frames::packet_socket(&interface);
            for frame in datagrams.iter().flat_map(|d| &d.frames) {
                nix::unistd::write(&socket, frame).expect("send a frame");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let judged = moved(&before, &self.counters()).values().sum::<u64>();
            let met = udp_at_sockets(&self.bed.gateway) - at_sockets;
            if (judged >= datagrams.len() as u64 && met >= delivered) || Instant::now() > deadline {
                std::thread::sleep(Duration::from_millis(20));
                return (moved(&before, &self.counters()), udp_at_sockets(&self.bed.gateway) - at_sockets);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn tally(datagrams: &[&Datagram]) -> BTreeMap<Verdict, u64> {
    let mut tally = BTreeMap::new();
    for d in datagrams {
        *tally.entry(d.verdict).or_default() += 1;
    }
    tally
}

fn delivered(tally: &BTreeMap<Verdict, u64>) -> u64 {
    tally.iter().filter(|((_, reason), _)| !reason.drops()).map(|(_, n)| n).sum()
}

#[test]
fn the_backstop_agrees_with_the_model_on_real_deliveries() {
    let seed = std::env::var("GATE_BACKSTOP_DIFF_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_0b57);
    let count: usize = std::env::var("GATE_BACKSTOP_DIFF_DATAGRAMS").ok().and_then(|v| v.parse().ok()).unwrap_or(4_000);

    let mut bed = TestBed::new();
    // A path XDP does not watch: the backstop alone judges what comes in through it.
    let token = unique::token();
    let (gateway_if, client_if) = (format!("{PREFIX}{token}d"), format!("{PREFIX}{token}e"));
    veth(&bed.gateway, &gateway_if, &bed.client, &client_if);
    bed.gateway.ip(&["link", "set", &gateway_if, "address", FRAME_DST_MAC]);
    bed.gateway.ip(&["addr", "add", &format!("{GATEWAY_V4}/24"), "dev", &gateway_if]);
    bed.gateway.ip(&["addr", "add", &format!("{GATEWAY_V6}/64"), "dev", &gateway_if, "nodad"]);
    // Spoofed sources come in through an interface with no route back to them.
    bed.gateway.run(|| {
        for knob in ["all", "default", gateway_if.as_str()] {
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{knob}/rp_filter"), "0").expect("rp_filter off");
        }
    });
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let listeners = CgroupListeners::start(&bed.gateway, &bed.cgroup, &[GATED, OPEN]);
    Daemon::start(&bed, &config).kill9();

    let mut state = GateState::open(&bed.pin_dir.0).expect("the pinned maps");
    let gate = state.gate_id("vpn").expect("the gate");
    let mut model = Model { gate, leases: BTreeMap::new() };
    let mut sources = Vec::new();
    for (i, kind) in [
        LeaseKind::Live,
        LeaseKind::Live,
        LeaseKind::Expired,
        LeaseKind::Idle,
        LeaseKind::Live,
        LeaseKind::Expired,
        LeaseKind::Idle,
    ]
    .into_iter()
    .enumerate()
    {
        let n = u8::try_from(i + 10).expect("small");
        for source in
            [IpAddr::from([192, 0, 2, n]), IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, n.into()))]
        {
            state.grant(gate, source, granted(kind)).expect("grant");
            model.leases.insert(source, kind);
            sources.push(source);
        }
    }
    // Sources with no lease.
    sources.extend([IpAddr::from([192, 0, 2, 99]), IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 99))]);
    let rig = Rig { bed, interface: client_if, state, _listeners: listeners };

    let mut generator = Generator { rng: ChaCha20Rng::seed_from_u64(seed), sources };
    let datagrams: Vec<Datagram> = (0..count).map(|_| generator.datagram(&model)).collect();
    let mut seen: BTreeMap<Verdict, u64> = BTreeMap::new();
    for batch in datagrams.chunks(BATCH) {
        let batch: Vec<&Datagram> = batch.iter().collect();
        let expected = tally(&batch);
        let (counted, at_sockets) = rig.send(&batch, delivered(&expected));
        if counted == expected && at_sockets == delivered(&expected) {
            for (verdict, n) in expected {
                *seen.entry(verdict).or_default() += n;
            }
            continue;
        }
        // Replayed one by one: the first datagram the backstop and the model disagree on.
        for d in &batch {
            let expected = tally(&[d]);
            let (counted, at_sockets) = rig.send(&[d], delivered(&expected));
            assert!(
                counted == expected && at_sockets == delivered(&expected),
                "seed {seed}: {}: the model says {:?} and {} delivered; the backstop counted {counted:?}, {at_sockets} \
                 met a socket; frames:\n{}",
                d.what,
                d.verdict,
                delivered(&expected),
                d.frames.iter().map(|f| hex(f)).collect::<Vec<_>>().join("\n")
            );
        }
        panic!(
            "seed {seed}: a batch disagreed ({counted:?}, {at_sockets} at sockets; expected {expected:?}) but each of its datagrams agreed alone"
        );
    }
    // A generator that stopped reaching a verdict would make the comparison hollow.
    for reason in
        [Reason::NotGated, Reason::PassedLease, Reason::DroppedNoLease, Reason::DroppedExpired, Reason::DroppedIdle]
    {
        assert!(seen.keys().any(|(_, r)| *r == reason), "seed {seed}: no datagram of {reason:?}: {seen:?}");
    }
    eprintln!("seed {seed}: {count} datagrams agree; by (gate, reason): {seen:?}");
}
