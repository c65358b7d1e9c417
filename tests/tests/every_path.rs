//! "No lease, no packet" on every path into the host, not only through XDP on a listed interface:
//! an interface deleted and re-created, an interface removed from the config, a layer-3 device,
//! and, for the delivery backstop, VXLAN decapsulated on the gateway, a NAT redirect from an
//! ungated port, an interface nobody listed, and all of it with the daemon killed.
//!
//! Listeners that the backstop must guard run in the bed's own cgroup ([`CgroupListeners`]);
//! those of the XDP-only tests run in the test process, outside it, so only XDP stands between
//! them and a stranger.
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use gate_tests::{
    bed::{CLIENT_V4, STRANGER_V4, STRANGER_V6, TestBed},
    cgroup::CgroupListeners,
    daemon::{Daemon, gatectl_in, gatectl_ok},
    frames::{Ext, FRAME_DST_MAC, FRAME_SOURCE_PORT, Frame, send_frame},
    netns::{Netns, must, veth},
    probe::{Listeners, Outcome, tcp, udp},
    tun::Tun,
    unique::{self, PREFIX},
};

const GATED: u16 = 1194;
/// An ungated port that NAT redirects to the gated one.
const REDIRECTED: u16 = 5000;
/// Addresses of a second path between client and gateway (documentation range).
const PATH_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PATH_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

fn gateway_v4(port: u16) -> SocketAddr {
    SocketAddr::new(TestBed::gateway_addr(CLIENT_V4.into()), port)
}

/// `gatectl status` run in the gateway namespace: (succeeded, stdout).
fn status(bed: &TestBed) -> (bool, String) {
    let out = gatectl_in(&bed.gateway, &bed.pin_dir.0, &[]);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn allow(bed: &TestBed, addr: impl ToString) {
    gatectl_ok(&bed.pin_dir.0, &["allow", &addr.to_string(), "--gate", "vpn", "--ttl", "1h"]);
}

/// The backstop's count of `reason` on the vpn gate.
fn backstop_count(bed: &TestBed, reason: &str) -> u64 {
    let stats: serde_json::Value =
        serde_json::from_str(&gatectl_ok(&bed.pin_dir.0, &["stats", "--json"])).expect("stats json");
    let rows = stats["backstop"].as_array().unwrap_or_else(|| panic!("no backstop counters: {stats}"));
    let vpn = rows.iter().find(|g| g["gate"] == "vpn").unwrap_or_else(|| panic!("no vpn row: {stats}"));
    vpn[reason].as_u64().unwrap_or_else(|| panic!("no {reason}: {stats}"))
}

/// A config for `bed` gating udp and tcp 1194 as "vpn", with `interfaces` instead of the veth.
fn config_with_interfaces(bed: &mut TestBed, interfaces: &[&str]) -> PathBuf {
    let config = bed.config(&[("vpn", "udp", GATED), ("vpn", "tcp", GATED)], "");
    let text = fs::read_to_string(&config).expect("read config");
    let listed: String = interfaces.iter().map(|name| format!("[[interface]]\nname = \"{name}\"\n")).collect();
    let text = text.replacen(&format!("[[interface]]\nname = \"{}\"\n", bed.gateway_if), &listed, 1);
    bed.write_config(&text)
}

#[test]
fn a_recreated_interface_is_gated_again_within_a_second() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    let _daemon = Daemon::start(&bed, &config);
    allow(&bed, CLIENT_V4);

    bed.recreate_veth();
    let recreated = Instant::now();
    let mut last = String::new();
    while Instant::now() < recreated + Duration::from_secs(1) {
        let (ok, out) = status(&bed);
        if ok && out.contains("gated: yes") {
            break;
        }
        last = out;
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ok, out) = status(&bed);
    assert!(ok && out.contains("gated: yes"), "not gated 1 s after the interface came back:\n{last}\n{out}");
    let stranger = IpAddr::from(STRANGER_V4);
    assert_eq!(udp(&bed.client, stranger, gateway_v4(GATED)), Outcome::Silence, "a stranger is dropped again");
    assert_eq!(udp(&bed.client, CLIENT_V4.into(), gateway_v4(GATED)), Outcome::Reply, "the lease still opens");
}

