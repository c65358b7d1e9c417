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
//! - [`Reason`]: why a packet got its verdict; indexes the per-CPU `STATS` map (XDP) and
//!   `BACKSTOP_STATS` (the delivery backstop), which share one layout.
//! - [`lease_hash`], [`CachedLease`], the filter constants: the two accelerators in front of the
//!   lease maps (a counting filter that turns most strangers away before the hash lookup, and a
//!   per-CPU cache of recently passed sources), whose slots kernel and user space compute alike.
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
/// Name of the counting filter in front of the lease maps: an array of `u64` words, each holding
/// [`FILTER_SLOTS_PER_WORD`] one-byte counters; a counter is the number of leases (either family,
/// any gate) that count in its slot. A source counts in [`FILTER_HASHES`] slots of one block of
/// 64 (see [`filter_block`]); a zero counter in any of them proves it has no lease, without the
/// hash lookup. Made with `BPF_F_MMAPABLE`: user space reads and writes it as memory, only under
/// the pin directory's lock; the programs never read it. (`_V3`: the same counters as
/// [`MAP_LEASE_FILTER_V2`], in an array user space can map; an older build cannot open it.)
pub const MAP_LEASE_FILTER: &str = "LEASE_FILTER_V3";
/// Name of the filter as the programs read it: one bit per slot, set while a counter of
/// [`MAP_LEASE_FILTER`] that folds into it is not zero (see [`filter_block`], [`fold_block`]);
/// a block is one word. Sized to the leases held, not to the capacity: the programs read the
/// first [`BitsSize::slot_mask`] + 1 slots, so that a flood from random sources reads a few KiB
/// of bits while a gateway sized for a million leases holds ten. At most an eighth of the
/// counters' memory. `BPF_F_MMAPABLE`, written only by user space, under the pin directory's
/// lock, together with the counters.
pub const MAP_LEASE_BITS: &str = "LEASE_BITS_V3";
/// Name of the size the programs read [`MAP_LEASE_BITS`] at: one [`BitsSize`]. Written only by
/// user space, under the pin directory's lock.
pub const MAP_LEASE_BITS_SIZE: &str = "LEASE_BITS_SIZE";
/// The counting filter of the builds between the three-slot filter and sized bits (both
/// 2026-12-02): the counters of [`MAP_LEASE_FILTER`] in an array that cannot be mapped. Read and
/// written by user space only while such a program is still attached; the installer unpins it.
pub const MAP_LEASE_FILTER_V2: &str = "LEASE_FILTER_V2";
/// The bits of [`MAP_LEASE_FILTER_V2`]: one per counter, at the counters' size, which their
/// programs took from a load-time constant.
pub const MAP_LEASE_BITS_V2: &str = "LEASE_BITS_V2";
/// The counting filter of older builds: one slot a source ([`filter_block_v1`]). Read and written
/// by user space only while its program is still attached (an upgrade, until the daemon's
/// start replaces it); the installer unpins it then.
pub const MAP_LEASE_FILTER_V1: &str = "LEASE_FILTER";
/// The bits of [`MAP_LEASE_FILTER_V1`], as older programs read them (absent before them: those
/// read the counters).
pub const MAP_LEASE_BITS_V1: &str = "LEASE_BITS";
/// Name of the per-CPU cache of sources that recently passed, [`CACHE_SLOTS`] [`CachedLease`]s
/// per CPU, indexed by [`cache_slot`]. Written only by the program, each CPU its own copy.
pub const MAP_LEASE_CACHE: &str = "LEASE_CACHE";
/// Name of the cache epoch: one `u32` that user space bumps after it removes or replaces a lease,
/// which makes every cached entry stale at once.
pub const MAP_CACHE_EPOCH: &str = "CACHE_EPOCH";
/// Name of the program's load-time constant that turns the cache on (1, what the daemon loads) or
/// off (0: only the benchmark, to measure the path behind it).
pub const GLOBAL_LEASE_CACHE_ON: &str = "LEASE_CACHE_ON";
/// Name of this host's own addresses as XDP looks them up, [`LOCAL_SLOTS`] [`LocalAddr`]s indexed
/// by [`local_slot`]: a packet to a gated port number not addressed here is transit, passed
/// unless its gate guards transit too. Written only by user space (from rtnetlink).
pub const MAP_LOCAL_ADDRS: &str = "LOCAL_ADDRS";
/// Name of the per-gate options, `u32` flags indexed by gate id ([`GATE_TRANSIT`]); index 0 holds
/// [`LOCAL_TABLE_READY`].
pub const MAP_GATE_OPTIONS: &str = "GATE_OPTIONS";
/// Name of the trace switch (`gatectl trace`): one [`TraceFilter`]; while it is on and not past
/// its deadline, XDP writes a [`TraceEvent`] for every verdict on packets from its source. Off,
/// it costs every packet one load. Written only by user space.
pub const MAP_TRACE: &str = "TRACE";
/// Name of the ring buffer the traced verdicts go to, read by `gatectl trace`.
pub const MAP_TRACE_EVENTS: &str = "TRACE_EVENTS";
/// The ring buffer's size in bytes: ~5,000 events; a reader that falls behind loses the newest.
pub const TRACE_EVENTS_BYTES: u32 = 256 * 1024;
/// Name of the per-CPU verdict counters of the delivery backstop, laid out as [`MAP_STATS`].
pub const MAP_BACKSTOP_STATS: &str = "BACKSTOP_STATS";
/// Name of the program's load-time constant that makes XDP pass what it cannot parse on to the
/// stack and the backstop (1) instead of dropping it (0, the default).
pub const GLOBAL_UNPARSEABLE_PASSES: &str = "UNPARSEABLE_PASSES";
/// Name of the XDP program for interfaces whose frames start with an Ethernet header.
pub const PROGRAM_NAME: &str = "gate";
/// Name of the XDP program for layer-3 interfaces (tun, WireGuard, PPP, sit, ipip, GRE): the
/// packet starts with its IP header.
pub const PROGRAM_NAME_L3: &str = "gate_l3";
/// Name of the delivery backstop: a `cgroup_skb/ingress` program that judges every packet
/// delivered to a socket in the cgroups it is attached to, by the socket's own port.
pub const PROGRAM_NAME_BACKSTOP: &str = "backstop";

