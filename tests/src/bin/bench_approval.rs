//! `gate-bench-approval` (`cargo xtask bench approval`): the approval service measured against
//! its own crypto, in one run on one machine.
//!
//! 1. Each layer's server-side crypto alone, in this process: HMAC check, box open, RSA-PSS
//!    verify, and sealing the answer (box + HMAC). Medians over rounds.
//! 2. The real daemon (in a network namespace, gate attached) through its internal socket:
//!    sequential approvals (latency from request sent to answer received; the leases are in the
//!    map before the answer leaves), concurrent approvals per second, and bad-HMAC refusals per
//!    second with the daemon's RSA counter before and after.
//! 3. The service's overhead: sequential p50 over the sum of the layers' crypto.
//!
//! Requests are signed before the clock starts (RSA signing is the client's cost, not the
//! service's). `--quick` (used by the tests): few requests, to prove it runs and cleans up.
use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use gate_client::transport::Server;
use gate_protocol::{
    approval::{self, Approval, Host},
    keys::ServerKeys,
    rand::{RngCore, rngs::OsRng},
    request::{Outgoing, Request},
    shared_box::SharedBox,
    wire::{BOX_NONCE_BYTES, REJECTED_STATUS},
};
use gate_tests::{
    approval::{Enrolled, KeptAlive, counters, headers, keep_alive, raw, send, send_raw},
    bed::{GATEWAY_V4, TestBed},
    daemon::{Daemon, cpu_time},
    front,
    measure::{median, percentile},
};

struct Settings {
    layer_rounds: usize,
    layer_iterations: u32,
    sequential: usize,
    concurrent: usize,
    bad: usize,
    threads: usize,
}

fn settings() -> Settings {
    if std::env::args().any(|a| a == "--quick") {
        Settings { layer_rounds: 3, layer_iterations: 5, sequential: 10, concurrent: 10, bad: 50, threads: 2 }
    } else {
        Settings { layer_rounds: 7, layer_iterations: 200, sequential: 300, concurrent: 600, bad: 20_000, threads: 4 }
    }
}

/// Median time of one call of `f`, over rounds of `iterations` calls.
fn per_call(settings: &Settings, mut f: impl FnMut()) -> Duration {
    median(
        (0..settings.layer_rounds)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..settings.layer_iterations {
                    f();
                }
                start.elapsed() / settings.layer_iterations
            })
            .collect(),
    )
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// A distinct benchmark address (198.18.0.0/15, RFC 2544) per request.
fn bench_addr(i: usize) -> Ipv4Addr {
    let i = u32::try_from(i).expect("few requests");
    Ipv4Addr::from(0xc612_0000 | (i & 0x1_ffff))
}

