//! Real OpenVPN (Debian's) behind the real gate, between network namespaces: the daemon runs and
//! supervises the server; clients connect with `gate-client connect --up` through the front.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use gate_daemon::openvpn::supervisor::ServerStatus;
use gate_tests::{
    approval::{Enrolled, gatectl_store, leased},
    bed::{CLIENT_V4, GATEWAY_V4, STRANGER_V4, TestBed},
    cluster::{Host, SharedStore},
    daemon::{Daemon, bin},
    front::{self, uid_of, uids, url_v4},
    metrics::DAEMON_METRICS,
};

const VPN_PORT: u16 = 1194;
const SERVER_TUNNEL: &str = "10.99.0.1";

/// A process's effective, permitted and inheritable capability sets (hex), from /proc.
fn capabilities(pid: i32) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    ["CapEff:", "CapPrm:", "CapInh:"]
        .iter()
        .map(|key| status.lines().find_map(|l| l.strip_prefix(key)).expect("a capability line").trim().to_owned())
        .collect()
}

fn status(bed: &TestBed, name: &str) -> Option<ServerStatus> {
    let text = std::fs::read_to_string(bed.state_dir.join("openvpn").join(name).join("status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Waits until `check` holds for server `name`'s status, up to `within`.
fn wait_status(bed: &TestBed, name: &str, within: Duration, check: impl Fn(&ServerStatus) -> bool) -> ServerStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = status(bed, name).filter(|s| check(s)) {
            return s;
        }
        assert!(Instant::now() < deadline, "server {name}: status never matched; last {:?}", status(bed, name));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The gates every test here has: `vpn` on udp/1194 and `vpn2` on udp/1195.
const GATES: &[(&str, &str, u16)] = &[("vpn", "udp", VPN_PORT), ("vpn2", "udp", VPN_PORT + 1)];

/// A daemon config for `bed` with `gates`, `leases` (a `[leases]` table or nothing), the front
/// admitted, servers dropping to the default user (gate-vpn), and the `[[openvpn]]` tables in
/// `servers`.
fn vpn_config(bed: &mut TestBed, gates: &[(&str, &str, u16)], leases: &str, servers: &str) -> PathBuf {
    vpn_config_with(bed, gates, leases, "", servers)
}

/// As [`vpn_config`], with `approval` (lines) added to the `[approval]` table.
fn vpn_config_with(
    bed: &mut TestBed,
    gates: &[(&str, &str, u16)],
    leases: &str,
    approval: &str,
    servers: &str,
) -> PathBuf {
    let extra = format!(
        "{leases}[approval]\n{approval}front_user = \"gate-web\"\npublic_ipv4 = \"{GATEWAY_V4}\"\n[vpn]\nrun_dir = \"{}\"\n{servers}",
        bed.state_dir.join("openvpn").display()
    );
    // Metrics on, for the servers' rows on the daemon's page.
    gate_tests::metrics::with_daemon_metrics(bed.config(gates, &extra))
}

/// A bed with the daemon running `servers` behind `gates`, and the front.
fn vpn_bed_with(gates: &[(&str, &str, u16)], leases: &str, servers: &str) -> (TestBed, Daemon, Daemon) {
    let mut bed = TestBed::new();
    let config = vpn_config(&mut bed, gates, leases, servers);
    let daemon = Daemon::start(&bed, &config);
    let web = front::start(&mut bed, "");
    (bed, daemon, web)
}

fn vpn_bed(servers: &str) -> (TestBed, Daemon, Daemon) {
    vpn_bed_with(GATES, "", servers)
}

const MAIN_SERVER: &str =
    "[[openvpn]]\nname = \"main\"\ngate = \"vpn\"\nprotocol = \"udp\"\nport = 1194\nnetwork = \"10.99.0.0/24\"\n";

/// `gate-client connect --json` from the client's address over the front, with `extra` arguments.
fn connect(bed: &TestBed, client: &Enrolled, extra: &[&str]) -> std::process::Output {
    bed.client
        .command(bin("gate-client"))
        .args(["connect", "--profile", client.path.to_str().unwrap(), "--server", &url_v4(), "--no-discover"])
        .args(["--ipv4", &CLIENT_V4.to_string(), "--json"])
        .args(extra)
        .output()
        .expect("run gate-client")
}

fn connect_up(bed: &TestBed, client: &Enrolled, state: &Path) -> std::process::Output {
    connect(bed, client, &["--up", "--state-dir", state.to_str().unwrap()])
}

/// An approval through the front (no VPN started).
fn approve(bed: &TestBed, client: &Enrolled) -> gate_protocol::approval::Approval {
    let out = connect(bed, client, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("an approval")
}

/// One answered ping within three tries.
fn ping(bed: &TestBed, address: &str) -> bool {
    let out = bed.client.command("ping").args(["-c", "3", "-i", "0.5", "-W", "2", address]).output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(" 0% packet loss") || o.status.success())
}

/// Runs OpenVPN by hand in the client namespace with `client`'s files from `state` (as
/// `--up` wrote them) but `password` as the token and `local` as the source; returns its log
/// after `wait` (it is stopped then).
fn raw_openvpn(
    bed: &TestBed,
    client: &Enrolled,
    state: &Path,
    password: &str,
    local: IpAddr,
    wait: Duration,
) -> String {
    raw_openvpn_over(bed, client, state, password, local, wait, ("udp", VPN_PORT))
}

/// As [`raw_openvpn`], over `(proto, port)` (`udp` or `tcp-client`).
fn raw_openvpn_over(
    bed: &TestBed,
    client: &Enrolled,
    state: &Path,
    password: &str,
    local: IpAddr,
    wait: Duration,
    (proto, port): (&str, u16),
) -> String {
    let dir = state.join(format!("raw-{}", gate_tests::unique::token()));
    std::fs::create_dir_all(&dir).unwrap();
    let profile = &client.profile;
    let vpn = profile.vpn.as_ref().expect("a VPN section");
    std::fs::write(dir.join("ca.pem"), &vpn.ca_pem).unwrap();
    std::fs::write(dir.join("cert.pem"), &vpn.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), gate_protocol::keys::rsa_private_pem(&profile.keys.rsa).unwrap().as_str())
        .unwrap();
    std::fs::write(dir.join("auth.txt"), format!("{}\n{password}\n", profile.name)).unwrap();
    let mut child = bed
        .client
        .command("openvpn")
        .args(["--client", "--dev", "tun", "--proto", proto, "--remote", &GATEWAY_V4.to_string(), &port.to_string()])
        .args(["--connect-timeout", "3", "--connect-retry-max", "1"])
        .args(["--local", &local.to_string(), "--lport", "0", "--remote-cert-tls", "server", "--verb", "3"])
        .args(["--ca", "ca.pem", "--cert", "cert.pem", "--key", "key.pem", "--auth-user-pass", "auth.txt"])
        .args(["--log", "openvpn.log"])
        .current_dir(&dir)
        .spawn()
        .expect("run openvpn");
    let deadline = Instant::now() + wait;
    let log = dir.join("openvpn.log");
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Initialization Sequence Completed") || text.contains("AUTH_FAILED") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(&log).unwrap_or_default()
}

#[test]
fn only_an_approved_client_reaches_the_vpn_and_only_with_its_own_token() {
    let (bed, daemon, _web) = vpn_bed(MAIN_SERVER);
    let running = wait_status(&bed, "main", Duration::from_secs(15), |s| s.state == "running");
    let pid = i32::try_from(running.pid.expect("a pid")).unwrap();
    // "running" is reported once OpenVPN says it is initialised, privileges dropped.
    assert_eq!(uids(pid), (uid_of("gate-vpn"), uid_of("gate-vpn")), "OpenVPN runs as gate-vpn, real and effective");
    assert_eq!(running.user, "gate-vpn");
    assert_eq!(
        capabilities(pid),
        ["0000000000000000"; 3],
        "no capability is kept after the drop (effective, permitted, inheritable)"
    );
    for file in ["server.conf", "server.key", "server.pem", "ca.pem", "crl.pem"] {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(bed.state_dir.join("openvpn/main").join(file)).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, uid_of("gate-vpn")), "{file}: readable by its user only");
    }

    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    let bob = Enrolled::new(&bed, "bob", &["vpn"], "foreign");
    let state: PathBuf = bed.state_dir.join("alice-vpn");

    // Before approval: no answer at all.
    let log = raw_openvpn(&bed, &alice, &state, "0".repeat(32).as_str(), CLIENT_V4.into(), Duration::from_secs(6));
    assert!(!log.contains("Initialization Sequence Completed") && !log.contains("AUTH_FAILED"), "{log}");
    assert!(!log.contains("Peer Connection Initiated"), "the server never answered:\n{log}");

    // Approved: the tunnel comes up and the server's tunnel address answers.
    let out = connect_up(&bed, &alice, &state);
    assert!(out.status.success(), "gate-client --up: {}", String::from_utf8_lossy(&out.stderr));
    let approval: gate_protocol::approval::Approval = serde_json::from_slice(&out.stdout).expect("approval JSON");
    assert!(ping(&bed, SERVER_TUNNEL), "ping through the tunnel");
    let connected = wait_status(&bed, "main", Duration::from_secs(5), |s| !s.clients.is_empty());
    assert_eq!(connected.clients, ["alice"]);
    // The daemon's page: the server up with one session, and the tunnel's bytes counted (the
    // daemon asks OpenVPN every 5 s).
    let server = |name: &str| format!("{name}{{server=\"main\"}}");
    let page = gate_tests::metrics::scrape_until(&bed, DAEMON_METRICS, Duration::from_secs(12), |page| {
        page.get(&server("gate_openvpn_received_bytes_total")) > 0.0
    });
    assert_eq!(page.get(&server("gate_openvpn_up")), 1.0, "{}", page.text);
    assert_eq!(page.get(&server("gate_openvpn_sessions")), 1.0, "{}", page.text);
    assert!(page.get(&server("gate_openvpn_received_bytes_total")) > 0.0, "{}", page.text);
    assert!(page.get(&server("gate_openvpn_sent_bytes_total")) > 0.0, "{}", page.text);
    gate_tests::metrics::promtool_clean(&page.text);
    let shown = gate_tests::daemon::gatectl_in_ok(
        &bed.gateway,
        &bed.pin_dir.0,
        &["--vpn-run-dir", bed.state_dir.join("openvpn").to_str().unwrap(), "status"],
    );
    assert!(
        shown
            .lines()
            .any(|l| l.contains("main") && l.contains("running") && l.contains("gate-vpn") && l.contains("1 client")),
        "{shown}"
    );

    // Another client from another address: the port is closed to it, no answer.
    let log = raw_openvpn(&bed, &bob, &state, &approval.session_token, STRANGER_V4.into(), Duration::from_secs(6));
    assert!(!log.contains("Peer Connection Initiated"), "{log}");
    // Another client behind the same address (the port is open to it): refused by OpenVPN, with
    // a made-up token and with alice's token presented with bob's certificate.
    for token in ["0".repeat(32), approval.session_token.clone()] {
        let log = raw_openvpn(&bed, &bob, &state, &token, CLIENT_V4.into(), Duration::from_secs(15));
        assert!(log.contains("AUTH_FAILED"), "bob without an approval:\n{log}");
    }
    // alice's token replayed with her own certificate: spent, refused.
    let log = raw_openvpn(&bed, &alice, &state, &approval.session_token, CLIENT_V4.into(), Duration::from_secs(15));
    assert!(log.contains("AUTH_FAILED"), "a replayed token:\n{log}");

    // Revoked while connected: the session is ended within seconds, new approvals refused.
    gatectl_store(&bed, &["client", "revoke", "alice"]);
    wait_status(&bed, "main", Duration::from_secs(5), |s| s.clients.is_empty());
    assert!(!ping(&bed, SERVER_TUNNEL), "the tunnel is gone");
    down(&bed, &alice, &state);
    let out = connect_up(&bed, &alice, &state);
    assert!(!out.status.success());

    // The daemon stops its servers when it stops.
    let log = daemon.stop();
    assert!(log.contains("openvpn main: stopped"), "{log}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the OpenVPN process is gone");
}

