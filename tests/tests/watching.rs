//! Watching the gate (issue 16, docs/operations.md "Watching it"), with real traffic moving
//! what is watched: the metrics pages (the daemon's and the front's, each on a loopback port of
//! the gateway's namespace, scraped with curl as Prometheus would; every page passes `promtool
//! check metrics`, Debian's prometheus package), the packaged alert rules (`promtool test
//! rules`), and `gatectl top`.
use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
    process::Stdio,
    time::Duration,
};

use gate_tests::{
    approval::{Enrolled, send},
    bed::{CLIENT_V4, STRANGER_V4, TestBed},
    daemon::{Daemon, bin, gatectl, gatectl_ok},
    front::{self, ADMIT_FRONT, curl, url_v4},
    metrics::{DAEMON_METRICS, FRONT_METRICS, promtool_clean, scrape, scrape_until, with_daemon_metrics},
    probe::{Listeners, Outcome, udp},
};

const GATED: u16 = 1194;

fn to(source: IpAddr) -> SocketAddr {
    SocketAddr::new(TestBed::gateway_addr(source), GATED)
}

fn connect(bed: &TestBed, alice: &Enrolled) -> std::process::Output {
    bed.client
        .command(bin("gate-client"))
        .args(["connect", "--profile", alice.path.to_str().unwrap(), "--server", &url_v4()])
        .args(["--no-discover", "--ipv4", &CLIENT_V4.to_string()])
        .output()
        .expect("run gate-client")
}

