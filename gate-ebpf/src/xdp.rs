//! The fast path: XDP on each listed interface. `parse -> gate lookup -> this CPU's cache ->
//! lease decision -> counter`. The verdict is decided in [`classify`] alone; whatever cannot be
//! parsed where a port might be is dropped.
use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_jiffies64, macros::xdp, programs::XdpContext};
use gate_common::{CACHE_TTL_JIFFIES, CachedLease, Reason, cache_slot, cache_tag, lease_hash, port_index};

use crate::{
    lease,
    maps::{CACHE_EPOCH, LEASE_CACHE, LEASE_CACHE_ON, STATS, count, gate_of},
    parse::{self, Link, Packet, Transport},
};

/// Gate id under which packets that belong to no gate are counted.
const NO_GATE: u32 = 0;

/// For interfaces whose frames start with an Ethernet header.
#[xdp]
pub fn gate(ctx: XdpContext) -> u32 {
    verdict(&ctx, Link::Ethernet)
}

/// For layer-3 interfaces (tun, WireGuard, PPP, sit, ipip, GRE): the packet is its IP header on.
#[xdp]
pub fn gate_l3(ctx: XdpContext) -> u32 {
    verdict(&ctx, Link::Ip)
}

#[inline(always)]
fn verdict(ctx: &XdpContext, link: Link) -> u32 {
    let (gate, reason) = classify(ctx, link);
    count(&STATS, gate, reason);
    if reason.drops() { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
}

/// The gate a packet belongs to (or [`NO_GATE`]) and the reason for its verdict.
#[inline(always)]
fn classify(ctx: &XdpContext, link: Link) -> (u32, Reason) {
    let (source, protocol, dst_port) = match parse::parse(ctx, link) {
        Packet::NotIp => return (NO_GATE, Reason::NotGated),
        Packet::Unparseable => return (NO_GATE, Reason::DroppedUnparseable),
        Packet::Ip { source, transport } => match transport {
            Transport::Other => return (NO_GATE, Reason::NotGated),
            Transport::NonFirstFragment => return (NO_GATE, Reason::Fragment),
            Transport::Ports { protocol, dst_port } => (source, protocol, dst_port),
        },
    };
    let Some(index) = port_index(protocol, dst_port) else { return (NO_GATE, Reason::NotGated) };
    let gate = gate_of(index);
    if gate == NO_GATE {
        return (NO_GATE, Reason::NotGated);
    }
    let (family, words) = source.words();
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
    let (reason, cacheable) = lease::judge(gate, &source, hash);
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