#[test]
fn a_killed_server_is_restarted_and_the_client_comes_back_after_reapproval() {
    let (bed, daemon, _web) = vpn_bed(MAIN_SERVER);
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    let state: PathBuf = bed.state_dir.join("alice-vpn");
    let first = wait_status(&bed, "main", Duration::from_secs(15), |s| s.state == "running");
    let out = connect_up(&bed, &alice, &state);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ping(&bed, SERVER_TUNNEL));

    let pid = nix::unistd::Pid::from_raw(i32::try_from(first.pid.unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let again = wait_status(&bed, "main", Duration::from_secs(15), |s| s.state == "running" && s.pid != first.pid);
    assert_eq!(again.restarts, 1);
    assert!(daemon.log().contains("openvpn main: exited (signal: 9"), "{}", daemon.log());

    // The old session died with the process; a new approval brings the client back.
    down(&bed, &alice, &state);
    let out = connect_up(&bed, &alice, &state);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ping(&bed, SERVER_TUNNEL), "back after re-approval");
    down(&bed, &alice, &state);
}

/// A bed running `main` behind the gate, its config, and alice connected through it.
struct Connected {
    bed: TestBed,
    config: PathBuf,
    daemon: Daemon,
    _web: Daemon,
    main: ServerStatus,
    alice: Enrolled,
    state: PathBuf,
}

