//! The gate: an XDP program that drops every packet to a gated (protocol, port) unless its source
//! address holds a live lease for that gate.
//!
//! The path of a packet: parse ([`parse`]) -> gate lookup (`PORTS`) -> this CPU's cache of
//! sources that passed moments ago (`LEASE_CACHE`) -> the counting filter (`LEASE_FILTER`: a zero
//! proves there is no lease) -> lease lookup (`LEASES_V4`/`LEASES_V6`) -> verdict -> counter
//! (`STATS`). The verdict is decided in [`classify`] alone; whatever cannot be parsed where a
//! port might be is dropped. The cache and the filter only ever skip work whose outcome they
//! know: the lease maps stay the one source of truth (docs/architecture.md, "Fast paths").
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, xdp_action},
    btf_maps::{Array, HashMap, PerCpuArray},
    helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use gate_common::{
    CACHE_MIN_REMAINING_NS, CACHE_SLOTS, CACHE_TTL_JIFFIES, CachedLease, DEFAULT_LEASE_CAPACITY, FAMILY_V4, FAMILY_V6,
    Gate, GateKey, Lease, LeaseKeyV4, LeaseKeyV6, LeaseState, MAX_GATED_PORTS, PORT_SLOTS, Reason, STATS_SLOTS,
    cache_slot, cache_tag, filter_count, filter_slot, lease_hash, port_index, stats_index, v4_words, v6_words,
};
use parse::{Packet, Source, Transport};

/// Gate id under which packets that belong to no gate are counted.
const NO_GATE: u32 = 0;

/// The catalogue of gated ports with their gate's name, for user space; never read here.
#[btf_map]
static GATES: HashMap<GateKey, Gate, { MAX_GATED_PORTS as usize }> = HashMap::new();

/// (protocol, port) -> gate id, 0 = not gated: the program's view of `GATES`.
#[btf_map]
static PORTS: Array<u32, { PORT_SLOTS as usize }> = Array::new();

// Exact addresses in plain hash maps: never LRU, which could evict a live lease. Not
// preallocated, so kernel memory follows the number of leases, not the capacity.
#[btf_map]
static LEASES_V4: HashMap<LeaseKeyV4, Lease, { DEFAULT_LEASE_CAPACITY as usize }, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

#[btf_map]
static LEASES_V6: HashMap<LeaseKeyV6, Lease, { DEFAULT_LEASE_CAPACITY as usize }, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

#[btf_map]
static STATS: PerCpuArray<u64, { STATS_SLOTS as usize }> = PerCpuArray::new();

/// Counting filter over the leases; sized by the loader, which also sets `FILTER_SLOT_MASK`.
#[btf_map]
static LEASE_FILTER: Array<u64, 1> = Array::new();

#[btf_map]
static LEASE_CACHE: PerCpuArray<CachedLease, { CACHE_SLOTS as usize }> = PerCpuArray::new();

#[btf_map]
static CACHE_EPOCH: Array<u32, 1> = Array::new();

/// Slots in `LEASE_FILTER` minus one, set at load (read-only data: the verifier sees the value).
#[unsafe(no_mangle)]
static FILTER_SLOT_MASK: u32 = u32::MAX; // unset: every word is out of range, the filter says "may"

/// 1 = use `LEASE_CACHE` (the daemon); 0 = skip it (the benchmark's view of the path behind it).
#[unsafe(no_mangle)]
static LEASE_CACHE_ON: u32 = 1;

