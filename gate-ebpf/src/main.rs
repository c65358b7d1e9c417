//! The gate: an XDP program that drops every packet to a gated (protocol, port) unless its source
//! address holds a live lease for that gate.
//!
//! The path of a packet: parse ([`parse`]) -> gate lookup (`PORTS`) -> lease lookup
//! (`LEASES_V4`/`LEASES_V6`) -> verdict -> counter (`STATS`). The verdict is decided in
//! [`classify`] alone; whatever cannot be parsed where a port might be is dropped.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, xdp_action},
    btf_maps::{Array, HashMap, PerCpuArray},
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use gate_common::{
    DEFAULT_LEASE_CAPACITY, Gate, GateKey, Lease, LeaseKeyV4, LeaseKeyV6, LeaseState, MAX_GATED_PORTS, PORT_SLOTS,
    Reason, STATS_SLOTS, port_index, stats_index,
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
    let lease = match source {
        Source::V4(addr) => LEASES_V4.get_ptr_mut(&LeaseKeyV4 { gate, addr }),
        Source::V6(addr) => LEASES_V6.get_ptr_mut(&LeaseKeyV6 { gate, addr }),
    };
    (gate, lease.map_or(Reason::DroppedNoLease, check_lease))
}

/// Checks a lease against the clock, and lets traffic push its idle deadline forward.
#[inline(always)]
fn check_lease(lease: *mut Lease) -> Reason {
    // SAFETY: the kernel helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: a non-null pointer from a map lookup stays valid for this program run (RCU); user
    // space may rewrite the lease concurrently, so it is read once, by value.
    let current = unsafe { core::ptr::read_volatile(lease) };
    match current.state(now) {
        LeaseState::Expired => Reason::DroppedExpired,
        LeaseState::Idle => Reason::DroppedIdle,
        LeaseState::Live => {
            if let Some(deadline) = current.refreshed_idle_deadline(now) {
                // SAFETY: as above; an aligned u64 store, so readers never see a torn deadline.
                unsafe { core::ptr::write_volatile(&raw mut (*lease).idle_deadline_ns, deadline) };
            }
            Reason::PassedLease
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
