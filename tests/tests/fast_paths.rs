//! The two fast paths in front of the lease maps (docs/architecture.md, "Fast paths"), through the
//! real program with `BPF_PROG_TEST_RUN`: the per-CPU cache of sources that passed and the
//! counting filter. Each test asserts what an operator would notice if a fast path lied: a source
//! that passes after its lease is gone, or a leased source that is dropped.
//!
//! The cache is per CPU, so every test pins its thread to one CPU: the second packet of a source
//! then really comes from the cache its first packet filled.
use std::{
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use gate_common::{
    BITS_MIN_SLOTS, Lease, MAP_LEASE_BITS, MAP_LEASE_BITS_SIZE, MAP_LEASE_BITS_V1, MAP_LEASE_BITS_V2, MAP_LEASE_FILTER,
    filter_block, filter_block_v1, lease_hash, v4_words,
};
use gate_maps::{FilterLayout, GateState, Protocol, clock, lease::ttl_lease};
use gate_tests::{
    frames::Frame,
    loaded::{
        LoadedGate, XDP_DROP, XDP_PASS, assert_bits_follow_counters, filter_cover, filter_twins, pin_older_filter,
        pinned_u64_array,
    },
};
use nix::{sched::CpuSet, unistd::Pid};

const PORT: u16 = 1194;
const LEASED: &str = "192.0.2.10";
const LEASED_V6: &str = "2001:db8::10";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

/// Keeps this thread on one CPU, so the per-CPU cache a packet fills is the one the next reads.
fn pin_to_one_cpu() {
    let current = nix::sched::sched_getaffinity(Pid::from_raw(0)).expect("read affinity");
    let cpu = (0..CpuSet::count()).find(|&c| current.is_set(c).unwrap_or(false)).expect("an allowed CPU");
    let mut one = CpuSet::new();
    one.set(cpu).expect("cpu index");
    nix::sched::sched_setaffinity(Pid::from_raw(0), &one).expect("pin to one CPU");
}

fn gate() -> (LoadedGate, u32) {
    pin_to_one_cpu();
    let gate = LoadedGate::new(&[("vpn", Protocol::Udp, PORT), ("vpn", Protocol::Tcp, PORT)], 1024);
    let id = gate.state.gate_id("vpn").unwrap();
    (gate, id)
}

fn hour() -> Lease {
    ttl_lease(clock::now_ns(), Duration::from_secs(3600))
}

/// Passes twice (the first fills the cache, the second is served by it).
fn assert_cached_pass(gate: &mut LoadedGate, addr: IpAddr) {
    let frame = Frame::udp(addr, PORT).bytes();
    assert_eq!(gate.run(&frame), XDP_PASS, "{addr}: first packet passes on its lease");
    assert_eq!(gate.run(&frame), XDP_PASS, "{addr}: second packet passes (from the cache)");
}

#[test]
fn a_cached_source_is_dropped_by_the_first_packet_after_each_kind_of_removal() {
    let (mut gate, vpn) = gate();
    for addr in [ip(LEASED), ip(LEASED_V6)] {
        let frame = Frame::udp(addr, PORT).bytes();

        gate.state.grant(vpn, addr, hour()).unwrap();
        assert_cached_pass(&mut gate, addr);
        assert!(gate.state.revoke_one(vpn, addr).unwrap());
        assert_eq!(gate.run(&frame), XDP_DROP, "{addr}: revoke_one");

        gate.state.grant(vpn, addr, hour()).unwrap();
        assert_cached_pass(&mut gate, addr);
        assert_eq!(gate.state.revoke(addr, None).unwrap(), 1);
        assert_eq!(gate.run(&frame), XDP_DROP, "{addr}: revoke on every gate");

        gate.state.grant(vpn, addr, hour()).unwrap();
        assert_cached_pass(&mut gate, addr);
        assert_eq!(gate.state.revoke_gate(vpn).unwrap().len(), 1);
        assert_eq!(gate.run(&frame), XDP_DROP, "{addr}: revoke the whole gate");

        // A lease replaced by one that has already ended: the cached copy must not outlive it.
        gate.state.grant(vpn, addr, hour()).unwrap();
        assert_cached_pass(&mut gate, addr);
        let now = clock::now_ns();
        let ended = Lease { expires_ns: now - 1, idle_deadline_ns: now - 1, idle_timeout_ns: 0 };
        gate.state.grant(vpn, addr, ended).unwrap();
        assert_eq!(gate.run(&frame), XDP_DROP, "{addr}: lease replaced by an ended one");
        gate.state.revoke(addr, None).unwrap();
    }
}

#[test]
fn a_cached_source_stops_passing_at_its_lease_deadline() {
    let (mut gate, vpn) = gate();
    let addr = ip(LEASED);
    let frame = Frame::udp(addr, PORT).bytes();
    let lease = ttl_lease(clock::now_ns(), Duration::from_millis(700));
    gate.state.grant(vpn, addr, lease).unwrap();
    let (mut passed, mut dropped_after) = (0, 0);
    let give_up = Instant::now() + Duration::from_secs(3);
    while dropped_after < 50 && Instant::now() < give_up {
        // The program reads the clock somewhere between these two instants.
        let sent_at = clock::now_ns();
        let verdict = gate.run(&frame);
        let done_at = clock::now_ns();
        if verdict == XDP_PASS {
            assert!(
                sent_at < lease.expires_ns,
                "passed {} ms after the lease's deadline",
                (sent_at - lease.expires_ns) / 1_000_000
            );
            passed += 1;
        } else if sent_at >= lease.expires_ns {
            dropped_after += 1;
        } else {
            assert!(
                done_at >= lease.expires_ns,
                "dropped {} ms before the deadline",
                (lease.expires_ns - done_at) / 1_000_000
            );
        }
        thread::sleep(Duration::from_micros(200));
    }
    assert!(passed > 100, "the source passed throughout its lease ({passed} packets)");
    assert_eq!(dropped_after, 50, "and is dropped once the deadline has passed");
}

#[test]
fn traffic_served_from_the_cache_still_keeps_an_idle_lease_alive() {
    let (mut gate, vpn) = gate();
    let addr = ip(LEASED);
    let frame = Frame::udp(addr, PORT).bytes();
    let now = clock::now_ns();
    // Idle after 1.5 s without traffic; the flow below runs for 4 s.
    let lease = Lease {
        expires_ns: now + 3_600_000_000_000,
        idle_deadline_ns: now + 1_500_000_000,
        idle_timeout_ns: 1_500_000_000,
    };
    gate.state.grant(vpn, addr, lease).unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        assert_eq!(gate.run(&frame), XDP_PASS, "a busy source never goes idle ({:?} in)", started.elapsed());
        thread::sleep(Duration::from_millis(5));
    }
    let stored = gate.state.leases().unwrap().into_iter().find(|l| l.addr == addr).unwrap().lease;
    assert!(stored.idle_deadline_ns > now + 4_000_000_000, "the lease's idle deadline followed the traffic");
    // Silence: the lease goes idle, and the cache does not keep it open.
    thread::sleep(Duration::from_millis(1_700));
    assert_eq!(gate.run(&frame), XDP_DROP, "idle after 1.5 s of silence");
}

