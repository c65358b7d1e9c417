//! Connection approval with real processes: a client enrolled by `gatectl client add`, requests
//! to the real daemon's internal socket, leases in the real maps and real packets through the
//! gate. Rows of the security table (../shared/reference/anchors.md) are named where asserted.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use gate_client::transport::Response;
use gate_protocol::{
    approval::Approval,
    encoding::{b64, unb64},
    wire::{REJECTED_BODY, REJECTED_STATUS},
};
use gate_tests::{
    approval::{
        Enrolled, align_to_second, counters, gatectl_store, headers, leased, raw, rejected_total, send, send_raw,
    },
    bed::{CLIENT_V4, CLIENT_V6, STRANGER_V4, STRANGER_V6, TestBed},
    daemon::{Daemon, bin, gatectl_ok},
    probe::{Listeners, Outcome, udp},
};

const GATED: u16 = 1194;
const OTHER_GATED: u16 = 1195;

fn to(source: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(TestBed::gateway_addr(source), port)
}

/// A bed with gates `vpn` (udp/1194) and `other` (udp/1195), the daemon, and alice enrolled
/// for `vpn` with the test key "client".
fn approval_bed(extra: &str) -> (TestBed, Daemon, Enrolled, PathBuf) {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED), ("other", "udp", OTHER_GATED)], extra);
    let daemon = Daemon::start(&bed, &config);
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    (bed, daemon, alice, config)
}

/// Runs the real `gate-client connect` in the client's namespace.
fn gate_client(bed: &TestBed, profile: &std::path::Path, args: &[&str]) -> std::process::Output {
    bed.client
        .command(bin("gate-client"))
        .arg("connect")
        .arg("--profile")
        .arg(profile)
        .args(args)
        .output()
        .expect("run gate-client")
}

/// Asserts the uniform refusal (row 11), that exactly one refusal was counted, with `reason`
/// if given, and that no lease appeared (row 8: no state change).
#[track_caller]
fn assert_refused(
    bed: &TestBed,
    what: &str,
    before: &gate_daemon::approval::reasons::CountersSnapshot,
    response: &Response,
    reason: Option<&str>,
) {
    assert_eq!(response.status, REJECTED_STATUS, "{what}: status");
    assert_eq!(response.body, REJECTED_BODY.as_bytes(), "{what}: body");
    let mut names: Vec<&str> =
        response.headers.iter().map(|(n, _)| n.as_str()).filter(|n| !matches!(*n, "date" | "connection")).collect();
    names.sort_unstable();
    assert_eq!(names, ["content-length", "content-type"], "{what}: the same headers every time");
    let after = counters(bed);
    assert_eq!(rejected_total(&after), rejected_total(before) + 1, "{what}: one refusal counted");
    assert_eq!(after.approved, before.approved, "{what}: nothing approved");
    if let Some(reason) = reason {
        assert_eq!(after.rejected[reason], before.rejected[reason] + 1, "{what}: counted as {reason}: {after:?}");
    }
    assert_eq!(leased(bed), Vec::<IpAddr>::new(), "{what}: no lease");
}

