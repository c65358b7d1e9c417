//! `gate-demo`: the real gate, end to end, on an embedded default config. Two network namespaces
//! joined by veth; the real daemon attaches the XDP gate in one; a client in the other probes a
//! gated UDP and TCP port and an ungated one, before a lease, with one, and after it expires.
//! Everything is removed at the end (also on failure).
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use gate_tests::{
    bed::{CLIENT_V4, CLIENT_V6, STRANGER_V4, TestBed},
    daemon::{Daemon, gatectl_ok},
    probe::{Listeners, Outcome, probe},
};

const GATED: u16 = 1194;
const UNGATED: u16 = 5353;
const LEASE_TTL_SECS: u64 = 4;

fn show(title: &str) {
    println!("\n== {title}");
}

fn report(bed: &TestBed, protocol: &str, source: IpAddr, port: u16) -> Outcome {
    let dest = SocketAddr::new(TestBed::gateway_addr(source), port);
    let outcome = probe(protocol, &bed.client, source, dest);
    let seen = match outcome {
        Outcome::Reply => "reply",
        Outcome::Silence => "silence (dropped by the gate: no RST, no ICMP)",
        Outcome::Refused => "refused",
    };
    println!("   {protocol} {source} -> {dest}: {seen}");
    outcome
}

fn main() {
    // The bed is dropped (namespaces, pins, gate removed) before the exit status is set.
    if !demo() {
        eprintln!("demo: a probe did not behave as expected (see above)");
        std::process::exit(1);
    }
    println!("demo: every probe behaved as the gate promises");
}

/// Runs the demo; whether every probe behaved as promised.
fn demo() -> bool {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED), ("vpn", "tcp", GATED)], "");
    println!("gate demo: gateway namespace {}, client namespace {}", bed.gateway.name(), bed.client.name());
    println!("config ({}):\n{}", config.display(), std::fs::read_to_string(&config).unwrap_or_default().trim_end());
    let _listeners = Listeners::start(&bed.gateway, &[GATED, UNGATED]);
    let daemon = Daemon::start(&bed, &config);
    let pins = bed.pin_dir.0.clone();
    let client = IpAddr::from(CLIENT_V4);

    show("gatectl status");
    print!("{}", gatectl_ok(&pins, &["status"]));

    show("no lease: the gated port is invisible, the ungated one answers");
    let mut ok = report(&bed, "udp", client, GATED) == Outcome::Silence;
    ok &= report(&bed, "tcp", client, GATED) == Outcome::Silence;
    ok &= report(&bed, "udp", client, UNGATED) == Outcome::Reply;

    show(&format!("gatectl allow {client} --gate vpn --ttl {LEASE_TTL_SECS}s (and {CLIENT_V6})"));
    for addr in [client, IpAddr::from(CLIENT_V6)] {
        print!(
            "   {}",
            gatectl_ok(&pins, &["allow", &addr.to_string(), "--gate", "vpn", "--ttl", &format!("{LEASE_TTL_SECS}s")])
        );
    }
    ok &= report(&bed, "udp", client, GATED) == Outcome::Reply;
    ok &= report(&bed, "tcp", client, GATED) == Outcome::Reply;
    ok &= report(&bed, "udp", IpAddr::from(CLIENT_V6), GATED) == Outcome::Reply;
    ok &= report(&bed, "udp", IpAddr::from(STRANGER_V4), GATED) == Outcome::Silence;
    print!("{}", gatectl_ok(&pins, &["leases"]));

    show("the daemon is killed (SIGKILL): the gate stays, the lease still works");
    daemon.kill9();
    ok &= report(&bed, "udp", client, GATED) == Outcome::Reply;

    show(&format!("{LEASE_TTL_SECS} seconds later the lease has expired, in the kernel, with no daemon"));
    std::thread::sleep(Duration::from_secs(LEASE_TTL_SECS));
    ok &= report(&bed, "udp", client, GATED) == Outcome::Silence;
    ok &= report(&bed, "tcp", client, GATED) == Outcome::Silence;

    show("gatectl stats");
    print!("{}", gatectl_ok(&pins, &["stats"]));

    show("cleanup: namespaces, pins and the gate removed");
    ok
}