#[test]
fn a_defunct_pinned_link_is_reported_and_never_stops_a_restart() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    Daemon::start(&bed, &config).kill9();
    bed.recreate_veth();

    let (ok, out) = status(&bed);
    assert!(!ok, "status must fail while a listed interface is not gated:\n{out}");
    assert!(out.contains("gated: NO"), "{out}");

    let daemon = Daemon::try_start(&bed, &config).unwrap_or_else(|log| panic!("restart over a defunct pin:\n{log}"));
    let (ok, out) = status(&bed);
    assert!(ok && out.contains("gated: yes"), "{out}");
    let stranger = IpAddr::from(STRANGER_V4);
    assert_eq!(udp(&bed.client, stranger, gateway_v4(GATED)), Outcome::Silence);
    drop(daemon);
}

#[test]
fn an_interface_removed_from_the_config_is_detached() {
    let mut bed = TestBed::new();
    // Another interface to gate: a veth with both ends in the gateway (no dummy module here).
    let token = unique::token();
    let dummy = format!("{PREFIX}{token}d");
    veth(&bed.gateway, &dummy, &bed.gateway, &format!("{PREFIX}{token}e"));
    let veth_if = bed.gateway_if.clone();
    let both = config_with_interfaces(&mut bed, &[&veth_if, &dummy]);
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    Daemon::start(&bed, &both).stop();
    let stranger = IpAddr::from(STRANGER_V4);
    assert_eq!(udp(&bed.client, stranger, gateway_v4(GATED)), Outcome::Silence, "gated while listed");

    let only_dummy = config_with_interfaces(&mut bed, &[&dummy]);
    let daemon = Daemon::start(&bed, &only_dummy);
    assert!(daemon.log().contains(&format!("{}: no longer in the config", bed.gateway_if)), "{}", daemon.log());
    let (ok, out) = status(&bed);
    assert!(ok, "{out}");
    assert!(!out.contains(&format!("interface: {}", bed.gateway_if)), "still listed:\n{out}");
    assert!(out.contains(&format!("interface: {dummy}")), "{out}");
    assert_eq!(udp(&bed.client, stranger, gateway_v4(GATED)), Outcome::Reply, "no longer gated there");
}

#[test]
fn a_tun_device_is_gated() {
    let mut bed = TestBed::new();
    let name = format!("{PREFIX}{}t", unique::token());
    let mut tun = Tun::create(&bed.gateway, &name);
    // Frame::ip_packet is addressed to 198.51.100.1.
    bed.gateway.ip(&["addr", "add", &format!("{PATH_GATEWAY}/24"), "dev", &name]);
    bed.gateway.ip(&["link", "set", &name, "up"]);
    let veth_if = bed.gateway_if.clone();
    let config = config_with_interfaces(&mut bed, &[&veth_if, &name]);
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    let _daemon = Daemon::start(&bed, &config);
    let (ok, out) = status(&bed);
    assert!(ok && out.contains(&format!("interface: {name}")), "{out}");

    let stranger = IpAddr::from(Ipv4Addr::new(198, 51, 100, 7));
    let client = IpAddr::from(Ipv4Addr::new(198, 51, 100, 8));
    let mut ask = |source: IpAddr| {
        tun.send(&Frame::udp(source, GATED).ip_packet());
        // The echo: UDP from the gated port back to the source.
        tun.receive(Duration::from_millis(400), |p| {
            p.len() >= 28 && p[0] >> 4 == 4 && p[9] == 17 && p[20..22] == GATED.to_be_bytes()
        })
        .is_some()
    };
    assert!(!ask(stranger), "a stranger's packet on the tun device reached the gated port");
    allow(&bed, client);
    assert!(ask(client), "a leased source on the tun device is let through");
    assert!(!ask(stranger), "and the stranger still is not");
}

