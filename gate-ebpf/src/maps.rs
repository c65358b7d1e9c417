//! Every map of the object, declared once: both hooks see the same statics, so they read and
//! write the same pinned maps by construction. Layouts and names live in `gate-common`.
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    btf_maps::{Array, HashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use gate_common::{
    BitsSize, CACHE_SLOTS, CachedLease, DEFAULT_LEASE_CAPACITY, Gate, GateKey, LOCAL_SLOTS, Lease, LeaseKeyV4,
    LeaseKeyV6, LocalAddr, MAX_GATED_PORTS, MAX_GATES, PORT_SLOTS, Reason, STATS_SLOTS, TRACE_EVENTS_BYTES, TraceEvent,
    TraceFilter, stats_index,
};

/// The catalogue of gated ports with their gate's name, for user space; never read here.
#[btf_map]
pub static GATES: HashMap<GateKey, Gate, { MAX_GATED_PORTS as usize }> = HashMap::new();

/// (protocol, port) -> gate id, 0 = not gated: the programs' view of `GATES`.
#[btf_map]
pub static PORTS: Array<u32, { PORT_SLOTS as usize }> = Array::new();

// Exact addresses in plain hash maps: never LRU, which could evict a live lease. Not
// preallocated, so kernel memory follows the number of leases, not the capacity.
#[btf_map]
pub static LEASES_V4: HashMap<LeaseKeyV4, Lease, { DEFAULT_LEASE_CAPACITY as usize }, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

#[btf_map]
pub static LEASES_V6: HashMap<LeaseKeyV6, Lease, { DEFAULT_LEASE_CAPACITY as usize }, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

/// XDP's verdict counters.
#[btf_map]
pub static STATS: PerCpuArray<u64, { STATS_SLOTS as usize }> = PerCpuArray::new();

/// The backstop's verdict counters, same layout as `STATS`.
#[btf_map]
pub static BACKSTOP_STATS: PerCpuArray<u64, { STATS_SLOTS as usize }> = PerCpuArray::new();

/// The trace switch (`gatectl trace`); only user space writes it.
#[btf_map]
pub static TRACE: Array<TraceFilter, 1> = Array::new();

/// Where XDP writes the traced verdicts.
#[btf_map]
pub static TRACE_EVENTS: RingBuf<TraceEvent, { TRACE_EVENTS_BYTES as usize }> = RingBuf::new();

/// Counting filter over the leases; sized by the loader. Never read here: the programs read
/// its bits, `LEASE_BITS_V3`. Mappable: user space keeps the counters as memory.
#[btf_map]
pub static LEASE_FILTER_V3: Array<u64, 1, { BPF_F_MMAPABLE as usize }> = Array::new();

/// The bits of `LEASE_FILTER_V3`'s counters, folded to the size `LEASE_BITS_SIZE` says; sized
/// by the loader for the largest (one bit a counter). Mappable, as the counters.
#[btf_map]
pub static LEASE_BITS_V3: Array<u64, 1, { BPF_F_MMAPABLE as usize }> = Array::new();

/// How many slots of `LEASE_BITS_V3` the programs read; only user space writes it.
#[btf_map]
pub static LEASE_BITS_SIZE: Array<BitsSize, 1> = Array::new();

/// Written only by XDP (`xdp::remember`).
#[btf_map]
pub static LEASE_CACHE: PerCpuArray<CachedLease, { CACHE_SLOTS as usize }> = PerCpuArray::new();

#[btf_map]
pub static CACHE_EPOCH: Array<u32, 1> = Array::new();

/// This host's addresses, for XDP to tell its own packets from transit.
#[btf_map]
pub static LOCAL_ADDRS: Array<LocalAddr, { LOCAL_SLOTS as usize }> = Array::new();

/// Per-gate flags by gate id; index 0: whether `LOCAL_ADDRS` is filled.
#[btf_map]
pub static GATE_OPTIONS: Array<u32, { MAX_GATES as usize + 1 }> = Array::new();

/// 1 = pass what XDP cannot parse on to the stack, where the backstop judges it at the socket;
/// 0 = drop it at XDP (the default).
#[unsafe(no_mangle)]
pub static UNPARSEABLE_PASSES: u32 = 0;

/// 1 = use `LEASE_CACHE` (the daemon); 0 = skip it (the benchmark's view of the path behind it).
#[unsafe(no_mangle)]
pub static LEASE_CACHE_ON: u32 = 1;

/// The gate guarding `index` (from `port_index`), 0 if none. A failed lookup cannot happen for an
/// in-range index; were `PORTS` ever a hash, a miss would read as `u32::MAX`, an id no lease has,
/// so the packet would be dropped, never passed.
#[inline(always)]
pub fn gate_of(index: u32) -> u32 {
    match PORTS.get(index) {
        Some(&gate) => gate,
        None => u32::MAX,
    }
}

/// Adds one to the counter of (`gate`, `reason`) in `stats` on this CPU.
#[inline(always)]
pub fn count(stats: &PerCpuArray<u64, { STATS_SLOTS as usize }>, gate: u32, reason: Reason) {
    if let Some(counter) = stats.get_ptr_mut(stats_index(gate, reason)) {
        // SAFETY: a per-CPU slot of this CPU, valid for this program run. A socket-level run can
        // be interrupted by XDP on the same CPU, but each hook has its own counters.
        unsafe { *counter += 1 };
    }
}