#[test]
fn an_enrolled_client_opens_the_gate_for_its_addresses_only_until_expiry() {
    // Rows 1, 2, 3: closed before, open for the approved addresses only, closed after expiry.
    let (bed, _daemon, alice, _) =
        approval_bed("[leases]\nconnect_window = \"3s\"\nidle_timeout = \"2s\"\nmax_lifetime = \"3s\"\n");
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    for source in [IpAddr::from(CLIENT_V4), CLIENT_V6.into()] {
        assert_eq!(udp(&bed.client, source, to(source, GATED)), Outcome::Silence, "{source} before approval");
    }
    let out =
        gate_client(&bed, &alice.path, &["--ipv4", &CLIENT_V4.to_string(), "--ipv6", &CLIENT_V6.to_string(), "--json"]);
    assert!(out.status.success(), "gate-client: {}", String::from_utf8_lossy(&out.stderr));
    let approval: Approval = serde_json::from_slice(&out.stdout).expect("approval JSON");
    let opened: Vec<IpAddr> = approval.opened.iter().map(|o| o.address).collect();
    assert_eq!(opened, [IpAddr::from(CLIENT_V4), CLIENT_V6.into()]);
    assert_eq!(approval.gate, "vpn");
    assert_eq!(approval.session_token.len(), 32);

    for (client, stranger) in
        [(IpAddr::from(CLIENT_V4), IpAddr::from(STRANGER_V4)), (CLIENT_V6.into(), STRANGER_V6.into())]
    {
        assert_eq!(udp(&bed.client, client, to(client, GATED)), Outcome::Reply, "{client} after approval");
        assert_eq!(udp(&bed.client, stranger, to(stranger, GATED)), Outcome::Silence, "{stranger}: not approved");
        assert_eq!(udp(&bed.client, client, to(client, OTHER_GATED)), Outcome::Silence, "{client}: other gate");
    }
    std::thread::sleep(Duration::from_millis(3300));
    for source in [IpAddr::from(CLIENT_V4), CLIENT_V6.into()] {
        assert_eq!(udp(&bed.client, source, to(source, GATED)), Outcome::Silence, "{source} after expiry");
    }
}

#[test]
fn the_observed_source_is_opened_beside_the_reported_addresses() {
    // Row 15: observed source added.
    let (bed, _daemon, alice, _) = approval_bed("");
    let response = send(&bed, &alice.request(None, Some(CLIENT_V6)), Some(STRANGER_V4.into()));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(leased(&bed), [IpAddr::from(STRANGER_V4), CLIENT_V6.into()]);
    let response = send(&bed, &alice.request(None, None), None);
    assert_eq!(response.status, REJECTED_STATUS, "nothing to open");
}

#[test]
fn the_client_refuses_an_answer_it_cannot_verify() {
    // The client trusts nothing unverified: a profile whose server key is wrong sees the
    // (genuine) approval fail its checks.
    let (bed, _daemon, alice, _) = approval_bed("");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&alice.path).unwrap()).unwrap();
    let wrong = gate_protocol::crypto_box::SecretKey::generate(&mut gate_protocol::rand::rngs::OsRng).public_key();
    json["server_box_public"] = b64(wrong.as_bytes()).into();
    let tampered = bed.state_dir.join("tampered.profile");
    std::fs::write(&tampered, json.to_string()).unwrap();
    let out = gate_client(&bed, &tampered, &["--ipv4", &CLIENT_V4.to_string()]);
    assert!(!out.status.success());
    // The daemon could not open the box sealed to the wrong key either: refused, no lease.
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(leased(&bed), Vec::<IpAddr>::new());
}

