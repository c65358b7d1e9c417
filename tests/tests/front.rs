//! The front (`gate-web`) with real TLS between network namespaces, the real daemon behind it
//! and the real gate in front of the VPN port. The daemon counts every request on its socket, so
//! "never forwarded" is read from its counters.
use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use gate_protocol::{approval::Approval, wire::REJECTED_STATUS};
use gate_tests::{
    approval::{Enrolled, headers},
    bed::{CLIENT_V4, CLIENT_V6, GATEWAY_V4, GATEWAY_V6, STRANGER_V4, STRANGER_V6, TestBed},
    daemon::{Daemon, bin, gatectl_ok},
    front::{self, ADMIT_FRONT, FRONT_PORT, curl, daemon_requests, raw_tls, uid_of, uids, url_v4, url_v6},
    probe::{Listeners, Outcome, udp},
};

const GATED: u16 = 1194;

fn to(source: IpAddr) -> SocketAddr {
    SocketAddr::new(TestBed::gateway_addr(source), GATED)
}

/// A bed with the daemon (admitting the front), the front, and alice enrolled to use it.
fn front_bed(front_extra: &str) -> (TestBed, Daemon, Daemon, Enrolled) {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], ADMIT_FRONT);
    let daemon = Daemon::start(&bed, &config);
    let web = front::start(&mut bed, front_extra);
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    (bed, daemon, web, alice)
}

fn gate_client(bed: &TestBed, alice: &Enrolled, args: &[&str]) -> std::process::Output {
    bed.client
        .command(bin("gate-client"))
        .args(["connect", "--profile", alice.path.to_str().unwrap(), "--server", &url_v4()])
        .args(args)
        .output()
        .expect("run gate-client")
}