#[test]
fn vxlan_decapsulated_on_the_gateway_reaches_no_socket_without_a_lease() {
    let mut bed = TestBed::new();
    let token = unique::token();
    let (gateway_vx, client_vx) = (format!("{PREFIX}{token}v"), format!("{PREFIX}{token}w"));
    for (ns, device, local, remote, inner, parent) in [
        (&bed.gateway, &gateway_vx, "192.0.2.1", "192.0.2.2", PATH_GATEWAY, &bed.gateway_if),
        (&bed.client, &client_vx, "192.0.2.2", "192.0.2.1", PATH_CLIENT, &bed.client_if),
    ] {
        ns.ip(&[
            "link", "add", device, "type", "vxlan", "id", "42", "local", local, "remote", remote, "dstport", "4789",
            "dev", parent,
        ]);
        ns.ip(&["addr", "add", &format!("{inner}/24"), "dev", device]);
        ns.ip(&["link", "set", device, "up"]);
    }
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let _listeners = CgroupListeners::start(&bed.gateway, &bed.cgroup, &[GATED]);
    let _daemon = Daemon::start(&bed, &config);
    let inner = SocketAddr::new(PATH_GATEWAY.into(), GATED);
    let before = backstop_count(&bed, "dropped_no_lease");
    assert_eq!(udp(&bed.client, PATH_CLIENT.into(), inner), Outcome::Silence, "an unleased inner source is dropped");
    assert!(backstop_count(&bed, "dropped_no_lease") > before, "by the backstop");
    allow(&bed, PATH_CLIENT);
    assert_eq!(udp(&bed.client, PATH_CLIENT.into(), inner), Outcome::Reply, "a leased inner source passes");
}

#[test]
fn a_nat_redirect_from_an_ungated_port_reaches_no_socket_without_a_lease() {
    let mut bed = TestBed::new();
    let rules = bed.state_dir.join("redirect.nft");
    fs::write(
        &rules,
        format!(
            "table ip gate_test {{\n chain pre {{\n  type nat hook prerouting priority dstnat;\n  \
             udp dport {REDIRECTED} redirect to :{GATED}\n  tcp dport {REDIRECTED} redirect to :{GATED}\n }}\n}}\n"
        ),
    )
    .expect("write nft rules");
    must(bed.gateway.command("nft").arg("-f").arg(&rules));
    let config = bed.config(&[("vpn", "udp", GATED), ("vpn", "tcp", GATED)], "");
    let _listeners = CgroupListeners::start(&bed.gateway, &bed.cgroup, &[GATED]);
    let _daemon = Daemon::start(&bed, &config);
    let stranger = IpAddr::from(STRANGER_V4);
    let redirected = gateway_v4(REDIRECTED);
    assert_eq!(udp(&bed.client, stranger, redirected), Outcome::Silence, "udp redirected to the gated port");
    assert_eq!(tcp(&bed.client, stranger, redirected), Outcome::Silence, "tcp redirected to the gated port");
    allow(&bed, CLIENT_V4);
    let client = IpAddr::from(CLIENT_V4);
    assert_eq!(udp(&bed.client, client, redirected), Outcome::Reply, "a leased source passes the redirect (udp)");
    assert_eq!(tcp(&bed.client, client, redirected), Outcome::Reply, "and (tcp)");
}

/// A second veth between client and gateway that no config lists.
fn unlisted_path(bed: &TestBed) -> (String, String) {
    let token = unique::token();
    let (gateway_if, client_if) = (format!("{PREFIX}{token}u"), format!("{PREFIX}{token}k"));
    veth(&bed.gateway, &gateway_if, &bed.client, &client_if);
    bed.gateway.ip(&["addr", "add", &format!("{PATH_GATEWAY}/24"), "dev", &gateway_if]);
    bed.client.ip(&["addr", "add", &format!("{PATH_CLIENT}/24"), "dev", &client_if]);
    bed.client.ip(&["addr", "add", "198.51.100.3/24", "dev", &client_if]);
    (gateway_if, client_if)
}