#[test]
fn the_daemon_and_the_front_serve_metrics_that_move_with_real_traffic() {
    let mut bed = TestBed::new();
    let config = with_daemon_metrics(bed.config(&[("vpn", "udp", GATED)], ADMIT_FRONT));
    let daemon = Daemon::start(&bed, &config);
    let _web = front::start(&mut bed, &format!("metrics_listen = \"{FRONT_METRICS}\"\n"));
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);

    let dropped = "gate_xdp_packets_total{gate=\"vpn\",reason=\"dropped_no_lease\"}";
    let passed = "gate_xdp_packets_total{gate=\"vpn\",reason=\"passed_lease\"}";
    let live = "gate_leases{gate=\"vpn\",state=\"live\",family=\"ipv4\"}";
    let before = scrape(&bed, DAEMON_METRICS);
    promtool_clean(&before.text);
    assert_eq!(before.get(&format!("gate_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1.0);
    assert_eq!(before.get("gate_state_readable"), 1.0);
    let gated = before
        .samples
        .iter()
        .filter(|(series, _)| series.starts_with(&format!("gate_interface_gated{{interface=\"{}\"", bed.gateway_if)))
        .map(|(_, value)| *value)
        .collect::<Vec<_>>();
    assert_eq!(gated, [1.0], "the bed's interface, gated:\n{}", before.text);
    assert_eq!(before.get(live), 0.0);
    assert_eq!(before.get("gate_approvals_total{gate=\"vpn\"}"), 0.0);
    let capacity = f64::from(gate_common::DEFAULT_LEASE_CAPACITY);
    assert_eq!(before.get("gate_lease_map_capacity{family=\"ipv4\"}"), capacity, "{}", before.text);

    // A stranger's packets: each one dropped by XDP and counted.
    for _ in 0..5 {
        assert_eq!(udp(&bed.client, STRANGER_V4.into(), to(STRANGER_V4.into())), Outcome::Silence);
    }
    let after_flood = scrape(&bed, DAEMON_METRICS);
    assert!(after_flood.get(dropped) >= before.get(dropped) + 5.0, "{}", after_flood.text);

    // Approved through the front: an approval, its time, a live lease, and its packets passed.
    let out = connect(&bed, &alice);
    assert!(out.status.success(), "gate-client: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(udp(&bed.client, CLIENT_V4.into(), to(CLIENT_V4.into())), Outcome::Reply);
    let approved = scrape(&bed, DAEMON_METRICS);
    promtool_clean(&approved.text);
    assert_eq!(approved.get("gate_approvals_total{gate=\"vpn\"}"), 1.0, "{}", approved.text);
    assert_eq!(approved.get("gate_approval_duration_seconds_count"), 1.0);
    assert_eq!(approved.get("gate_approval_duration_seconds_bucket{le=\"+Inf\"}"), 1.0);
    assert!(approved.get("gate_approval_duration_seconds_sum") > 0.0);
    assert_eq!(approved.get(live), 1.0, "{}", approved.text);
    assert_eq!(approved.get("gate_lease_map_entries{family=\"ipv4\"}"), 1.0);
    assert!(approved.get(passed) >= 1.0, "{}", approved.text);
    // The packaged alerts read metrics this page has (a rename would silence them).
    for name in alert_metrics() {
        assert!(approved.text.contains(&format!("# TYPE {name} ")), "gate-alerts.yml reads {name}, not on the page");
    }

    // Revoked, then refused: the refusal by its reason, at the daemon and as a 403 at the front.
    let store = bed.store();
    gatectl_ok(&bed.pin_dir.0, &["--store", store.to_str().unwrap(), "client", "revoke", "alice"]);
    assert!(!connect(&bed, &alice).status.success(), "refused once revoked");
    let refused = scrape(&bed, DAEMON_METRICS);
    assert_eq!(refused.get("gate_approval_refusals_total{reason=\"revoked\"}"), 1.0, "{}", refused.text);
    // The log says the same with fields a log system indexes.
    let log = daemon.log();
    let approved = format!("client=alice gate=vpn address={CLIENT_V4}");
    let refusal = format!("reason=revoked client=alice address={CLIENT_V4}");
    assert!(log.lines().any(|l| l.contains("approved client") && l.ends_with(&approved)), "{approved}:\n{log}");
    assert!(log.lines().any(|l| l.contains("approval refused: revoked") && l.ends_with(&refusal)), "{refusal}:\n{log}");
    assert_eq!(refused.get("gate_approvals_total{gate=\"vpn\"}"), 1.0);

    let web = scrape(&bed, FRONT_METRICS);
    promtool_clean(&web.text);
    assert_eq!(web.get(&format!("gate_web_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1.0);
    assert!(web.get("gate_web_responses_total{status=\"200\"}") >= 1.0, "{}", web.text);
    assert!(web.get("gate_web_responses_total{status=\"403\"}") >= 1.0, "{}", web.text);
    assert!(web.has("gate_web_refused_connections_total{limit=\"per_source\"}"), "{}", web.text);
    assert!(web.has("gate_web_open_connections"), "{}", web.text);

    // Neither page is on the public front, nor reachable from the client's side.
    let (code, _) = curl(&bed, &[&format!("{}/metrics", url_v4())]);
    assert_eq!(code, 404, "the public front has no metrics route");
    let reach = bed
        .client
        .command("curl")
        .args([
            "--silent",
            "--max-time",
            "3",
            &format!("http://{}:9960/metrics", TestBed::gateway_addr(CLIENT_V4.into())),
        ])
        .output()
        .expect("curl");
    assert!(!reach.status.success(), "the daemon's loopback page is not reachable from the client");

    // An operator's shutdown state shows within the daemon's second of re-reading the store.
    assert_eq!(refused.get("gate_shutdown_disabled{part=\"www\"}"), 0.0);
    gatectl_ok(&bed.pin_dir.0, &["--store", store.to_str().unwrap(), "shutdown", "set", "www", "disabled"]);
    let disabled = scrape_until(&bed, DAEMON_METRICS, Duration::from_secs(5), |page| {
        page.get("gate_shutdown_disabled{part=\"www\"}") == 1.0
    });
    assert_eq!(disabled.get("gate_shutdown_disabled{part=\"www\"}"), 1.0, "{}", disabled.text);
}

/// The packaged alert rules and their tests (packaging/prometheus).
fn alerts_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus")
}

/// The metric names the alert rules' expressions read.
fn alert_metrics() -> Vec<String> {
    let rules = std::fs::read_to_string(alerts_dir().join("gate-alerts.yml")).expect("the alert rules");
    let mut names: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .flat_map(|expr| {
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("gate_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 4, "the rules read {names:?}");
    names
}

#[test]
fn the_packaged_alerts_are_valid_and_fire_when_they_should() {
    for args in [&["check", "rules", "gate-alerts.yml"][..], &["test", "rules", "gate-alerts.test.yml"]] {
        let out =
            std::process::Command::new("promtool").args(args).current_dir(alerts_dir()).output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_second_daemon_is_refused_for_the_running_one_not_for_its_metrics_port() {
    let mut bed = TestBed::new();
    let first = with_daemon_metrics(bed.config(&[("vpn", "udp", GATED)], ""));
    let daemon = Daemon::start(&bed, &first);
    let second = with_daemon_metrics(bed.config(&[("vpn", "udp", GATED)], ""));
    let error = Daemon::try_start(&bed, &second).err().expect("the second daemon must not start");
    let pid = daemon.pid().as_raw();
    assert!(error.contains(&format!("another gate-daemon (pid {pid}) runs on the pin dir")), "{error}");
    assert_eq!(scrape(&bed, DAEMON_METRICS).get("gate_state_readable"), 1.0, "the first one still serves its page");
}

#[test]
fn a_metrics_address_that_cannot_be_bound_stops_the_start_with_its_key() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let text = std::fs::read_to_string(&config).expect("the config");
    // An address this host does not have.
    std::fs::write(&config, format!("metrics_listen = \"192.0.2.250:9960\"\n{text}")).expect("write the config");
    let error = Daemon::try_start(&bed, &config).err().expect("the start fails");
    assert!(error.contains("metrics_listen") && error.contains("192.0.2.250:9960"), "{error}");
}

/// Floods the gated port from the stranger's address (client namespace) until `stop`.
fn flood_from_stranger(
    bed: &TestBed,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let ns = bed.client.handle();
    let target = to(STRANGER_V4.into());
    std::thread::spawn(move || {
        ns.run(move || {
            let socket = std::net::UdpSocket::bind((STRANGER_V4, 0)).expect("bind the stranger's address");
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if socket.send_to(b"knock", target).is_ok() {
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            sent
        })
    })
}

#[test]
fn gatectl_top_shows_drops_leases_and_approvals_live_and_once_as_json() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let daemon = Daemon::start(&bed, &config);
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    let config_flag = config.to_str().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = flood_from_stranger(&bed, std::sync::Arc::clone(&stop));

    // Approvals while top reads: three in its two-second window.
    let top = {
        let pin_dir = bed.pin_dir.0.clone();
        let config = config_flag.to_owned();
        std::thread::spawn(move || {
            gatectl(&pin_dir, &["--config", &config, "top", "--once", "--json", "--interval", "2s"])
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, 200);
    }
    let out = top.join().expect("top");
    assert!(out.status.success(), "gatectl top: {}", String::from_utf8_lossy(&out.stderr));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).expect("top's JSON");
    let vpn = &view["gates"][0];
    assert_eq!((vpn["gate"].as_str(), view["daemon"].as_bool()), (Some("vpn"), Some(true)), "{view:#}");
    assert!(vpn["dropped_by_reason_per_second"]["dropped_no_lease"].as_f64().unwrap() > 100.0, "{view:#}");
    assert!(vpn["dropped_per_second"].as_f64() >= vpn["dropped_by_reason_per_second"]["dropped_no_lease"].as_f64());
    assert_eq!(vpn["leases_live"], 1, "{view:#}");
    let approvals = vpn["approvals_per_second"].as_f64().unwrap();
    assert!((1.0..=2.0).contains(&approvals), "3 approvals in ~2 s: {view:#}");

    // Live, in a pipe (over SSH without a terminal): a frame each interval, 80 columns, q quits.
    let mut live = std::process::Command::new(bin("gatectl"))
        .args(["--pin-dir", bed.pin_dir.0.to_str().unwrap(), "--config", config_flag, "top", "--interval", "200ms"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gatectl top");
    std::thread::sleep(Duration::from_millis(1200));
    live.stdin.as_mut().expect("stdin").write_all(b"q").expect("press q");
    let started = std::time::Instant::now();
    let out = live.wait_with_output().expect("top exits");
    assert!(out.status.success() && started.elapsed() < Duration::from_secs(2), "q quits at once");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.matches("GATE ").count() >= 3, "a frame every 200 ms:\n{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 80), "80 columns:\n{text}");
    assert!(text.lines().any(|l| l.starts_with("vpn ")), "{text}");

    // The daemon stopped: the maps are still read; approvals are unknown, not zero.
    daemon.stop();
    let out = gatectl(&bed.pin_dir.0, &["--config", config_flag, "top", "--once", "--json", "--interval", "500ms"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(flood.join().expect("flood") > 1000);
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).expect("top's JSON");
    assert_eq!(view["daemon"], false, "{view:#}");
    assert!(view["gates"][0]["approvals_per_second"].is_null(), "{view:#}");
    assert!(view["gates"][0]["dropped_per_second"].as_f64().unwrap() > 100.0, "the gate drops without its daemon");
    assert_eq!(view["gates"][0]["leases_live"], 1);

    let refused = gatectl(&bed.pin_dir.0, &["top", "--json"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--once"));
}

#[test]
fn the_audit_trail_says_who_opened_and_closed_what_and_leases_name_their_client() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "[leases]\nsweep_interval = \"1s\"\n");
    let _daemon = Daemon::start(&bed, &config);
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    let config_flag = config.to_str().unwrap();
    // gatectl run by "ops" through sudo, as an operator would.
    let ops = |args: &[&str]| {
        let out = std::process::Command::new(bin("gatectl"))
            .args(["--pin-dir", bed.pin_dir.0.to_str().unwrap(), "--config", config_flag])
            .args(args)
            .env("SUDO_USER", "ops")
            .output()
            .expect("gatectl");
        assert!(out.status.success(), "gatectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let trail = |args: &[&str]| -> Vec<serde_json::Value> {
        serde_json::from_str(&ops(&[&["audit", "--json"][..], args].concat())).expect("the trail as JSON")
    };

    assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, 200, "alice approved");
    ops(&["allow", "198.51.100.9", "--gate", "vpn", "--ttl", "10m"]);
    let leases: Vec<serde_json::Value> = serde_json::from_str(&ops(&["leases", "--json"])).expect("leases JSON");
    let client_of = |address: &str| leases.iter().find(|l| l["address"] == address).map(|l| l["client"].clone());
    assert_eq!(client_of(&CLIENT_V4.to_string()), Some("alice".into()), "{leases:?}");
    assert_eq!(client_of("198.51.100.9"), Some(serde_json::Value::Null), "gatectl allow's lease has no client");
    let table = ops(&["leases"]);
    assert!(table.lines().any(|l| l.contains(&CLIENT_V4.to_string()) && l.ends_with("alice")), "{table}");

    ops(&["revoke", "198.51.100.9"]);
    ops(&["client", "revoke", "alice"]);
    ops(&["shutdown", "set", "web", "disabled"]);

    let events: Vec<(String, String, String)> = trail(&[])
        .iter()
        .map(|e| {
            let field = |name: &str| e[name].as_str().unwrap_or_default().to_owned();
            (field("event"), field("cause"), field("actor"))
        })
        .collect();
    let expected = [
        // Enrolled by the test's own gatectl, as root (or as whoever logged in and became root).
        ("enrolled", "operator", events.iter().find(|e| e.0 == "enrolled").map_or("", |e| e.2.as_str())),
        ("lease_opened", "approval", "alice"),
        ("lease_opened", "allow", "ops (sudo)"),
        ("lease_closed", "revoke", "ops (sudo)"),
        ("revoked", "operator", "ops (sudo)"),
        ("lease_closed", "revocation", "ops (sudo)"),
        ("shutdown_set", "operator", "ops (sudo)"),
    ];
    for (event, cause, actor) in expected {
        assert!(
            events.contains(&(event.to_owned(), cause.to_owned(), actor.to_owned())),
            "{event} by {cause} ({actor}) missing from {events:#?}"
        );
    }
    assert_eq!(events.len(), expected.len(), "{events:#?}");

    let alices = trail(&["--client", "alice"]);
    assert!(alices.iter().all(|e| e["client"] == "alice") && alices.len() == 4, "{alices:#?}");
    let address = trail(&["--address", "198.51.100.9"]);
    assert_eq!(address.len(), 2, "opened and closed: {address:#?}");
    assert!(address.iter().all(|e| e["gate"] == "vpn" && e["host"].as_str().is_some_and(|h| !h.is_empty())));
    assert!(trail(&["--since", "2099-01-01T00:00:00Z"]).is_empty());
    let text = ops(&["audit", "--client", "alice"]);
    assert!(text.lines().any(|l| l.contains("lease_opened  approval by alice  client alice  vpn")), "{text}");

    // Closed by the daemon: a lease swept once expired, and the leases a vpn shutdown closes.
    let closed_by = |address: &str, cause: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = trail(&["--address", address]).iter().any(|e| {
                e["event"] == "lease_closed" && e["cause"] == cause && e["actor"] == "daemon" && e["gate"] == "vpn"
            });
            if found || std::time::Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    ops(&["allow", "198.51.100.20", "--gate", "vpn", "--ttl", "1s"]);
    assert!(closed_by("198.51.100.20", "expiry"), "the sweep's close: {:#?}", trail(&["--address", "198.51.100.20"]));
    ops(&["allow", "198.51.100.21", "--gate", "vpn", "--ttl", "10m"]);
    ops(&["shutdown", "set", "vpn", "disabled"]);
    assert!(closed_by("198.51.100.21", "vpn_shutdown"), "{:#?}", trail(&["--address", "198.51.100.21"]));

    // gatectl says what its libraries log of trouble, in the services' format.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(bed.store(), std::fs::Permissions::from_mode(0o644)).expect("loosen the store");
    let out = gatectl(&bed.pin_dir.0, &["--config", config_flag, "client", "list"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.lines().any(|l| l.contains(" WARN ") && l.contains("tightened to 600")), "{said}");
}

/// `gatectl trace ADDRESS --json` with `args`, started in the gateway's namespace (where the
/// interfaces are named); its output lines once it exits.
fn trace(bed: &TestBed, address: IpAddr, args: &[&str]) -> std::process::Child {
    bed.gateway
        .command(bin("gatectl"))
        .args(["--pin-dir", bed.pin_dir.0.to_str().unwrap(), "trace", &address.to_string(), "--json"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gatectl trace")
}

/// Waits for a trace to exit by itself, within `within` (killed after that, failing the test);
/// its JSON lines.
fn traced_lines(mut child: std::process::Child, within: Duration) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + within;
    while child.try_wait().expect("poll the trace").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("trace output");
    assert!(out.status.success(), "gatectl trace: {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

#[test]
fn gatectl_trace_shows_each_verdict_for_one_source_and_only_while_it_runs() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let _daemon = Daemon::start(&bed, &config);
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    let stranger = IpAddr::from(STRANGER_V4);
    let client = IpAddr::from(CLIENT_V4);
    gatectl_ok(&bed.pin_dir.0, &["allow", &client.to_string(), "--gate", "vpn", "--ttl", "10m"]);

    // The stranger's packets, dropped, each one a line; the client's packets meanwhile are not.
    let tracing = trace(&bed, stranger, &["--count", "3"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(udp(&bed.client, client, to(client)), Outcome::Reply);
    for _ in 0..3 {
        assert_eq!(udp(&bed.client, stranger, to(stranger)), Outcome::Silence);
    }
    let lines = traced_lines(tracing, Duration::from_secs(10));
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["interface"], bed.gateway_if.as_str(), "{line}");
        assert_eq!(
            (line["gate"].as_str(), line["protocol"].as_str(), line["port"].as_u64()),
            (Some("vpn"), Some("udp"), Some(1194))
        );
        assert_eq!(
            (line["reason"].as_str(), line["dropped"].as_bool()),
            (Some("dropped_no_lease"), Some(true)),
            "{line}"
        );
    }

    // The leased client: passed. Only one trace at a time, while it lives.
    let tracing = trace(&bed, client, &["--count", "1"]);
    std::thread::sleep(Duration::from_millis(500));
    let second = trace(&bed, stranger, &["--count", "1"]).wait_with_output().expect("a second trace");
    assert!(!second.status.success(), "one trace at a time");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another trace runs"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(udp(&bed.client, client, to(client)), Outcome::Reply);
    let lines = traced_lines(tracing, Duration::from_secs(10));
    assert_eq!((lines.len(), lines[0]["reason"].as_str()), (1, Some("passed_lease")), "{lines:#?}");

    // A tracer killed -9 leaves the switch on with its pid: the next one takes it over.
    let mut killed = trace(&bed, client, &[]);
    std::thread::sleep(Duration::from_millis(500));
    killed.kill().expect("kill -9");
    killed.wait().expect("reaped");
    let tracing = trace(&bed, stranger, &["--for", "2s"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(udp(&bed.client, stranger, to(stranger)), Outcome::Silence);
    assert_eq!(traced_lines(tracing, Duration::from_secs(10)).len(), 1, "traced after a killed tracer");
}
