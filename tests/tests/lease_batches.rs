//! Leases by the thousand (batched reads and writes, `gate_maps::batch`) through the real program
//! with `BPF_PROG_TEST_RUN`: every lease is read once, a bulk grant opens all or none, a sweep and
//! a revoke remove exactly what they should, and the filter in front of the maps (docs/
//! architecture.md, "Fast paths") counts exactly the leases there are after each, so no leased
//! source is dropped and no removed one costs more than a lookup.
use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use gate_common::{MAP_LEASE_FILTER, filter_count};
use gate_maps::{GateState, Protocol, StateError, clock, lease::ttl_lease};
use gate_tests::{
    frames::Frame,
    loaded::{LoadedGate, XDP_DROP, XDP_PASS, assert_bits_follow_counters, closed_lease, hour_lease, pinned_u64_array},
};

const PORT: u16 = 1194;

/// `count` IPv4 addresses from 10.`block`.0.0 on.
fn v4s(block: u8, count: u32) -> Vec<IpAddr> {
    (0..count).map(|i| IpAddr::from([10, block, (i >> 8) as u8, i as u8])).collect()
}

/// `count` IPv6 addresses in 2001:db8:`block`::/64.
fn v6s(block: u16, count: u32) -> Vec<IpAddr> {
    (0..count).map(|i| IpAddr::from([0x2001, 0xdb8, block, 0, 0, 0, (i >> 16) as u16, i as u16])).collect()
}

fn passes(gate: &mut LoadedGate, addr: IpAddr) -> bool {
    match gate.run(&Frame::udp(addr, PORT).bytes()) {
        XDP_PASS => true,
        XDP_DROP => false,
        other => panic!("{addr}: verdict {other}"),
    }
}

/// Every filter counter that holds a lease, or that a source in `gone` counts in, counts exactly
/// the leases there are in its slot, and the bits the program reads follow the counters.
fn assert_filter_exact(state: &GateState, gone: &[(u32, IpAddr)]) {
    let mut expected: BTreeMap<(u32, u32), u8> = BTreeMap::new();
    for lease in state.leases().unwrap() {
        for counter in state.filter_counters(lease.gate, lease.addr) {
            *expected.entry(counter).or_default() += 1;
        }
    }
    for &(gate, addr) in gone {
        for counter in state.filter_counters(gate, addr) {
            expected.entry(counter).or_default();
        }
    }
    let filter = pinned_u64_array(&state.pins().map(MAP_LEASE_FILTER));
    for ((word, shift), count) in expected {
        let actual = filter_count(filter.get(&word, 0).unwrap(), shift);
        assert_eq!(actual, count, "filter word {word} shift {shift}");
    }
    assert_bits_follow_counters(state);
}

#[test]
fn a_bulk_grant_writes_every_address_and_every_lease_is_read_once() {
    let mut gate = LoadedGate::new(&[("vpn", Protocol::Udp, PORT)], 20_000);
    let vpn = gate.state.gate_id("vpn").unwrap();
    let (v4, v6) = (v4s(1, 12_000), v6s(1, 6_000));
    let all: Vec<IpAddr> = v4.iter().chain(&v6).copied().collect();
    assert_eq!(gate.state.grant_all(vpn, &all, hour_lease()).unwrap(), 0, "nothing was there to replace");

    // Many read chunks (4,096 entries each) in both families: each lease once.
    let leases = gate.state.leases().unwrap();
    assert_eq!(leases.len(), all.len());
    let seen: HashSet<IpAddr> = leases.iter().map(|l| l.addr).collect();
    assert_eq!(seen, all.iter().copied().collect::<HashSet<_>>());
    let counts = gate.state.lease_counts(clock::now_ns()).unwrap();
    assert_eq!((counts.v4, counts.v6, counts.gates[&vpn].live, counts.gates[&vpn].closed), (12_000, 6_000, 18_000, 0));
    assert!(gate.state.has_v6_leases());

    for addr in [v4[0], v4[6_000], v4[11_999], v6[0], v6[5_999]] {
        assert!(passes(&mut gate, addr), "{addr} was granted");
    }
    assert!(!passes(&mut gate, "10.9.0.1".parse().unwrap()), "a stranger is not");
    assert_filter_exact(&gate.state, &[]);

    // The same list again replaces; the count says so, and nothing is counted twice.
    assert_eq!(gate.state.grant_all(vpn, &v4[..1_000], hour_lease()).unwrap(), 1_000);
    assert_eq!(gate.state.leases().unwrap().len(), all.len());
    assert_filter_exact(&gate.state, &[]);
}