#[test]
fn malformed_requests_get_the_uniform_answer_and_change_nothing() {
    // Row 8: bit flips in each field, truncation, appended and prepended data, oversize, bad
    // base64, wrong JSON types; row 11: one identical answer.
    let (bed, _daemon, alice, _) = approval_bed("");
    let outgoing = alice.request(Some(CLIENT_V4), None);
    let good_headers = headers(&outgoing, None);
    let body = outgoing.body_json();
    let mut cases: Vec<(String, Vec<u8>, Option<&str>)> = Vec::new();

    // A bit flipped in the decoded value of each header (re-encoded, so it parses).
    for (index, name) in ["gate-token", "gate-timestamp", "gate-nonce", "gate-signature"].iter().enumerate() {
        let mut h = good_headers.clone();
        let value = &h[index].1;
        h[index].1 = match *name {
            "gate-signature" => {
                let mut bytes = unb64(value, "sig").unwrap();
                bytes[10] ^= 0x01;
                b64(&bytes)
            }
            "gate-timestamp" => (value.parse::<u64>().unwrap() ^ 0x01).to_string(),
            _ => {
                let mut chars: Vec<char> = value.chars().collect();
                chars[3] = if chars[3] == '0' { '1' } else { '0' };
                chars.into_iter().collect()
            }
        };
        let reason = match *name {
            "gate-token" => "unknown_token",
            _ => "bad_hmac",
        };
        cases.push((format!("flipped {name}"), raw(&h, body.as_bytes()), Some(reason)));
    }
    // A bit flipped in the decoded value of each body field.
    for field in ["data", "nonce", "signature"] {
        let mut json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut bytes = unb64(json[field].as_str().unwrap(), field).unwrap();
        bytes[0] ^= 0x80;
        json[field] = b64(&bytes).into();
        cases.push((
            format!("flipped body {field}"),
            raw(&good_headers, json.to_string().as_bytes()),
            Some("bad_hmac"),
        ));
    }
    // A character flipped in the raw text of each header and field: refused, whatever the layer.
    for index in 0..4 {
        let mut h = good_headers.clone();
        let mut bytes = h[index].1.clone().into_bytes();
        bytes[1] ^= 0x01; // stays a printable header character
        h[index].1 = String::from_utf8(bytes).unwrap();
        cases.push((format!("raw flip in header {}", h[index].0), raw(&h, body.as_bytes()), None));
    }
    for at in [10, body.len() / 2, body.len() - 5] {
        let mut bytes = body.clone().into_bytes();
        bytes[at] ^= 0x01;
        cases.push((format!("raw flip in body at {at}"), raw(&good_headers, &bytes), None));
    }
    let cut = &body.as_bytes()[..body.len() / 2];
    cases.push(("truncated body".into(), raw(&good_headers, cut), Some("malformed")));
    cases.push(("empty body".into(), raw(&good_headers, b""), Some("malformed")));
    cases.push(("appended data".into(), raw(&good_headers, format!("{body}x").as_bytes()), Some("malformed")));
    cases.push(("appended object".into(), raw(&good_headers, format!("{body}{{}}").as_bytes()), Some("malformed")));
    cases.push(("prepended data".into(), raw(&good_headers, format!("x{body}").as_bytes()), Some("malformed")));
    let big = format!("{{\"data\":\"{}\",\"nonce\":\"\",\"signature\":\"\"}}", "A".repeat(9000));
    cases.push(("oversize body".into(), raw(&good_headers, big.as_bytes()), Some("too_large")));
    let mut h = good_headers.clone();
    h[0].1 = "a".repeat(16 * 1024);
    cases.push(("oversize header".into(), raw(&h, body.as_bytes()), Some("malformed")));
    let mut h = good_headers.clone();
    h.push(h[0].clone());
    cases.push(("duplicated header".into(), raw(&h, body.as_bytes()), Some("malformed")));
    cases.push(("missing header".into(), raw(&good_headers[1..], body.as_bytes()), Some("malformed")));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    for (what, bad) in [
        ("data not base64", body.replacen(json["data"].as_str().unwrap(), "!!!!", 1)),
        ("url-safe base64", body.replacen('+', "-", 1).replacen('/', "_", 1)),
        ("padding removed", body.replacen("=\"", "\"", 1)),
        (
            "number for data",
            serde_json::json!({"data": 1, "nonce": json["nonce"], "signature": json["signature"]}).to_string(),
        ),
        (
            "null nonce",
            serde_json::json!({"data": json["data"], "nonce": null, "signature": json["signature"]}).to_string(),
        ),
        ("missing field", serde_json::json!({"data": json["data"], "nonce": json["nonce"]}).to_string()),
        (
            "extra field",
            serde_json::json!({"data": json["data"], "nonce": json["nonce"], "signature": json["signature"], "x": 1})
                .to_string(),
        ),
        ("array", "[]".to_owned()),
        ("not JSON", "\u{0}\u{1}garbage".to_owned()),
    ] {
        assert_ne!(bad, body, "{what}: the mutation applied");
        cases.push((what.into(), raw(&good_headers, bad.as_bytes()), Some("malformed")));
    }

    for (what, bytes, reason) in &cases {
        let before = counters(&bed);
        let response = send_raw(&bed, bytes);
        assert_refused(&bed, what, &before, &response, *reason);
    }
    // The untouched request still works: nothing above consumed its nonce or broke the daemon.
    let response = send(&bed, &outgoing, None);
    assert_eq!(response.status, 200, "the original request after {} bad ones", cases.len());
}

