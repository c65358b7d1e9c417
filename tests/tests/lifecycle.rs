//! The daemon killed, stopped and restarted: the gate stays closed to strangers throughout,
//! leases keep working, and expiry happens while the daemon is down.
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use gate_tests::{
    bed::{CLIENT_V4, CLIENT_V6, STRANGER_V4, STRANGER_V6, TestBed},
    daemon::{Daemon, gatectl_in_ok, gatectl_ok},
    loaded::pin_older_filter,
    probe::{Listeners, Outcome, udp, udp_within},
};

const GATED: u16 = 1194;

fn to(source: IpAddr) -> SocketAddr {
    SocketAddr::new(TestBed::gateway_addr(source), GATED)
}

/// Probes the gated port from both stranger addresses until stopped, counting any reply.
struct StrangerWatch {
    stop: Arc<AtomicBool>,
    replies: Arc<AtomicU32>,
    probes: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StrangerWatch {
    fn start(bed: &TestBed) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(AtomicU32::new(0));
        let probes = Arc::new(AtomicU32::new(0));
        let client = bed.client.handle();
        let (s, r, p) = (Arc::clone(&stop), Arc::clone(&replies), Arc::clone(&probes));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for stranger in [IpAddr::from(STRANGER_V4), IpAddr::from(STRANGER_V6)] {
                    if udp_within(&client, stranger, to(stranger), Duration::from_millis(50)) != Outcome::Silence {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                    p.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Self { stop, replies, probes, thread: Some(thread) }
    }

    /// Stops watching; returns (probes sent, replies seen).
    fn finish(mut self) -> (u32, u32) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("watch thread");
        }
        (self.probes.load(Ordering::Relaxed), self.replies.load(Ordering::Relaxed))
    }
}

#[test]
fn kill_stop_and_restart_never_open_the_gate_to_strangers() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    let daemon = Daemon::start(&bed, &config);
    let pins = bed.pin_dir.0.clone();
    let client = IpAddr::from(CLIENT_V4);
    let short_lived = IpAddr::from(CLIENT_V6);
    gatectl_ok(&pins, &["allow", &client.to_string(), "--gate", "vpn", "--ttl", "1h"]);
    gatectl_ok(&pins, &["allow", &short_lived.to_string(), "--gate", "vpn", "--ttl", "2s"]);
    let watch = StrangerWatch::start(&bed);

    daemon.kill9();
    assert_eq!(udp(&bed.client, client, to(client)), Outcome::Reply, "lease works with the daemon dead");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        udp(&bed.client, short_lived, to(short_lived)),
        Outcome::Silence,
        "a lease expires with the daemon dead"
    );

    let daemon = Daemon::start(&bed, &config);
    assert!(daemon.log().contains("took over the pinned state"), "{}", daemon.log());
    assert_eq!(udp(&bed.client, client, to(client)), Outcome::Reply, "lease survives the restart");

    let log = daemon.stop();
    assert!(log.contains("stays attached and closed"), "{log}");
    assert_eq!(udp(&bed.client, client, to(client)), Outcome::Reply, "lease works after a clean stop");

    let daemon = Daemon::start(&bed, &config);
    assert_eq!(udp(&bed.client, client, to(client)), Outcome::Reply, "and after the second restart");
    drop(daemon);

    let (probes, replies) = watch.finish();
    assert!(probes >= 10, "the watch kept probing ({probes} probes)");
    assert_eq!(replies, 0, "a stranger got {replies} replies from the gated port in {probes} probes");
}

/// An upgrade from a build whose filter had one slot a source (`LEASE_FILTER`, `LEASE_BITS`):
/// the daemon's start makes this build's filter, counts the leases from before in it, and unpins
/// the older one, which no program reads any more (an older `gatectl` then refuses the gate).
#[test]
fn an_upgrade_from_the_one_slot_filter_keeps_every_lease_and_unpins_the_older_filter() {
    use gate_common::{MAP_LEASE_BITS_V1, MAP_LEASE_FILTER_V1};
    upgrade_keeps_every_lease_and_unpins_the_older_filter(
        gate_maps::FilterLayout::OneSlot,
        &[MAP_LEASE_FILTER_V1, MAP_LEASE_BITS_V1],
    );
}

/// The same from a build whose bits were one a counter (`LEASE_FILTER_V2`, `LEASE_BITS_V2`),
/// read at a size fixed when its program was loaded.
#[test]
fn an_upgrade_from_bits_one_a_counter_keeps_every_lease_and_unpins_the_older_filter() {
    use gate_common::{MAP_LEASE_BITS_V2, MAP_LEASE_FILTER_V2};
    upgrade_keeps_every_lease_and_unpins_the_older_filter(
        gate_maps::FilterLayout::Block,
        &[MAP_LEASE_FILTER_V2, MAP_LEASE_BITS_V2],
    );
}

