//! Bad input to the daemon and gatectl: each refused with a clear error naming what is wrong,
//! and nothing left half in place.
use std::net::IpAddr;

use gate_tests::{
    bed::{CLIENT_V4, STRANGER_V4, TestBed},
    daemon::{Daemon, gatectl, gatectl_ok},
    probe::{Listeners, Outcome, udp},
    unique,
};

const GATED: u16 = 1194;

fn refused(bed: &TestBed, config: &std::path::Path) -> String {
    match Daemon::try_start(bed, config) {
        Ok(daemon) => panic!("gate-daemon accepted a bad setup:\n{}", daemon.log()),
        Err(log) => log,
    }
}

fn xdp_attached(bed: &TestBed) -> bool {
    let out = bed.gateway.ip(&["-d", "link", "show", "dev", &bed.gateway_if]);
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn malformed_config_is_refused_with_file_key_and_reason() {
    let mut bed = TestBed::new();
    let good = std::fs::read_to_string(bed.config(&[("vpn", "udp", GATED)], "")).unwrap();
    for (bad, expect) in [
        (good.replace("port = 1194", "port = 70000"), "`port = 70000`: invalid value"),
        (good.replace("protocol = \"udp\"", "protocol = \"udp\"\ncolour = \"red\""), "unknown field `colour`"),
        (format!("{good}[leases]\nidle_timeout = \"soon\"\n"), "\"soon\" is not a duration"),
        (good.replace("[[gate]]", "[gate"), "line "),
    ] {
        let path = bed.write_config(&bad);
        let log = refused(&bed, &path);
        assert!(log.contains(&format!("config {}", path.display())), "names the file: {log}");
        assert!(log.contains(expect), "expected {expect:?} in: {log}");
        assert!(log.contains("exit status: 2"), "config errors exit 2: {log}");
    }
    assert!(!bed.pin_dir.0.exists(), "nothing pinned");
    assert!(!xdp_attached(&bed), "nothing attached");
}

#[test]
fn missing_interface_is_named_and_nothing_is_created() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "[[interface]]\nname = \"nosuch0\"\n");
    let log = refused(&bed, &config);
    assert!(log.contains("interface \"nosuch0\" does not exist"), "{log}");
    assert!(!bed.pin_dir.0.exists(), "nothing pinned");
    assert!(!xdp_attached(&bed), "the existing interface was not touched either");
}

#[test]
fn pin_dir_off_bpffs_is_refused() {
    let mut bed = TestBed::new();
    let dir = std::env::temp_dir().join(format!("{}{}", unique::PREFIX, unique::token()));
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&bed.pin_dir.0.display().to_string(), &dir.join("pins").display().to_string());
    let config = bed.write_config(&text);
    let log = refused(&bed, &config);
    assert!(log.contains("is not on a BPF filesystem"), "{log}");
    assert!(!dir.exists(), "nothing created on the wrong filesystem");
    assert!(!xdp_attached(&bed));
}

#[test]
fn failed_attach_rolls_back_what_this_run_attached() {
    let mut bed = TestBed::new();
    // The veth attaches first; loopback cannot take native XDP, so the second attach fails.
    let config = bed.config(&[("vpn", "udp", GATED)], "[[interface]]\nname = \"lo\"\nmode = \"native\"\n");
    let log = refused(&bed, &config);
    assert!(log.contains("interface lo: attach XDP in native mode"), "{log}");
    assert!(!xdp_attached(&bed), "the veth attach was undone");
    assert!(!bed.pin_dir.0.exists(), "the maps this run created were removed");
}

#[test]
fn full_lease_map_refuses_new_leases_clearly_and_keeps_the_old() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "[leases]\ncapacity = 2\n");
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    let _daemon = Daemon::start(&bed, &config);
    let pins = &bed.pin_dir.0;
    gatectl_ok(pins, &["allow", "192.0.2.2", "--gate", "vpn", "--ttl", "1h"]);
    gatectl_ok(pins, &["allow", "192.0.2.40", "--gate", "vpn", "--ttl", "1h"]);
    let out = gatectl(pins, &["allow", "192.0.2.3", "--gate", "vpn", "--ttl", "1h"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("lease map LEASES_V4 is full (2 leases)"), "{stderr}");
    let client = IpAddr::from(CLIENT_V4);
    let stranger = IpAddr::from(STRANGER_V4);
    let gw = |s| std::net::SocketAddr::new(TestBed::gateway_addr(s), GATED);
    assert_eq!(udp(&bed.client, client, gw(client)), Outcome::Reply, "existing lease still works");
    assert_eq!(udp(&bed.client, stranger, gw(stranger)), Outcome::Silence, "refused lease opened nothing");
}

#[test]
fn a_full_map_makes_room_by_sweeping_closed_leases() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "[leases]\ncapacity = 1\nsweep_interval = \"1h\"\n");
    let _daemon = Daemon::start(&bed, &config);
    let pins = &bed.pin_dir.0;
    gatectl_ok(pins, &["allow", "192.0.2.40", "--gate", "vpn", "--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    gatectl_ok(pins, &["allow", "192.0.2.2", "--gate", "vpn", "--ttl", "1h"]);
    let leases: serde_json::Value = serde_json::from_str(&gatectl_ok(pins, &["leases", "--json"])).unwrap();
    assert_eq!(leases.as_array().unwrap().len(), 1);
    assert_eq!(leases[0]["address"], "192.0.2.2");
}

#[test]
fn gatectl_refuses_bad_requests_clearly() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let _daemon = Daemon::start(&bed, &config);
    let pins = &bed.pin_dir.0;
    for (args, expect) in [
        (vec!["allow", "192.0.2.2", "--gate", "nope", "--ttl", "1m"], "no gate named \"nope\" (known: vpn)"),
        (vec!["allow", "0.0.0.0", "--gate", "vpn", "--ttl", "1m"], "cannot be the source of a packet"),
        (vec!["allow", "ff02::1", "--gate", "vpn", "--ttl", "1m"], "cannot be the source of a packet"),
        (vec!["allow", "192.0.2.2", "--gate", "vpn", "--ttl", "0s"], "--ttl must be longer than zero"),
        (vec!["allow", "192.0.2.300", "--gate", "vpn", "--ttl", "1m"], "invalid value '192.0.2.300'"),
        (vec!["allow", "192.0.2.2", "--gate", "vpn", "--ttl", "soon"], "invalid value 'soon'"),
    ] {
        let out = gatectl(pins, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(expect), "{args:?}: expected {expect:?} in {stderr}");
    }
    let missing = gatectl(std::path::Path::new("/sys/fs/bpf/gt-no-such-gate"), &["leases"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no gate at /sys/fs/bpf/gt-no-such-gate/GATES: nothing is pinned there"), "{stderr}");
}