#[test]
fn each_layer_checks_its_own_key() {
    // Unknown client; valid HMAC with a foreign box key; valid HMAC and box with a foreign RSA
    // key; a payload that does not repeat the headers; a gate the client may not open.
    let (bed, _daemon, alice, _) = approval_bed("");
    let v4 = Some(CLIENT_V4);
    let mut stranger = alice.keys(false, false);
    stranger.token = gate_protocol::keys::Token([0x5a; 16]);
    let cases = [
        ("unknown token", alice.build(&stranger, &alice.payload(0, v4, None)), "unknown_token"),
        ("foreign box key", alice.build(&alice.keys(true, false), &alice.payload(0, v4, None)), "bad_box"),
        ("foreign RSA key", alice.build(&alice.keys(false, true), &alice.payload(0, v4, None)), "bad_signature"),
        (
            "gate not allowed",
            {
                let mut p = alice.payload(0, v4, None);
                p.gate = "other".into();
                alice.build(&alice.keys(false, false), &p)
            },
            "gate_not_allowed",
        ),
        (
            "payload nonce differs",
            {
                let keys = alice.keys(false, false);
                let payload = alice.payload(0, v4, None);
                let mut outgoing = alice.build(&keys, &payload);
                let other = alice.build(&keys, &alice.payload(0, v4, None));
                // The other request's headers (valid HMAC over this body is recomputed below).
                outgoing.headers.nonce = other.headers.nonce.clone();
                outgoing.headers.signature = resign(&alice, &outgoing);
                outgoing
            },
            "payload_mismatch",
        ),
    ];
    for (what, outgoing, reason) in &cases {
        let before = counters(&bed);
        let response = send(&bed, outgoing, None);
        assert_refused(&bed, what, &before, &response, Some(reason));
    }
}

/// The HMAC a holder of the secret computes over `outgoing`'s headers and body.
fn resign(alice: &Enrolled, outgoing: &gate_protocol::request::Outgoing) -> String {
    let h = &outgoing.headers;
    let input = gate_protocol::canonical::request_hmac_input(&h.token, &h.timestamp, &h.nonce, &outgoing.body);
    b64(&gate_protocol::request::hmac_tag(&alice.profile.keys.secret, &input))
}

#[test]
fn forbidden_addresses_are_refused() {
    // Row 15: unspecified, loopback, multicast, link-local refused (IPv4 and IPv6, row 18).
    let (bed, _daemon, alice, _) = approval_bed("");
    let v4 = |s: &str| (Some(s.parse::<Ipv4Addr>().unwrap()), None);
    let v6 = |s: &str| (None, Some(s.parse::<Ipv6Addr>().unwrap()));
    for (ipv4, ipv6) in [
        v4("0.0.0.0"),
        v4("127.0.0.1"),
        v4("224.0.0.1"),
        v4("169.254.0.1"),
        v4("255.255.255.255"),
        v6("::"),
        v6("::1"),
        v6("ff02::1"),
        v6("fe80::1"),
        v6("::ffff:192.0.2.2"),
    ] {
        let before = counters(&bed);
        let response = send(&bed, &alice.request(ipv4, ipv6), Some(CLIENT_V4.into()));
        assert_refused(&bed, &format!("{ipv4:?} {ipv6:?}"), &before, &response, Some("forbidden_address"));
    }
}

#[test]
fn a_replay_is_refused_also_after_a_restart() {
    // Rows 4, 6, 7.
    let (mut bed, daemon, alice, config) = approval_bed("");
    let outgoing = alice.request(Some(CLIENT_V4), None);
    let bytes = raw(&headers(&outgoing, None), outgoing.body_json().as_bytes());
    assert_eq!(send_raw(&bed, &bytes).status, 200);
    gatectl_ok(&bed.pin_dir.0, &["revoke", &CLIENT_V4.to_string()]);
    let before = counters(&bed);
    assert_refused(&bed, "replay", &before, &send_raw(&bed, &bytes), Some("replay"));
    daemon.stop();
    let _daemon = Daemon::start(&bed, &config);
    let before = counters(&bed);
    assert_refused(&bed, "replay after restart", &before, &send_raw(&bed, &bytes), Some("replay"));
    // An unauthenticated request with a fresh nonce never reaches the nonce store: after it
    // fails its HMAC, the same nonce with a valid HMAC is still accepted.
    let fresh = alice.request(Some(CLIENT_V4), None);
    let mut forged = headers(&fresh, None);
    forged[3].1 = b64(&[0; 64]);
    let before = counters(&bed);
    assert_refused(
        &bed,
        "bad HMAC",
        &before,
        &send_raw(&bed, &raw(&forged, fresh.body_json().as_bytes())),
        Some("bad_hmac"),
    );
    assert_eq!(send(&bed, &fresh, None).status, 200, "the nonce was not burnt by the forgery");
    let _ = &mut bed;
}