#[test]
fn the_client_opens_the_gate_end_to_end_through_the_front() {
    let (bed, _daemon, web, alice) = front_bed("");
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    assert_eq!(uids(web.pid().as_raw()), (uid_of("gate-web"), uid_of("gate-web")), "the front runs unprivileged");
    for source in [IpAddr::from(CLIENT_V4), CLIENT_V6.into()] {
        assert_eq!(udp(&bed.client, source, to(source)), Outcome::Silence, "{source} before approval");
    }
    // No address flags: the client learns its IPv4 and IPv6 from the front's echo endpoint.
    let out = gate_client(&bed, &alice, &["--discover-via", &url_v4(), "--discover-via", &url_v6(), "--json"]);
    assert!(out.status.success(), "gate-client: {}", String::from_utf8_lossy(&out.stderr));
    let approval: Approval = serde_json::from_slice(&out.stdout).expect("approval JSON");
    let mut opened: Vec<IpAddr> = approval.opened.iter().map(|o| o.address).collect();
    opened.sort();
    assert_eq!(opened, [IpAddr::from(CLIENT_V4), CLIENT_V6.into()], "discovered and observed addresses");
    for (client, stranger) in
        [(IpAddr::from(CLIENT_V4), IpAddr::from(STRANGER_V4)), (CLIENT_V6.into(), STRANGER_V6.into())]
    {
        assert_eq!(udp(&bed.client, client, to(client)), Outcome::Reply, "{client} after approval");
        assert_eq!(udp(&bed.client, stranger, to(stranger)), Outcome::Silence, "{stranger}");
    }
    // A refusal through the front is the daemon's uniform answer.
    let revoked = gatectl_ok(&bed.pin_dir.0, &["--store", bed.store().to_str().unwrap(), "client", "revoke", "alice"]);
    assert!(revoked.contains("revoked alice"), "{revoked}");
    let out = gate_client(&bed, &alice, &["--no-discover"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A request head for the approval route with alice's valid headers.
fn approval_head(alice: &Enrolled, extra: &str) -> (String, String) {
    let outgoing = alice.request(Some(CLIENT_V4), None);
    let mut head = format!("POST /v1/approve HTTP/1.1\r\nHost: {GATEWAY_V4}\r\nConnection: close\r\n");
    for (name, value) in headers(&outgoing, None).into_iter().take(4) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Content-Type: application/json\r\n");
    head.push_str(extra);
    (head, outgoing.body_json())
}

#[test]
fn malformed_http_is_refused_by_the_front_and_never_forwarded() {
    let (bed, daemon, _web, alice) = front_bed("[limits]\nheader_timeout = \"1s\"\nbody_timeout = \"1s\"\n");
    let url = format!("{}/v1/approve", url_v4());
    let outgoing = alice.request(Some(CLIENT_V4), None);
    let body = outgoing.body_json();
    let auth: Vec<String> = headers(&outgoing, None).into_iter().take(4).map(|(n, v)| format!("{n}: {v}")).collect();
    let with_type = |content_type: &str, extra: &[&str]| {
        let mut args: Vec<String> =
            vec!["-X".into(), "POST".into(), "-H".into(), format!("Content-Type: {content_type}")];
        for header in &auth {
            args.extend(["-H".to_owned(), header.clone()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let with_auth = |extra: &[&str]| with_type("application/json", extra);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let unknown_field =
        serde_json::json!({"data": json["data"], "nonce": json["nonce"], "signature": json["signature"], "x": 1})
            .to_string();
    let wrong_type = serde_json::json!({"data": 5, "nonce": json["nonce"], "signature": json["signature"]}).to_string();
    let big_body = "x".repeat(20_000);
    let big_header = format!("X-Filler: {}", "a".repeat(20_000));
    let curl_cases: Vec<(&str, Vec<String>, u16)> = vec![
        ("unknown field", with_auth(&["--data-binary", &unknown_field, &url]), 400),
        ("wrong type", with_auth(&["--data-binary", &wrong_type, &url]), 400),
        ("oversize body", with_auth(&["--data-binary", &big_body, &url]), 413),
        ("oversize header", with_auth(&["-H", &big_header, "--data-binary", &body, &url]), 431),
        ("HTTP/1.0", with_auth(&["--http1.0", "--data-binary", &body, &url]), 505),
        ("unknown route", vec![format!("{}/internal/counters", url_v4())], 404),
        ("wrong method", vec![url.clone()], 405),
        ("not JSON", with_type("text/plain", &["--data-binary", &body, &url]), 415),
        ("query string", with_auth(&["--data-binary", &body, &format!("{url}?debug=1")]), 400),
    ];
    let before = daemon_requests(&bed);
    for (what, args, status) in &curl_cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _) = curl(&bed, &args);
        assert_eq!(code, *status, "{what}");
    }

    // Shapes curl will not send, as raw bytes over TLS.
    let (head, raw_body) = approval_head(&alice, "");
    let raw_cases: Vec<(&str, String, u16)> = vec![
        (
            "Content-Length with Transfer-Encoding",
            format!(
                "{head}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{raw_body}\r\n0\r\n\r\n",
                raw_body.len(),
                raw_body.len()
            ),
            400,
        ),
        (
            "duplicate Content-Length",
            format!("{head}Content-Length: {0}\r\nContent-Length: {0}\r\n\r\n{raw_body}", raw_body.len()),
            400,
        ),
        (
            "duplicate Content-Length, lines ending in a bare LF",
            format!(
                "{}Content-Length: {1}\nContent-Length: {1}\n\n{raw_body}",
                head.replace("\r\n", "\n"),
                raw_body.len()
            ),
            400,
        ),
        (
            "chunked body",
            format!("{head}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{raw_body}\r\n0\r\n\r\n", raw_body.len()),
            400,
        ),
        ("invalid chunking", format!("{head}Transfer-Encoding: chunked\r\n\r\nzz\r\n{raw_body}\r\n0\r\n\r\n"), 400),
        (
            "obsolete line folding",
            format!("{head}X-Folded: a\r\n  b\r\nContent-Length: {}\r\n\r\n{raw_body}", raw_body.len()),
            400,
        ),
        ("no Content-Length", format!("{head}\r\n"), 411),
    ];
    for (what, raw, status) in &raw_cases {
        let response = raw_tls(&bed, GATEWAY_V4.into(), raw.as_bytes());
        let code = response.as_ref().map_or(0, |r| r.status);
        assert_eq!(code, *status, "{what}: {response:?}");
    }

    // A slow client: half a header, then nothing. The front cuts it off after header_timeout.
    let started = Instant::now();
    let closed = bed.client.run(|| slow_client(GATEWAY_V4.into(), b"POST /v1/approve HTTP/1.1\r\nHost: x\r\n"));
    assert!(closed, "the front closed the slow connection");
    assert!(started.elapsed() < Duration::from_secs(5), "within its header timeout: {:?}", started.elapsed());

    assert_eq!(daemon_requests(&bed), before, "nothing above reached the daemon:\n{}", daemon.log());
    // And the same valid request still goes through.
    let args = with_auth(&["--data-binary", &body, &url]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, answer) = curl(&bed, &args);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(daemon_requests(&bed), before + 1);
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS session to the front (handshake done), with a 4-second read timeout.
fn tls_session(gateway: IpAddr) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect((gateway, FRONT_PORT))?;
    tcp.set_read_timeout(Some(Duration::from_secs(4)))?;
    let name = rustls::pki_types::ServerName::IpAddress(gateway.into());
    let connection = rustls::ClientConnection::new(gate_client::transport::insecure_tls_config(), name)
        .map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Reads until the front closes the session (or the read timeout); what it sent, and whether
/// it closed.
fn read_to_close(stream: &mut Tls) -> (Vec<u8>, bool) {
    let (mut got, mut buf) = (Vec::new(), [0; 1024]);
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return (got, false);
            }
            Err(_) => return (got, true),
        }
    }
}

/// Opens TLS to the front, sends `partial`, then waits; `true` if the front closes it.
fn slow_client(gateway: IpAddr, partial: &[u8]) -> bool {
    let mut stream = tls_session(gateway).expect("a TLS session");
    stream.write_all(partial).expect("send half a header");
    read_to_close(&mut stream).1
}

#[test]
fn slow_bodies_and_too_many_connections_are_cut_off() {
    let (bed, _daemon, _web, alice) =
        front_bed("[limits]\nheader_timeout = \"5s\"\nbody_timeout = \"1s\"\nmax_connections = 2\n");
    let before = daemon_requests(&bed);
    // A whole head, then a tenth of the promised body: 408 after the body timeout.
    let (head, body) = approval_head(&alice, "");
    let slow = format!("{head}Content-Length: {}\r\n\r\n{}", body.len(), &body[..body.len() / 10]);
    let (answer, closed) = bed.client.run(|| {
        let mut stream = tls_session(GATEWAY_V4.into()).expect("a TLS session");
        stream.write_all(slow.as_bytes()).expect("send");
        read_to_close(&mut stream)
    });
    assert!(closed, "closed after the answer");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&answer));

    // Two connections held open (each with half a header): a third is closed unanswered, and
    // once the two are gone, connections are accepted again.
    bed.client.run(|| {
        let mut held: Vec<Tls> = (0..2).map(|_| tls_session(GATEWAY_V4.into()).expect("within the cap")).collect();
        for stream in &mut held {
            stream.write_all(b"POST /v1/approve HTTP/1.1\r\n").expect("send");
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(tls_session(GATEWAY_V4.into()).is_err(), "a third connection is refused at the cap");
        drop(held);
    });
    std::thread::sleep(Duration::from_millis(200));
    let (code, _) = curl(&bed, &[&format!("{}/v1/nothing", url_v4())]);
    assert_eq!(code, 404, "accepting again below the cap");
    assert_eq!(daemon_requests(&bed), before, "nothing reached the daemon");
}

/// Holds as many connections from `source` to the front as it gets (up to `target`), each
/// refused one re-opened 50 ms after it closes, until `stop`; the most held at once.
fn hold_connections(source: IpAddr, target: usize, stop: &std::sync::atomic::AtomicBool) -> usize {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    use std::sync::atomic::Ordering;
    let front = SockAddr::from(SocketAddr::new(GATEWAY_V4.into(), FRONT_PORT));
    let open = || {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).ok()?;
        socket.bind(&SockAddr::from(SocketAddr::new(source, 0))).ok()?;
        socket.connect_timeout(&front, Duration::from_millis(500)).ok()?;
        socket.set_nonblocking(true).ok()?;
        Some(TcpStream::from(socket))
    };
    let (mut held, mut most) = (Vec::new(), 0);
    while !stop.load(Ordering::Relaxed) {
        while held.len() < target {
            match open() {
                Some(stream) => held.push(stream),
                None => break,
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        // A closed one reads as EOF (or a reset); an open idle one would block.
        held.retain_mut(
            |stream| matches!(stream.read(&mut [0; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        );
        most = most.max(held.len());
    }
    most
}

#[test]
fn one_source_holding_every_connection_it_can_does_not_keep_others_out() {
    // The defaults: 1,024 connections in all, 32 per source, 120 handshakes a minute per source.
    let (bed, _daemon, web, alice) = front_bed("");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (held, codes) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| bed.client.run(|| hold_connections(STRANGER_V4.into(), 1_100, &stop)));
        std::thread::sleep(Duration::from_secs(1));
        let mut codes = Vec::new();
        for _ in 0..25 {
            let (head, body) = approval_head(&alice, "");
            let raw = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
            codes.push(raw_tls(&bed, GATEWAY_V4.into(), raw.as_bytes()).map_or(0, |r| r.status));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (flood.join().expect("the flood thread"), codes)
    });
    assert_eq!(codes, [200; 25], "every approval of the other source is served:\n{}", web.log());
    assert!(held <= 32, "the flooding source held {held} connections at once (its cap is 32)");
    let log = web.log();
    let warnings = log.lines().filter(|l| l.contains("per-source connection cap")).count();
    assert_eq!(warnings, 1, "one line for the flood, not one per refusal:\n{log}");
    assert!(log.contains(&format!("first from {STRANGER_V4}")), "{log}");
}

#[test]
fn approvals_are_rate_limited_per_source() {
    let (bed, daemon, _web, alice) = front_bed("[limits]\napprovals_per_minute = 3\n");
    let before = daemon_requests(&bed);
    let mut codes = Vec::new();
    for _ in 0..5 {
        let (head, body) = approval_head(&alice, "");
        let raw = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
        codes.push(raw_tls(&bed, GATEWAY_V4.into(), raw.as_bytes()).map_or(0, |r| r.status));
    }
    assert_eq!(codes, [200, 200, 200, 429, 429], "{}", _web.log());
    assert_eq!(daemon_requests(&bed), before + 3, "refused ones were not forwarded");
    assert!(!daemon.log().contains("internal request"), "a log line per request:\n{}", daemon.log());
    // Another source has its own allowance (over IPv6 here).
    let (head, body) = approval_head(&alice, "");
    let raw = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
    assert_eq!(raw_tls(&bed, GATEWAY_V6.into(), raw.as_bytes()).map_or(0, |r| r.status), 200);
}

#[test]
fn the_internal_socket_admits_only_the_front() {
    let (bed, daemon, _web, _alice) = front_bed("");
    let socket = bed.socket();
    let socket = socket.to_str().unwrap();
    let as_user = |user: &str, path: &str| {
        std::process::Command::new("runuser")
            .args(["-u", user, "--", "curl", "--silent", "--output", "/dev/null", "--write-out", "%{http_code}"])
            .args(["--unix-socket", socket, &format!("http://gate{path}")])
            .output()
            .expect("runuser")
    };
    let nobody = as_user("nobody", "/v1/source");
    assert_eq!(nobody.status.code(), Some(7), "another user cannot even connect");
    let before = counters_not_from_front(&bed);
    // The front's user without the front's marker: refused.
    let unmarked = as_user("gate-web", "/v1/source");
    assert_eq!(String::from_utf8_lossy(&unmarked.stdout), REJECTED_STATUS.to_string());
    assert_eq!(counters_not_from_front(&bed), before + 1);
    assert!(daemon.log().contains("approval refused: not_from_front"), "{}", daemon.log());
}

fn counters_not_from_front(bed: &TestBed) -> u64 {
    gate_tests::approval::counters(bed).rejected["not_from_front"]
}

#[test]
fn killing_the_front_spares_the_gate_and_killing_the_daemon_gives_503() {
    let (mut bed, daemon, web, alice) = front_bed("[limits]\ndaemon_timeout = \"2s\"\n");
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    let out = gate_client(&bed, &alice, &["--no-discover", "--ipv4", &CLIENT_V4.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    web.kill9();
    assert_eq!(
        udp(&bed.client, CLIENT_V4.into(), to(CLIENT_V4.into())),
        Outcome::Reply,
        "the lease outlives the front"
    );
    assert_eq!(udp(&bed.client, STRANGER_V4.into(), to(STRANGER_V4.into())), Outcome::Silence);
    let leases = gatectl_ok(&bed.pin_dir.0, &["leases"]);
    assert!(leases.contains(&CLIENT_V4.to_string()), "{leases}");

    let _web = front::start(&mut bed, "[limits]\ndaemon_timeout = \"2s\"\n");
    daemon.kill9();
    let started = Instant::now();
    let (code, body) = curl(&bed, &[&format!("{}/v1/source", url_v4())]);
    assert_eq!(code, 503, "{body}");
    let (head, body) = approval_head(&alice, "");
    let raw = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
    assert_eq!(raw_tls(&bed, GATEWAY_V4.into(), raw.as_bytes()).map_or(0, |r| r.status), 503);
    assert!(started.elapsed() < Duration::from_secs(5), "answered, not hung: {:?}", started.elapsed());
    assert_eq!(udp(&bed.client, STRANGER_V4.into(), to(STRANGER_V4.into())), Outcome::Silence, "still closed");
}

/// Connections to the daemon's socket that are open right now (accepted ones carry its path in
/// the gateway namespace's /proc/net/unix; state 03: connected).
fn daemon_connections(bed: &TestBed) -> usize {
    let socket = bed.socket();
    bed.gateway
        .run(|| std::fs::read_to_string("/proc/thread-self/net/unix"))
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(socket.to_str().unwrap()) && l.split_whitespace().nth(5) == Some("03"))
        .count()
}

#[test]
fn the_front_reuses_its_daemon_connections_and_survives_a_daemon_restart() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], ADMIT_FRONT);
    let daemon = Daemon::start(&bed, &config);
    let _web = front::start(&mut bed, "");
    let source = format!("{}/v1/source", url_v4());
    for _ in 0..5 {
        assert_eq!(curl(&bed, &[&source]).0, 200);
    }
    assert_eq!(daemon_connections(&bed), 1, "five requests in turn, one kept connection");

    // The kept connection dies with the daemon; the next request goes on a new one.
    daemon.stop();
    let _daemon = Daemon::start(&bed, &config);
    let (code, body) = curl(&bed, &[&source]);
    assert_eq!(code, 200, "the first request after the restart: {body}");
    assert_eq!(daemon_connections(&bed), 1);
}

#[test]
fn only_a_trusted_proxy_may_name_the_client_address() {
    let (bed, _daemon, _web, _alice) = front_bed(&format!("trusted_proxies = [\"{CLIENT_V4}\"]\n"));
    let source = format!("{}/v1/source", url_v4());
    let forwarded = "X-Forwarded-For: 203.0.113.9, 198.51.100.77";
    // From the trusted proxy: the last address it names is the client.
    let (code, body) = curl(&bed, &["-H", forwarded, &source]);
    assert_eq!((code, body.as_str()), (200, r#"{"address":"198.51.100.77"}"#));
    // From anyone else: the header is ignored, the peer is the client.
    let (code, body) = curl(&bed, &["--interface", &STRANGER_V4.to_string(), "-H", forwarded, &source]);
    assert_eq!((code, body.as_str()), (200, format!(r#"{{"address":"{STRANGER_V4}"}}"#).as_str()));
    // A proxy's malformed header is refused, not guessed at.
    let (code, _) = curl(&bed, &["-H", "X-Forwarded-For: not-an-address", &source]);
    assert_eq!(code, 400);
}

/// A fresh self-signed certificate and key written to `cert` and `key` (readable by the front's
/// user); the certificate's DER.
fn write_certificate(cert: &std::path::Path, key: &std::path::Path) -> Vec<u8> {
    let made = rcgen::generate_simple_self_signed(vec!["gate-test".to_owned()]).expect("a certificate");
    std::fs::write(cert, made.cert.pem()).expect("write the certificate");
    std::fs::write(key, made.key_pair.serialize_pem()).expect("write the key");
    made.cert.der().to_vec()
}

/// The certificate the front presents to a new connection.
fn presented(bed: &TestBed) -> Vec<u8> {
    bed.client.run(|| {
        let stream = tls_session(GATEWAY_V4.into()).expect("a TLS session");
        stream.conn.peer_certificates().expect("a certificate")[0].to_vec()
    })
}

#[test]
fn a_reload_brings_a_renewed_certificate_and_new_limits_and_refuses_what_it_cannot_apply() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], ADMIT_FRONT);
    let _daemon = Daemon::start(&bed, &config);
    let (cert, key) = (bed.state_dir.join("web.crt"), bed.state_dir.join("web.key"));
    let first = write_certificate(&cert, &key);
    let tls = format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", cert.display(), key.display());
    let front_config = front::config(&mut bed, &format!("{tls}[limits]\napprovals_per_minute = 30\n"));
    let web = Daemon::start_front(&bed, &front_config);
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    assert_eq!(presented(&bed), first);
    let text = std::fs::read_to_string(&front_config).unwrap();

    // A renewed certificate at the same paths, and a lower approval rate.
    let renewed = write_certificate(&cert, &key);
    std::fs::write(&front_config, text.replace("approvals_per_minute = 30", "approvals_per_minute = 2")).unwrap();
    web.reload("reloaded");
    assert_eq!(presented(&bed), renewed, "new connections get the renewed certificate");
    let approve = || {
        let (head, body) = approval_head(&alice, "");
        let raw = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
        raw_tls(&bed, GATEWAY_V4.into(), raw.as_bytes()).map_or(0, |r| r.status)
    };
    let codes: Vec<u16> = (0..3).map(|_| approve()).collect();
    assert_eq!(codes, [200, 200, 429], "the new limit applies");

    // What cannot be applied changes nothing: a broken file, a key that needs a restart, a key
    // the front cannot read.
    let good = std::fs::read_to_string(&front_config).unwrap();
    for (bad, reason) in [
        (good.replace("[limits]", "[limits\n"), "reload refused"),
        (good.replace(&format!(":{FRONT_PORT}"), ":9443"), "listen changed: that needs a restart"),
        (good.replace(&key.display().to_string(), "/nonexistent/web.key"), "/nonexistent/web.key"),
    ] {
        std::fs::write(&front_config, bad).unwrap();
        let log = web.reload("reload refused");
        let last = log.lines().rev().find(|l| l.contains("reload refused")).unwrap_or_default();
        assert!(last.contains(reason), "{reason}: {log}");
        assert_eq!(presented(&bed), renewed, "still serving after a refused reload ({reason})");
    }
    assert!(web.log().contains("SIGHUP: reloading the config"));
}