fn layers(settings: &Settings, alice: &Enrolled) -> [(&'static str, Duration); 4] {
    // Server keys of our own: the layers are measured in this process, not in the daemon.
    let server = ServerKeys::generate(&mut OsRng);
    let keys = alice.keys(false, false);
    let client_public = keys.public();
    let mut box_nonce = [0; BOX_NONCE_BYTES];
    OsRng.fill_bytes(&mut box_nonce);
    let payload = alice.payload(0, Some(bench_addr(0)), None);
    let outgoing =
        gate_protocol::request::build(&keys, &server.public(), &payload, box_nonce, &mut OsRng).expect("build");
    let body = outgoing.body_json();
    let request = Request::parse(outgoing.headers.clone(), body.as_bytes()).expect("parse");
    let hmac = per_call(settings, || request.verify_hmac(&keys.secret).expect("hmac"));
    let agreement = per_call(settings, || {
        std::hint::black_box(SharedBox::new(&client_public.box_public, &server.box_secret).expect("agreed"));
    });
    let shared = SharedBox::new(&client_public.box_public, &server.box_secret).expect("agreed");
    let open = per_call(settings, || {
        request.open_with(&shared).expect("open");
    });
    let verifying = gate_protocol::keys::RsaVerifyingKey::new(&client_public.rsa_public).expect("a verifying key");
    let rsa = per_call(settings, || request.verify_rsa(&verifying).expect("rsa"));
    let answer = Approval {
        approved: true,
        request_nonce: payload.nonce.clone(),
        gate: "vpn".into(),
        opened: vec![gate_protocol::approval::Opened { address: IpAddr::V4(bench_addr(0)), expires_at: 1 }],
        connect_by: 1,
        idle_timeout_secs: 180,
        host: Host::default(),
        session_token: "0".repeat(32),
        session_token_expires_at: 1,
    };
    let seal = per_call(settings, || {
        approval::seal_with(&answer, keys.token, &keys.secret, &shared, box_nonce).expect("seal");
    });
    eprintln!("X25519 agreement (once per client, then cached): {} µs", us(agreement));
    [
        ("HMAC-SHA512 check", hmac),
        ("box open", open),
        ("RSA-4096 PSS verify", rsa),
        ("answer sealed (box + HMAC)", seal),
    ]
}

fn sign_requests(alice: &Enrolled, from: usize, count: usize) -> Vec<Outgoing> {
    (from..from + count).map(|i| alice.request(Some(bench_addr(i)), None)).collect()
}

/// `count` copies of `request` on one kept-alive connection to the daemon's socket; how many
/// were the uniform refusal.
fn kept_alive(socket: &std::path::Path, request: &[u8], count: usize) -> usize {
    let mut connection = KeptAlive::connect(socket);
    (0..count).filter(|_| connection.send(request) == REJECTED_STATUS).count()
}

fn main() {
    gate_tests::measure::accept_args(&["--quick"], &[]);
    let settings = settings();
    println!("machine: {}\n", gate_tests::measure::machine());
    let mut bed = TestBed::new();
    let config = bed.config(
        &[("vpn", "udp", 1194)],
        "[leases]\ncapacity = 200000\n[approval]\nwindow = \"600s\"\nfront_user = \"gate-web\"\n",
    );
    let daemon = Daemon::start(&bed, &config);
    let alice = Enrolled::new(&bed, "bench", &["vpn"], "client");

    eprintln!("measuring each layer's crypto...");
    let layers = layers(&settings, &alice);
    let crypto_sum: Duration = layers.iter().map(|(_, d)| *d).sum();

    eprintln!("signing {} requests...", settings.sequential + settings.concurrent);
    let sequential = sign_requests(&alice, 0, settings.sequential);
    let concurrent = sign_requests(&alice, settings.sequential, settings.concurrent);

    // Sequential: one request at a time.
    let mut latencies = Vec::with_capacity(sequential.len());
    for outgoing in &sequential {
        let start = Instant::now();
        let response = send(&bed, outgoing, None);
        latencies.push(start.elapsed());
        assert_eq!(response.status, 200, "approval refused: {response:?}");
    }

    // The daemon's own view of those sequential approvals (it keeps the last 1024).
    let inside = counters(&bed);

    // Concurrent: `threads` clients at once.
    let queue = Arc::new(Mutex::new(concurrent));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..settings.threads {
            let queue = Arc::clone(&queue);
            let bed = &bed;
            scope.spawn(move || {
                loop {
                    let Some(outgoing) = queue.lock().expect("queue").pop() else { break };
                    assert_eq!(send(bed, &outgoing, None).status, 200);
                }
            });
        }
    });
    let concurrent_elapsed = start.elapsed();

    // Bad HMACs: valid in shape, wrong in the first layer.
    let template = alice.request(Some(bench_addr(0)), None);
    let mut forged = headers(&template, None);
    forged[3].1 = gate_protocol::encoding::b64(&[0x42; 64]);
    let bad = raw(&forged, template.body_json().as_bytes());
    let rsa_before = counters(&bed).rsa_verifications;
    let mut floor_latencies = Vec::with_capacity(settings.sequential);
    for _ in 0..settings.sequential {
        let start = Instant::now();
        counters(&bed);
        floor_latencies.push(start.elapsed());
    }
    let mut refusal_latencies = Vec::with_capacity(settings.sequential);
    for _ in 0..settings.sequential {
        let start = Instant::now();
        assert_eq!(send_raw(&bed, &bad).status, REJECTED_STATUS);
        refusal_latencies.push(start.elapsed());
    }
    let start = Instant::now();
    let per_thread = settings.bad / settings.threads;
    std::thread::scope(|scope| {
        for _ in 0..settings.threads {
            let (bed, bad) = (&bed, &bad);
            scope.spawn(move || {
                for _ in 0..per_thread {
                    assert_eq!(send_raw(bed, bad).status, REJECTED_STATUS);
                }
            });
        }
    });
    let bad_elapsed = start.elapsed();

    // The same refusals on kept-alive connections (as a pooling front sends them): the checks,
    // without a connection per request; and the daemon's own CPU for them.
    let kept_request = keep_alive(&bad);
    let socket = bed.socket();
    let daemon_pid = daemon.pid().as_raw();
    let (cpu_before, start) = (cpu_time(daemon_pid), Instant::now());
    std::thread::scope(|scope| {
        for _ in 0..settings.threads {
            let (socket, request) = (&socket, kept_request.as_slice());
            scope.spawn(move || assert_eq!(kept_alive(socket, request, per_thread), per_thread, "every one refused"));
        }
    });
    let (kept_alive_elapsed, daemon_cpu) = (start.elapsed(), cpu_time(daemon_pid) - cpu_before);
    let rsa_after = counters(&bed).rsa_verifications;

    let p50 = percentile(&latencies, 0.5);
    let p99 = percentile(&latencies, 0.99);
    #[expect(clippy::cast_precision_loss)]
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    println!("server-side crypto per request, in this process (median of {} rounds):", settings.layer_rounds);
    println!();
    println!("| layer | µs |");
    println!("| --- | ---: |");
    for (name, d) in &layers {
        println!("| {name} | {} |", us(*d));
    }
    println!("| **sum** | **{}** |", us(crypto_sum));
    println!();
    println!("the daemon, through its internal socket:");
    println!();
    println!("| measure | value |");
    println!("| --- | ---: |");
    println!("| sequential approvals ({}): p50 request → answer (lease in map) | {} µs |", latencies.len(), us(p50));
    println!("| sequential approvals: p99 | {} µs |", us(p99));
    println!(
        "| floor: p50 of a request that does nothing (GET the counters) | {} µs |",
        us(percentile(&floor_latencies, 0.5))
    );
    println!(
        "| sequential bad-HMAC refusals: p50 request → answer (the HTTP round trip and first checks) | {} µs |",
        us(percentile(&refusal_latencies, 0.5))
    );
    println!(
        "| concurrent approvals ({} clients, {}) | {:.0} /s |",
        settings.threads,
        settings.concurrent,
        rate(settings.concurrent, concurrent_elapsed)
    );
    println!(
        "| bad-HMAC refusals ({} clients, {}) | {:.0} /s |",
        settings.threads,
        per_thread * settings.threads,
        rate(per_thread * settings.threads, bad_elapsed)
    );
    println!(
        "| bad-HMAC refusals on kept-alive connections ({} clients, {}) | {:.0} /s |",
        settings.threads,
        per_thread * settings.threads,
        rate(per_thread * settings.threads, kept_alive_elapsed)
    );
    println!(
        "| of those, per second of the daemon's CPU (user + system) | {:.0} /s |",
        rate(per_thread * settings.threads, daemon_cpu.max(Duration::from_millis(10)))
    );
    println!("| RSA verifications during the bad-HMAC floods | {} |", rsa_after - rsa_before);
    println!(
        "| inside the daemon, per sequential approval (parsed → answer sealed, leases written): p50 / p99 | {} / {} µs |",
        inside.approval_us_p50, inside.approval_us_p99
    );
    println!("| of which crypto, timed around each layer in the daemon: p50 | {} µs |", inside.approval_crypto_us_p50);
    println!(
        "| **service overhead: time inside over its own crypto, median per approval** | **{:.2}x** (target ≤ 1.20x) |",
        inside.approval_over_crypto_p50
    );
    first_packet(&settings, &bed, &alice);
    // The front's connections to the daemon: a new one per request (as before), then kept.
    through_the_front(&settings, &mut bed, &alice, p50, 0);
    through_the_front(&settings, &mut bed, &alice, p50, 64);
    daemon.stop();
    drop(bed);
}