#[test]
fn a_lease_passes_while_another_lease_sharing_its_filter_counter_comes_and_goes() {
    let (mut gate, vpn) = gate();
    let addr = ip(LEASED);
    let twins = filter_twins(&gate.state, vpn, addr, 2);
    gate.state.grant(vpn, addr, hour()).unwrap();
    for &twin in &twins {
        gate.state.grant(vpn, twin, hour()).unwrap();
        assert_cached_pass(&mut gate, twin);
    }
    for &twin in &twins {
        assert!(gate.state.revoke_one(vpn, twin).unwrap());
        assert_eq!(gate.run(&Frame::udp(twin, PORT).bytes()), XDP_DROP, "{twin}: revoked");
        assert_cached_pass(&mut gate, addr);
    }
    assert!(gate.state.revoke_one(vpn, addr).unwrap());
    assert_eq!(gate.run(&Frame::udp(addr, PORT).bytes()), XDP_DROP, "the last lease of the slot revoked");
}

#[test]
fn a_grant_refused_by_a_full_map_takes_no_count_from_the_leases_beside_it() {
    pin_to_one_cpu();
    let mut gate = LoadedGate::new(&[("vpn", Protocol::Udp, PORT)], 4);
    let vpn = gate.state.gate_id("vpn").unwrap();
    let addr = ip(LEASED);
    let twins = filter_twins(&gate.state, vpn, addr, 4);
    gate.state.grant(vpn, addr, hour()).unwrap();
    gate.state.grant_all(vpn, &twins[..3], hour()).unwrap();
    let refused = gate.state.grant(vpn, twins[3], hour()).unwrap_err();
    assert!(matches!(refused, gate_maps::StateError::Full { .. }), "{refused}");
    assert!(gate.state.revoke_one(vpn, twins[0]).unwrap());
    assert_cached_pass(&mut gate, addr);
    assert_eq!(gate.run(&Frame::udp(twins[3], PORT).bytes()), XDP_DROP, "the refused source stays out");
}