#[test]
fn the_same_request_sent_at_once_is_approved_once() {
    // The nonce is written with the approval; until then, the approvals being checked hold it.
    let (bed, _daemon, alice, _) = approval_bed("");
    let outgoing = alice.request(Some(CLIENT_V4), None);
    let bytes = raw(&headers(&outgoing, None), outgoing.body_json().as_bytes());
    let before = counters(&bed);
    let copies = 8;
    let start = std::sync::Barrier::new(copies);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let sends: Vec<_> = (0..copies)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    send_raw(&bed, &bytes).status
                })
            })
            .collect();
        sends.into_iter().map(|send| send.join().unwrap()).collect()
    });
    assert_eq!(statuses.iter().filter(|&&status| status == 200).count(), 1, "{statuses:?}");
    let after = counters(&bed);
    assert_eq!(after.approved, before.approved + 1);
    assert_eq!(after.rejected["replay"], before.rejected["replay"] + copies as u64 - 1, "{after:?}");
    assert_eq!(after.rsa_verifications, before.rsa_verifications + 1, "a replay never reaches the signature");
}

#[test]
fn a_request_refused_past_its_nonce_check_is_spent() {
    // A valid HMAC and box with a foreign RSA key: refused at the signature, and the nonce is
    // spent all the same, so sending it again costs no second RSA verification.
    let (bed, _daemon, alice, _) = approval_bed("");
    let outgoing = alice.build(&alice.keys(false, true), &alice.payload(0, Some(CLIENT_V4), None));
    let bytes = raw(&headers(&outgoing, None), outgoing.body_json().as_bytes());
    let before = counters(&bed);
    assert_refused(&bed, "foreign RSA key", &before, &send_raw(&bed, &bytes), Some("bad_signature"));
    let between = counters(&bed);
    assert_refused(&bed, "sent again", &between, &send_raw(&bed, &bytes), Some("replay"));
    assert_eq!(counters(&bed).rsa_verifications, between.rsa_verifications, "no second RSA verification");
}

#[test]
fn the_clock_window_holds_at_both_edges() {
    // Row 5: inside the window accepted, one second outside refused, both directions.
    let (bed, _daemon, alice, _) = approval_bed("[approval]\nwindow = \"30s\"\n");
    let keys = alice.keys(false, false);
    for (skew, accepted) in [(30, true), (-30, true), (31, false), (-31, false)] {
        let payload = alice.payload(0, Some(CLIENT_V4), None);
        align_to_second();
        let payload = gate_protocol::wire::Payload {
            timestamp: gate_tests::approval::unix_now().checked_add_signed(skew).unwrap(),
            ..payload
        };
        let outgoing = alice.build(&keys, &payload);
        let before = counters(&bed);
        let response = send(&bed, &outgoing, None);
        if accepted {
            assert_eq!(response.status, 200, "skew {skew}s: {response:?}");
            gatectl_ok(&bed.pin_dir.0, &["revoke", &CLIENT_V4.to_string()]);
        } else {
            assert_refused(&bed, &format!("skew {skew}s"), &before, &response, Some("skew"));
        }
    }
}