/// From an approval request sent to the first packet of that client through the gate: the
/// request on the daemon's socket, then at once a UDP datagram from the client's address to an
/// echo behind the gate, until its echo returns. The address is new each time (no old lease).
fn first_packet(settings: &Settings, bed: &TestBed, alice: &Enrolled) {
    use std::net::{SocketAddr, UdpSocket};
    let _echo = gate_tests::probe::Listeners::start(&bed.gateway, &[1194]);
    let rounds = settings.sequential.min(100);
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let outgoing = alice.request(Some(gate_tests::bed::CLIENT_V4), None);
        // No lease left from the round before: the first packet needs this approval.
        let _ = gate_tests::daemon::gatectl(&bed.pin_dir.0, &["revoke", &gate_tests::bed::CLIENT_V4.to_string()]);
        let socket = bed.client.run(|| {
            let socket = UdpSocket::bind((gate_tests::bed::CLIENT_V4, 0)).expect("bind");
            socket.connect(SocketAddr::new(GATEWAY_V4.into(), 1194)).expect("connect");
            socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
            socket
        });
        let start = Instant::now();
        assert_eq!(send(bed, &outgoing, None).status, 200);
        socket.send(b"first").expect("send");
        let mut buf = [0; 16];
        socket.recv(&mut buf).expect("the first packet passes and its echo returns");
        times.push(start.elapsed());
    }
    println!(
        "| approval request sent → first packet through the gate answered (p50 / p99, {rounds}) | {} / {} µs |",
        us(percentile(&times, 0.5)),
        us(percentile(&times, 0.99))
    );
}

