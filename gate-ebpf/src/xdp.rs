//! The fast path: XDP on each listed interface. `parse -> gate lookup -> filter -> this CPU's
//! cache -> lease decision -> counter`. The verdict is decided in [`classify`] alone; whatever
//! cannot be parsed where a port might be is dropped.
use aya_ebpf::{
    EbpfContext as _,
    bindings::xdp_action,
    helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::xdp,
    programs::XdpContext,
};
use gate_common::{
    CACHE_TTL_JIFFIES, CachedLease, FAMILY_V4, Framing, GATE_TRANSIT, LOCAL_EMPTY, LOCAL_ONE, LOCAL_TABLE_READY,
    Reason, TraceEvent, cache_slot, cache_tag, lease_hash, local_slot, port_index,
};

use crate::{
    lease::{self, Address},
    maps::{
        CACHE_EPOCH, GATE_OPTIONS, LEASE_CACHE, LEASE_CACHE_ON, LOCAL_ADDRS, STATS, TRACE, TRACE_EVENTS,
        UNPARSEABLE_PASSES, count, gate_of,
    },
    parse::{self, Packet, Transport},
};

/// Gate id under which packets that belong to no gate are counted.
const NO_GATE: u32 = 0;

/// For interfaces whose frames start with an Ethernet header.
#[xdp]
pub fn gate(ctx: XdpContext) -> u32 {
    verdict(&ctx, Framing::Ethernet)
}

/// For layer-3 interfaces (tun, WireGuard, PPP, sit, ipip, GRE): the packet is its IP header on.
#[xdp]
pub fn gate_l3(ctx: XdpContext) -> u32 {
    verdict(&ctx, Framing::Ip)
}

#[inline(always)]
fn verdict(ctx: &XdpContext, framing: Framing) -> u32 {
    let (gate, reason) = classify(ctx, framing);
    count(&STATS, gate, reason);
    if reason.drops() { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
}

/// The gate a packet belongs to (or [`NO_GATE`]) and the reason for its verdict; traced when
/// `gatectl trace` follows its source.
#[inline(always)]
fn classify(ctx: &XdpContext, framing: Framing) -> (u32, Reason) {
    let (source, protocol, dst_port, destination) = match parse::parse(ctx, framing) {
        Packet::NotIp => return (NO_GATE, Reason::NotGated),
        Packet::Unparseable => return (NO_GATE, unparseable()),
        Packet::Ip { source, transport } => match transport {
            Transport::Other => return traced(ctx, &source, (NO_GATE, Reason::NotGated), 0, [0; 2]),
            Transport::NonFirstFragment => return traced(ctx, &source, (NO_GATE, Reason::Fragment), 0, [0; 2]),
            Transport::Ports { protocol, dst_port, destination } => (source, protocol, dst_port, destination),
        },
    };
    let verdict = judge_ports(&source, protocol, dst_port, &destination);
    traced(ctx, &source, verdict, protocol, dst_port)
}

/// [`classify`] for a packet with ports.
#[inline(always)]
fn judge_ports(source: &Address, protocol: u8, dst_port: [u8; 2], destination: &Address) -> (u32, Reason) {
    let Some(index) = port_index(protocol, dst_port) else { return (NO_GATE, Reason::NotGated) };
    let gate = gate_of(index);
    if gate == NO_GATE {
        return (NO_GATE, Reason::NotGated);
    }
    let hash = lease_hash(gate, source.family, &source.words);
    // The filter first: a source it turns away (most of a flood, from however many sources)
    // costs one read of a small bitmap, and no read of this CPU's cache.
    let reason =
        if lease::filter_may_hold(hash) { cached_or_judged(gate, source, hash) } else { Reason::DroppedNoLease };
    // Only a drop pays for the transit check: a leased source passes either way.
    if reason.drops() && !guards(gate, destination) {
        return (gate, Reason::Transit);
    }
    (gate, reason)
}

/// `verdict`, after writing it to `TRACE_EVENTS` if `gatectl trace` follows `source`. Off (the
/// switch's pid 0), this is one load and a branch for every packet.
#[inline(always)]
fn traced(ctx: &XdpContext, source: &Address, verdict: (u32, Reason), protocol: u8, port: [u8; 2]) -> (u32, Reason) {
    let Some(filter) = TRACE.get(0) else { return verdict };
    // SAFETY: plain reads of a map value valid for this run; user space may rewrite it meanwhile,
    // and any mix of old and new fields traces a packet or does not, nothing else.
    if unsafe { core::ptr::read_volatile(&raw const filter.pid) } == 0 {
        return verdict;
    }
    // SAFETY: as above.
    let (wanted_family, wanted, until) = unsafe {
        (
            core::ptr::read_volatile(&raw const filter.family),
            core::ptr::read_volatile(&raw const filter.words),
            core::ptr::read_volatile(&raw const filter.until_ns),
        )
    };
    // SAFETY: the kernel helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if source.family != wanted_family || !same_words(&source.words, &wanted) || now > until {
        return verdict;
    }
    // SAFETY: the context is the kernel's xdp_md for this run.
    let ifindex = unsafe { (*ctx.as_ptr().cast::<aya_ebpf::bindings::xdp_md>()).ingress_ifindex };
    let event = TraceEvent { at_ns: now, ifindex, gate: verdict.0, reason: verdict.1 as u32, protocol, _pad: 0, port };
    // A full buffer loses the event: the tracer is behind, the packet is not held up.
    let _ = TRACE_EVENTS.output(event, 0);
    verdict
}