/// What an interface's packets start with, as far as the gate's parser cares: chosen per
/// interface by user space from its device type, and the XDP entry point that parses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// An Ethernet header (Ethernet, veth, bridge, bond, VLAN, VXLAN, loopback).
    Ethernet,
    /// The IP header itself: tun, WireGuard, PPP, ipip, ip6tnl, sit, GRE, raw IP.
    Ip,
}

impl Framing {
    /// The framing of a device type (`ARPHRD_*`), or `None` for one gate cannot parse.
    #[must_use]
    pub const fn of(device_type: u16) -> Option<Self> {
        match device_type {
            // ARPHRD_ETHER, ARPHRD_LOOPBACK
            1 | 772 => Some(Self::Ethernet),
            // ARPHRD_PPP, ARPHRD_RAWIP, ARPHRD_TUNNEL, ARPHRD_TUNNEL6, ARPHRD_SIT, ARPHRD_IPGRE,
            // ARPHRD_IP6GRE, ARPHRD_NONE
            512 | 519 | 768 | 769 | 776 | 778 | 823 | 65534 => Some(Self::Ip),
            _ => None,
        }
    }
}

/// Gate ids run from 1 to `MAX_GATES`; id 0 collects packets that belong to no gate.
pub const MAX_GATES: u32 = 64;
/// How many (protocol, port) pairs can be gated at once.
pub const MAX_GATED_PORTS: u32 = 256;
/// Default capacity of each lease map; the daemon sets the real one from its config.
pub const DEFAULT_LEASE_CAPACITY: u32 = 65_536;
/// Largest lease capacity per address family: the counting filter of both maps (8 counters per
/// lease, a power of two of words) must stay addressable by a `u32` slot index.
pub const MAX_LEASE_CAPACITY: u32 = 1 << 27;
/// Longest gate name, in bytes (stored NUL-padded in [`Gate::name`]).
pub const GATE_NAME_MAX: usize = 28;

