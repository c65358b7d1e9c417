//! The differential test of the XDP program: seeded, generated and mutated frames (VLAN stacks,
//! IPv4 options and fragments, IPv6 extension chains, truncations, flipped bytes) run through the
//! loaded program with `BPF_PROG_TEST_RUN` and through [`crate::reference`]; the verdict and the
//! counter each frame moves must agree. A run is reproducible from its seed.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use gate_common::{Framing, IPPROTO_TCP, IPPROTO_UDP, Reason};
use gate_daemon::program;
use gate_maps::{GateSpec, Protocol, StatsTable};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha20Rng;

use crate::{
    loaded::{LoadedGate, XDP_DROP, XDP_PASS, closed_lease, hour_lease, idle_lease},
    reference::{GatedPort, LeaseKind, World},
};

/// Gated ports: a VPN gate on UDP and TCP, a web gate, and a relay gate that guards transit.
const VPN_PORT: u16 = 1194;
const WEB_PORT: u16 = 8443;
const RELAY_PORT: u16 = 4500;
/// The smallest frame `BPF_PROG_TEST_RUN` takes for XDP (an Ethernet header's length).
const MIN_TEST_FRAME: usize = 14;

/// The host's own addresses in the test world.
const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

/// One frame the program and the model disagree on.
#[derive(Debug)]
pub struct Mismatch {
    /// The generated frame's number (its cut-short copies share it).
    pub index: u64,
    pub framing: Framing,
    pub frame: Vec<u8>,
    /// The model's (gate, reason).
    pub expected: (u32, Reason),
    /// The program's action, and the counter it moved (when one moved by exactly one).
    pub action: u32,
    pub counted: Option<(u32, Reason)>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = crate::frames::hex(&self.frame);
        write!(
            f,
            "frame {} ({:?}, {} bytes): model {:?}, program {} counting {:?}\n  {hex}",
            self.index,
            self.framing,
            self.frame.len(),
            self.expected,
            if self.action == XDP_DROP { "drop" } else { "pass" },
            self.counted,
        )
    }
}

/// What a run compared.
#[derive(Debug, Default)]
pub struct Report {
    /// Frames compared, cut-short copies included.
    pub frames: u64,
    /// Frames per (gate, reason) the model expected: every reason should be well covered.
    pub by_reason: BTreeMap<(u32, Reason), u64>,
    pub mismatches: Vec<Mismatch>,
}

/// The loaded program and the model of what it was told.
pub struct Differential {
    gate: LoadedGate,
    world: World,
}

impl Differential {
    /// Loads the program with the test world's gates, leases and local addresses, its unparseable
    /// frames dropped or passed.
    #[must_use]
    pub fn new(unparseable_passes: bool) -> Self {
        let spec = |name: &str, protocol, port, transit| GateSpec { name: name.into(), protocol, port, transit };
        let specs = [
            spec("vpn", Protocol::Udp, VPN_PORT, false),
            spec("vpn", Protocol::Tcp, VPN_PORT, false),
            spec("web", Protocol::Tcp, WEB_PORT, false),
            spec("relay", Protocol::Udp, RELAY_PORT, true),
        ];
        let options = program::Options { unparseable_passes, ..program::Options::default() };
        let local = [IpAddr::V4(LOCAL_V4), IpAddr::V6(LOCAL_V6)];
        let mut gate = LoadedGate::with_specs(&specs, 4096, options, &local);
        let mut world = World { local: local.to_vec(), unparseable_passes, ..World::default() };
        for spec in &specs {
            let id = gate.state.gate_id(&spec.name).expect("a gate just made");
            world.ports.insert((spec.protocol.number(), spec.port), GatedPort { gate: id, transit: spec.transit });
        }
        for (gate_name, addresses) in [("vpn", &SOURCES.vpn), ("web", &SOURCES.web), ("relay", &SOURCES.relay)] {
            let id = gate.state.gate_id(gate_name).expect("a gate just made");
            for (kind, addresses) in
                [(LeaseKind::Live, addresses.0), (LeaseKind::Expired, addresses.1), (LeaseKind::Idle, addresses.2)]
            {
                let lease = granted(kind);
                for text in addresses {
                    let address: IpAddr = text.parse().expect("a test address");
                    gate.state.grant(id, address, lease).expect("grant a test lease");
                    world.leases.insert((id, address), kind);
                }
            }
        }
        Self { gate, world }
    }

