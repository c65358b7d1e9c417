//! `gate-demo`: the real gate, end to end, on an embedded default config. Two network namespaces
//! joined by veth; the real daemon attaches the XDP gate in one; a client in the other probes a
//! gated UDP and TCP port and an ungated one, before a lease, with one, and after it expires.
//! Then the product's way in: the front (`gate-web`) starts, a client is enrolled, and
//! `gate-client connect` opens the gate for it over HTTPS with a three-layer signed request.
//! Everything is removed at the end (also on failure).
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use gate_tests::{
    approval::{Enrolled, gatectl_store},
    bed::{CLIENT_V4, CLIENT_V6, STRANGER_V4, TestBed},
    daemon::{Daemon, bin, gatectl_in_ok, gatectl_ok},
    front,
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
    let config = bed.config(
        &[("vpn", "udp", GATED), ("vpn", "tcp", GATED)],
        "[leases]\nconnect_window = \"30s\"\nmax_lifetime = \"1h\"\n[approval]\nfront_user = \"gate-web\"\n",
    );
    println!("gate demo: gateway namespace {}, client namespace {}", bed.gateway.name(), bed.client.name());
    println!("config ({}):\n{}", config.display(), std::fs::read_to_string(&config).unwrap_or_default().trim_end());
    let _listeners = Listeners::start(&bed.gateway, &[GATED, UNGATED]);
    let daemon = Daemon::start(&bed, &config);
    let pins = bed.pin_dir.0.clone();
    let client = IpAddr::from(CLIENT_V4);

    show("gatectl status");
    print!("{}", gatectl_in_ok(&bed.gateway, &pins, &["status"]));

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

    ok &= approval(&mut bed, &config);

    show("gatectl stats");
    print!("{}", gatectl_ok(&pins, &["stats"]));

    show("cleanup: namespaces, pins and the gate removed");
    ok
}

/// The daemon back, the front up, a client enrolled and approved over HTTPS.
fn approval(bed: &mut TestBed, config: &std::path::Path) -> bool {
    show("the daemon again, and the front (gate-web: TLS, unprivileged)");
    let _daemon = Daemon::start(bed, config);
    let _web = front::start(bed, "");
    println!("   front on {} (self-signed certificate; nothing rests on TLS)", front::url_v4());

    show("gatectl client add alice --gate vpn --out alice.json (test key: making an RSA-4096 one takes seconds)");
    let alice = Enrolled::new(bed, "alice", &["vpn"], "client");
    println!("   profile {} (0600)", alice.path.display());
    let client = IpAddr::from(CLIENT_V4);
    let mut ok = report(bed, "udp", client, GATED) == Outcome::Silence;

    show("gate-client connect --profile alice.json (learns its addresses from the front, over IPv4 and IPv6)");
    let out = bed
        .client
        .command(bin("gate-client"))
        .args(["connect", "--profile", alice.path.to_str().unwrap_or_default(), "--server", &front::url_v4()])
        .args(["--discover-via", &front::url_v4(), "--discover-via", &front::url_v6()])
        .output();
    match out {
        Ok(out) if out.status.success() => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Ok(out) => {
            println!("   refused: {}", String::from_utf8_lossy(&out.stderr).trim());
            ok = false;
        }
        Err(e) => {
            println!("   gate-client: {e}");
            ok = false;
        }
    }
    ok &= report(bed, "udp", client, GATED) == Outcome::Reply;
    ok &= report(bed, "tcp", client, GATED) == Outcome::Reply;
    ok &= report(bed, "udp", IpAddr::from(CLIENT_V6), GATED) == Outcome::Reply;
    ok &= report(bed, "udp", IpAddr::from(STRANGER_V4), GATED) == Outcome::Silence;

    show("gatectl client revoke alice: her leases close at once");
    print!("   {}", gatectl_store(bed, &["client", "revoke", "alice"]));
    ok &= report(bed, "udp", client, GATED) == Outcome::Silence;
    ok
}