#[test]
fn a_sweep_removes_exactly_the_dead_and_uncounts_them() {
    let mut gate = LoadedGate::new(&[("vpn", Protocol::Udp, PORT)], 20_000);
    let vpn = gate.state.gate_id("vpn").unwrap();
    let (dead_v4, dead_v6, live) = (v4s(2, 7_000), v6s(2, 2_000), v4s(3, 3_000));
    let doomed: Vec<IpAddr> = dead_v4.iter().chain(&dead_v6).copied().collect();
    gate.state.grant_all(vpn, &doomed, closed_lease()).unwrap();
    gate.state.grant_all(vpn, &live, hour_lease()).unwrap();

    // The sweep works on its own handle, as the daemon's does.
    let mut sweeper = GateState::open(gate.state.pins().root()).unwrap();
    assert_eq!(sweeper.sweep(clock::now_ns(), 0).unwrap(), doomed.len());
    let left: HashSet<IpAddr> = gate.state.leases().unwrap().iter().map(|l| l.addr).collect();
    assert_eq!(left, live.iter().copied().collect::<HashSet<_>>(), "only the live are left");
    assert_eq!(sweeper.sweep(clock::now_ns(), 0).unwrap(), 0, "a second sweep finds nothing");

    let gone: Vec<(u32, IpAddr)> = doomed.iter().map(|&a| (vpn, a)).collect();
    assert_filter_exact(&gate.state, &gone);
    for addr in [live[0], live[2_999]] {
        assert!(passes(&mut gate, addr), "{addr} is live");
    }
    for addr in [dead_v4[0], dead_v6[1_999]] {
        assert!(!passes(&mut gate, addr), "{addr} was swept");
    }
}

#[test]
fn revoking_an_address_closes_it_on_every_gate_and_nothing_else() {
    let mut gate = LoadedGate::new(&[("vpn", Protocol::Udp, PORT), ("admin", Protocol::Tcp, 22)], 4_096);
    let (vpn, admin) = (gate.state.gate_id("vpn").unwrap(), gate.state.gate_id("admin").unwrap());
    let others = v4s(4, 2_000);
    gate.state.grant_all(vpn, &others, hour_lease()).unwrap();
    let target: IpAddr = "192.0.2.77".parse().unwrap();
    gate.state.grant(vpn, target, hour_lease()).unwrap();
    gate.state.grant(admin, target, hour_lease()).unwrap();

    assert_eq!(gate.state.revoke(target, None).unwrap(), 2, "both gates' leases");
    assert_eq!(gate.state.revoke(target, None).unwrap(), 0, "nothing left to close");
    assert_eq!(gate.state.leases().unwrap().len(), others.len(), "the other leases stay");
    assert!(!passes(&mut gate, target));
    assert!(passes(&mut gate, others[1_999]));
    assert_filter_exact(&gate.state, &[(vpn, target), (admin, target)]);
}

#[test]
fn a_bulk_grant_a_full_map_refuses_opens_nothing_and_puts_back_what_it_replaced() {
    let mut gate = LoadedGate::new(&[("vpn", Protocol::Udp, PORT)], 1_000);
    let vpn = gate.state.gate_id("vpn").unwrap();
    let (held, closed, wanted) = (v4s(5, 600), v4s(6, 100), v4s(7, 500));
    let short = ttl_lease(clock::now_ns(), Duration::from_secs(60));
    gate.state.grant_all(vpn, &held, short).unwrap();
    gate.state.grant_all(vpn, &closed, closed_lease()).unwrap();

    // 50 held addresses (longer lease) and 500 new: the 100 closed are swept for room, and
    // still 200 do not fit.
    let list: Vec<IpAddr> = held[..50].iter().chain(&wanted).copied().collect();
    let error = gate.state.grant_all(vpn, &list, hour_lease()).unwrap_err();
    assert!(matches!(error, StateError::Full { capacity: 1_000, .. }), "{error}");

    let leases = gate.state.leases().unwrap();
    assert_eq!(leases.len(), held.len(), "none of the list was opened; the closed were swept");
    assert!(leases.iter().all(|l| l.lease == short), "every replaced lease was put back as it was");
    let gone: Vec<(u32, IpAddr)> = wanted.iter().chain(&closed).map(|&a| (vpn, a)).collect();
    assert_filter_exact(&gate.state, &gone);
    assert!(!passes(&mut gate, wanted[0]));
    assert!(passes(&mut gate, held[0]));
}
