//! Types shared by the gate XDP program (`gate-ebpf`) and user space.
//!
//! Everything the kernel and user space must agree on lives here, once: map names, key and value
//! layouts, verdict reasons and limits. Byte order is decided here too: ports and addresses are
//! kept in network order, exactly as they appear in the packet, so the program copies bytes and
//! never swaps them.
//!
//! # Layout
//! - [`GateKey`] / [`Gate`]: the `GATES` map, (protocol, port) -> the gate guarding it.
//! - [`LeaseKeyV4`] / [`LeaseKeyV6`] / [`Lease`]: the `LEASES_V4` / `LEASES_V6` maps.
//! - [`Reason`]: why a packet got its verdict; indexes the per-CPU `STATS` map.
#![no_std]

/// Name of the catalogue of gated ports, (protocol, port) -> [`Gate`] (read by user space).
pub const MAP_GATES: &str = "GATES";
/// Name of the program's fast path: an array indexed by [`port_index`] holding the gate id
/// (0 = not gated). The verifier inlines array lookups, so an ungated packet costs a few loads.
pub const MAP_PORTS: &str = "PORTS";
/// Name of the IPv4 lease map, [`LeaseKeyV4`] -> [`Lease`].
pub const MAP_LEASES_V4: &str = "LEASES_V4";
/// Name of the IPv6 lease map, [`LeaseKeyV6`] -> [`Lease`].
pub const MAP_LEASES_V6: &str = "LEASES_V6";
/// Name of the per-CPU verdict counters, indexed by [`stats_index`].
pub const MAP_STATS: &str = "STATS";
/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "gate";

/// Gate ids run from 1 to `MAX_GATES`; id 0 collects packets that belong to no gate.
pub const MAX_GATES: u32 = 64;
/// How many (protocol, port) pairs can be gated at once.
pub const MAX_GATED_PORTS: u32 = 256;
/// Default capacity of each lease map; the daemon sets the real one from its config.
pub const DEFAULT_LEASE_CAPACITY: u32 = 65_536;
/// Longest gate name, in bytes (stored NUL-padded in [`Gate::name`]).
pub const GATE_NAME_MAX: usize = 28;

/// Slots in `PORTS`: every port, for TCP then UDP.
pub const PORT_SLOTS: u32 = 2 << 16;

/// The `PORTS` index of `port_be` (network order) for `protocol`; `None` if not TCP or UDP.
#[inline(always)]
#[must_use]
pub const fn port_index(protocol: u8, port_be: [u8; 2]) -> Option<u32> {
    let slot = match protocol {
        IPPROTO_TCP => 0,
        IPPROTO_UDP => 1,
        _ => return None,
    };
    Some((slot << 16) | u16::from_be_bytes(port_be) as u32)
}

/// IP protocol numbers of the transports a gate can guard.
pub const IPPROTO_TCP: u8 = 6;
/// See [`IPPROTO_TCP`].
pub const IPPROTO_UDP: u8 = 17;

/// Traffic refreshes a lease's idle deadline at most this often, so a busy flow does not write
/// the lease on every packet (and CPUs do not fight over its cache line).
pub const IDLE_REFRESH_GRANULARITY_NS: u64 = 1_000_000_000;

/// Key of the `GATES` map: a transport protocol and a destination port in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GateKey {
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub protocol: u8,
    /// Always zero; makes the padding explicit so keys hash identically in kernel and user space.
    pub pad: u8,
    /// Destination port, network byte order (the packet's own bytes).
    pub port_be: [u8; 2],
}

impl GateKey {
    /// A key for `protocol` and a port given in host order.
    #[must_use]
    pub const fn new(protocol: u8, port: u16) -> Self {
        Self { protocol, pad: 0, port_be: port.to_be_bytes() }
    }

    /// The port in host order.
    #[must_use]
    pub const fn port(&self) -> u16 {
        u16::from_be_bytes(self.port_be)
    }
}

/// Value of the `GATES` map: which gate guards a (protocol, port).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// 1..=[`MAX_GATES`]; leases and counters are keyed by it.
    pub id: u32,
    /// The gate's name, UTF-8, NUL-padded. Read only by user space.
    pub name: [u8; GATE_NAME_MAX],
}

/// Key of `LEASES_V4`: a gate and a source address in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseKeyV4 {
    /// The gate this lease opens.
    pub gate: u32,
    /// Source IPv4 address, network byte order.
    pub addr: [u8; 4],
}

/// Key of `LEASES_V6`: a gate and a source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseKeyV6 {
    /// The gate this lease opens.
    pub gate: u32,
    /// Source IPv6 address, network byte order.
    pub addr: [u8; 16],
}