#[test]
fn an_unlisted_interface_is_covered_and_stays_covered_with_the_daemon_killed() {
    let mut bed = TestBed::new();
    unlisted_path(&bed);
    let config = bed.config(&[("vpn", "udp", GATED), ("vpn", "tcp", GATED)], "");
    let _listeners = CgroupListeners::start(&bed.gateway, &bed.cgroup, &[GATED]);
    let daemon = Daemon::start(&bed, &config);
    let client = IpAddr::from(PATH_CLIENT);
    let stranger = IpAddr::from(Ipv4Addr::new(198, 51, 100, 3));
    let gated = SocketAddr::new(PATH_GATEWAY.into(), GATED);
    assert_eq!(udp(&bed.client, stranger, gated), Outcome::Silence, "udp through an unlisted interface");
    assert_eq!(tcp(&bed.client, stranger, gated), Outcome::Silence, "tcp through an unlisted interface");
    // Traffic seen only by the backstop keeps an idle lease alive: 2 s idle, 4 s of traffic.
    gatectl_ok(&bed.pin_dir.0, &["allow", &client.to_string(), "--gate", "vpn", "--ttl", "1h", "--idle", "2s"]);
    for i in 0..8 {
        assert_eq!(udp(&bed.client, client, gated), Outcome::Reply, "packet {i}: the backstop refreshes the lease");
        std::thread::sleep(Duration::from_millis(500));
    }

    daemon.kill9();
    // The leased client first: its lease has 1-2 s left after its last packet (traffic moves an
    // idle deadline by whole seconds only), and each stranger's silence takes 400 ms to hear.
    assert_eq!(udp(&bed.client, client, gated), Outcome::Reply, "leases still pass with the daemon killed");
    assert_eq!(udp(&bed.client, stranger, gated), Outcome::Silence, "still closed with the daemon killed");
    assert_eq!(tcp(&bed.client, stranger, gated), Outcome::Silence, "still closed with the daemon killed (tcp)");
    assert!(backstop_count(&bed, "dropped_no_lease") >= 4, "the backstop counted its drops");
    assert!(backstop_count(&bed, "passed_lease") >= 9, "and its passes");
}

#[test]
fn a_v4_mapped_address_opens_the_ipv4_host() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    let _daemon = Daemon::start(&bed, &config);
    let out = gatectl_ok(&bed.pin_dir.0, &["allow", &format!("::ffff:{CLIENT_V4}"), "--gate", "vpn", "--ttl", "1h"]);
    assert!(out.contains(&format!("as the IPv4 host {CLIENT_V4}")), "{out}");
    assert_eq!(udp(&bed.client, CLIENT_V4.into(), gateway_v4(GATED)), Outcome::Reply);
    let leases = gatectl_ok(&bed.pin_dir.0, &["leases", "--json"]);
    assert!(leases.contains(&format!("\"address\": \"{CLIENT_V4}\"")), "{leases}");
}

