//! The lease decision both hooks share: given a gate and a source, is there a live lease? The
//! counting filter turns most strangers away before the hash lookup; the lease's deadlines are
//! read against the coarse clock, and a passing packet moves an idle deadline forward, so
//! traffic seen at either hook keeps a lease alive.
use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use gate_common::{
    CACHE_MIN_REMAINING_NS, FAMILY_V4, FAMILY_V6, Lease, LeaseKeyV4, LeaseKeyV6, LeaseState, Reason, filter_block,
    lease_hash, v4_mapped, v4_words, v6_bytes, v6_words,
};

use crate::maps::{LEASE_BITS_SIZE, LEASE_BITS_V3, LEASES_V4, LEASES_V6};

/// An IP address as both hooks hold it: its family tag and its [`lease_hash`] words (IPv4 in the
/// first word, the others zero), every word always set. Words, not bytes: an address is read into
/// registers once and hashed, compared and used as a key from there; and no path carries the bytes
/// of a family it is not (the compiler spilled such bytes unset, which the verifier refuses).
#[derive(Clone, Copy)]
pub struct Address {
    pub family: u32,
    pub words: [u32; 4],
}

impl Address {
    #[inline(always)]
    pub const fn v4(addr: [u8; 4]) -> Self {
        Self { family: FAMILY_V4, words: v4_words(addr) }
    }

    /// An IPv6 address as it is, IPv4-mapped or not (a destination).
    #[inline(always)]
    pub const fn v6(addr: [u8; 16]) -> Self {
        Self { family: FAMILY_V6, words: v6_words(addr) }
    }

    /// An IPv6 source, or the IPv4 host an IPv4-mapped one names.
    #[inline(always)]
    pub const fn from_v6(addr: [u8; 16]) -> Self {
        let words = v6_words(addr);
        match v4_mapped(&words) {
            Some(v4) => Self { family: FAMILY_V4, words: [v4, 0, 0, 0] },
            None => Self { family: FAMILY_V6, words },
        }
    }

    /// The address's first byte (network order).
    #[inline(always)]
    pub const fn first_byte(&self) -> u8 {
        self.words[0].to_ne_bytes()[0]
    }
}

/// The verdict for `source` on `gate` (not 0), whose [`lease_hash`] is `hash`, and whether the
/// source may be cached (a live lease with both deadlines far enough ahead).
#[inline(always)]
pub fn judge(gate: u32, source: &Address, hash: u64) -> (Reason, bool) {
    if !filter_may_hold(hash) {
        return (Reason::DroppedNoLease, false);
    }
    look_up(gate, source)
}

/// [`judge`] past the filter: the lease lookup alone.
#[inline(always)]
pub fn look_up(gate: u32, source: &Address) -> (Reason, bool) {
    let lease = if source.family == FAMILY_V4 {
        LEASES_V4.get_ptr_mut(&LeaseKeyV4 { gate, addr: source.words[0].to_ne_bytes() })
    } else {
        LEASES_V6.get_ptr_mut(&LeaseKeyV6 { gate, addr: v6_bytes(&source.words) })
    };
    match lease {
        Some(lease) => check_lease(lease),
        None => (Reason::DroppedNoLease, false),
    }
}

/// [`judge`] for a caller that has not hashed the source.
#[inline(always)]
pub fn judge_source(gate: u32, source: &Address) -> Reason {
    judge(gate, source, lease_hash(gate, source.family, &source.words)).0
}

/// Whether every filter bit of `hash` is set (a lease may exist): one word, the block's, at the
/// size user space keeps the bits at. A missing word counts as "may": the lease lookup then
/// decides.
#[inline(always)]
pub fn filter_may_hold(hash: u64) -> bool {
    let Some(size) = LEASE_BITS_SIZE.get(0) else { return true };
    // The size is read before the word it picks: user space writes the words a new size reads
    // before the size, and clears what only the old size read a while after it.
    let (block, wanted) = filter_block(hash, size.slot_mask);
    LEASE_BITS_V3.get(block).is_none_or(|&bits| bits & wanted == wanted)
}

/// Checks a lease against the clock, and lets traffic push its idle deadline forward. Also says
/// whether the source may be cached: live, with both deadlines far enough ahead.
#[inline(always)]
fn check_lease(lease: *mut Lease) -> (Reason, bool) {
    // SAFETY: the kernel helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: a non-null pointer from a map lookup stays valid for this program run (RCU); user
    // space and the other hook may rewrite the lease concurrently, so it is read once, by value.
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
