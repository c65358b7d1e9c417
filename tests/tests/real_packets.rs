//! Real packets over veth between two network namespaces, the gate attached by the real daemon:
//! what a remote user sees on a gated and an ungated port, over UDP and TCP, IPv4 and IPv6.
use std::net::{IpAddr, SocketAddr};

use gate_tests::{
    bed::{CLIENT_V4, CLIENT_V6, STRANGER_V4, STRANGER_V6, TestBed},
    daemon::{Daemon, gatectl, gatectl_in, gatectl_ok},
    probe::{Listeners, Outcome, probe},
};

const GATED: u16 = 1194;
const UNGATED: u16 = 5353;
/// Gated, and nothing listens there.
const GATED_CLOSED: u16 = 1195;
/// Not gated, and nothing listens there.
const UNGATED_CLOSED: u16 = 5354;

fn to(source: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(TestBed::gateway_addr(source), port)
}

fn gated_bed() -> (TestBed, Daemon, Listeners) {
    let mut bed = TestBed::new();
    let config = bed.config(
        &[("vpn", "udp", GATED), ("vpn", "tcp", GATED), ("vpn", "udp", GATED_CLOSED), ("vpn", "tcp", GATED_CLOSED)],
        "",
    );
    let listeners = Listeners::start(&bed.gateway, &[GATED, UNGATED]);
    let daemon = Daemon::start(&bed, &config);
    (bed, daemon, listeners)
}

#[test]
fn without_a_lease_a_gated_port_is_silent_and_others_answer() {
    let (bed, _daemon, _listeners) = gated_bed();
    for source in [IpAddr::from(CLIENT_V4), IpAddr::from(CLIENT_V6)] {
        for protocol in ["udp", "tcp"] {
            let at = |port| probe(protocol, &bed.client, source, to(source, port));
            assert_eq!(at(GATED), Outcome::Silence, "{protocol} {source}: gated port with a listener");
            assert_eq!(
                at(GATED_CLOSED),
                Outcome::Silence,
                "{protocol} {source}: gated port, no listener: no RST, no ICMP"
            );
            assert_eq!(at(UNGATED), Outcome::Reply, "{protocol} {source}: ungated port answers");
            assert_eq!(
                at(UNGATED_CLOSED),
                Outcome::Refused,
                "{protocol} {source}: ungated closed port refuses as usual"
            );
        }
    }
}

#[test]
fn a_lease_opens_the_gate_for_its_address_only_until_it_expires() {
    let (bed, _daemon, _listeners) = gated_bed();
    let pins = &bed.pin_dir.0;
    for (client, stranger) in
        [(IpAddr::from(CLIENT_V4), IpAddr::from(STRANGER_V4)), (CLIENT_V6.into(), STRANGER_V6.into())]
    {
        gatectl_ok(pins, &["allow", &client.to_string(), "--gate", "vpn", "--ttl", "3s"]);
        for protocol in ["udp", "tcp"] {
            assert_eq!(
                probe(protocol, &bed.client, client, to(client, GATED)),
                Outcome::Reply,
                "{protocol} {client} with a lease"
            );
            assert_eq!(
                probe(protocol, &bed.client, client, to(client, GATED_CLOSED)),
                Outcome::Refused,
                "{protocol} {client}: leased packets reach the host"
            );
            assert_eq!(
                probe(protocol, &bed.client, stranger, to(stranger, GATED)),
                Outcome::Silence,
                "{protocol} {stranger} has no lease"
            );
            assert_eq!(
                probe(protocol, &bed.client, stranger, to(stranger, UNGATED)),
                Outcome::Reply,
                "{protocol} ungated port still answers"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(3100));
        for protocol in ["udp", "tcp"] {
            assert_eq!(
                probe(protocol, &bed.client, client, to(client, GATED)),
                Outcome::Silence,
                "{protocol} {client} after expiry"
            );
            assert_eq!(
                probe(protocol, &bed.client, client, to(client, UNGATED)),
                Outcome::Reply,
                "{protocol} ungated port after expiry"
            );
        }
    }
}

#[test]
fn revoking_closes_the_gate_at_once() {
    let (bed, _daemon, _listeners) = gated_bed();
    let pins = &bed.pin_dir.0;
    let client = IpAddr::from(CLIENT_V4);
    gatectl_ok(pins, &["allow", "192.0.2.2", "--gate", "vpn", "--ttl", "1h"]);
    assert_eq!(probe("udp", &bed.client, client, to(client, GATED)), Outcome::Reply);
    let out = gatectl_ok(pins, &["revoke", "192.0.2.2"]);
    assert!(out.contains("closed 1 lease"), "{out}");
    assert_eq!(probe("udp", &bed.client, client, to(client, GATED)), Outcome::Silence);
    let again = gatectl(pins, &["revoke", "192.0.2.2"]);
    assert!(!again.status.success(), "revoking nothing is an error");
}

#[test]
fn counters_show_what_happened() {
    let (bed, _daemon, _listeners) = gated_bed();
    let pins = &bed.pin_dir.0;
    let client = IpAddr::from(CLIENT_V4);
    assert_eq!(probe("udp", &bed.client, client, to(client, GATED)), Outcome::Silence);
    gatectl_ok(pins, &["allow", "192.0.2.2", "--gate", "vpn", "--ttl", "1h"]);
    assert_eq!(probe("udp", &bed.client, client, to(client, GATED)), Outcome::Reply);
    let stats: serde_json::Value = serde_json::from_str(&gatectl_ok(pins, &["stats", "--json"])).unwrap();
    let vpn = stats["gates"].as_array().unwrap().iter().find(|g| g["gate"] == "vpn").expect("vpn row");
    assert_eq!(vpn["dropped_no_lease"], 1, "{stats}");
    assert_eq!(vpn["passed_lease"], 1, "{stats}");
    let leases: serde_json::Value = serde_json::from_str(&gatectl_ok(pins, &["leases", "--json"])).unwrap();
    assert_eq!(leases[0]["address"], "192.0.2.2");
    assert_eq!(leases[0]["state"], "live");
    let out = gatectl_in(&bed.gateway, pins, &[]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{status}{}", String::from_utf8_lossy(&out.stderr));
    assert!(status.contains(&format!("interface: {}", bed.gateway_if)), "{status}");
    assert!(status.contains("gated: yes"), "{status}");
    assert!(status.contains("backstop: cgroup id"), "{status}");
    assert!(status.contains("leases: 1 live, 0 closed"), "{status}");
}

#[test]
fn traffic_keeps_an_idle_lease_open_and_silence_closes_it() {
    let (bed, _daemon, _listeners) = gated_bed();
    let client = IpAddr::from(CLIENT_V6);
    gatectl_ok(&bed.pin_dir.0, &["allow", &client.to_string(), "--gate", "vpn", "--ttl", "1h", "--idle", "2s"]);
    // Six seconds of traffic, a packet every half second: three times the idle timeout.
    for i in 0..12 {
        assert_eq!(probe("udp", &bed.client, client, to(client, GATED)), Outcome::Reply, "packet {i} while active");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(probe("udp", &bed.client, client, to(client, GATED)), Outcome::Silence, "closed after 2 s of silence");
    let leases: serde_json::Value = serde_json::from_str(&gatectl_ok(&bed.pin_dir.0, &["leases", "--json"])).unwrap();
    assert_eq!(leases[0]["state"], "idle", "{leases}");
}
