//! The daemon's XDP program loaded (not attached) against a private pin directory, for
//! `BPF_PROG_TEST_RUN`: feed it frames, read the verdict and the counters it moved.
use aya::programs::{TestRun, TestRunOptions};
use gate_daemon::program::{self, Loaded};
use std::net::IpAddr;

use gate_maps::{FilterLayout, GateSpec, GateState, PinDir, Protocol};

use crate::bed::PinDirGuard;

/// The host's addresses in a loaded gate: the destinations of [`crate::frames::Frame`].
pub const LOCAL: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1)),
    IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1)),
];

/// A plain lease for an hour from now.
#[must_use]
pub fn hour_lease() -> gate_common::Lease {
    gate_maps::lease::ttl_lease(gate_maps::clock::now_ns(), std::time::Duration::from_secs(3600))
}

/// A lease that closed a second ago: what a sweep deletes.
#[must_use]
pub fn closed_lease() -> gate_common::Lease {
    let past = gate_maps::clock::now_ns() - 1_000_000_000;
    gate_common::Lease { expires_ns: past, idle_deadline_ns: past, idle_timeout_ns: 0 }
}

/// A lease within its hour whose idle deadline passed a second ago: dropped as idle.
#[must_use]
pub fn idle_lease() -> gate_common::Lease {
    let now = gate_maps::clock::now_ns();
    gate_common::Lease {
        expires_ns: now + 3_600_000_000_000,
        idle_deadline_ns: now - 1_000_000_000,
        idle_timeout_ns: 60_000_000_000,
    }
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

pub struct LoadedGate {
    pub state: GateState,
    loaded: Loaded,
    // Last, so the maps are unpinned after the handles above close.
    _pins: PinDirGuard,
}

impl LoadedGate {
    /// Loads the program with lease maps of `capacity` and gates `gates` (name, protocol, port).
    pub fn new(gates: &[(&str, Protocol, u16)], capacity: u32) -> Self {
        Self::with_options(gates, capacity, program::Options::default())
    }

    /// As [`Self::new`], loaded with `options`.
    pub fn with_options(gates: &[(&str, Protocol, u16)], capacity: u32, options: program::Options) -> Self {
        let specs: Vec<GateSpec> = gates
            .iter()
            .map(|(name, protocol, port)| GateSpec {
                name: (*name).to_owned(),
                protocol: *protocol,
                port: *port,
                transit: false,
            })
            .collect();
        // As the daemon does: the frames' destination is this host (frames::Frame).
        Self::with_specs(&specs, capacity, options, &LOCAL)
    }

    /// Loads the program with `options`, gates the ports of `specs` and tells it that `local`
    /// are this host's addresses.
    pub fn with_specs(specs: &[GateSpec], capacity: u32, options: program::Options, local: &[IpAddr]) -> Self {
        let pins = PinDirGuard::new();
        std::fs::create_dir_all(&pins.0).expect("create pin dir");
        let dir = PinDir::new(&pins.0);
        let loaded = program::load_with(&dir, capacity, options).expect("load the gate program");
        let mut state = GateState::open(dir.root()).expect("open the pinned maps");
        state.sync_gates(specs).expect("gate the ports");
        state.set_local_addresses(local).expect("fill the local address table");
        Self { state, loaded, _pins: pins }
    }

    /// A second copy of the program on the same maps, without its per-CPU lease cache: the path
    /// every packet of a leased source took before the cache (for the benchmark).
    pub fn without_cache(&self) -> Loaded {
        let (capacity, _) = self.state.capacity();
        let options = program::Options { lease_cache: false, ..program::Options::default() };
        program::load_with(self.state.pins(), capacity, options).expect("load the gate program without its cache")
    }

    /// Runs `frame` through the program `repeat` times; returns the verdict and the average
    /// time per run in nanoseconds as the kernel measured it.
    pub fn run_repeat(&mut self, frame: &[u8], repeat: u32) -> (u32, u128) {
        run_repeat(&mut self.loaded, frame, repeat)
    }

    /// Runs `frame` once; returns the verdict.
    pub fn run(&mut self, frame: &[u8]) -> u32 {
        self.run_repeat(frame, 1).0
    }

    /// Runs `frame` once through the program for interfaces of `framing`; returns the verdict.
    pub fn run_framed(&mut self, frame: &[u8], framing: gate_common::Framing) -> u32 {
        test_run(self.loaded.xdp_for(framing), frame, 1).0
    }
}

/// Runs `frame` through `loaded` `repeat` times; see [`LoadedGate::run_repeat`].
pub fn run_repeat(loaded: &mut Loaded, frame: &[u8], repeat: u32) -> (u32, u128) {
    test_run(loaded.xdp(), frame, repeat)
}

/// Runs `frame` through `program` `repeat` times: the verdict and the kernel's mean time a run.
fn test_run(program: &mut aya::programs::Xdp, frame: &[u8], repeat: u32) -> (u32, u128) {
    let mut options = TestRunOptions::new();
    options.data_in = Some(frame);
    options.repeat = repeat;
    let result = program.test_run(options).expect("BPF_PROG_TEST_RUN");
    (result.return_value, result.duration.as_nanos())
}

/// Up to `how_many` IPv4 addresses in 10.0.0.0-223.255.255.255 other than `addr` whose lowest
/// filter counter (gate `gate`) is `addr`'s: sources that share a counter with `addr`.
pub fn filter_twins(state: &GateState, gate: u32, addr: IpAddr, how_many: usize) -> Vec<IpAddr> {
    let target = state.filter_counters(gate, addr)[0];
    unicast_v4().filter(|&a| a != addr && state.filter_counters(gate, a)[0] == target).take(how_many).collect()
}

/// IPv4 addresses other than `stranger` whose leases on `gate` would take every filter counter
/// `stranger` counts in, one for each: granted, they make a stranger the filter cannot tell
/// from a leased source, so the lease lookup has to answer for it.
pub fn filter_cover(state: &GateState, gate: u32, stranger: IpAddr) -> Vec<IpAddr> {
    let mut uncovered = state.filter_counters(gate, stranger);
    let mut cover = Vec::new();
    for addr in unicast_v4().filter(|&a| a != stranger) {
        let counters = state.filter_counters(gate, addr);
        if uncovered.iter().any(|c| counters.contains(c)) {
            uncovered.retain(|c| !counters.contains(c));
            cover.push(addr);
        }
        if uncovered.is_empty() {
            return cover;
        }
    }
    panic!("no IPv4 address covers {stranger}'s filter counters");
}

fn unicast_v4() -> impl Iterator<Item = IpAddr> {
    (0x0A00_0000_u32..0xE000_0000).map(|n| IpAddr::from(n.to_be_bytes()))
}

/// Puts an older build's filter in this build's place in `pins`, for lease maps of `capacity`:
/// its two maps in `layout` ([`FilterLayout::Block`]: one bit a counter; [`FilterLayout::OneSlot`]:
/// one slot a source), empty and pinned under their names (with bpftool, as that build's loader
/// made them), and none of this build's.
pub fn pin_older_filter(pins: &gate_maps::PinDir, capacity: u32, layout: FilterLayout) {
    use gate_common::{
        MAP_LEASE_BITS, MAP_LEASE_BITS_SIZE, MAP_LEASE_BITS_V1, MAP_LEASE_BITS_V2, MAP_LEASE_FILTER,
        MAP_LEASE_FILTER_V1, MAP_LEASE_FILTER_V2,
    };
    let words = gate_common::filter_words(capacity * 2);
    for map in [MAP_LEASE_FILTER, MAP_LEASE_BITS, MAP_LEASE_BITS_SIZE] {
        std::fs::remove_file(pins.map(map)).expect("unpin this build's filter");
    }
    let (counters, bits) = match layout {
        FilterLayout::Block => (MAP_LEASE_FILTER_V2, MAP_LEASE_BITS_V2),
        FilterLayout::OneSlot => (MAP_LEASE_FILTER_V1, MAP_LEASE_BITS_V1),
        FilterLayout::Sized => panic!("this build's layout is not an older one"),
    };
    for (name, entries) in [(counters, words), (bits, gate_common::bits_words(words))] {
        let out = std::process::Command::new("bpftool")
            .args(["map", "create"])
            .arg(pins.map(name))
            .args(["type", "array", "key", "4", "value", "8", "entries", &entries.to_string(), "name", name])
            .output()
            .expect("run bpftool");
        assert!(out.status.success(), "bpftool map create: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Checks that the filter's bits, as the programs read them, are exactly what its counters say:
/// a bit is set while a counter that folds into it is not zero (no leased source is turned
/// away, no stranger pays a lookup for a lease long gone), and every bit past the size the
/// programs read is clear (a later, larger size starts from the counters). Returns the size.
pub fn assert_bits_follow_counters(state: &GateState) -> gate_common::BitsSize {
    use gate_common::{FILTER_SLOTS_PER_WORD, MAP_LEASE_BITS, MAP_LEASE_FILTER, fold_block, nonzero_counters};
    let size = state.filter_bits_size().expect("read the bits' size").expect("this build's filter");
    assert!(size.slot_mask >= 63 && (size.slot_mask + 1).is_power_of_two(), "sized: {size:?}");
    let counters = pinned_u64_array(&state.pins().map(MAP_LEASE_FILTER));
    let bits = pinned_u64_array(&state.pins().map(MAP_LEASE_BITS));
    let mut wanted = vec![0_u64; (size.slot_mask as usize + 1) / 64];
    for (word, value) in (0_u32..).zip(counters.iter()) {
        let block = fold_block(word / FILTER_SLOTS_PER_WORD, size.slot_mask) as usize;
        wanted[block] |= u64::from(nonzero_counters(value.expect("read a counter word"))) << ((word % 8) * 8);
    }
    for (index, value) in bits.iter().enumerate() {
        let value = value.expect("read a bits word");
        let want = wanted.get(index).copied().unwrap_or(0);
        assert_eq!(value, want, "bits word {index} (of {} read): {value:#x}, its counters say {want:#x}", wanted.len());
    }
    size
}

/// The pinned array of `u64`s at `path`.
pub fn pinned_u64_array(path: &std::path::Path) -> aya::maps::Array<aya::maps::MapData, u64> {
    let data = aya::maps::MapData::from_pin(path).expect("open a pinned map");
    aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("an array of u64")
}