    /// Runs `frames` frames generated from `seed` (and the cut-short copies of some) through
    /// both; stops after `max_mismatches`.
    pub fn run(&mut self, seed: u64, frames: u64, max_mismatches: usize) -> Report {
        const BATCH: u64 = 4096;
        /// One frame in this many also runs cut short at every byte.
        const EVERY_CUT: u64 = 64;
        let mut generator = Generator::new(seed);
        let mut report = Report::default();
        let mut done = 0;
        while done < frames {
            let mut batch: Vec<(u64, Framing, Vec<u8>)> = Vec::new();
            for index in done..frames.min(done + BATCH) {
                let framing = generator.next_framing();
                let frame = generator.frame(framing);
                // Some frames also cut short at every byte.
                if index % EVERY_CUT == 0 {
                    batch.extend((MIN_TEST_FRAME..frame.len()).map(|len| (index, framing, frame[..len].to_vec())));
                }
                batch.push((index, framing, frame));
            }
            done = frames.min(done + BATCH);
            report.frames += batch.len() as u64;
            self.compare_batch(&batch, &mut report, max_mismatches);
            if report.mismatches.len() >= max_mismatches {
                break;
            }
        }
        report
    }

    /// Runs a batch: each frame's action against the model's, then the counters the batch moved
    /// against the model's tally; a batch whose counters differ is replayed frame by frame to
    /// name the frames.
    fn compare_batch(&mut self, batch: &[(u64, Framing, Vec<u8>)], report: &mut Report, max_mismatches: usize) {
        let before = self.gate.state.stats().expect("read the counters");
        let mut tally: BTreeMap<(u32, Reason), u64> = BTreeMap::new();
        let mut actions_agree = true;
        for (_, framing, frame) in batch {
            let expected = self.world.classify(frame, *framing);
            *tally.entry(expected).or_default() += 1;
            *report.by_reason.entry(expected).or_default() += 1;
            actions_agree &= self.gate.run_framed(frame, *framing) == expected_action(expected.1);
        }
        let after = self.gate.state.stats().expect("read the counters");
        if actions_agree && moved(&before, &after) == tally {
            return;
        }
        for (index, framing, frame) in batch {
            if report.mismatches.len() >= max_mismatches {
                return;
            }
            let expected = self.world.classify(frame, *framing);
            let before = self.gate.state.stats().expect("read the counters");
            let action = self.gate.run_framed(frame, *framing);
            let counted = only_counter(&moved(&before, &self.gate.state.stats().expect("read the counters")));
            if action != expected_action(expected.1) || counted != Some(expected) {
                report.mismatches.push(Mismatch {
                    index: *index,
                    framing: *framing,
                    frame: frame.clone(),
                    expected,
                    action,
                    counted,
                });
            }
        }
    }
}

/// A lease of `kind`, as the differential tests grant it.
#[must_use]
pub fn granted(kind: LeaseKind) -> gate_common::Lease {
    match kind {
        LeaseKind::Live => hour_lease(),
        LeaseKind::Expired => closed_lease(),
        LeaseKind::Idle => idle_lease(),
    }
}

const fn expected_action(reason: Reason) -> u32 {
    if reason.drops() { XDP_DROP } else { XDP_PASS }
}

/// The counters that moved between two reads, by (gate, reason).
#[must_use]
pub fn moved(before: &StatsTable, after: &StatsTable) -> BTreeMap<(u32, Reason), u64> {
    let mut moved = BTreeMap::new();
    for (&gate, counts) in after {
        let was = before.get(&gate);
        for reason in Reason::ALL {
            let delta = counts[reason as usize] - was.map_or(0, |w| w[reason as usize]);
            if delta != 0 {
                moved.insert((gate, reason), delta);
            }
        }
    }
    moved
}