fn connected() -> Connected {
    let mut bed = TestBed::new();
    let config = vpn_config(&mut bed, GATES, "", MAIN_SERVER);
    let daemon = Daemon::start(&bed, &config);
    let web = front::start(&mut bed, "");
    let main = wait_status(&bed, "main", Duration::from_secs(15), |s| s.state == "running");
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    let state: PathBuf = bed.state_dir.join("alice-vpn");
    let out = connect_up(&bed, &alice, &state);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ping(&bed, SERVER_TUNNEL));
    Connected { bed, config, daemon, _web: web, main, alice, state }
}

/// Pings the server's tunnel address `count` times, 0.2 s apart, in the background; the
/// numbers of pings sent and answered once it is done.
fn ping_through(bed: &TestBed, count: u32) -> impl FnOnce() -> (u32, u32) {
    let child = bed
        .client
        .command("ping")
        .args(["-c", &count.to_string(), "-i", "0.2", "-W", "1", SERVER_TUNNEL])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run ping");
    move || {
        let out = child.wait_with_output().expect("ping ends");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_default().to_owned();
        let number = |before: &str| {
            line.split(", ").find(|p| p.ends_with(before)).and_then(|p| p.split(' ').next()?.parse().ok()).unwrap_or(0)
        };
        (number("packets transmitted"), number("received"))
    }
}

