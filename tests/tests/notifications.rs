//! Self-shutdown notifications with real processes: a notification service run by the test
//! (in the gateway namespace, plain HTTP: the documents are signed), the daemon polling it every
//! second, the front and an OpenVPN server following the states.
use std::{
    io::{Read, Write},
    net::{IpAddr, TcpListener},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use gate_notify::{Notification, State};
use gate_tests::{
    approval::{Enrolled, counters, gatectl_store, leased, send},
    bed::{CLIENT_V4, GATEWAY_V4, TestBed},
    daemon::{Daemon, gatectl_in},
    front::{self, curl, daemon_requests, url_v4},
    probe::{Outcome, udp},
};

const NOTICE_PORT: u16 = 8088;
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A notification service: answers every request with the current document (404 if none).
struct Service {
    document: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Service {
    fn start(bed: &TestBed) -> Self {
        let listener = bed.gateway.run(|| TcpListener::bind(("127.0.0.1", NOTICE_PORT)).expect("bind the service"));
        let document: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let served = Arc::clone(&document);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0; 4096];
                let _ = stream.read(&mut buf);
                let body = served.lock().unwrap().clone();
                let answer = match body {
                    Some(body) => {
                        let mut head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
                                .into_bytes();
                        head.extend_from_slice(&body);
                        head
                    }
                    None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                };
                let _ = stream.write_all(&answer);
            }
        });
        Self { document }
    }

    fn serve(&self, document: Option<Vec<u8>>) {
        *self.document.lock().unwrap() = document;
    }
}

fn notice(serial: u64, www: State, web: State, vpn: State) -> Notification {
    Notification {
        product: "gate".into(),
        version: VERSION.into(),
        serial,
        issued_at: 1,
        message: format!("gate {VERSION} has a flaw; upgrade (notice {serial})"),
        www,
        web,
        vpn,
    }
}

fn signed(key: &ed25519_dalek::SigningKey, n: &Notification) -> Vec<u8> {
    serde_json::to_vec(&gate_notify::sign(n, key)).unwrap()
}

const OPENVPN: &str =
    "[[openvpn]]\nname = \"main\"\ngate = \"vpn\"\nprotocol = \"udp\"\nport = 1194\nnetwork = \"10.94.0.0/24\"\n";

fn notified_bed(key: &ed25519_dalek::SigningKey, openvpn: bool) -> (TestBed, std::path::PathBuf) {
    let mut bed = TestBed::new();
    let extra = format!(
        "[approval]\nfront_user = \"gate-web\"\n[notifications]\nurl = \"http://127.0.0.1:{NOTICE_PORT}/notice\"\ninterval = \"1s\"\npublic_key = \"{}\"\n[vpn]\nrun_dir = \"{}\"\n{}",
        gate_notify::encode_verifying_key(&key.verifying_key()),
        bed.state_dir.join("openvpn").display(),
        if openvpn { OPENVPN } else { "" }
    );
    let config = bed.config(&[("vpn", "udp", 1194)], &extra);
    (bed, config)
}