/// A lease: a source may pass a gate while `now < expires_ns` and `now < idle_deadline_ns`.
///
/// Times are `CLOCK_MONOTONIC_COARSE` nanoseconds (`bpf_ktime_get_coarse_ns` in the program), a
/// clock the kernel keeps without the daemon, so leases expire while the daemon is down.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Hard deadline: the lease is dead from this instant on, whatever the traffic.
    pub expires_ns: u64,
    /// Idle deadline: the lease is dead from this instant on unless traffic moved it forward.
    pub idle_deadline_ns: u64,
    /// How far a passing packet moves the idle deadline ahead of now; 0 = never (a plain TTL).
    pub idle_timeout_ns: u64,
}

/// Whether a lease lets a packet through at `now_ns`, and why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Both deadlines are ahead.
    Live,
    /// The hard deadline has passed.
    Expired,
    /// The idle deadline has passed (no traffic for too long, or never connected).
    Idle,
}

impl Lease {
    /// The lease's state at `now_ns`. The hard deadline wins when both have passed.
    #[inline(always)]
    #[must_use]
    pub const fn state(&self, now_ns: u64) -> LeaseState {
        if now_ns >= self.expires_ns {
            LeaseState::Expired
        } else if now_ns >= self.idle_deadline_ns {
            LeaseState::Idle
        } else {
            LeaseState::Live
        }
    }

    /// The idle deadline a packet seen at `now_ns` should set, if it is worth a write: only when
    /// it moves the deadline by more than [`IDLE_REFRESH_GRANULARITY_NS`].
    #[inline(always)]
    #[must_use]
    pub const fn refreshed_idle_deadline(&self, now_ns: u64) -> Option<u64> {
        if self.idle_timeout_ns == 0 {
            return None;
        }
        let wanted = now_ns.saturating_add(self.idle_timeout_ns);
        if wanted > self.idle_deadline_ns.saturating_add(IDLE_REFRESH_GRANULARITY_NS) { Some(wanted) } else { None }
    }

    /// When the lease closes, as things stand: the earlier of its two deadlines. Traffic moves
    /// the idle deadline only while the lease is live, so once this has passed the lease is
    /// closed for good.
    #[must_use]
    pub const fn closes_at_ns(&self) -> u64 {
        if self.idle_deadline_ns < self.expires_ns { self.idle_deadline_ns } else { self.expires_ns }
    }
}

/// Why a packet got its verdict. Each reason is a counter per gate in `STATS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not IP, not TCP/UDP, or a port no gate guards: passed untouched.
    NotGated = 0,
    /// To a gated port from a source with a live lease: passed.
    PassedLease = 1,
    /// To a gated port from a source without a lease: dropped.
    DroppedNoLease = 2,
    /// To a gated port from a source whose lease reached its hard expiry: dropped.
    DroppedExpired = 3,
    /// To a gated port from a source whose lease went idle: dropped.
    DroppedIdle = 4,
    /// IP, but the transport port cannot be read within the parser's bounds: dropped, since it
    /// might be for a gated port.
    DroppedUnparseable = 5,
    /// A non-first IP fragment: carries no port, passed (see docs/architecture.md).
    Fragment = 6,
}

/// Number of [`Reason`] variants.
pub const NUM_REASONS: u32 = 7;

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Self; NUM_REASONS as usize] = [
        Self::NotGated,
        Self::PassedLease,
        Self::DroppedNoLease,
        Self::DroppedExpired,
        Self::DroppedIdle,
        Self::DroppedUnparseable,
        Self::Fragment,
    ];

    /// Whether packets with this reason are dropped.
    #[inline(always)]
    #[must_use]
    pub const fn drops(self) -> bool {
        matches!(self, Self::DroppedNoLease | Self::DroppedExpired | Self::DroppedIdle | Self::DroppedUnparseable)
    }

    /// Stable name for output and JSON.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::NotGated => "not_gated",
            Self::PassedLease => "passed_lease",
            Self::DroppedNoLease => "dropped_no_lease",
            Self::DroppedExpired => "dropped_expired",
            Self::DroppedIdle => "dropped_idle",
            Self::DroppedUnparseable => "dropped_unparseable",
            Self::Fragment => "fragment",
        }
    }
}

/// Number of slots in `STATS`: one row of reasons for "no gate" (id 0) and one per gate id.
pub const STATS_SLOTS: u32 = (MAX_GATES + 1) * NUM_REASONS;

/// Index into `STATS` of the counter for `gate` (0 = no gate) and `reason`.
#[inline(always)]
#[must_use]
pub const fn stats_index(gate: u32, reason: Reason) -> u32 {
    gate * NUM_REASONS + reason as u32
}

#[cfg(feature = "user")]
#[expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait for plain map types")]
mod pod {
    // SAFETY: each type is repr(C), only integers and byte arrays, no implicit padding.
    unsafe impl aya::Pod for super::GateKey {}
    unsafe impl aya::Pod for super::Gate {}
    unsafe impl aya::Pod for super::LeaseKeyV4 {}
    unsafe impl aya::Pod for super::LeaseKeyV6 {}
    unsafe impl aya::Pod for super::Lease {}
}