/// `GATE_OPTIONS[gate]` flag: the gate also drops transit packets (a router gating forwarded
/// traffic); without it a packet not addressed to this host passes as [`Reason::Transit`].
pub const GATE_TRANSIT: u32 = 1;
/// `GATE_OPTIONS[0]` flag: `LOCAL_ADDRS` has been filled. Until then every packet counts as
/// addressed here (gated), so an empty table never opens anything.
pub const LOCAL_TABLE_READY: u32 = 1;
/// Slots in `LOCAL_ADDRS` (a power of two).
pub const LOCAL_SLOTS: u32 = 1024;
/// [`LocalAddr::state`]: no address of this host hashes here.
pub const LOCAL_EMPTY: u32 = 0;
/// [`LocalAddr::state`]: exactly the address in the slot.
pub const LOCAL_ONE: u32 = 1;
/// [`LocalAddr::state`]: several addresses (or one being rewritten): whatever hashes here counts
/// as addressed to this host.
pub const LOCAL_MANY: u32 = 2;

/// One slot of `LOCAL_ADDRS`. User space rewrites a slot so that each write changes either the
/// state or the address, never both: a reader that sees a half-written slot sees either the old
/// or the new meaning, or `LOCAL_MANY`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalAddr {
    /// The address as [`lease_hash`] words.
    pub words: [u32; 4],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u32,
    /// [`LOCAL_EMPTY`], [`LOCAL_ONE`] or [`LOCAL_MANY`].
    pub state: u32,
}

/// The `LOCAL_ADDRS` slot of an address.
#[inline(always)]
#[must_use]
pub const fn local_slot(family: u32, words: &[u32; 4]) -> u32 {
    (lease_hash(0, family, words) >> 32) as u32 & (LOCAL_SLOTS - 1)
}

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

/// Counters per word of the counting filter (either layout).
pub const FILTER_SLOTS_PER_WORD: u32 = 8;
/// A filter counter stops here and never goes down again (a slot that busy only costs lookups).
pub const FILTER_COUNTER_MAX: u8 = u8::MAX;

/// Words of a counting filter for lease maps holding `total_capacity` leases together: a power of
/// two with at least [`FILTER_SLOTS_PER_WORD`] slots per lease, so with both maps full at most
/// ~31% of slots are taken ([`FILTER_HASHES`] a lease, some shared).
#[must_use]
pub const fn filter_words(total_capacity: u32) -> u32 {
    let wanted = if total_capacity < 64 { 64 } else { total_capacity };
    match wanted.checked_next_power_of_two() {
        Some(words) => words,
        None => 1 << 31,
    }
}

/// The slot mask of a counting filter of `words` words (its largest power of two, were it not one).
#[must_use]
pub const fn filter_slot_mask(words: u32) -> u32 {
    if words == 0 {
        return 0;
    }
    let words = 1_u32 << (31 - words.leading_zeros());
    (words * FILTER_SLOTS_PER_WORD).wrapping_sub(1)
}

/// [`MAP_LEASE_BITS_SIZE`]'s one value: the size the programs read the bits at, and the count of
/// leases user space chooses it by.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BitsSize {
    /// Slots the programs read, minus one (a power of two minus one, at least 63): the
    /// `slot_mask` of [`filter_block`]. Zero until user space first sizes the bits: the programs
    /// then read block 0 for every source, and a lease whose bits are elsewhere is dropped (fail
    /// closed) until they are sized (the installer does so before it attaches a program).
    pub slot_mask: u32,
    /// Always zero (room for the layout to grow without a new map).
    pub reserved: u32,
    /// Leases counted in the filter (each up before its lease is written, down after it is gone).
    pub leases: u64,
}

/// The fewest slots the bits are read at (2 KiB of bits: in the first-level cache).
pub const BITS_MIN_SLOTS: u64 = 1 << 14;
/// Slots a lease is given when the bits are sized ([`bits_slots_for`]): between 32 and 64.
const BITS_SLOTS_PER_LEASE: u64 = 32;