/// The one counter that moved by one, if that is what happened.
fn only_counter(moved: &BTreeMap<(u32, Reason), u64>) -> Option<(u32, Reason)> {
    let mut moved = moved.iter();
    match (moved.next(), moved.next()) {
        (Some((&key, 1)), None) => Some(key),
        _ => None,
    }
}

/// Sources with a lease per gate: (live, expired, idle).
struct Sources {
    vpn: (&'static [&'static str], &'static [&'static str], &'static [&'static str]),
    web: (&'static [&'static str], &'static [&'static str], &'static [&'static str]),
    relay: (&'static [&'static str], &'static [&'static str], &'static [&'static str]),
}

const SOURCES: Sources = Sources {
    vpn: (
        &["192.0.2.10", "2001:db8::10", "10.1.2.3"],
        &["192.0.2.11", "2001:db8::11"],
        &["192.0.2.12", "2001:db8::12"],
    ),
    web: (&["192.0.2.20", "2001:db8::20"], &["192.0.2.21"], &["2001:db8::22"]),
    relay: (&["192.0.2.30", "2001:db8::30"], &["192.0.2.31"], &["192.0.2.32"]),
};

/// Seeded frames: mostly well-formed, often bent, sometimes cut short.
pub struct Generator {
    rng: ChaCha20Rng,
    sources_v4: Vec<Ipv4Addr>,
    sources_v6: Vec<Ipv6Addr>,
}