#[test]
fn a_saturated_filter_counter_never_drops_a_lease() {
    let (mut gate, vpn) = gate();
    let addr = ip(LEASED);
    // More leases in one slot than a counter can count.
    let twins = filter_twins(&gate.state, vpn, addr, 300);
    assert_eq!(twins.len(), 300);
    gate.state.grant(vpn, addr, hour()).unwrap();
    gate.state.grant_all(vpn, &twins, hour()).unwrap();
    for &twin in &twins {
        assert!(gate.state.revoke_one(vpn, twin).unwrap());
    }
    assert_cached_pass(&mut gate, addr);
}

#[test]
fn a_stranger_whose_filter_counters_leases_take_is_still_dropped() {
    let (mut gate, vpn) = gate();
    let stranger = ip("192.0.2.77");
    let cover = filter_cover(&gate.state, vpn, stranger);
    gate.state.grant_all(vpn, &cover, hour()).unwrap();
    for &addr in &cover {
        assert_cached_pass(&mut gate, addr);
    }
    // The filter cannot turn it away; the lease lookup does, every time.
    for _ in 0..3 {
        assert_eq!(gate.run(&Frame::udp(stranger, PORT).bytes()), XDP_DROP, "{stranger} holds no lease");
    }
}

#[test]
fn leases_from_before_the_filter_pass_once_it_is_rebuilt() {
    let (mut gate, vpn) = gate();
    let (v4, v6) = (ip(LEASED), ip(LEASED_V6));
    gate.state.grant_all(vpn, &[v4, v6], hour()).unwrap();
    let pins = gate.state.pins().clone();
    // A gate whose filter is new (none pinned before, as an upgrade from a build without one).
    for map in [MAP_LEASE_FILTER, MAP_LEASE_BITS, MAP_LEASE_BITS_SIZE] {
        std::fs::remove_file(pins.map(map)).unwrap();
    }
    let (capacity, _) = gate.state.capacity();
    let mut fresh = gate_daemon::program::load(&pins, capacity).expect("load with a new filter");
    let mut state = GateState::open(pins.root()).unwrap();
    assert_eq!(run_once(&mut fresh, v4), XDP_DROP, "an empty filter fails closed");
    assert_eq!(state.rebuild_filter().unwrap(), 2, "the rebuild counts both leases");
    assert_eq!(run_once(&mut fresh, v4), XDP_PASS, "IPv4 lease passes after the rebuild");
    assert_eq!(run_once(&mut fresh, v6), XDP_PASS, "IPv6 lease passes after the rebuild");
    assert_eq!(run_once(&mut fresh, ip("192.0.2.99")), XDP_DROP, "a stranger still does not");
}

#[test]
fn an_older_builds_one_slot_filter_is_kept_until_this_builds_is_loaded_and_rebuilt() {
    older_filter_is_kept_until_this_builds_is_loaded_and_rebuilt(FilterLayout::OneSlot);
}

#[test]
fn an_older_builds_one_bit_a_counter_filter_is_kept_until_this_builds_is_loaded_and_rebuilt() {
    older_filter_is_kept_until_this_builds_is_loaded_and_rebuilt(FilterLayout::Block);
}