/// The slots to read the bits at for `leases` leases, when the counters have `counter_slots`
/// (a power of two): at least [`BITS_SLOTS_PER_LEASE`] a lease, never fewer than
/// [`BITS_MIN_SLOTS`] nor more than the counters.
#[must_use]
pub const fn bits_slots_for(leases: u64, counter_slots: u64) -> u64 {
    let wanted = match leases.saturating_mul(BITS_SLOTS_PER_LEASE).checked_next_power_of_two() {
        Some(slots) => slots,
        None => u64::MAX,
    };
    let wanted = if wanted < BITS_MIN_SLOTS { BITS_MIN_SLOTS } else { wanted };
    if wanted > counter_slots { counter_slots } else { wanted }
}

/// Whether bits read at `slots` slots should be sized again for `leases` leases, and to what:
/// when a lease has fewer than 16 slots (strangers would find their bits set too often) or more
/// than 128 (the bits are larger than they need be). Between the two, nothing: a gateway whose
/// leases come and go around one count does not resize on every change.
#[must_use]
pub const fn bits_resize(leases: u64, slots: u64, counter_slots: u64) -> Option<u64> {
    let wanted = bits_slots_for(leases, counter_slots);
    let crowded = leases.saturating_mul(16) > slots;
    let sparse = leases.saturating_mul(128) < slots;
    if wanted != slots && (crowded || sparse) { Some(wanted) } else { None }
}

/// The block of the bits read at `bits_slot_mask` that a block of the counters (as
/// [`filter_block`] places it under the counters' own slot mask) folds into: the same, modulo
/// the blocks read. Every slot keeps its place in its block, so a source's bits are where
/// [`filter_block`] puts them under `bits_slot_mask`.
#[inline(always)]
#[must_use]
pub const fn fold_block(counter_block: u32, bits_slot_mask: u32) -> u32 {
    counter_block & (bits_slot_mask >> 6)
}

/// Cache entries per CPU (a power of two).
pub const CACHE_SLOTS: u32 = 4096;
/// How long a cache entry stands, in jiffies: at most 160 ms (at the smallest tick rate, 100 Hz).
pub const CACHE_TTL_JIFFIES: u64 = 16;
/// A lease is cached only while both its deadlines are at least this far ahead, which is more
/// than [`CACHE_TTL_JIFFIES`] at any tick rate: a cached entry can never outlive its lease.
pub const CACHE_MIN_REMAINING_NS: u64 = 250_000_000;

/// Address family tag folded into [`lease_hash`] and [`CachedLease::tag`].
pub const FAMILY_V4: u32 = 4;
/// See [`FAMILY_V4`].
pub const FAMILY_V6: u32 = 6;

/// The hash that places a (gate, source) in the filter and the cache. `words` is the address as
/// native-endian `u32`s (one for IPv4, four for IPv6): kernel and user space run on one machine.
/// A multiply-xorshift mix: cheap in the program, and only ever a hint (collisions cost a lookup).
#[inline(always)]
#[must_use]
pub const fn lease_hash(gate: u32, family: u32, words: &[u32; 4]) -> u64 {
    let mut x = ((family as u64) << 32 | gate as u64).wrapping_mul(HASH_K);
    // An IPv4 address (three zero words): `((x ^ w) * K ^ 0) * K ^ 0 ...` is `(x ^ w) * K^4`,
    // multiplication modulo 2^64 being associative. One multiply on the packet's critical path
    // instead of four, the same hash.
    if (words[1] | words[2] | words[3]) == 0 {
        x = (x ^ words[0] as u64).wrapping_mul(HASH_K4);
        return x ^ (x >> 29);
    }
    x = (x ^ words[0] as u64).wrapping_mul(HASH_K);
    x = (x ^ words[1] as u64).wrapping_mul(HASH_K);
    x = (x ^ words[2] as u64).wrapping_mul(HASH_K);
    x = (x ^ words[3] as u64).wrapping_mul(HASH_K);
    x ^ (x >> 29)
}

/// [`lease_hash`]'s multiplier.
const HASH_K: u64 = 0x9E37_79B9_7F4A_7C15;
/// [`HASH_K`] to the fourth power, modulo 2^64.
const HASH_K4: u64 = HASH_K.wrapping_mul(HASH_K).wrapping_mul(HASH_K).wrapping_mul(HASH_K);

/// An address as [`lease_hash`] words: IPv4 in the first word, the rest zero.
#[inline(always)]
#[must_use]
pub const fn v4_words(addr: [u8; 4]) -> [u32; 4] {
    [u32::from_ne_bytes(addr), 0, 0, 0]
}