#[xdp]
pub fn gate(ctx: XdpContext) -> u32 {
    let (gate, reason) = classify(&ctx);
    count(gate, reason);
    if reason.drops() { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
}

/// The gate a packet belongs to (or [`NO_GATE`]) and the reason for its verdict.
#[inline(always)]
fn classify(ctx: &XdpContext) -> (u32, Reason) {
    let (source, protocol, dst_port) = match parse::parse(ctx) {
        Packet::NotIp => return (NO_GATE, Reason::NotGated),
        Packet::Unparseable => return (NO_GATE, Reason::DroppedUnparseable),
        Packet::Ip { source, transport } => match transport {
            Transport::Other => return (NO_GATE, Reason::NotGated),
            Transport::NonFirstFragment => return (NO_GATE, Reason::Fragment),
            Transport::Ports { protocol, dst_port } => (source, protocol, dst_port),
        },
    };
    let Some(gate) = port_index(protocol, dst_port).and_then(|index| PORTS.get_ptr(index)) else {
        return (NO_GATE, Reason::NotGated);
    };
    // SAFETY: a pointer from an array lookup is valid for this program run.
    let gate = unsafe { *gate };
    if gate == NO_GATE {
        return (NO_GATE, Reason::NotGated);
    }
    let (family, words) = match source {
        Source::V4(addr) => (FAMILY_V4, v4_words(addr)),
        Source::V6(addr) => (FAMILY_V6, v6_words(addr)),
    };
    let hash = lease_hash(gate, family, &words);
    let tag = cache_tag(gate, family);
    // Read before the lease lookup: an entry written from a lease that user space removes
    // meanwhile then carries an epoch that the bump after the removal makes stale.
    let epoch = CACHE_EPOCH.get(0).copied().unwrap_or(0);
    let cached = if cache_on() { LEASE_CACHE.get_ptr_mut(cache_slot(hash)) } else { None };
    // SAFETY: bpf_jiffies64 has no preconditions (the verifier inlines it as one load).
    let jiffies = unsafe { bpf_jiffies64() };
    if let Some(entry) = cached {
        // SAFETY: this CPU's own slot, valid for this run; XDP runs do not interleave on a CPU.
        let entry = unsafe { &*entry };
        if entry.tag == tag && same_words(&entry.words, &words) && entry.epoch == epoch && jiffies < entry.valid_until {
            return (gate, Reason::PassedLease);
        }
    }
    if !filter_may_hold(hash) {
        return (gate, Reason::DroppedNoLease);
    }
    let lease = match source {
        Source::V4(addr) => LEASES_V4.get_ptr_mut(&LeaseKeyV4 { gate, addr }),
        Source::V6(addr) => LEASES_V6.get_ptr_mut(&LeaseKeyV6 { gate, addr }),
    };
    let Some(lease) = lease else { return (gate, Reason::DroppedNoLease) };
    let (reason, cacheable) = check_lease(lease);
    if cacheable && let Some(entry) = cached {
        remember(entry, CachedLease { tag, epoch, words, valid_until: jiffies + CACHE_TTL_JIFFIES });
    }
    (gate, reason)
}

/// Word-wise equality without a call to `memcmp` (which BPF does not have).
#[inline(always)]
const fn same_words(a: &[u32; 4], b: &[u32; 4]) -> bool {
    ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0
}

#[inline(always)]
fn cache_on() -> bool {
    // SAFETY: a plain read of a constant the loader set; volatile so the compiler keeps it.
    unsafe { core::ptr::read_volatile(&raw const LEASE_CACHE_ON) != 0 }
}

/// Whether the filter counter of `hash` is non-zero (a lease may exist). A missing word counts
/// as "may": the lease lookup then decides.
#[inline(always)]
fn filter_may_hold(hash: u64) -> bool {
    // SAFETY: as in `cache_on`.
    let mask = unsafe { core::ptr::read_volatile(&raw const FILTER_SLOT_MASK) };
    let (word, shift) = filter_slot(hash, mask);
    LEASE_FILTER.get(word).is_none_or(|&w| filter_count(w, shift) != 0)
}

/// Writes a cache entry so that a run reading it half-way never sees it valid: the deadline goes
/// to zero first and gets its value last.
#[inline(always)]
fn remember(entry: *mut CachedLease, value: CachedLease) {
    // SAFETY: this CPU's own slot, valid for this run; volatile stores keep their order.
    unsafe {
        core::ptr::write_volatile(&raw mut (*entry).valid_until, 0);
        core::ptr::write_volatile(&raw mut (*entry).tag, value.tag);
        core::ptr::write_volatile(&raw mut (*entry).epoch, value.epoch);
        core::ptr::write_volatile(&raw mut (*entry).words, value.words);
        core::ptr::write_volatile(&raw mut (*entry).valid_until, value.valid_until);
    }
}

/// Checks a lease against the clock, and lets traffic push its idle deadline forward. Also says
/// whether the source may be cached: live, with both deadlines far enough ahead.
#[inline(always)]
fn check_lease(lease: *mut Lease) -> (Reason, bool) {
    // SAFETY: the kernel helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: a non-null pointer from a map lookup stays valid for this program run (RCU); user
    // space may rewrite the lease concurrently, so it is read once, by value.
    let current = unsafe { core::ptr::read_volatile(lease) };
    match current.state(now) {
        LeaseState::Expired => (Reason::DroppedExpired, false),
        LeaseState::Idle => (Reason::DroppedIdle, false),
        LeaseState::Live => {
            let mut idle_deadline = current.idle_deadline_ns;
            if let Some(deadline) = current.refreshed_idle_deadline(now) {
                // SAFETY: as above; an aligned u64 store, so readers never see a torn deadline.
                unsafe { core::ptr::write_volatile(&raw mut (*lease).idle_deadline_ns, deadline) };
                idle_deadline = deadline;
            }
            let horizon = now.saturating_add(CACHE_MIN_REMAINING_NS);
            (Reason::PassedLease, current.expires_ns > horizon && idle_deadline > horizon)
        }
    }
}

#[inline(always)]
fn count(gate: u32, reason: Reason) {
    if let Some(counter) = STATS.get_ptr_mut(stats_index(gate, reason)) {
        // SAFETY: a per-CPU slot of this CPU, valid for this program run; XDP is not preempted.
        unsafe { *counter += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects programs that could reach a panic, so this never runs.
    unsafe { core::hint::unreachable_unchecked() }
}