fn older_filter_is_kept_until_this_builds_is_loaded_and_rebuilt(layout: FilterLayout) {
    let (gate, vpn) = gate();
    let pins = gate.state.pins().clone();
    let (capacity, _) = gate.state.capacity();
    // The pin directory as an older build left it: its filter under the older names beside its
    // leases; none of this build's.
    pin_older_filter(&pins, capacity, layout);
    let mut older = GateState::open(pins.root()).unwrap();
    assert_eq!(older.filter_layout(), layout);

    // This build's gatectl, before the daemon's restart: it counts where the older program reads.
    let (v4, v6) = (ip(LEASED), ip(LEASED_V6));
    older.grant_all(vpn, &[v4, v6], hour()).unwrap();
    let std::net::IpAddr::V4(octets) = v4 else { unreachable!() };
    let hash = lease_hash(vpn, gate_common::FAMILY_V4, &v4_words(octets.octets()));
    let mask = gate_common::filter_slot_mask(gate_common::filter_words(capacity * 2));
    let (bits_map, (block, bits)) = match layout {
        FilterLayout::OneSlot => (MAP_LEASE_BITS_V1, filter_block_v1(hash, mask)),
        _ => (MAP_LEASE_BITS_V2, filter_block(hash, mask)),
    };
    let found = pinned_u64_array(&pins.map(bits_map)).get(&block, 0).unwrap();
    assert_eq!(found & bits, bits, "the older program's bits of {v4} are set");
    drop(older);

    // The daemon's start: this build's filter is made, counted, and read.
    let mut loaded = gate_daemon::program::load(&pins, capacity).expect("load this build's program");
    let mut state = GateState::open(pins.root()).unwrap();
    assert_eq!(state.filter_layout(), FilterLayout::Sized, "this build's filter once it is pinned");
    assert_eq!(run_once(&mut loaded, v4), XDP_DROP, "a new filter fails closed until it is counted");
    assert_eq!(state.rebuild_filter().unwrap(), 2);
    for addr in [v4, v6] {
        assert_eq!(run_once(&mut loaded, addr), XDP_PASS, "{addr}: its lease from before passes");
    }
    assert_eq!(run_once(&mut loaded, ip("192.0.2.99")), XDP_DROP, "a stranger does not");
}

/// `count` IPv4 addresses from 10.`block`.0.0 on: a VPN pool's.
fn pool(block: u8, count: u32) -> Vec<IpAddr> {
    (0..count).map(|i| IpAddr::from([10, block, (i >> 8) as u8, i as u8])).collect()
}

/// `count` sources of a spoofed flood, spread over 100.64.0.0/10.
fn strangers(count: u32) -> impl Iterator<Item = IpAddr> {
    (0..count).map(|i| IpAddr::from((0x6440_0000 | (i.wrapping_mul(2_654_435_761) & 0x3F_FFFF)).to_be_bytes()))
}

/// A gate whose lease maps hold 65,536 a family (filter counters for 1,048,576 slots), so the bits
/// the program reads are far smaller than the counters while it holds a few leases; a second
/// gate beside it.
fn large_gate() -> (LoadedGate, u32, u32) {
    pin_to_one_cpu();
    let gate = LoadedGate::new(&[("vpn", Protocol::Udp, PORT), ("other", Protocol::Udp, PORT + 1)], 65_536);
    let (vpn, other) = (gate.state.gate_id("vpn").unwrap(), gate.state.gate_id("other").unwrap());
    (gate, vpn, other)
}

fn bits_slots(state: &GateState) -> u64 {
    u64::from(assert_bits_follow_counters(state).slot_mask) + 1
}

#[test]
fn the_filter_bits_follow_the_leases_held_and_every_lease_passes_at_each_size() {
    let (mut gate, vpn, _) = large_gate();
    let first = ip(LEASED);
    gate.state.grant(vpn, first, hour()).unwrap();
    assert_eq!(bits_slots(&gate.state), BITS_MIN_SLOTS, "one lease: the fewest slots, 2 KiB of bits");
    assert_eq!(gate.state.filter_bits_size().unwrap().unwrap().leases, 1);

    // 5,000 more: one lease for 16 slots is crowded; the bits grow to 32-64 slots a lease.
    let many = pool(1, 5_000);
    gate.state.grant_all(vpn, &many, hour()).unwrap();
    assert_eq!(bits_slots(&gate.state), 262_144);
    for &addr in many.iter().chain([&first]) {
        assert_eq!(gate.run(&Frame::udp(addr, PORT).bytes()), XDP_PASS, "{addr} holds a lease");
    }
    for stranger in strangers(2_000) {
        assert_eq!(gate.run(&Frame::udp(stranger, PORT).bytes()), XDP_DROP, "{stranger} holds none");
    }

    // All but ten go: the bits shrink back to the fewest slots on the way.
    for &addr in &many[10..] {
        assert!(gate.state.revoke_one(vpn, addr).unwrap());
    }
    assert_eq!(bits_slots(&gate.state), BITS_MIN_SLOTS);
    assert_eq!(gate.state.filter_bits_size().unwrap().unwrap().leases, 11);
    for &addr in many[..10].iter().chain([&first]) {
        assert_eq!(gate.run(&Frame::udp(addr, PORT).bytes()), XDP_PASS, "{addr} still holds its lease");
    }
    for &addr in &many[10..20] {
        assert_eq!(gate.run(&Frame::udp(addr, PORT).bytes()), XDP_DROP, "{addr}'s lease was revoked");
    }
}