#[test]
fn a_killed_daemons_server_is_adopted_with_its_tunnel_and_its_sessions() {
    let Connected { bed, config, daemon, _web, main, alice, state } = connected();
    // alice pings through the tunnel while the daemon is killed and started again.
    let pings = ping_through(&bed, 40);
    std::thread::sleep(Duration::from_millis(500));
    daemon.kill9();
    let daemon = Daemon::start(&bed, &config);
    let (sent, answered) = pings();
    eprintln!("across kill -9 and restart of the daemon: {answered} of {sent} pings through the tunnel answered");
    assert_eq!((sent, answered), (40, 40), "the tunnel carried every packet");
    let adopted = wait_status(&bed, "main", Duration::from_secs(5), |s| s.clients == ["alice"]);
    assert_eq!((adopted.state.as_str(), adopted.pid), ("running", main.pid), "the same server, adopted");
    assert!(daemon.log().contains("adopted the server an earlier daemon left running"), "{}", daemon.log());
    // Its sessions are the new daemon's: a revocation ends alice's.
    gatectl_store(&bed, &["client", "revoke", "alice"]);
    wait_status(&bed, "main", Duration::from_secs(5), |s| s.clients.is_empty());
    assert!(!ping(&bed, SERVER_TUNNEL), "the revoked client's tunnel is gone");
    down(&bed, &alice, &state);
}