/// See [`v4_words`].
#[inline(always)]
#[must_use]
pub const fn v6_words(addr: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]),
        u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]),
        u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]),
        u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]),
    ]
}

/// The address of [`v6_words`], in network order: the key of its lease.
#[inline(always)]
#[must_use]
pub const fn v6_bytes(words: &[u32; 4]) -> [u8; 16] {
    let [a, b, c, d] = [words[0].to_ne_bytes(), words[1].to_ne_bytes(), words[2].to_ne_bytes(), words[3].to_ne_bytes()];
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3]]
}

/// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as [`v6_words`]), as
/// the first of its [`v4_words`], if it is one. The program judges such a source as the IPv4 host
/// it names, and user space stores its lease as that IPv4 lease, so both sides agree on one key
/// for one host. On words, not bytes: the program holds an address as its words.
#[inline(always)]
#[must_use]
pub const fn v4_mapped(words: &[u32; 4]) -> Option<u32> {
    if words[0] == 0 && words[1] == 0 && words[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff]) {
        Some(words[3])
    } else {
        None
    }
}

/// Slots a source counts in, in [`MAP_LEASE_FILTER`]: three, all in one block of 64 (one word of
/// its bits, so the program reads one word). Against one slot a source, at one lease for 16 slots
/// (a full map of one family) a stranger's slots are all taken ~0.7% of the time instead of ~13%
/// (measured with a block of consecutive IPv4 leases), so far fewer strangers pay the lookup.
pub const FILTER_HASHES: u32 = 3;

/// An odd constant that mixes [`lease_hash`] again for the block's second and third slots, so
/// they do not follow from the first.
const FILTER_SPREAD: u64 = 0xD6E8_FEB8_6659_FD93;

/// Where `hash` counts in the filter under `slot_mask` (slots - 1): the block (the index of its
/// word of bits) and its slots in the block, as bits: the slot of the one-slot layout
/// ([`filter_block_v1`]) and [`FILTER_HASHES`] - 1 more (fewer where two coincide). The filter
/// may hold the source only if every one of them is set.
#[inline(always)]
#[must_use]
pub const fn filter_block(hash: u64, slot_mask: u32) -> (u32, u64) {
    let (block, first) = filter_block_v1(hash, slot_mask);
    let spread = hash.wrapping_mul(FILTER_SPREAD);
    (block, first | 1 << (spread >> 58) | 1 << ((spread >> 52) & 63))
}

/// [`filter_block`] of the older layout ([`MAP_LEASE_FILTER_V1`]): one slot a source.
#[inline(always)]
#[must_use]
pub const fn filter_block_v1(hash: u64, slot_mask: u32) -> (u32, u64) {
    let slot = (hash >> 32) as u32 & slot_mask;
    (slot / 64, 1 << (slot % 64))
}

/// The counter of slot `bit` of `block`: (word index in the counters, byte shift in the word).
#[inline(always)]
#[must_use]
pub const fn filter_counter(block: u32, bit: u32) -> (u32, u32) {
    let slot = block * 64 + bit;
    (slot / FILTER_SLOTS_PER_WORD, (slot % FILTER_SLOTS_PER_WORD) * 8)
}

/// Words of the bits beside a counting filter of `filter_words` words.
#[must_use]
pub const fn bits_words(filter_words: u32) -> u32 {
    let words = filter_words / 8;
    if words == 0 { 1 } else { words }
}

/// The `LEASE_BITS_V2` byte of a `LEASE_FILTER_V2` word: bit `i` set while counter `i` is not zero.
#[must_use]
pub const fn nonzero_counters(word: u64) -> u8 {
    let mut byte = 0;
    let mut i = 0;
    while i < FILTER_SLOTS_PER_WORD {
        if filter_count(word, i * 8) != 0 {
            byte |= 1 << i;
        }
        i += 1;
    }
    byte
}

/// The counter at `shift` (from [`filter_counter`]) in a filter word.
#[inline(always)]
#[must_use]
pub const fn filter_count(word: u64, shift: u32) -> u8 {
    (word >> shift) as u8
}