#[test]
fn forwarded_traffic_to_another_hosts_gated_port_passes_unless_the_gate_guards_transit() {
    let mut bed = TestBed::new();
    let server = Netns::new("sv");
    let token = unique::token();
    let (gateway_side, server_side) = (format!("{PREFIX}{token}s"), format!("{PREFIX}{token}r"));
    veth(&bed.gateway, &gateway_side, &server, &server_side);
    bed.gateway.ip(&["addr", "add", &format!("{PATH_GATEWAY}/24"), "dev", &gateway_side]);
    server.ip(&["addr", "add", &format!("{PATH_CLIENT}/24"), "dev", &server_side]);
    server.ip(&["route", "add", "default", "via", &PATH_GATEWAY.to_string()]);
    bed.client.ip(&["route", "add", "198.51.100.0/24", "via", &bed_gateway_v4().to_string()]);
    must(bed.gateway.command("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]));
    let _server_listeners = Listeners::start(&server, &[GATED]);
    let _gateway_listeners = Listeners::start(&bed.gateway, &[GATED]);
    let stranger = IpAddr::from(STRANGER_V4);
    let beyond = SocketAddr::new(PATH_CLIENT.into(), GATED);

    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let daemon = Daemon::start(&bed, &config);
    assert_eq!(udp(&bed.client, stranger, beyond), Outcome::Reply, "transit to another host's port 1194 passes");
    assert_eq!(udp(&bed.client, stranger, gateway_v4(GATED)), Outcome::Silence, "this host's port stays gated");
    let stats: serde_json::Value = serde_json::from_str(&gatectl_ok(&bed.pin_dir.0, &["stats", "--json"])).unwrap();
    let vpn = stats["gates"].as_array().unwrap().iter().find(|g| g["gate"] == "vpn").expect("vpn row").clone();
    assert_eq!(vpn["transit"], 1, "{stats}");
    daemon.stop();

    let text = fs::read_to_string(&config)
        .expect("config")
        .replace(&format!("port = {GATED}\n"), &format!("port = {GATED}\ntransit = true\n"));
    let guarded = bed.write_config(&text);
    let _daemon = Daemon::start(&bed, &guarded);
    assert_eq!(udp(&bed.client, stranger, beyond), Outcome::Silence, "a gate that guards transit drops it");
    allow(&bed, STRANGER_V4);
    assert_eq!(udp(&bed.client, stranger, beyond), Outcome::Reply, "unless the source holds a lease");
}

/// A UDP datagram behind 8 IPv6 extension headers (hop-by-hop, then 7 destination options):
/// beyond XDP's bound, delivered by the kernel.
fn chain_of_eight(source: IpAddr, port: u16) -> Frame {
    (0..7).fold(Frame::udp(source, port).ext(Ext::HopByHop), |frame, _| frame.ext(Ext::DestOpts))
}

/// Whether the echo of `frame` (sent raw from the client to the gateway, from STRANGER_V6)
/// comes back to STRANGER_V6's source port within the silence window.
fn echoed(bed: &TestBed, frame: &Frame) -> bool {
    // The port can still be held for a moment after the last catcher closed: a process another
    // test spawns holds a copy of every descriptor of this process until its exec.
    let socket = bed.client.run(|| {
        let address = SocketAddr::new(STRANGER_V6.into(), FRAME_SOURCE_PORT);
        let mut tries = 0;
        loop {
            match std::net::UdpSocket::bind(address) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                bound => break bound.expect("bind the echo catcher"),
            }
        }
    });
    socket.set_read_timeout(Some(Duration::from_millis(400))).expect("timeout");
    send_frame(&bed.client, &bed.client_if, &frame.bytes());
    let mut buf = [0; 64];
    socket.recv(&mut buf).is_ok()
}

/// Makes the gateway take crafted frames: their destination MAC and IPv6 address.
fn accept_crafted_frames(bed: &TestBed) {
    bed.gateway.ip(&["link", "set", &bed.gateway_if, "address", FRAME_DST_MAC]);
    bed.gateway.ip(&["addr", "add", "2001:db8:ffff::1/64", "dev", &bed.gateway_if, "nodad"]);
    bed.client.ip(&["route", "add", "2001:db8:ffff::/64", "dev", &bed.client_if]);
}

#[test]
fn a_chain_of_eight_extension_headers_passes_on_to_the_backstop_when_told() {
    const OPEN: u16 = 5353;
    let mut bed = TestBed::new();
    accept_crafted_frames(&bed);
    let _listeners = CgroupListeners::start(&bed.gateway, &bed.cgroup, &[GATED, OPEN]);
    let stranger = IpAddr::from(STRANGER_V6);

    // The default: XDP drops what it cannot parse, even to a port no gate guards.
    let dropping = bed.config(&[("vpn", "udp", GATED)], "");
    let daemon = Daemon::start(&bed, &dropping);
    assert!(echoed(&bed, &Frame::udp(stranger, OPEN)), "a plain datagram to the open port is answered");
    assert!(!echoed(&bed, &chain_of_eight(stranger, OPEN)), "by default the chain of 8 is dropped at XDP");
    daemon.stop();

    let passing = bed.config(&[("vpn", "udp", GATED)], "[xdp]\nunparseable = \"pass\"\n");
    let _daemon = Daemon::start(&bed, &passing);
    assert!(echoed(&bed, &chain_of_eight(stranger, OPEN)), "passed on, the kernel delivers it to the open port");
    let before = backstop_count(&bed, "dropped_no_lease");
    assert!(!echoed(&bed, &chain_of_eight(stranger, GATED)), "and the backstop drops it at the gated one");
    assert_eq!(backstop_count(&bed, "dropped_no_lease"), before + 1, "counted by the backstop");
}

fn bed_gateway_v4() -> Ipv4Addr {
    gate_tests::bed::GATEWAY_V4
}