#[test]
fn a_killed_daemons_server_of_another_config_is_stopped_not_fought_over() {
    let Connected { bed, config, daemon, _web, main: first, alice, state } = connected();
    daemon.kill9();
    let orphan = nix::unistd::Pid::from_raw(i32::try_from(first.pid.unwrap()).unwrap());
    assert!(nix::sys::signal::kill(orphan, None).is_ok(), "the server outlives the daemon");
    assert!(ping(&bed, SERVER_TUNNEL), "the tunnel carries packets while no daemon runs");

    // The next daemon runs the server with other settings: it stops the old one (which holds
    // the port and the device) instead of fighting it, and runs its own.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("network = \"10.99.0.0/24\"\n", "network = \"10.99.0.0/24\"\npush_routes = [\"10.200.0.0/16\"]\n"),
    )
    .unwrap();
    let daemon = Daemon::start(&bed, &config);
    let again = wait_status(&bed, "main", Duration::from_secs(15), |s| s.state == "running" && s.pid != first.pid);
    assert_eq!(again.restarts, 0, "started once, not looping on a busy device: {again:?}");
    assert!(nix::sys::signal::kill(orphan, None).is_err(), "the orphan is gone");
    let log = daemon.log();
    assert!(log.contains(&format!("an earlier daemon's server still runs (pid {orphan}); stopping it")), "{log}");
    assert!(!log.contains("Device or resource busy"), "{log}");
    // alice's session ended with the old server and her token was spent: a new approval.
    down(&bed, &alice, &state);
    let out = connect_up(&bed, &alice, &state);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ping(&bed, SERVER_TUNNEL), "back after re-approval");
    down(&bed, &alice, &state);
}

#[test]
fn bad_servers_fail_clearly_and_the_others_keep_running() {
    let servers = format!(
        "{MAIN_SERVER}\
         [[openvpn]]\nname = \"badnet\"\ngate = \"vpn2\"\nprotocol = \"udp\"\nport = 1195\nnetwork = \"10.98.0.1/24\"\n\
         [[openvpn]]\nname = \"nouser\"\ngate = \"vpn2\"\nprotocol = \"udp\"\nport = 1195\nnetwork = \"10.97.0.0/24\"\nuser = \"gt-no-such-user\"\ngroup = \"gate-vpn\"\n"
    );
    // Something already holds udp/1195 for the third case.
    let servers = format!(
        "{servers}[[openvpn]]\nname = \"busy\"\ngate = \"vpn2\"\nprotocol = \"udp\"\nport = 1195\nnetwork = \"10.96.0.0/24\"\n"
    );
    let mut bed = TestBed::new();
    let busy = bed.gateway.run(|| std::net::UdpSocket::bind("0.0.0.0:1195").expect("hold udp/1195"));
    let config = vpn_config(&mut bed, GATES, "", &servers);
    let daemon = Daemon::start(&bed, &config);
    wait_status(&bed, "main", Duration::from_secs(15), |s| s.state == "running");
    let badnet = wait_status(&bed, "badnet", Duration::from_secs(5), |s| s.state == "failed");
    assert!(badnet.error.as_deref().unwrap_or_default().contains("host bits are set"), "{badnet:?}");
    let nouser = wait_status(&bed, "nouser", Duration::from_secs(5), |s| s.state == "failed");
    assert!(
        nouser.error.as_deref().unwrap_or_default().contains("user \"gt-no-such-user\" does not exist"),
        "{nouser:?}"
    );
    let busy_status = wait_status(&bed, "busy", Duration::from_secs(10), |s| s.restarts >= 1);
    assert_ne!(busy_status.state, "running");
    assert!(daemon.log().contains("Address already in use"), "the reason is in the log:\n{}", daemon.log());
    assert_eq!(status(&bed, "main").unwrap().state, "running", "the good server is untouched");
    drop(busy);
    let _ = &mut bed;
}