/// `word` with its counter at `shift` set to `count`.
#[inline(always)]
#[must_use]
pub const fn with_filter_count(word: u64, shift: u32, count: u8) -> u64 {
    (word & !(0xff << shift)) | ((count as u64) << shift)
}

/// The cache slot of `hash`.
#[inline(always)]
#[must_use]
pub const fn cache_slot(hash: u64) -> u32 {
    hash as u32 & (CACHE_SLOTS - 1)
}

/// A source that passed a gate moments ago, in one CPU's `LEASE_CACHE`. It stands for its lease
/// while `jiffies < valid_until` and `epoch` is the current `CACHE_EPOCH`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedLease {
    /// `FAMILY << 16 | gate`; 0 = empty.
    pub tag: u32,
    /// `CACHE_EPOCH` when the entry was written.
    pub epoch: u32,
    /// The source, as [`lease_hash`] words.
    pub words: [u32; 4],
    /// The jiffy from which on the entry is stale.
    pub valid_until: u64,
}

/// The trace switch (`TRACE[0]`): which source to trace, and until when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceFilter {
    /// 0: off. Otherwise the process that traces (`gatectl trace`), so a second one can name it.
    pub pid: u32,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u32,
    /// The source, as [`lease_hash`] words.
    pub words: [u32; 4],
    /// The coarse clock's time (`bpf_ktime_get_coarse_ns`) after which the switch counts as off:
    /// the tracer pushes it forward while it runs, so a killed tracer stops costing anything.
    pub until_ns: u64,
}

/// A traced verdict, as XDP writes it to `TRACE_EVENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceEvent {
    /// The coarse clock's time of the verdict.
    pub at_ns: u64,
    /// The interface the packet arrived on.
    pub ifindex: u32,
    /// The gate (0: none).
    pub gate: u32,
    /// The [`Reason`] as its number.
    pub reason: u32,
    /// The transport protocol (6, 17), 0 when the packet carried no port.
    pub protocol: u8,
    pub _pad: u8,
    /// The destination port, network byte order (0 when none).
    pub port: [u8; 2],
}

/// [`CachedLease::tag`] of a gate and family.
#[inline(always)]
#[must_use]
pub const fn cache_tag(gate: u32, family: u32) -> u32 {
    family << 16 | gate
}

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
    /// To a gated port number of another host (forwarded through this one), from a source
    /// without a live lease: passed, since the gate guards this host's ports, unless the gate
    /// guards transit too.
    Transit = 7,
    /// As [`Reason::DroppedUnparseable`], but passed on to the stack, where the delivery backstop
    /// judges it at the socket (`[xdp] unparseable = "pass"`).
    PassedUnparseable = 8,
}

