//! The embedded programs (XDP for Ethernet and for layer-3 interfaces, the delivery backstop)
//! and loading them against the pinned maps: maps already pinned are
//! reused (their leases kept), missing ones are created and pinned. Used by the installer, and by
//! the tests and benchmarks, so they run exactly what the daemon runs.
use aya::{
    Ebpf, EbpfLoader,
    maps::MapInfo,
    programs::{CgroupSkb, ProgramError, Xdp},
};
use gate_common::{
    GLOBAL_LEASE_CACHE_ON, GLOBAL_UNPARSEABLE_PASSES, MAP_BACKSTOP_STATS, MAP_CACHE_EPOCH, MAP_GATE_OPTIONS, MAP_GATES,
    MAP_LEASE_BITS, MAP_LEASE_BITS_SIZE, MAP_LEASE_CACHE, MAP_LEASE_FILTER, MAP_LEASES_V4, MAP_LEASES_V6,
    MAP_LOCAL_ADDRS, MAP_PORTS, MAP_STATS, MAP_TRACE, MAP_TRACE_EVENTS, PROGRAM_NAME, PROGRAM_NAME_BACKSTOP,
    PROGRAM_NAME_L3, bits_words, filter_words,
};
use gate_maps::{PinDir, netlink::Framing};

/// The XDP program, built by build.rs from `gate-ebpf`.
pub const OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gate"));

/// The benchmarks' control programs: `pass` (only passes) and `lookup` (one hash lookup, then
/// passes). Not used by the daemon.
pub const BASELINE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baseline"));

/// Every map the programs use, all pinned.
pub const MAPS: [&str; 15] = [
    MAP_GATES,
    MAP_PORTS,
    MAP_LEASES_V4,
    MAP_LEASES_V6,
    MAP_STATS,
    MAP_BACKSTOP_STATS,
    MAP_LEASE_FILTER,
    MAP_LEASE_BITS,
    MAP_LEASE_BITS_SIZE,
    MAP_LEASE_CACHE,
    MAP_CACHE_EPOCH,
    MAP_LOCAL_ADDRS,
    MAP_GATE_OPTIONS,
    MAP_TRACE,
    MAP_TRACE_EVENTS,
];

/// The XDP program for interfaces of `framing`.
const fn xdp_program(framing: Framing) -> &'static str {
    match framing {
        Framing::Ethernet => PROGRAM_NAME,
        Framing::Ip => PROGRAM_NAME_L3,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("load the XDP object and its maps")]
    Object(#[source] aya::EbpfError),
    #[error("load the programs into the kernel")]
    Program(#[source] ProgramError),
}

/// The program loaded in the kernel, not yet attached.
pub struct Loaded {
    ebpf: Ebpf,
}

impl Loaded {
    /// The XDP program for Ethernet interfaces.
    pub fn xdp(&mut self) -> &mut Xdp {
        self.xdp_for(Framing::Ethernet)
    }

    /// The XDP program for interfaces of `framing`.
    ///
    /// # Panics
    /// Never: [`load`] checked that the object holds it.
    pub fn xdp_for(&mut self, framing: Framing) -> &mut Xdp {
        self.ebpf
            .program_mut(xdp_program(framing))
            .and_then(|p| p.try_into().ok())
            .expect("load() checked the program exists and is XDP")
    }

    /// The delivery backstop.
    ///
    /// # Panics
    /// Never: [`load`] checked that the object holds it.
    pub fn backstop(&mut self) -> &mut CgroupSkb {
        self.ebpf
            .program_mut(PROGRAM_NAME_BACKSTOP)
            .and_then(|p| p.try_into().ok())
            .expect("load() checked the program exists and is cgroup_skb")
    }
}

/// Loads the program with its maps pinned under `pins`; new lease maps get `lease_capacity`
/// entries per address family.
///
/// # Errors
/// The object or its maps cannot be created (the verifier's log is in the source chain).
pub fn load(pins: &PinDir, lease_capacity: u32) -> Result<Loaded, LoadError> {
    load_with(pins, lease_capacity, Options::default())
}

/// Load-time choices of the programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Use the per-CPU cache (off only for the benchmark, to measure the path behind it).
    pub lease_cache: bool,
    /// Pass what XDP cannot parse on to the stack and the backstop, instead of dropping it.
    pub unparseable_passes: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { lease_cache: true, unparseable_passes: false }
    }
}

/// As [`load`], with `options`. The filter may only be used with [`gate_maps::GateState`]
/// keeping it (the installer rebuilds it before attaching).
///
/// # Errors
/// As [`load`].
pub fn load_with(pins: &PinDir, lease_capacity: u32, options: Options) -> Result<Loaded, LoadError> {
    let mut loader = EbpfLoader::new();
    for name in MAPS {
        loader.map_pin_path(name, pins.map(name));
    }
    loader.map_max_entries(MAP_LEASES_V4, lease_capacity);
    loader.map_max_entries(MAP_LEASES_V6, lease_capacity);
    // A pinned filter keeps its size (its counters are laid out for it); a new one fits the lease
    // maps, pinned ones as they are (a new filter beside an older build's leases).
    let capacity = MapInfo::from_pin(pins.map(MAP_LEASES_V4)).map_or(lease_capacity, |info| info.max_entries());
    let words = MapInfo::from_pin(pins.map(MAP_LEASE_FILTER))
        .map_or_else(|_| filter_words(capacity.saturating_mul(2)), |info| info.max_entries());
    loader.map_max_entries(MAP_LEASE_FILTER, words);
    // Room for the bits at their largest; user space sizes what the programs read.
    loader.map_max_entries(MAP_LEASE_BITS, bits_words(words));
    let cache_on = u32::from(options.lease_cache);
    let unparseable_passes = u32::from(options.unparseable_passes);
    loader.override_global(GLOBAL_LEASE_CACHE_ON, &cache_on, true);
    loader.override_global(GLOBAL_UNPARSEABLE_PASSES, &unparseable_passes, true);
    let mut ebpf = loader.load(OBJECT).map_err(LoadError::Object)?;
    for framing in [Framing::Ethernet, Framing::Ip] {
        let program: &mut Xdp = ebpf
            .program_mut(xdp_program(framing))
            .ok_or(LoadError::Program(ProgramError::UnexpectedProgramType))?
            .try_into()
            .map_err(LoadError::Program)?;
        program.load().map_err(LoadError::Program)?;
    }
    let backstop: &mut CgroupSkb = ebpf
        .program_mut(PROGRAM_NAME_BACKSTOP)
        .ok_or(LoadError::Program(ProgramError::UnexpectedProgramType))?
        .try_into()
        .map_err(LoadError::Program)?;
    backstop.load().map_err(LoadError::Program)?;
    Ok(Loaded { ebpf })
}