/// The daemon's last line about a reload.
fn last_reload(log: &str) -> &str {
    log.lines().rev().find(|l| l.contains("reloaded") || l.contains("reload refused")).unwrap_or_default()
}

/// `gate-client down` for `client` (ends its OpenVPN), whatever the outcome.
fn down(bed: &TestBed, client: &Enrolled, state: &Path) {
    let _ = bed
        .client
        .command(bin("gate-client"))
        .args(["down", "--profile", client.path.to_str().unwrap(), "--state-dir", state.to_str().unwrap()])
        .output();
}

#[test]
fn a_reload_starts_restarts_and_stops_only_the_servers_it_changes() {
    let Connected { bed, config, daemon, _web, main, alice, state } = connected();
    let text = std::fs::read_to_string(&config).unwrap();
    let second = "[[openvpn]]\nname = \"second\"\ngate = \"vpn2\"\nprotocol = \"udp\"\nport = 1195\nnetwork = \"10.98.0.0/24\"\n";
    let untouched = |what: &str| {
        let now = status(&bed, "main").expect("main's status");
        assert_eq!((now.state.as_str(), now.pid), ("running", main.pid), "{what}: main was not restarted");
        assert_eq!(now.clients, ["alice"], "{what}: alice is still connected");
        assert!(ping(&bed, SERVER_TUNNEL), "{what}: the tunnel still carries packets");
    };

    std::fs::write(&config, format!("{text}{second}")).unwrap();
    let log = daemon.reload("reloaded");
    assert!(last_reload(&log).contains("openvpn started: second"), "{log}");
    let started = wait_status(&bed, "second", Duration::from_secs(15), |s| s.state == "running");
    untouched("a server added");

    std::fs::write(&config, format!("{text}{}", second.replace("10.98.0.0/24", "10.95.0.0/24"))).unwrap();
    let log = daemon.reload("reloaded");
    assert!(last_reload(&log).contains("restarted: second"), "{log}");
    wait_status(&bed, "second", Duration::from_secs(15), |s| s.state == "running" && s.pid != started.pid);
    untouched("another server changed");

    std::fs::write(&config, &text).unwrap();
    let log = daemon.reload("reloaded");
    assert!(last_reload(&log).contains("stopped: second"), "{log}");
    assert!(!bed.state_dir.join("openvpn/second").exists(), "a removed server's files are removed");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(started.pid.unwrap()).unwrap());
    assert!(nix::sys::signal::kill(pid, None).is_err(), "the removed server's process is gone");
    untouched("another server removed");
    down(&bed, &alice, &state);
}

#[test]
fn an_expired_token_is_refused() {
    let (bed, _daemon, _web) = vpn_bed_with(GATES, "[leases]\nconnect_window = \"2s\"\n", MAIN_SERVER);
    wait_status(&bed, "main", Duration::from_secs(15), |s| s.state == "running");
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    let state: PathBuf = bed.state_dir.join("alice-vpn");
    std::fs::create_dir_all(&state).unwrap();
    let approval = approve(&bed, &alice);
    // Keep the port open by hand past the token's life: only the token decides.
    gate_tests::daemon::gatectl_ok(&bed.pin_dir.0, &["allow", &CLIENT_V4.to_string(), "--gate", "vpn", "--ttl", "5m"]);
    std::thread::sleep(Duration::from_secs(4));
    let log = raw_openvpn(&bed, &alice, &state, &approval.session_token, CLIENT_V4.into(), Duration::from_secs(15));
    assert!(log.contains("AUTH_FAILED"), "an expired token:\n{log}");
}