/// Number of [`Reason`] variants.
pub const NUM_REASONS: u32 = 9;

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
        Self::Transit,
        Self::PassedUnparseable,
    ];

    /// Whether packets with this reason are dropped. Exhaustive on purpose: a reason added later
    /// needs a verdict to compile.
    #[inline(always)]
    #[must_use]
    pub const fn drops(self) -> bool {
        match self {
            Self::DroppedNoLease | Self::DroppedExpired | Self::DroppedIdle | Self::DroppedUnparseable => true,
            Self::NotGated | Self::PassedLease | Self::Fragment | Self::Transit | Self::PassedUnparseable => false,
        }
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
            Self::Transit => "transit",
            Self::PassedUnparseable => "passed_unparseable",
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
    unsafe impl aya::Pod for super::CachedLease {}
    unsafe impl aya::Pod for super::LocalAddr {}
    unsafe impl aya::Pod for super::TraceFilter {}
    unsafe impl aya::Pod for super::TraceEvent {}
    unsafe impl aya::Pod for super::BitsSize {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::net::Ipv6Addr;

    use super::{
        BITS_MIN_SLOTS, bits_resize, bits_slots_for, filter_block, fold_block, lease_hash, v4_mapped, v4_words,
        v6_bytes, v6_words,
    };

    /// The hash as the filters pinned by every earlier build placed sources: one multiply a word.
    fn lease_hash_chain(gate: u32, family: u32, words: &[u32; 4]) -> u64 {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut x = (u64::from(family) << 32 | u64::from(gate)).wrapping_mul(K);
        for &word in words {
            x = (x ^ u64::from(word)).wrapping_mul(K);
        }
        x ^ (x >> 29)
    }

    #[test]
    fn the_hash_s_ipv4_shortcut_places_every_source_where_the_full_chain_did() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u32
        };
        for i in 0..200_000_u32 {
            let gate = next() % 65;
            let family = if i % 2 == 0 { 4 } else { 6 };
            // Every shape of words: an IPv4 address, an IPv6 one with some words zero, all zero,
            // all ones, and the shortcut's edge (only the last word set).
            let shape = i % 6;
            let words = match shape {
                0 => [next(), 0, 0, 0],
                1 => [next(), next(), next(), next()],
                2 => [0, 0, 0, 0],
                3 => [u32::MAX; 4],
                4 => [next(), 0, 0, next() & 1],
                _ => [next() & 0xff, (next() & 1) * next(), (next() & 1) * next(), (next() & 1) * next()],
            };
            assert_eq!(
                lease_hash(gate, family, &words),
                lease_hash_chain(gate, family, &words),
                "{gate} {family} {words:?}"
            );
        }
    }

    #[test]
    fn a_source_s_bits_at_a_smaller_size_are_where_its_counters_fold() {
        let counter_mask = (1_u32 << 24) - 1;
        for i in 0..100_000_u32 {
            let hash = lease_hash(1 + i % 3, 4, &v4_words(i.wrapping_mul(2_654_435_761).to_be_bytes()));
            let (block, bits) = filter_block(hash, counter_mask);
            for log2 in 6..=24 {
                let mask = (1_u32 << log2) - 1;
                assert_eq!(filter_block(hash, mask), (fold_block(block, mask), bits), "hash {hash:#x}, 2^{log2} slots");
            }
        }
    }

    #[test]
    fn the_bits_resize_a_few_times_from_none_to_a_million_leases_and_back() {
        let counter_slots = 1_u64 << 24;
        let mut slots = bits_slots_for(0, counter_slots);
        assert_eq!(slots, BITS_MIN_SLOTS);
        let mut resizes = 0;
        for leases in (0..=1_000_000_u64).chain((0..1_000_000).rev()) {
            if let Some(next) = bits_resize(leases, slots, counter_slots) {
                slots = next;
                resizes += 1;
            }
            assert!(slots >= 16 * leases || slots == counter_slots, "{leases} leases crowd {slots} slots");
            assert!(slots <= 128 * leases.max(1) || slots == BITS_MIN_SLOTS, "{leases} leases in {slots} slots");
        }
        assert_eq!(slots, BITS_MIN_SLOTS);
        assert!(resizes <= 20, "{resizes} resizes");
        // Leases coming and going around a size's edge resize it once, not on every change.
        let edge = slots / 16;
        let mut flips = 0;
        for leases in [edge + 1, edge, edge + 1, edge, edge - 1, edge + 1].repeat(10) {
            if let Some(next) = bits_resize(leases, slots, counter_slots) {
                slots = next;
                flips += 1;
            }
        }
        assert_eq!(flips, 1);
    }

    #[test]
    fn an_ipv4_mapped_address_names_the_ipv4_host_and_no_other_does() {
        let cases = [
            "::ffff:192.0.2.7",
            "::ffff:0.0.0.0",
            "::ffff:255.255.255.255",
            "::192.0.2.7",
            "::fffe:192.0.2.7",
            "::1:ffff:192.0.2.7",
            "1::ffff:192.0.2.7",
            "64:ff9b::192.0.2.7",
            "2001:db8::1",
            "::",
            "::1",
        ];
        for text in cases {
            let addr: Ipv6Addr = text.parse().expect("an IPv6 address");
            let expected = addr.to_ipv4_mapped().map(|v4| v4_words(v4.octets())[0]);
            assert_eq!(v4_mapped(&v6_words(addr.octets())), expected, "{text}");
        }
    }

    #[test]
    fn an_ipv6_address_survives_its_words() {
        let addr: Ipv6Addr = "2001:db8:1:2:3:4:5:6".parse().expect("an IPv6 address");
        assert_eq!(v6_bytes(&v6_words(addr.octets())), addr.octets());
    }
}