/// The verdict for a source the filter may hold: from this CPU's cache if it passed moments ago,
/// otherwise from its lease (and cached when it passes).
#[inline(always)]
fn cached_or_judged(gate: u32, source: &Address, hash: u64) -> Reason {
    let (tag, words) = (cache_tag(gate, source.family), &source.words);
    // Read before the lease lookup: an entry written from a lease that user space removes
    // meanwhile then carries an epoch that the bump after the removal makes stale.
    let epoch = CACHE_EPOCH.get(0).copied().unwrap_or(0);
    let cached = if cache_on() { LEASE_CACHE.get_ptr_mut(cache_slot(hash)) } else { None };
    // SAFETY: bpf_jiffies64 has no preconditions (the verifier inlines it as one load).
    let jiffies = unsafe { bpf_jiffies64() };
    if let Some(entry) = cached {
        // SAFETY: this CPU's own slot, valid for this run; XDP runs do not interleave on a CPU.
        let entry = unsafe { &*entry };
        if entry.tag == tag && same_words(&entry.words, words) && entry.epoch == epoch && jiffies < entry.valid_until {
            return Reason::PassedLease;
        }
    }
    let (reason, cacheable) = lease::look_up(gate, source);
    if cacheable && let Some(entry) = cached {
        remember(entry, CachedLease { tag, epoch, words: *words, valid_until: jiffies + CACHE_TTL_JIFFIES });
    }
    reason
}

/// Whether `gate` guards a packet to `destination`: always if it is addressed to this host (or
/// the table of this host's addresses is not filled yet), and for transit only if the gate
/// says so.
#[inline(always)]
fn guards(gate: u32, destination: &Address) -> bool {
    let ready = GATE_OPTIONS.get(0).is_some_and(|&flags| flags & LOCAL_TABLE_READY != 0);
    if !ready || addressed_here(destination) {
        return true;
    }
    GATE_OPTIONS.get(gate).is_none_or(|&flags| flags & GATE_TRANSIT != 0)
}

/// Whether `destination` is one of this host's addresses, a broadcast, multicast or loopback
/// one. A slot shared by several addresses answers yes.
#[inline(always)]
fn addressed_here(destination: &Address) -> bool {
    let (family, words, first) = (destination.family, &destination.words, destination.first_byte());
    if family == FAMILY_V4 {
        // 0/8, 127/8, 224/4 and above (multicast, reserved, limited broadcast).
        if first == 0 || first == 127 || first >= 224 {
            return true;
        }
    } else if first == 0xff || (words[0] | words[1] | words[2]) == 0 {
        // Multicast, and the unspecified and loopback addresses (all zero but the last word).
        return true;
    }
    let Some(slot) = LOCAL_ADDRS.get(local_slot(family, words)) else { return true };
    // Read field by field while user space may rewrite the slot; its write order makes any mix
    // of old and new mean "local" or what either version meant (gate_common::LocalAddr).
    // SAFETY: plain reads of a map value valid for this run.
    let state = unsafe { core::ptr::read_volatile(&raw const slot.state) };
    match state {
        LOCAL_EMPTY => false,
        LOCAL_ONE => {
            // SAFETY: as above.
            let (slot_family, slot_words) = unsafe {
                (core::ptr::read_volatile(&raw const slot.family), core::ptr::read_volatile(&raw const slot.words))
            };
            slot_family == family && same_words(&slot_words, words)
        }
        _ => true,
    }
}

/// Word-wise equality without a call to `memcmp` (which BPF does not have).
#[inline(always)]
const fn same_words(a: &[u32; 4], b: &[u32; 4]) -> bool {
    ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0
}

/// The verdict for a packet XDP cannot parse where a port might be, as the loader chose.
#[inline(always)]
fn unparseable() -> Reason {
    // SAFETY: a plain read of a constant the loader set; volatile so the compiler keeps it.
    let passes = unsafe { core::ptr::read_volatile(&raw const UNPARSEABLE_PASSES) != 0 };
    if passes { Reason::PassedUnparseable } else { Reason::DroppedUnparseable }
}

#[inline(always)]
fn cache_on() -> bool {
    // SAFETY: a plain read of a constant the loader set; volatile so the compiler keeps it.
    unsafe { core::ptr::read_volatile(&raw const LEASE_CACHE_ON) != 0 }
}

/// Writes a cache entry so that a run reading it half-way never sees it valid: the deadline goes
/// to zero first and gets its value last. Only XDP calls this (see the crate doc).
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