#[test]
fn a_flood_of_bad_hmacs_costs_no_rsa() {
    // Row 9.
    let (bed, _daemon, alice, _) = approval_bed("");
    let before = counters(&bed);
    let started = Instant::now();
    for _ in 0..200 {
        let outgoing = alice.request(Some(CLIENT_V4), None);
        let mut h = headers(&outgoing, None);
        h[3].1 = b64(&[0x42; 64]);
        let response = send_raw(&bed, &raw(&h, outgoing.body_json().as_bytes()));
        assert_eq!(response.status, REJECTED_STATUS);
    }
    let after = counters(&bed);
    assert_eq!(after.rejected["bad_hmac"] - before.rejected["bad_hmac"], 200);
    assert_eq!(after.hmac_checks - before.hmac_checks, 200);
    assert_eq!(after.rsa_verifications, before.rsa_verifications, "no RSA operation for a bad HMAC");
    assert_eq!(leased(&bed), Vec::<IpAddr>::new());
    // Every refusal is counted, but the log stays bounded under the flood.
    let log = _daemon.log();
    let lines = log.lines().filter(|l| l.contains("approval refused")).count();
    let seconds = usize::try_from(started.elapsed().as_secs()).unwrap() + 2;
    assert!(lines <= 20 * seconds, "{lines} log lines for 200 refusals in under {seconds} s");
}

#[test]
fn revocation_refuses_at_once_and_closes_leases_within_a_second() {
    // Row 14, through gatectl (with the maps) and through the daemon (gatectl without them).
    let (bed, _daemon, alice, _) = approval_bed("");
    let bob = Enrolled::new(&bed, "bob", &["vpn"], "foreign");
    let carol_key = "client"; // carol shares a NAT address with bob
    let carol = Enrolled::new(&bed, "carol", &["vpn"], carol_key);
    assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), Some(CLIENT_V6)), None).status, 200);
    assert_eq!(send(&bed, &bob.request(Some(STRANGER_V4), None), None).status, 200);
    assert_eq!(send(&bed, &carol.request(Some(STRANGER_V4), Some(STRANGER_V6)), None).status, 200);

    // alice: gatectl closes her leases itself.
    let out = gatectl_store(&bed, &["client", "revoke", "alice"]);
    assert!(out.contains("revoked alice; closed 2 lease(s)"), "{out}");
    assert_eq!(leased(&bed), [IpAddr::from(STRANGER_V4), STRANGER_V6.into()]);
    let before = counters(&bed);
    let response = send(&bed, &alice.request(Some(CLIENT_V4), None), None);
    assert_refused_keeping(&bed, "revoked alice", &before, &response, "revoked");

    // carol: revoked by a gatectl that cannot reach the maps; the daemon closes her own
    // address within a second, and keeps the address she shares with bob open for him.
    let store = bed.store();
    let out = Command::new(bin("gatectl"))
        .args(["--pin-dir", "/nonexistent", "--store", store.to_str().unwrap(), "client", "revoke", "carol"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let start = Instant::now();
    while leased(&bed).contains(&STRANGER_V6.into()) {
        assert!(start.elapsed() < Duration::from_secs(1), "carol's lease still open after a second");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(leased(&bed), [IpAddr::from(STRANGER_V4)], "bob's address stays open");

    let listed = gatectl_store(&bed, &["client", "list"]);
    assert!(listed.lines().any(|l| l.starts_with("alice") && l.contains("revoked")), "{listed}");
    assert!(listed.lines().any(|l| l.starts_with("bob") && l.contains("active")), "{listed}");
}

/// As [`assert_refused`] for a bed that keeps other clients' leases.
#[track_caller]
fn assert_refused_keeping(
    bed: &TestBed,
    what: &str,
    before: &gate_daemon::approval::reasons::CountersSnapshot,
    response: &Response,
    reason: &str,
) {
    let leases = leased(bed);
    assert_eq!((response.status, response.body.as_slice()), (REJECTED_STATUS, REJECTED_BODY.as_bytes()), "{what}");
    let after = counters(bed);
    assert_eq!(after.rejected[reason], before.rejected[reason] + 1, "{what}: {after:?}");
    assert_eq!(after.approved, before.approved, "{what}");
    assert_eq!(leased(bed), leases, "{what}: no lease changed");
}

#[test]
fn a_lease_that_cannot_be_written_turns_the_approval_into_a_refusal() {
    // Row 16: with the IPv4 map full, an approval for IPv6 and IPv4 is refused and leaves
    // nothing behind; the IPv6 lease it replaced is put back as it was.
    let (bed, _daemon, alice, _) = approval_bed("[leases]\ncapacity = 1\nsweep_interval = \"1h\"\n");
    let pins = &bed.pin_dir.0;
    gatectl_ok(pins, &["allow", "198.51.100.9", "--gate", "vpn", "--ttl", "1h"]);
    gatectl_ok(pins, &["allow", &CLIENT_V6.to_string(), "--gate", "vpn", "--ttl", "1h"]);
    let before_leases = gatectl_ok(pins, &["leases", "--json"]);
    let before = counters(&bed);
    let response = send(&bed, &alice.request(None, Some(CLIENT_V6)), Some(CLIENT_V4.into()));
    assert_eq!((response.status, response.body.as_slice()), (REJECTED_STATUS, REJECTED_BODY.as_bytes()));
    let after = counters(&bed);
    assert_eq!(after.rejected["lease_failed"], before.rejected["lease_failed"] + 1);
    let after_leases: serde_json::Value = serde_json::from_str(&gatectl_ok(pins, &["leases", "--json"])).unwrap();
    let before_leases: serde_json::Value = serde_json::from_str(&before_leases).unwrap();
    let shape = |v: &serde_json::Value| -> Vec<(String, String, u64)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let address = l["address"].as_str().unwrap().to_owned();
                let state = l["state"].as_str().unwrap().to_owned();
                // Deadlines to the minute: the restored lease is the old one, not a fresh one.
                (address, state, l["idle_timeout_ms"].as_u64().unwrap())
            })
            .collect()
    };
    assert_eq!(shape(&after_leases), shape(&before_leases), "the maps are as before");
    let idle_after = after_leases.as_array().unwrap().iter().find(|l| l["address"] == CLIENT_V6.to_string()).unwrap();
    assert_eq!(idle_after["idle_timeout_ms"], 0, "the operator's TTL lease, not the approval's idle lease");
}