#[test]
fn a_tcp_server_behind_the_gate_and_a_revoked_certificate_in_its_crl() {
    let servers =
        "[[openvpn]]\nname = \"tcp\"\ngate = \"vpn\"\nprotocol = \"tcp\"\nport = 1194\nnetwork = \"10.95.0.0/24\"\n";
    let gates = [("vpn", "udp", VPN_PORT), ("vpn", "tcp", VPN_PORT), ("vpn2", "udp", VPN_PORT + 1)];
    let (bed, _daemon, _web) = vpn_bed_with(&gates, "", servers);
    wait_status(&bed, "tcp", Duration::from_secs(15), |s| s.state == "running");
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    let state: PathBuf = bed.state_dir.join("alice-vpn");
    std::fs::create_dir_all(&state).unwrap();
    let tcp = ("tcp-client", VPN_PORT);

    // Before approval: the SYN is dropped, nothing answers.
    let log = raw_openvpn_over(&bed, &alice, &state, &"0".repeat(32), CLIENT_V4.into(), Duration::from_secs(6), tcp);
    assert!(!log.contains("Peer Connection Initiated"), "{log}");

    let approval = approve(&bed, &alice);
    let log =
        raw_openvpn_over(&bed, &alice, &state, &approval.session_token, CLIENT_V4.into(), Duration::from_secs(15), tcp);
    assert!(log.contains("Initialization Sequence Completed"), "over TCP after approval:\n{log}");

    // A fresh approval, then revocation: the certificate is in the server's CRL within seconds.
    let approval = approve(&bed, &alice);
    gatectl_store(&bed, &["client", "revoke", "alice"]);
    gate_tests::daemon::gatectl_ok(&bed.pin_dir.0, &["allow", &CLIENT_V4.to_string(), "--gate", "vpn", "--ttl", "5m"]);
    std::thread::sleep(Duration::from_secs(3));
    let log =
        raw_openvpn_over(&bed, &alice, &state, &approval.session_token, CLIENT_V4.into(), Duration::from_secs(10), tcp);
    assert!(!log.contains("Initialization Sequence Completed"), "a revoked client:\n{log}");
    let server_log = std::fs::read_to_string(bed.state_dir.join("openvpn/tcp/openvpn.log")).unwrap_or_default();
    assert!(server_log.contains("certificate revoked"), "refused by the CRL:\n{server_log}");
}

#[test]
fn a_revocation_made_on_another_host_of_the_cluster_ends_the_vpn_session_here_within_a_second() {
    let store = SharedStore::start().expect("a PostgreSQL store of the test's own");
    let other = Host::start(&store, "gate-a", "");
    let mut bed = TestBed::new();
    bed.share_store(&store.url, &store.key);
    let config = vpn_config_with(&mut bed, GATES, "", "host = \"gate-b\"\n", MAIN_SERVER);
    let _daemon = Daemon::start(&bed, &config);
    let _web = front::start(&mut bed, "");
    wait_status(&bed, "main", Duration::from_secs(15), |s| s.state == "running");

    // Enrolled on the other host; approved here, with a certificate of the cluster's one CA.
    let alice = Enrolled::new(&other.bed, "alice", &["vpn"], "client");
    let state: PathBuf = bed.state_dir.join("alice-vpn");
    let out = connect_up(&bed, &alice, &state);
    assert!(out.status.success(), "gate-client --up: {}", String::from_utf8_lossy(&out.stderr));
    assert!(ping(&bed, SERVER_TUNNEL), "ping through the tunnel");
    wait_status(&bed, "main", Duration::from_secs(5), |s| s.clients == ["alice"]);

    gatectl_store(&other.bed, &["client", "revoke", "alice"]);
    let revoked = Instant::now();
    wait_status(&bed, "main", Duration::from_secs(1), |s| s.clients.is_empty());
    let ended = revoked.elapsed();
    assert!(leased(&bed).is_empty(), "the lease here is closed too");
    assert!(!ping(&bed, SERVER_TUNNEL), "the tunnel is gone ({ended:?} after the revocation)");
    down(&bed, &alice, &state);
    let out = connect_up(&bed, &alice, &state);
    assert!(!out.status.success(), "approved here after a revocation on the other host");
}

/// `gatectl client update NAME` applied with `gate-client update`; the profile read back.
fn updated(bed: &TestBed, client: &Enrolled) -> Enrolled {
    let update = bed.state_dir.join(format!("{}-{}.update", client.profile.name, gate_tests::unique::token()));
    gatectl_store(bed, &["client", "update", &client.profile.name, "--out", update.to_str().unwrap()]);
    let out = client.apply_update(bed, &update);
    assert!(out.status.success(), "gate-client update: {}", String::from_utf8_lossy(&out.stderr));
    client.reread()
}