impl Generator {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let mut sources_v4 = Vec::new();
        let mut sources_v6 = Vec::new();
        for set in [SOURCES.vpn, SOURCES.web, SOURCES.relay] {
            for text in set.0.iter().chain(set.1).chain(set.2) {
                match text.parse::<IpAddr>().expect("a test address") {
                    IpAddr::V4(a) => sources_v4.push(a),
                    IpAddr::V6(a) => sources_v6.push(a),
                }
            }
        }
        Self { rng: ChaCha20Rng::seed_from_u64(seed), sources_v4, sources_v6 }
    }

    fn next_framing(&mut self) -> Framing {
        if self.rng.gen_ratio(1, 8) { Framing::Ip } else { Framing::Ethernet }
    }

    fn chance(&mut self, numerator: u32, denominator: u32) -> bool {
        self.rng.gen_ratio(numerator, denominator)
    }

    /// The next frame for an interface of `framing`.
    pub fn frame(&mut self, framing: Framing) -> Vec<u8> {
        let mut frame = Vec::with_capacity(160);
        let ethertype = match framing {
            Framing::Ethernet => self.link(&mut frame),
            // A layer-3 device carries bare IP packets (and, bent, anything).
            Framing::Ip => *[0x0800, 0x0800, 0x86dd, 0x86dd, 0].choose(&mut self.rng).expect("a choice"),
        };
        let network_start = frame.len();
        match ethertype {
            0x0800 => self.ipv4(&mut frame),
            0x86dd => self.ipv6(&mut frame),
            _ => {
                let len = self.rng.gen_range(0..64);
                frame.extend((0..len).map(|_| self.rng.r#gen::<u8>()));
            }
        }
        self.mutate(&mut frame, network_start);
        // BPF_PROG_TEST_RUN refuses shorter frames; what follows a packet is never read as it.
        while frame.len() < MIN_TEST_FRAME {
            frame.push(self.rng.r#gen());
        }
        frame
    }

    /// Pushes the Ethernet header and VLAN tags; returns the ethertype the network header gets.
    fn link(&mut self, frame: &mut Vec<u8>) -> u16 {
        frame.extend([0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
        let tags = *[0, 0, 0, 0, 1, 1, 2, 3].choose(&mut self.rng).expect("a choice");
        for _ in 0..tags {
            let tpid: u16 = *[0x8100, 0x8100, 0x88a8, 0x9100].choose(&mut self.rng).expect("a choice");
            frame.extend(tpid.to_be_bytes());
            frame.extend(self.rng.r#gen::<u16>().to_be_bytes());
        }
        let ethertype: u16 = *[0x0800, 0x0800, 0x0800, 0x86dd, 0x86dd, 0x86dd, 0x0806, 0x88cc, 0x8100, 0x88a8]
            .choose(&mut self.rng)
            .expect("a choice");
        let ethertype = if self.chance(1, 50) { self.rng.r#gen() } else { ethertype };
        frame.extend(ethertype.to_be_bytes());
        ethertype
    }

    fn source_v4(&mut self) -> Ipv4Addr {
        if self.chance(2, 3) {
            *self.sources_v4.choose(&mut self.rng).expect("a source")
        } else {
            Ipv4Addr::from(self.rng.r#gen::<u32>())
        }
    }

    fn source_v6(&mut self) -> Ipv6Addr {
        match self.rng.gen_range(0..6) {
            0..=2 => *self.sources_v6.choose(&mut self.rng).expect("a source"),
            3 => self.source_v4().to_ipv6_mapped(),
            _ => Ipv6Addr::from(self.rng.r#gen::<u128>()),
        }
    }

    fn destination_v4(&mut self) -> Ipv4Addr {
        match self.rng.gen_range(0..10) {
            0..=5 => LOCAL_V4,
            6 => Ipv4Addr::from(self.rng.r#gen::<u32>()),
            7 => Ipv4Addr::new(203, 0, 113, 9),
            8 => *[Ipv4Addr::BROADCAST, Ipv4Addr::new(224, 0, 0, 1), Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED]
                .choose(&mut self.rng)
                .expect("a choice"),
            _ => Ipv4Addr::new(0, 1, 2, 3),
        }
    }

    fn destination_v6(&mut self) -> Ipv6Addr {
        match self.rng.gen_range(0..10) {
            0..=5 => LOCAL_V6,
            6 => Ipv6Addr::from(self.rng.r#gen::<u128>()),
            7 => Ipv6Addr::new(0x2001, 0xdb8, 0xeeee, 0, 0, 0, 0, 9),
            8 => *[Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)]
                .choose(&mut self.rng)
                .expect("a choice"),
            _ => LOCAL_V4.to_ipv6_mapped(),
        }
    }

    fn protocol(&mut self) -> u8 {
        match self.rng.gen_range(0..10) {
            0..=3 => IPPROTO_UDP,
            4..=7 => IPPROTO_TCP,
            8 => *[1, 58, 50, 51, 47].choose(&mut self.rng).expect("a choice"),
            _ => self.rng.r#gen(),
        }
    }

    fn dst_port(&mut self) -> u16 {
        match self.rng.gen_range(0..10) {
            0..=3 => VPN_PORT,
            4 | 5 => WEB_PORT,
            6 | 7 => RELAY_PORT,
            8 => 53,
            _ => self.rng.r#gen(),
        }
    }

    fn ipv4(&mut self, frame: &mut Vec<u8>) {
        let start = frame.len();
        let ihl: u8 = match self.rng.gen_range(0..20) {
            0..=13 => 5,
            14..=18 => self.rng.gen_range(6..=15),
            _ => self.rng.gen_range(0..5),
        };
        let version = if self.chance(1, 40) { self.rng.gen_range(0..16) } else { 4 };
        let protocol = self.protocol();
        let fragment: u16 = match self.rng.gen_range(0..10) {
            0..=6 => 0,
            7 => 0x2000,                        // first fragment, more to come
            8 => self.rng.gen_range(1..0x2000), // a later fragment
            _ => 0x2000 | self.rng.gen_range(1..0x2000),
        };
        frame.push((version << 4) | ihl);
        frame.push(0);
        frame.extend([0, 0]); // total length, set below
        frame.extend(self.rng.r#gen::<u16>().to_be_bytes());
        frame.extend(fragment.to_be_bytes());
        frame.extend([64, protocol, 0, 0]);
        frame.extend(self.source_v4().octets());
        frame.extend(self.destination_v4().octets());
        for _ in 20..usize::from(ihl) * 4 {
            frame.push(self.rng.r#gen());
        }
        self.transport(frame, protocol);
        let total = u16::try_from(frame.len() - start).unwrap_or(u16::MAX);
        let total = if self.chance(1, 10) { self.rng.r#gen() } else { total };
        frame[start + 2..start + 4].copy_from_slice(&total.to_be_bytes());
    }

    fn ipv6(&mut self, frame: &mut Vec<u8>) {
        let start = frame.len();
        let version: u8 = if self.chance(1, 40) { self.rng.gen_range(0..16) } else { 6 };
        frame.extend([version << 4, 0, 0, 0]);
        frame.extend([0, 0]); // payload length, set below
        let next_at = frame.len();
        frame.extend([0, 64]);
        frame.extend(self.source_v6().octets());
        frame.extend(self.destination_v6().octets());
        // The extension chain: each header's first byte names the next one.
        let extensions = *[0, 0, 0, 1, 1, 2, 3, 5, 6, 7, 8].choose(&mut self.rng).expect("a choice");
        let mut next_field = next_at;
        for _ in 0..extensions {
            let kind: u8 =
                *[0, 43, 44, 51, 60, 135, 139, 140, 253, 254, 0, 60, 44].choose(&mut self.rng).expect("a choice");
            frame[next_field] = kind;
            next_field = frame.len();
            match kind {
                44 => {
                    let offset_flags: u16 = match self.rng.gen_range(0..4) {
                        0 | 1 => 0,
                        2 => 1,                                  // first fragment, more to come
                        _ => self.rng.gen_range(1..0x2000) << 3, // a later fragment
                    };
                    frame.extend([0, 0]);
                    frame.extend(offset_flags.to_be_bytes());
                    frame.extend(self.rng.r#gen::<u32>().to_be_bytes());
                }
                51 => {
                    // Length in 4-byte words minus 2; 0 is too short for the header it names.
                    let len: u8 = if self.chance(1, 6) { 0 } else { self.rng.gen_range(1..6) };
                    frame.extend([0, len]);
                    for _ in 2..(usize::from(len) + 2) * 4 {
                        frame.push(self.rng.r#gen());
                    }
                }
                _ => {
                    let len: u8 = if self.chance(1, 20) { self.rng.gen_range(4..40) } else { self.rng.gen_range(0..3) };
                    frame.extend([0, len]);
                    for _ in 2..(usize::from(len) + 1) * 8 {
                        frame.push(self.rng.r#gen());
                    }
                }
            }
        }
        let protocol = self.protocol();
        frame[next_field] = protocol;
        self.transport(frame, protocol);
        let payload = u16::try_from(frame.len() - start - 40).unwrap_or(u16::MAX);
        frame[start + 4..start + 6].copy_from_slice(&payload.to_be_bytes());
    }

    /// A TCP or UDP header (or a few bytes of another protocol) and a little payload.
    fn transport(&mut self, frame: &mut Vec<u8>, protocol: u8) {
        frame.extend(self.rng.r#gen::<u16>().to_be_bytes());
        frame.extend(self.dst_port().to_be_bytes());
        let rest = if protocol == IPPROTO_TCP { 16 } else { 4 } + self.rng.gen_range(0..24);
        frame.extend((0..rest).map(|_| self.rng.r#gen::<u8>()));
    }

    /// Bends some frames: cut short anywhere, or a few bytes flipped.
    fn mutate(&mut self, frame: &mut Vec<u8>, network_start: usize) {
        if self.chance(1, 5) {
            let cut = self.rng.gen_range(MIN_TEST_FRAME.min(frame.len())..=frame.len());
            frame.truncate(cut);
        }
        if self.chance(1, 8) && !frame.is_empty() {
            for _ in 0..self.rng.gen_range(1..4) {
                let at = self.rng.gen_range(network_start.min(frame.len() - 1)..frame.len());
                frame[at] ^= 1 << self.rng.gen_range(0..8);
            }
        }
    }
}