fn wait(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asks for the counters on a kept-alive connection to the internal API (as root); the answer's
/// status line, or `None` if the connection is closed.
fn counters_over(stream: &mut std::os::unix::net::UnixStream) -> Option<String> {
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    stream.write_all(b"GET /internal/counters HTTP/1.1\r\nHost: gate-daemon\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    let mut buf = [0; 8192];
    loop {
        let n = stream.read(&mut buf).ok().filter(|&n| n > 0)?;
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse().ok())?;
        if body.len() >= length {
            return head.lines().next().map(str::to_owned);
        }
    }
}

fn vpn_state(bed: &TestBed) -> String {
    let text = std::fs::read_to_string(bed.state_dir.join("openvpn/main/status.json")).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["state"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn vpn_pid(bed: &TestBed) -> Option<u64> {
    let text = std::fs::read_to_string(bed.state_dir.join("openvpn/main/status.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["pid"].as_u64()
}

#[test]
fn each_state_takes_effect_on_the_real_processes_and_ok_brings_them_back() {
    let key = gate_notify::generate_key();
    let (mut bed, config) = notified_bed(&key, true);
    let service = Service::start(&bed);
    service.serve(Some(signed(&key, &notice(1, State::Ok, State::Ok, State::Ok))));
    let daemon = Daemon::start(&bed, &config);
    let web = front::start(&mut bed, "");
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    wait("OpenVPN running", Duration::from_secs(15), || vpn_state(&bed) == "running");
    let source = format!("{}/v1/source", url_v4());
    assert_eq!(curl(&bed, &[&source]).0, 200);

    // www disabled: every route answers 503 with the message; nothing reaches the daemon.
    service.serve(Some(signed(&key, &notice(2, State::Disabled, State::Ok, State::Ok))));
    wait("www disabled", Duration::from_secs(6), || curl(&bed, &[&source]).0 == 503);
    let before = daemon_requests(&bed);
    for path in ["/v1/source", "/v1/approve", "/anything"] {
        let (code, body) = curl(&bed, &[&format!("{}{path}", url_v4())]);
        assert_eq!(code, 503, "{path}");
        assert!(body.contains("has a flaw; upgrade (notice 2)"), "{path}: {body}");
    }
    assert_eq!(daemon_requests(&bed), before, "nothing forwarded while www is disabled");

    // web disabled: the front and the internal API refuse connections, and a connection kept
    // open from before (as the front keeps its own) is closed, not served on.
    let mut kept = std::os::unix::net::UnixStream::connect(bed.socket()).unwrap();
    assert!(counters_over(&mut kept).is_some(), "a kept-alive connection answers");
    service.serve(Some(signed(&key, &notice(3, State::Ok, State::Disabled, State::Ok))));
    wait("web disabled", Duration::from_secs(6), || curl(&bed, &[&source]).0 == 0);
    wait("internal API closed", Duration::from_secs(3), || {
        std::os::unix::net::UnixStream::connect(bed.socket()).is_err()
    });
    assert_eq!(counters_over(&mut kept), None, "the kept connection was closed");

    // vpn disabled: OpenVPN stops and stays stopped, approvals are refused, leases closed.
    service.serve(Some(signed(&key, &notice(4, State::Ok, State::Ok, State::Ok))));
    let mut last = (0, String::new());
    let back = Instant::now() + Duration::from_secs(6);
    while Instant::now() < back && last.0 != 200 {
        last = curl(&bed, &[&source]);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(last.0, 200, "web back: {last:?}\nfront:\n{}\ndaemon:\n{}", web.log(), daemon.log());
    assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, 200);
    assert_eq!(leased(&bed), [IpAddr::from(CLIENT_V4)]);
    let pid = vpn_pid(&bed).expect("a pid");
    service.serve(Some(signed(&key, &notice(5, State::Ok, State::Ok, State::Disabled))));
    wait("OpenVPN shut down", Duration::from_secs(8), || vpn_state(&bed) == "shut down");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the OpenVPN process is gone");
    assert_eq!(leased(&bed), Vec::<IpAddr>::new(), "existing leases revoked");
    let before = counters(&bed);
    assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, 403);
    assert_eq!(counters(&bed).rejected["vpn_disabled"], before.rejected["vpn_disabled"] + 1);
    assert_eq!(
        udp(&bed.client, CLIENT_V4.into(), (GATEWAY_V4, 1194).into()),
        Outcome::Silence,
        "the port stays closed"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(vpn_state(&bed), "shut down", "not restarted while disabled");

    // Back to ok: everything resumes.
    service.serve(Some(signed(&key, &notice(6, State::Ok, State::Ok, State::Ok))));
    wait("OpenVPN back", Duration::from_secs(10), || vpn_state(&bed) == "running");
    assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, 200);
    let shown = gatectl_store(&bed, &["shutdown", "show"]);
    assert!(shown.contains("last notification accepted: serial 6"), "{shown}");
}

#[test]
fn bad_notifications_are_ignored_and_restarts_honour_the_state() {
    let key = gate_notify::generate_key();
    let (bed, config) = notified_bed(&key, false);
    let service = Service::start(&bed);
    service.serve(Some(signed(&key, &notice(10, State::Ok, State::Ok, State::Disabled))));
    let daemon = Daemon::start(&bed, &config);
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    wait("vpn disabled", Duration::from_secs(6), || {
        send(&bed, &alice.request(Some(CLIENT_V4), None), None).status == 403
    });

    let enabling = notice(11, State::Ok, State::Ok, State::Ok);
    let foreign = gate_notify::generate_key();
    let mut tampered = gate_notify::sign(&notice(12, State::Ok, State::Ok, State::Disabled), &key);
    tampered.payload = gate_notify::sign(&enabling, &foreign).payload;
    let mut wrong_version = enabling.clone();
    wrong_version.version = "99.0.0".into();
    wrong_version.serial = 13;
    let mut older = enabling.clone();
    older.serial = 9;
    for (what, document) in [
        ("unsigned", serde_json::to_vec(&enabling).unwrap()),
        ("signed by another key", signed(&foreign, &enabling)),
        ("tampered", serde_json::to_vec(&tampered).unwrap()),
        ("for another version", signed(&key, &wrong_version)),
        ("older than the last", signed(&key, &older)),
        ("not JSON", b"<html>maintenance</html>".to_vec()),
    ] {
        service.serve(Some(document));
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, 403, "{what}: still disabled");
    }
    assert!(daemon.log().contains("ignored a notification"), "{}", daemon.log());

    // A restart while disabled, with the service gone: still disabled.
    service.serve(None);
    daemon.stop();
    let daemon = Daemon::start(&bed, &config);
    assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, 403, "disabled after a restart");
    // The operator overrides, recorded as the operator's; clearing returns to the notification.
    let out = gatectl_store(&bed, &["shutdown", "set", "vpn", "ok"]);
    assert!(out.contains("vpn  ok        set by the operator"), "{out}");
    wait("vpn ok by hand", Duration::from_secs(4), || {
        send(&bed, &alice.request(Some(CLIENT_V4), None), None).status == 200
    });
    gatectl_store(&bed, &["shutdown", "clear", "vpn"]);
    wait("back to the notification's state", Duration::from_secs(4), || {
        send(&bed, &alice.request(Some(CLIENT_V4), None), None).status == 403
    });
    let out = gatectl_in(&bed.gateway, &bed.pin_dir.0, &["--store", bed.store().to_str().unwrap(), "status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("vpn  disabled  from the last notification"), "{status}");
    drop(daemon);
}

/// `python3 -m http.server` serving `dir` on 127.0.0.1:`port` inside the gateway; stopped on drop.
struct PythonServer(std::process::Child);

impl PythonServer {
    fn start(bed: &TestBed, dir: &std::path::Path, port: u16) -> Self {
        let child = bed
            .gateway
            .command("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory", dir.to_str().unwrap()])
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run python3 -m http.server");
        let server = Self(child);
        wait("python3 -m http.server listening", Duration::from_secs(10), || {
            bed.gateway.run(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        });
        server
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_notice_served_by_python_http_server_is_applied_through_its_redirect() {
    let key = gate_notify::generate_key();
    let (mut bed, config) = notified_bed(&key, false);
    // http.server answers HTTP/1.0, and redirects the directory /gate to /gate/ (its index).
    let site = bed.state_dir.join("site");
    std::fs::create_dir_all(site.join("gate")).unwrap();
    std::fs::write(site.join("gate/index.html"), signed(&key, &notice(5, State::Disabled, State::Ok, State::Ok)))
        .unwrap();
    let port = NOTICE_PORT + 1;
    let _server = PythonServer::start(&bed, &site, port);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(&format!("{NOTICE_PORT}/notice"), &format!("{port}/gate"))).unwrap();
    let daemon = Daemon::start(&bed, &config);
    let _web = front::start(&mut bed, "");
    wait("the notice applied", Duration::from_secs(10), || daemon.log().contains("accepted serial 5"));
    let source = format!("{}/v1/source", url_v4());
    wait("www disabled by the notice", Duration::from_secs(5), || curl(&bed, &[&source]).0 == 503);
    // In the audit trail, with what it said and where it came from.
    let trail = gate_tests::daemon::gatectl_ok(&bed.pin_dir.0, &["--config", config.to_str().unwrap(), "audit"]);
    assert!(
        trail.lines().any(|l| l.contains("notification_accepted  notification by http://")
            && l.contains("(serial 5: www disabled, web ok, vpn ok")),
        "{trail}"
    );
}