/// Whether `client`, approved now, brings its tunnel up with OpenVPN; its log either way.
fn tunnel_comes_up(bed: &TestBed, client: &Enrolled, state: &Path) -> (bool, String) {
    let approval = approve(bed, client);
    let log = raw_openvpn(bed, client, state, &approval.session_token, CLIENT_V4.into(), Duration::from_secs(15));
    (log.contains("Initialization Sequence Completed"), log)
}

#[test]
fn the_ca_is_rotated_under_a_running_vpn_and_only_clients_never_updated_are_cut_off() {
    let (bed, _daemon, _web) = vpn_bed(MAIN_SERVER);
    let first = wait_status(&bed, "main", Duration::from_secs(15), |s| s.state == "running").pid;
    let state: PathBuf = bed.state_dir.join("rotation-vpn");
    std::fs::create_dir_all(&state).unwrap();
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    let carol = Enrolled::new(&bed, "carol", &["vpn"], "foreign");
    let server_file = |file: &str| std::fs::read_to_string(bed.state_dir.join("openvpn/main").join(file)).unwrap();

    // Rotated: the server restarts trusting both CAs, checking a CRL of each.
    let said = gatectl_store(&bed, &["ca", "rotate"]);
    assert!(said.contains("gate CA 2") && said.contains("ca finish"), "{said}");
    let shown = gatectl_store(&bed, &["ca", "show"]);
    assert!(shown.contains("CA gate CA (") && shown.contains("next CA gate CA 2"), "{shown}");
    let second = wait_status(&bed, "main", Duration::from_secs(15), |s| s.state == "running" && s.pid != first).pid;
    assert_eq!(server_file("ca.pem").matches("BEGIN CERTIFICATE").count(), 2, "both CAs");
    assert_eq!(server_file("crl.pem").matches("BEGIN X509 CRL").count(), 2, "a CRL of each");
    let old_server_cert = server_file("server.pem");
    // Profiles not updated yet still connect; one enrolled now (a certificate of the next CA) too.
    let (up, log) = tunnel_comes_up(&bed, &alice, &state);
    assert!(up, "alice, not updated yet, during the rotation:\n{log}");
    let bob = Enrolled::new(&bed, "bob", &["vpn"], "client");
    assert_eq!(bob.profile.vpn.as_ref().unwrap().ca_pem.matches("BEGIN CERTIFICATE").count(), 2);
    let (up, log) = tunnel_comes_up(&bed, &bob, &state);
    assert!(up, "bob, enrolled during the rotation:\n{log}");

    // alice takes her update; carol never does. Finished: the server restarts with a
    // certificate of the new CA; alice and bob connect, carol is refused.
    let alice = updated(&bed, &alice);
    let refused = gate_tests::approval::gatectl_store_output(&bed, &["ca", "finish"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains(": carol;") && err.contains("--force"), "{err}");
    let said = gatectl_store(&bed, &["ca", "finish", "--force"]);
    assert!(said.contains("gate CA 2 is the CA"), "{said}");
    let shown = gatectl_store(&bed, &["ca", "show"]);
    assert!(shown.contains("CA gate CA 2 (") && shown.contains("no rotation under way"), "{shown}");
    wait_status(&bed, "main", Duration::from_secs(15), |s| s.state == "running" && s.pid != second);
    assert_ne!(server_file("server.pem"), old_server_cert, "a new server certificate");
    assert_eq!(server_file("ca.pem").matches("BEGIN CERTIFICATE").count(), 1, "the old CA is no longer trusted");
    for client in [&alice, &bob] {
        let (up, log) = tunnel_comes_up(&bed, client, &state);
        assert!(up, "{} after the rotation:\n{log}", client.profile.name);
    }
    let (up, log) = tunnel_comes_up(&bed, &carol, &state);
    assert!(!up, "carol, never updated, after the rotation:\n{log}");
    assert!(log.contains("VERIFY ERROR") || log.contains("TLS Error"), "refused by the TLS handshake:\n{log}");
}