fn upgrade_keeps_every_lease_and_unpins_the_older_filter(older: gate_maps::FilterLayout, unpinned: &[&str]) {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    let pins = bed.pin_dir.0.clone();
    let dir = gate_maps::PinDir::new(&pins);
    let client = IpAddr::from(CLIENT_V4);
    let stranger = IpAddr::from(STRANGER_V4);
    Daemon::start(&bed, &config).stop();
    // The pin directory as the older build leaves it: its filter, counted, and not this one's.
    // (The program still attached keeps reading the maps it holds.)
    let (capacity, _) = gate_maps::GateState::open(&pins).unwrap().capacity();
    pin_older_filter(&dir, capacity, older);
    gatectl_ok(&pins, &["allow", &client.to_string(), "--gate", "vpn", "--ttl", "1h"]);

    let daemon = Daemon::start(&bed, &config);
    assert!(daemon.log().contains("an older build's filter, read by no program now: unpinned"), "{}", daemon.log());
    for map in unpinned {
        assert!(!dir.map(map).exists(), "{map} unpinned");
    }
    assert_eq!(udp(&bed.client, client, to(client)), Outcome::Reply, "the lease from before passes");
    assert_eq!(udp(&bed.client, stranger, to(stranger)), Outcome::Silence, "a stranger does not");
    let later = IpAddr::from(CLIENT_V6);
    gatectl_ok(&pins, &["allow", &later.to_string(), "--gate", "vpn", "--ttl", "1h"]);
    assert_eq!(udp(&bed.client, later, to(later)), Outcome::Reply, "a lease granted after the upgrade passes");
    // The operator sees the bits the program reads sized for the two leases: the fewest, 2 KiB.
    let status = gatectl_in_ok(&bed.gateway, &pins, &["status"]);
    assert!(status.contains("lease filter: 2 KiB of bits read, sized for 2 leases\n"), "{status}");
    drop(daemon);
}

#[test]
fn teardown_is_the_only_way_to_open_the_port() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    let stranger = IpAddr::from(STRANGER_V4);
    Daemon::start(&bed, &config).stop();
    assert_eq!(udp(&bed.client, stranger, to(stranger)), Outcome::Silence, "closed after the daemon stopped");
    let out = gatectl_ok(&bed.pin_dir.0, &["teardown"]);
    assert!(out.contains(&format!("detached from {}", bed.gateway_if)), "{out}");
    assert!(!bed.pin_dir.0.exists(), "the pin dir is gone");
    assert_eq!(udp(&bed.client, stranger, to(stranger)), Outcome::Reply, "open once the gate is removed");
}

#[test]
fn the_sweeper_deletes_closed_leases() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "[leases]\nsweep_interval = \"1s\"\n");
    let daemon = Daemon::start(&bed, &config);
    let pins = &bed.pin_dir.0;
    gatectl_ok(pins, &["allow", "192.0.2.2", "--gate", "vpn", "--ttl", "1s"]);
    gatectl_ok(pins, &["allow", "192.0.2.40", "--gate", "vpn", "--ttl", "1h"]);
    // Closed at 1 s, kept one sweep interval for the counters, deleted by the next sweep.
    std::thread::sleep(Duration::from_millis(3500));
    let leases: serde_json::Value = serde_json::from_str(&gatectl_ok(pins, &["leases", "--json"])).unwrap();
    let addresses: Vec<_> =
        leases.as_array().unwrap().iter().map(|l| l["address"].as_str().unwrap().to_owned()).collect();
    assert_eq!(addresses, ["192.0.2.40"], "only the live lease is left");
    assert!(daemon.log().contains("swept 1 closed leases"), "{}", daemon.log());
}

/// A sweep takes a second or more of CPU at a million leases: it runs on a thread of its own at
/// nice 19, so that on a host under a flood it yields the core to packet processing.
#[test]
fn the_sweep_runs_on_its_own_thread_at_the_lowest_priority() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "[leases]\ncapacity = 250000\nsweep_interval = \"1s\"\n");
    let daemon = Daemon::start(&bed, &config);
    // Enough leases that a sweep lasts long enough to be seen (a tenth of a second or so).
    let mut state = gate_maps::GateState::open(&bed.pin_dir.0).unwrap();
    let vpn = state.gate_id("vpn").unwrap();
    let addrs: Vec<IpAddr> =
        (0..200_000_u32).map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a40_0000 + i))).collect();
    state.grant_all(vpn, &addrs, gate_tests::loaded::hour_lease()).unwrap();

    let pid = daemon.pid().as_raw();
    let nice_of = |task: &std::path::Path| -> Option<(String, i64)> {
        let comm = std::fs::read_to_string(task.join("comm")).ok()?;
        let stat = std::fs::read_to_string(task.join("stat")).ok()?;
        // After the ")" closing the name: state is field 0, nice field 16.
        let nice = stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()?;
        Some((comm.trim().to_owned(), nice))
    };
    // The thread has its name before its first instruction lowers its priority: a look in
    // between sees it at 0, so the test waits for it at 19 (the sweep itself lasts ~100 ms).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let sweeps: Vec<i64> = tasks
            .flatten()
            .filter_map(|t| nice_of(&t.path()))
            .filter(|(comm, _)| comm == "gate-sweep")
            .map(|t| t.1)
            .collect();
        if sweeps.contains(&19) {
            break;
        }
        seen.extend(sweeps);
        assert!(
            std::time::Instant::now() < deadline,
            "no gate-sweep thread at nice 19 in 10 s (seen at nice {seen:?})"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let (_, main_nice) = nice_of(std::path::Path::new(&format!("/proc/{pid}/task/{pid}"))).unwrap();
    assert_eq!(main_nice, 0, "the rest of the daemon keeps its priority");
    daemon.stop();
}