#[test]
fn enrollment_writes_a_private_profile_and_refuses_bad_input() {
    use std::os::unix::fs::PermissionsExt;
    let (bed, _daemon, alice, _) = approval_bed("");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&alice.path), 0o600, "the profile holds secrets");
    assert_eq!(mode(&bed.store()), 0o600, "the store holds secrets");

    let shown = gatectl_store(&bed, &["client", "show", "alice"]);
    assert!(shown.contains(&alice.profile.keys.token.to_string()), "{shown}");
    let secret = b64(&alice.profile.keys.secret.0);
    let listed = gatectl_store(&bed, &["client", "list", "--json"]);
    for output in [&shown, &listed, &gatectl_store(&bed, &["client", "show", "alice", "--json"])] {
        assert!(!output.contains(&secret), "no secret in gatectl's output");
    }

    let store = bed.store();
    let key = gate_tests::approval::vector_key("client");
    let add = |name: &str, gate: &str, out: &std::path::Path| {
        Command::new(bin("gatectl"))
            .args(["--pin-dir", bed.pin_dir.0.to_str().unwrap(), "--store", store.to_str().unwrap()])
            .args(["client", "add", name, "--gate", gate, "--rsa-key", key.to_str().unwrap(), "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    let fresh = bed.state_dir.join("fresh.profile");
    let before = std::fs::read(&alice.path).unwrap();
    for (name, gate, out, expect) in [
        ("alice", "vpn", fresh.as_path(), "already exists"),
        ("bob", "vpn", alice.path.as_path(), "exists; not overwriting"),
        ("bob", "nosuch", fresh.as_path(), "nosuch"),
        ("../evil", "vpn", fresh.as_path(), "client name"),
    ] {
        let out = add(name, gate, out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expect), "{name} {gate}: {stderr}");
        assert!(!fresh.exists(), "{name} {gate}: no profile left behind");
    }
    assert_eq!(std::fs::read(&alice.path).unwrap(), before, "the existing profile is untouched");
    let listed = gatectl_store(&bed, &["client", "list"]);
    assert_eq!(listed.lines().count(), 2, "header and alice only:\n{listed}");
}