/// The same through the front (TLS, parse, rebuild, forward), from the client's namespace, the
/// front keeping `kept` idle connections to the daemon (0: a new one per request).
fn through_the_front(settings: &Settings, bed: &mut TestBed, alice: &Enrolled, direct_p50: Duration, kept: usize) {
    // Every benchmark client comes from one address: the per-source limits are lifted.
    let _web = front::start(
        bed,
        &format!(
            "[limits]\napprovals_per_minute = 100000000\nhandshakes_per_minute = 100000000\n\
             connections_per_source = 1024\ndaemon_connections_kept = {kept}\n"
        ),
    );
    let server = Server::Https { host: GATEWAY_V4.to_string(), port: front::FRONT_PORT, at: None };
    let wire = |outgoing: &Outgoing, forged: bool| {
        let mut h: Vec<(String, String)> = headers(outgoing, None).into_iter().take(4).collect();
        if forged {
            h[3].1 = gate_protocol::encoding::b64(&[0x42; 64]);
        }
        raw(&h, outgoing.body_json().as_bytes())
    };
    eprintln!("signing {} requests for the front...", settings.sequential + settings.concurrent);
    let sequential: Vec<Vec<u8>> =
        sign_requests(alice, 1_000_000, settings.sequential).iter().map(|o| wire(o, false)).collect();
    let concurrent: Vec<Vec<u8>> = sign_requests(alice, 1_000_000 + settings.sequential, settings.concurrent)
        .iter()
        .map(|o| wire(o, false))
        .collect();
    let bad = wire(&alice.request(Some(bench_addr(0)), None), true);

    let latencies = bed.client.run(|| {
        sequential
            .iter()
            .map(|raw| {
                let start = Instant::now();
                let response = server.exchange(raw).expect("the front answers");
                assert_eq!(response.status, 200, "approval through the front: {response:?}");
                start.elapsed()
            })
            .collect::<Vec<_>>()
    });
    let run_concurrently = |requests: Vec<Vec<u8>>, expect: u16| {
        let queue = Arc::new(Mutex::new(requests));
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..settings.threads {
                let (queue, server, client) = (Arc::clone(&queue), &server, &bed.client);
                scope.spawn(move || {
                    client.run(|| {
                        loop {
                            let Some(raw) = queue.lock().expect("queue").pop() else { break };
                            assert_eq!(server.exchange(&raw).expect("the front answers").status, expect);
                        }
                    });
                });
            }
        });
        start.elapsed()
    };
    let approvals = concurrent.len();
    let approvals_elapsed = run_concurrently(concurrent, 200);
    let refusals = settings.bad / 4;
    let refusals_elapsed = run_concurrently(vec![bad; refusals], REJECTED_STATUS);

    #[expect(clippy::cast_precision_loss)]
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    let p50 = percentile(&latencies, 0.5);
    println!();
    let daemon_side = if kept == 0 {
        "a new connection to the daemon per request (before)".to_owned()
    } else {
        format!("up to {kept} connections to the daemon kept (now)")
    };
    println!("through the front (TLS 1.3, one client connection per request, {daemon_side}):");
    println!();
    println!("| measure | value |");
    println!("| --- | ---: |");
    println!("| sequential approvals ({}): p50 request → answer | {} µs |", latencies.len(), us(p50));
    println!("| sequential approvals: p99 | {} µs |", us(percentile(&latencies, 0.99)));
    println!(
        "| concurrent approvals ({} clients, {approvals}) | {:.0} /s |",
        settings.threads,
        rate(approvals, approvals_elapsed)
    );
    println!(
        "| bad-HMAC refusals ({} clients, {refusals}) | {:.0} /s |",
        settings.threads,
        rate(refusals, refusals_elapsed)
    );
    println!(
        "| **the front adds to an approval (p50 through the front − p50 on the socket)** | **{} µs** |",
        us(p50.saturating_sub(direct_p50))
    );
}