#[test]
fn a_rebuild_counts_every_lease_exactly_as_the_grants_did() {
    let (mut gate, vpn, other) = large_gate();
    // Two gates, both families, many sources sharing counters.
    let v4 = pool(1, 5_000);
    let v6: Vec<IpAddr> = (0..600_u16).map(|i| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 7, i])).collect();
    gate.state.grant_all(vpn, &v4, hour()).unwrap();
    gate.state.grant_all(other, &v4[..1_000], hour()).unwrap();
    gate.state.grant_all(other, &v6, hour()).unwrap();
    let pins = gate.state.pins().clone();
    let mut counters = pinned_u64_array(&pins.map(MAP_LEASE_FILTER));
    let granted: Vec<u64> = counters.iter().map(Result::unwrap).collect();
    assert!(granted.iter().any(|&word| word.to_le_bytes().iter().any(|&count| count > 1)), "counters shared");

    // As the daemon's start finds a filter made new: every counter at zero.
    for (word, &value) in (0_u32..).zip(&granted) {
        if value != 0 {
            counters.set(word, 0, 0).unwrap();
        }
    }
    assert_eq!(gate.state.rebuild_filter().unwrap(), 6_600);
    let rebuilt: Vec<u64> = counters.iter().map(Result::unwrap).collect();
    let differ = granted.iter().zip(&rebuilt).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} counter words differ from what the grants counted");
    assert!(bits_slots(&gate.state) >= 32 * 6_600, "the bits sized for the leases counted");
    for &addr in &v4 {
        assert_eq!(gate.run(&Frame::udp(addr, PORT).bytes()), XDP_PASS, "{addr} holds a lease");
    }
    for &addr in v4[..1_000].iter().chain(&v6) {
        assert_eq!(gate.run(&Frame::udp(addr, PORT + 1).bytes()), XDP_PASS, "{addr} holds a lease on the other");
    }
    for stranger in strangers(2_000) {
        assert_eq!(gate.run(&Frame::udp(stranger, PORT).bytes()), XDP_DROP, "{stranger} holds none");
    }
}

#[test]
fn a_leased_source_passes_every_packet_while_the_bits_resize() {
    let (mut gate, vpn, other) = large_gate();
    let leased = ip(LEASED);
    gate.state.grant(vpn, leased, hour()).unwrap();
    // Without the cache, every packet reads the filter.
    let mut uncached = gate.without_cache();
    let state = &mut gate.state;
    let frame = Frame::udp(leased, PORT).bytes();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (runs, dropped) = thread::scope(|scope| {
        let runner = scope.spawn(|| {
            let (mut runs, mut dropped) = (0_u64, 0_u64);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                runs += 1;
                if gate_tests::loaded::run_repeat(&mut uncached, &frame, 1).0 != XDP_PASS {
                    dropped += 1;
                }
            }
            (runs, dropped)
        });
        // Another gate's leases come and go: the bits grow and shrink under the running program.
        for round in 0..4_u8 {
            state.grant_all(other, &pool(round, 5_000), hour()).unwrap();
            assert_eq!(bits_slots(state), 262_144, "round {round}: grown");
            assert_eq!(state.revoke_gate(other).unwrap().len(), 5_000);
            assert_eq!(bits_slots(state), BITS_MIN_SLOTS, "round {round}: shrunk");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        runner.join().unwrap()
    });
    assert!(runs > 1_000, "the program ran throughout ({runs} runs)");
    assert_eq!(dropped, 0, "{dropped} of {runs} packets of {leased} dropped while the bits resized");
}

fn run_once(loaded: &mut gate_daemon::program::Loaded, addr: IpAddr) -> u32 {
    gate_tests::loaded::run_repeat(loaded, &Frame::udp(addr, PORT).bytes(), 1).0
}
