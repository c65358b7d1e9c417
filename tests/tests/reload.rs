//! SIGHUP to a running daemon: the config is read again and what changed is applied, with real
//! packets between namespaces, a real extra interface and real approvals; what did not change
//! (leases, other gates) stays as it was, and a config that cannot be applied changes nothing.
use std::net::SocketAddr;

use gate_tests::{
    approval::{Enrolled, send},
    bed::{CLIENT_V4, STRANGER_V4, TestBed},
    daemon::{Daemon, gatectl_in, gatectl_ok},
    probe::{Listeners, Outcome, udp},
};

const VPN: u16 = 1194;
const ADDED: u16 = 1196;

fn to(port: u16) -> SocketAddr {
    SocketAddr::new(TestBed::gateway_addr(CLIENT_V4.into()), port)
}

fn stranger(bed: &TestBed, port: u16) -> Outcome {
    udp(&bed.client, STRANGER_V4.into(), to(port))
}

/// `gatectl status` in the gateway's namespace: whether it lists `interface` as gated.
fn gated_interface(bed: &TestBed, interface: &str) -> bool {
    let out = gatectl_in(&bed.gateway, &bed.pin_dir.0, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines = text.lines().skip_while(|l| *l != format!("interface: {interface}")).skip(1);
    lines.take_while(|l| l.starts_with("  ")).any(|l| l.trim().starts_with("gated: yes"))
}

/// Whether the kernel reports an XDP program on `interface` in the gateway's namespace.
fn xdp_on(bed: &TestBed, interface: &str) -> bool {
    let out = bed.gateway.ip(&["link", "show", "dev", interface]);
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

#[test]
fn a_reload_applies_gates_interfaces_and_settings_and_keeps_the_leases() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", VPN)], "");
    let _listeners = Listeners::start(&bed.gateway, &[VPN, ADDED]);
    let daemon = Daemon::start(&bed, &config);
    let pid = daemon.pid();
    gatectl_ok(&bed.pin_dir.0, &["allow", &CLIENT_V4.to_string(), "--gate", "vpn", "--ttl", "1h"]);
    assert_eq!(stranger(&bed, ADDED), Outcome::Reply, "not gated yet");

    // A gate added, a second interface (one end of a veth pair inside the gateway), a new lease
    // lifetime.
    let dummy = format!("{}x", bed.gateway_if);
    let peer = format!("{}y", bed.gateway_if);
    bed.gateway.ip(&["link", "add", &dummy, "type", "veth", "peer", "name", &peer]);
    bed.gateway.ip(&["link", "set", &dummy, "up"]);
    bed.gateway.ip(&["link", "set", &peer, "up"]);
    let text = std::fs::read_to_string(&config).unwrap();
    let added = text
        .replacen("[[gate]]", &format!("[[interface]]\nname = \"{dummy}\"\n[[gate]]\nname = \"added\"\nprotocol = \"udp\"\nport = {ADDED}\n[[gate]]"), 1)
        .replace("[approval]\n", "[leases]\nmax_lifetime = \"7m\"\n[approval]\n");
    std::fs::write(&config, &added).unwrap();
    let log = daemon.reload("reloaded");
    assert!(log.contains("gates: +[added udp/1196]") && log.contains(&format!("interfaces: +[{dummy}]")), "{log}");
    assert_eq!(daemon.pid(), pid, "the same process");
    assert_eq!(stranger(&bed, ADDED), Outcome::Silence, "the added gate is closed to a stranger");
    assert_eq!(stranger(&bed, VPN), Outcome::Silence, "the unchanged gate stays closed");
    assert_eq!(udp(&bed.client, CLIENT_V4.into(), to(VPN)), Outcome::Reply, "the lease from before still opens it");
    assert!(gated_interface(&bed, &dummy) && xdp_on(&bed, &dummy), "the added interface is gated");
    // The approval service knows the added gate, and leases it with the new lifetime.
    let alice = Enrolled::new(&bed, "alice", &["added"], "client");
    let answer = send(&bed, &alice.request(Some(CLIENT_V4), None), None);
    assert_eq!(answer.status, 200, "an approval for the added gate: {answer:?}\n{}", daemon.log());
    assert_eq!(udp(&bed.client, CLIENT_V4.into(), to(ADDED)), Outcome::Reply, "approved on the added gate");
    let leases = gatectl_ok(&bed.pin_dir.0, &["leases", "--json"]);
    let leases: serde_json::Value = serde_json::from_str(&leases).unwrap();
    let lease = leases.as_array().unwrap().iter().find(|l| l["gate"] == "added").expect("its lease").clone();
    let expires_in = lease["expires_in_ms"].as_u64().unwrap();
    assert!((400_000..=420_000).contains(&expires_in), "the new max_lifetime of 7m: {lease}");

    // What cannot be applied changes nothing: a broken file, a key that needs a restart, an
    // interface that does not exist.
    for (bad, reason) in [
        (added.replace("[leases]", "[leases"), "reload refused"),
        (added.replace("pin_dir = \"", "pin_dir = \"/sys/fs/bpf/elsewhere-"), "pin_dir changed: that needs a restart"),
        (added.replace(&format!("name = \"{dummy}\""), "name = \"gt-nosuch0\""), "does not exist"),
    ] {
        std::fs::write(&config, bad).unwrap();
        let log = daemon.reload("reload refused");
        let last = log.lines().rev().find(|l| l.contains("reload refused")).unwrap_or_default();
        assert!(last.contains(reason), "{reason}: {log}");
        assert_eq!(stranger(&bed, ADDED), Outcome::Silence, "still gated after a refused reload ({reason})");
        assert!(gated_interface(&bed, &dummy), "{reason}: the interface stays gated");
    }

    // Back to the first config: the added gate and interface go, the rest stays.
    std::fs::write(&config, &text).unwrap();
    let log = daemon.reload("reloaded");
    assert!(log.contains("gates: +[] -[added udp/1196]"), "{log}");
    assert_eq!(stranger(&bed, ADDED), Outcome::Reply, "the removed gate's port is open, as the config says");
    assert_eq!(stranger(&bed, VPN), Outcome::Silence);
    assert_eq!(udp(&bed.client, CLIENT_V4.into(), to(VPN)), Outcome::Reply, "the lease still holds");
    assert!(!xdp_on(&bed, &dummy), "the removed interface is detached");
    bed.gateway.ip(&["link", "del", &dummy]);
    daemon.stop();
}
