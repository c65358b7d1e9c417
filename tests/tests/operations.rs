//! Everyday operations around a running gate that must not open it or take it down: a second
//! daemon on the same pin dir, `gatectl teardown` under a running daemon, SIGHUP to the daemon
//! and to the front, `gatectl` finding the daemon's paths, a damaged store, a store backed up
//! while the daemon runs and restored, a client moved to a new device, the server's box key
//! rotated.
use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use gate_protocol::wire::REJECTED_STATUS;
use gate_tests::{
    approval::{Enrolled, counters, gatectl_store, gatectl_store_output, send, vector_key},
    bed::{CLIENT_V4, STRANGER_V4, TestBed},
    daemon::{Daemon, bin, gatectl, gatectl_ok},
    front::{self, curl, url_v4},
    probe::{Listeners, Outcome, udp},
};
use nix::sys::signal::{Signal, kill};

const GATED: u16 = 1194;

fn to_gated() -> SocketAddr {
    SocketAddr::new(TestBed::gateway_addr(CLIENT_V4.into()), GATED)
}

/// The first daemon's gate still stands: a stranger is silent, the lease still opens.
fn still_gated(bed: &TestBed, what: &str) {
    assert_eq!(udp(&bed.client, STRANGER_V4.into(), to_gated()), Outcome::Silence, "{what}: a stranger");
    assert_eq!(udp(&bed.client, CLIENT_V4.into(), to_gated()), Outcome::Reply, "{what}: the leased client");
}

/// What a stranger gets from udp/1194 once a teardown has removed the gate: the kernel frees an
/// unpinned link from a work queue, a moment after the unpin, so the answer may take a few tries.
fn stranger_after_teardown(bed: &TestBed) -> Outcome {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let outcome = udp(&bed.client, STRANGER_V4.into(), to_gated());
        if outcome == Outcome::Reply || std::time::Instant::now() > deadline {
            return outcome;
        }
    }
}

/// A bed gating udp/1194 with the daemon running, its listeners, and an hour's lease for the
/// client.
fn gated_with_a_lease() -> (TestBed, Listeners, Daemon) {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let listeners = Listeners::start(&bed.gateway, &[GATED]);
    let daemon = Daemon::start(&bed, &config);
    gatectl_ok(&bed.pin_dir.0, &["allow", &CLIENT_V4.to_string(), "--gate", "vpn", "--ttl", "1h"]);
    (bed, listeners, daemon)
}

#[test]
fn a_second_daemon_on_the_same_pin_dir_is_refused_and_changes_nothing() {
    let (mut bed, _listeners, daemon) = gated_with_a_lease();

    // Another gate list entirely: had it run, udp/1194 would be ungated and the lease gone.
    let second = bed.config(&[("web", "tcp", 8443)], "");
    let log = Daemon::try_start(&bed, &second).err().expect("the second daemon must not start");
    let pid = daemon.pid().as_raw();
    assert!(log.contains(&format!("another gate-daemon (pid {pid}) runs on the pin dir")), "{log}");
    still_gated(&bed, "after the refused second daemon");
    let leases = gatectl_ok(&bed.pin_dir.0, &["leases", "--json"]);
    assert!(leases.contains("\"gate\": \"vpn\"") && leases.contains(&CLIENT_V4.to_string()), "{leases}");
    drop(daemon);
}

#[test]
fn teardown_is_refused_while_the_daemon_runs() {
    let (bed, _listeners, daemon) = gated_with_a_lease();
    let out = gatectl(&bed.pin_dir.0, &["teardown"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "teardown under a running daemon must fail");
    assert!(stderr.contains(&format!("gate-daemon (pid {}) runs on", daemon.pid().as_raw())), "{stderr}");
    assert!(stderr.contains("stop it first"), "{stderr}");
    still_gated(&bed, "after the refused teardown");
    daemon.stop();
    gatectl_ok(&bed.pin_dir.0, &["teardown"]);
    assert_eq!(stranger_after_teardown(&bed), Outcome::Reply, "removed once stopped");
}

#[test]
fn a_forced_teardown_says_what_it_opens_and_the_daemon_stops_with_an_error() {
    let (bed, _listeners, mut daemon) = gated_with_a_lease();
    let out = gatectl(&bed.pin_dir.0, &["teardown", "--force"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("every gated port opens to everyone"), "{stderr}");
    assert_eq!(stranger_after_teardown(&bed), Outcome::Reply, "torn down as it said");
    // The link watch looks at least every 5 s.
    let status = daemon.wait_exit(Duration::from_secs(8)).expect("the daemon noticed the teardown and stopped");
    assert!(!status.success(), "it stops with an error, so a supervisor restarts it");
    let log = daemon.log();
    assert!(log.contains("was removed under this daemon") && log.contains("open to everyone"), "{log}");
    assert!(!log.contains("the gate stays attached and closed"), "{log}");
}

#[test]
fn sighup_leaves_the_daemon_and_the_front_running() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], front::ADMIT_FRONT);
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    let daemon = Daemon::start(&bed, &config);
    let web = front::start(&mut bed, "");
    gatectl_ok(&bed.pin_dir.0, &["allow", &CLIENT_V4.to_string(), "--gate", "vpn", "--ttl", "1h"]);
    kill(daemon.pid(), Signal::SIGHUP).expect("SIGHUP the daemon");
    kill(web.pid(), Signal::SIGHUP).expect("SIGHUP the front");
    std::thread::sleep(Duration::from_millis(300));
    for (name, process) in [("gate-daemon", &daemon), ("gate-web", &web)] {
        assert!(
            std::path::Path::new(&format!("/proc/{}", process.pid())).exists(),
            "{name} died of SIGHUP:\n{}",
            process.log()
        );
        assert!(process.log().contains("SIGHUP"), "{name} says what it did with it:\n{}", process.log());
    }
    still_gated(&bed, "after SIGHUP");
    let (status, _) = curl(&bed, &[&format!("{}/v1/source", url_v4())]);
    assert_eq!(status, 200, "the front still answers");
    web.stop();
    daemon.stop();
}

#[test]
fn both_services_tell_the_service_manager_when_they_are_ready_alive_and_stopping() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], front::ADMIT_FRONT);
    // systemd's WatchdogSec=0.4s: a keepalive at least every 0.2 s.
    let watchdog = [("WATCHDOG_USEC", "400000")];
    let mut daemon = Daemon::try_start_with_env(&bed, "gate-daemon", &config, &watchdog).expect("the daemon starts");
    // READY=1 came (the helper waited for it) only once the gate was attached and the socket served.
    assert_eq!(udp(&bed.client, STRANGER_V4.into(), to_gated()), Outcome::Silence, "ready means gated");
    assert!(bed.socket().exists(), "ready means the socket is served");
    let front_config = front::config(&mut bed, "");
    let mut web = Daemon::try_start_with_env(&bed, "gate-web", &front_config, &watchdog).expect("the front starts");
    let (status, _) = curl(&bed, &[&format!("{}/v1/source", url_v4())]);
    assert_eq!(status, 200, "ready means the front answers");
    std::thread::sleep(Duration::from_millis(1200));
    for (name, service) in [("gate-daemon", &mut daemon), ("gate-web", &mut web)] {
        let messages = service.notifications();
        let pings = messages.iter().filter(|m| m.trim() == "WATCHDOG=1").count();
        assert!(pings >= 4, "{name}: {pings} keepalives in 1.2 s: {messages:?}");
        assert!(messages[0].contains("READY=1") && messages[0].contains("STATUS="), "{name}: {messages:?}");
    }
    let web_messages = {
        let pid = web.pid();
        kill(pid, Signal::SIGTERM).expect("stop the front");
        web.wait_exit(Duration::from_secs(5)).expect("the front stops");
        web.notifications()
    };
    assert!(web_messages.iter().any(|m| m.trim() == "STOPPING=1"), "{web_messages:?}");
    let pid = daemon.pid();
    kill(pid, Signal::SIGTERM).expect("stop the daemon");
    daemon.wait_exit(Duration::from_secs(5)).expect("the daemon stops");
    assert!(daemon.notifications().iter().any(|m| m.trim() == "STOPPING=1"));
}

#[test]
fn check_finds_what_a_start_would_fail_on() {
    let mut bed = TestBed::new();
    let good = bed.config(&[("vpn", "udp", GATED)], front::ADMIT_FRONT);
    let gateway = bed.gateway.handle();
    let check = |config: &std::path::Path| {
        let out = gateway.command(bin("gate-daemon")).arg("--config").arg(config).arg("--check").output();
        let out = out.expect("run gate-daemon --check");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(check(&good).0, Some(0), "a config a start accepts passes: {}", check(&good).1);
    let text = std::fs::read_to_string(&good).expect("config");
    for (from, to, reason) in [
        (format!("name = \"{}\"", bed.gateway_if), "name = \"gt-nosuch0\"".to_owned(), "does not exist"),
        ("front_user = \"gate-web\"".to_owned(), "front_user = \"gt-nobody-here\"".to_owned(), "approval.front_user"),
        (
            "[approval]".to_owned(),
            "[vpn]\nopenvpn = \"/nonexistent/openvpn\"\n[[openvpn]]\nname = \"m\"\ngate = \"vpn\"\nprotocol = \"udp\"\nport = 1194\nnetwork = \"10.8.0.0/24\"\n[approval]".to_owned(),
            "vpn.openvpn: /nonexistent/openvpn",
        ),
        ("port = 1194".to_owned(), "port = 1194\ncgroup = \"/sys/fs/cgroup/gt-nowhere\"".to_owned(), "gate[0].cgroup"),
    ] {
        let bad = bed.write_config(&text.replace(&from, &to));
        let (code, stderr) = check(&bad);
        assert_eq!(code, Some(2), "{to}: {stderr}");
        assert!(stderr.contains(reason), "{to}: {stderr}");
    }
    assert!(!bed.pin_dir.0.exists(), "--check touched nothing");
}

#[test]
fn gatectl_allow_refuses_what_approvals_refuse_and_says_when_it_shortens_a_lease() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let _daemon = Daemon::start(&bed, &config);
    for local in ["127.0.0.1", "::1", "169.254.1.1", "fe80::1"] {
        let out = gatectl(&bed.pin_dir.0, &["allow", local, "--gate", "vpn", "--ttl", "1h"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("approvals never open"), "{local}: {stderr}");
    }
    // With the daemon's config, as on a host: gatectl finds the daemon's store and writes the
    // audit trail there (without it, it would say the change is not recorded).
    let client = CLIENT_V4.to_string();
    let with_config =
        |args: &[&str]| gatectl(&bed.pin_dir.0, &[&["--config", config.to_str().unwrap()][..], args].concat());
    assert!(with_config(&["allow", &client, "--gate", "vpn", "--ttl", "1h"]).status.success());
    let out = with_config(&["allow", &client, "--gate", "vpn", "--ttl", "1m"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("replaced a lease of") && stderr.contains("it now has 1m"), "{stderr}");
    let out = with_config(&["allow", &client, "--gate", "vpn", "--ttl", "2h"]);
    assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "lengthening says nothing extra: {out:?}");
}

#[test]
fn gatectl_allow_from_a_list_opens_every_address_or_none() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let _listeners = Listeners::start(&bed.gateway, &[GATED]);
    let _daemon = Daemon::start(&bed, &config);
    let pins = &bed.pin_dir.0;
    let stranger = std::net::IpAddr::from(STRANGER_V4);
    let to = |source| SocketAddr::new(TestBed::gateway_addr(source), GATED);
    let leased = || -> Vec<String> {
        let json: serde_json::Value = serde_json::from_str(&gatectl_ok(pins, &["leases", "--json"])).unwrap();
        let mut addresses: Vec<String> =
            json.as_array().unwrap().iter().map(|l| l["address"].as_str().unwrap().to_owned()).collect();
        addresses.sort();
        addresses
    };

    // A list with a bad line opens nothing, and says which lines are wrong.
    let bad = bed.state_dir.join("bad.list");
    std::fs::write(&bad, format!("{STRANGER_V4}\nnot-an-address\n127.0.0.1 # loopback\n")).unwrap();
    let out = gatectl(pins, &["allow", "--from", bad.to_str().unwrap(), "--gate", "vpn", "--ttl", "1h"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("2 bad line(s), nothing opened"), "{stderr}");
    assert!(stderr.contains("line 2: \"not-an-address\" is not an IPv4 or IPv6 address"), "{stderr}");
    assert!(stderr.contains("line 3: 127.0.0.1 is an address approvals never open"), "{stderr}");
    assert_eq!(udp(&bed.client, stranger, to(stranger)), Outcome::Silence, "the good line was not opened");
    assert!(leased().is_empty());

    // Comments, blank lines, duplicates and an IPv4-mapped address (kept as its IPv4 host).
    let list = bed.state_dir.join("office.list");
    let text = format!(
        "# office\n{CLIENT_V4}   # the client\n\n198.51.100.20\n2001:db8::20\n::ffff:198.51.100.21\n{CLIENT_V4}\n"
    );
    std::fs::write(&list, text).unwrap();
    let out = gatectl_ok(pins, &["allow", "--from", list.to_str().unwrap(), "--gate", "vpn", "--ttl", "1h"]);
    assert!(out.contains("opened vpn for 5 addresses from") && out.contains("(0 of them replaced a lease)"), "{out}");
    assert_eq!(leased(), ["192.0.2.2", "198.51.100.20", "198.51.100.21", "2001:db8::20"]);
    let client = std::net::IpAddr::from(CLIENT_V4);
    assert_eq!(udp(&bed.client, client, to(client)), Outcome::Reply, "the listed client passes");
    assert_eq!(udp(&bed.client, stranger, to(stranger)), Outcome::Silence, "the stranger does not");

    // From stdin, as a pipeline would give it.
    let mut child = Command::new(bin("gatectl"))
        .args(["--pin-dir", pins.to_str().unwrap(), "allow", "--from", "-", "--gate", "vpn", "--ttl", "1h"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{STRANGER_V4}\n{CLIENT_V4}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("(1 of them replaced a lease)"));
    assert_eq!(udp(&bed.client, stranger, to(stranger)), Outcome::Reply, "the piped list opened it");
    let out = gatectl_ok(pins, &["revoke", &STRANGER_V4.to_string()]);
    assert!(out.contains("closed 1 lease(s) of 192.0.2.3 on any gate"), "{out}");
}

/// `gatectl args...` with no path flags: only what `args` and the config say.
fn gatectl_bare(args: &[&str]) -> Output {
    Command::new(bin("gatectl")).args(args).env_remove("GATE_PIN_DIR").env_remove("GATE_STORE").output().unwrap()
}

fn text(out: &Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn gatectl_takes_its_paths_from_the_daemon_config_and_never_makes_a_stray_store() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let config = config.to_str().unwrap();
    let key = vector_key("client");
    let key = key.to_str().unwrap();
    let profile = |name: &str| bed.state_dir.join(format!("{name}.profile")).to_str().unwrap().to_owned();

    // No store yet (the daemon never ran). A mistyped --store is refused by every command,
    // `client add` included, and nothing is made there.
    let typo = bed.state_dir.join("gaet.db");
    let typo = typo.to_str().unwrap();
    let alice = profile("alice");
    for args in [
        vec!["client", "list"],
        vec!["shutdown", "show"],
        vec!["client", "add", "alice", "--gate", "vpn", "--out", &alice, "--rsa-key", key],
    ] {
        let (ok, _, stderr) = text(&gatectl_bare(&[&["--config", config, "--store", typo], &args[..]].concat()));
        assert!(!ok, "{args:?} succeeded on a store that does not exist");
        assert!(stderr.contains(&format!("no store at {typo}")) && stderr.contains("--store"), "{args:?}: {stderr}");
        assert!(!Path::new(typo).exists(), "{args:?} made a store at the mistyped path");
        assert!(!Path::new(&alice).exists(), "{args:?} wrote a profile");
    }

    // `client add` on the path the config names makes the store there; gate names are checked
    // against the config while no gate is pinned.
    let (ok, _, stderr) = text(&gatectl_bare(&[
        "--config",
        config,
        "client",
        "add",
        "alice",
        "--gate",
        "vpn",
        "--out",
        &alice,
        "--rsa-key",
        key,
    ]));
    assert!(ok, "{stderr}");
    assert!(stderr.contains(&format!("made a new store at {}", bed.store().display())), "{stderr}");
    let bob = profile("bob");
    let (ok, _, stderr) = text(&gatectl_bare(&[
        "--config",
        config,
        "client",
        "add",
        "bob",
        "--gate",
        "vnp",
        "--out",
        &bob,
        "--rsa-key",
        key,
    ]));
    assert!(!ok && stderr.contains("no gate named \"vnp\" in the daemon's config (it has: vpn)"), "{stderr}");

    // The daemon serves that store; gatectl finds its pin dir and store through the config alone.
    let daemon = Daemon::start(&bed, Path::new(config));
    let listeners = Listeners::start(&bed.gateway, &[GATED]);
    let client = CLIENT_V4.to_string();
    let (ok, _, stderr) = text(&gatectl_bare(&["--config", config, "allow", &client, "--gate", "vpn", "--ttl", "1h"]));
    assert!(ok, "{stderr}");
    still_gated(&bed, "after an allow through --config");
    let (ok, listed, stderr) = text(&gatectl_bare(&["--config", config, "client", "list"]));
    assert!(ok && listed.contains("alice"), "{listed}{stderr}");
    let (ok, _, stderr) = text(&gatectl_bare(&["--config", "/nonexistent/gate.toml", "client", "list"]));
    assert!(!ok && stderr.contains("/nonexistent/gate.toml"), "a --config that is not there is an error: {stderr}");
    let nowhere = format!("{}-nothing", bed.pin_dir.0.display());
    let (ok, _, stderr) = text(&gatectl_bare(&["--pin-dir", &nowhere, "status"]));
    assert!(!ok);
    assert_eq!(
        stderr,
        format!(
            "gatectl: no gate at {nowhere}/GATES: nothing is pinned there (is gate-daemon running? --config or \
             --pin-dir names its pin dir)\n"
        ),
        "one line, the cause once, no advice to run the command that failed"
    );
    drop(listeners);
    daemon.stop();
}

#[test]
fn a_damaged_store_stops_the_start_before_the_gate_is_touched() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    std::fs::write(bed.store(), b"").expect("an empty store file");
    let out = bed.gateway.command(bin("gate-daemon")).arg("--config").arg(&config).arg("--check").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "--check passed an empty store: {stderr}");
    assert!(stderr.contains("approval.store") && stderr.contains("the file is empty"), "{stderr}");

    let log = Daemon::try_start(&bed, &config).err().expect("a daemon must not start on an empty store");
    assert!(log.contains("is damaged: the file is empty") && log.contains("restore it from a backup"), "{log}");
    assert!(log.contains("ERROR gate_daemon]"), "a fatal error is logged under the daemon's name: {log}");
    assert!(!bed.pin_dir.0.exists(), "the refused start touched the gate");
    assert_eq!(std::fs::metadata(bed.store()).unwrap().len(), 0, "the damaged store was changed");

    let (ok, _, stderr) = text(&gatectl_bare(&["--config", config.to_str().unwrap(), "client", "list"]));
    assert!(!ok && stderr.contains("is damaged"), "{stderr}");
}

#[test]
fn check_finds_what_a_shared_store_lacks_without_asking_the_database() {
    use std::os::unix::fs::PermissionsExt;
    let mut bed = TestBed::new();
    // No such database anywhere: --check must decide from the files alone.
    let url = "postgres://gate@db.invalid/gate";
    let check = |bed: &mut TestBed, approval: &str| {
        let config = bed.config(&[("vpn", "udp", GATED)], &format!("[approval]\n{approval}"));
        let own = format!("store = \"{}\"", bed.store().display());
        let text = std::fs::read_to_string(&config).unwrap().replace(&own, &format!("store = \"{url}\""));
        let config = bed.write_config(&text);
        let out = bed.gateway.command(bin("gate-daemon")).arg("--config").arg(&config).arg("--check").output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = check(&mut bed, "");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("approval.store") && stderr.contains("store_key_file"), "no store key: {stderr}");

    let key = bed.state_dir.join("store.key");
    gatectl_ok(&bed.pin_dir.0, &["store", "new-key", key.to_str().unwrap()]);
    let password = bed.state_dir.join("store-password");
    std::fs::write(&password, "s3cret\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).unwrap();
    let files = format!("store_key_file = \"{}\"\nstore_password_file = \"{}\"\n", key.display(), password.display());
    let (code, stderr) = check(&mut bed, &files);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("chmod 600") && !stderr.contains("s3cret"), "a password file others may read: {stderr}");

    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_ca = format!("{files}store_ca_file = \"{}\"\n", password.display());
    let (code, stderr) = check(&mut bed, &with_ca);
    assert!(code == Some(2) && stderr.contains("sslmode=require"), "a CA without sslmode=require: {stderr}");
    let (code, stderr) = check(&mut bed, &files);
    assert_eq!(code, Some(0), "all in order (the database is not asked): {stderr}");
}

/// A copy of the workspace binary `name` that any user may run (the checkout's own directory
/// may be root's alone), removed with the returned guard.
fn runnable_by_anyone(bed: &TestBed, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = bed.state_dir.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(name);
    std::fs::copy(bin(name), &copy).unwrap();
    for path in [bed.state_dir.as_path(), dir.as_path(), copy.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    copy
}

#[test]
fn without_root_both_tools_say_so_in_one_line() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let daemon = Daemon::start(&bed, &config);
    let gatectl = runnable_by_anyone(&bed, "gatectl");
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&gatectl)
        .args(["--pin-dir", bed.pin_dir.0.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    let (ok, _, stderr) = text(&out);
    assert!(!ok);
    assert_eq!(stderr, "gatectl: this needs root: the gate's maps and its store are root's (run gatectl as root)\n");
    daemon.stop();

    let gate_daemon = runnable_by_anyone(&bed, "gate-daemon");
    let out = bed
        .gateway
        .command("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&gate_daemon)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let (ok, _, stderr) = text(&out);
    assert!(!ok);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, the reason, nothing before it: {stderr}");
    assert!(lines[0].contains("ERROR gate_daemon] gate-daemon must run as root"), "{stderr}");
}

#[test]
fn a_missing_user_is_named_with_what_to_do_and_nothing_is_touched() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "[approval]\nfront_user = \"gt-nobody-here\"\n");
    let log = Daemon::try_start(&bed, &config).err().expect("no daemon without its front's user");
    assert!(
        log.contains("approval.front_user \"gt-nobody-here\" does not exist (create it, or leave front_user empty"),
        "{log}"
    );
    assert!(!log.contains("scripts/setup"), "a production message points at a development script: {log}");
    assert!(!bed.pin_dir.0.exists(), "the gate was touched before the user was looked up");

    let front_config = front::config(&mut bed, "");
    let text =
        std::fs::read_to_string(&front_config).unwrap().replace("user = \"gate-web\"", "user = \"gt-nobody-here\"");
    std::fs::write(&front_config, text).unwrap();
    let log = Daemon::try_start_program(&bed, "gate-web", &front_config).err().expect("no front without its user");
    assert!(
        log.contains(
            "user \"gt-nobody-here\" does not exist (create it: the front never runs as root); refusing to start"
        ),
        "{log}"
    );
    assert!(!log.contains("scripts/setup"), "{log}");
}

#[test]
fn a_store_backed_up_while_the_daemon_runs_restores_its_clients() {
    use std::os::unix::fs::PermissionsExt;
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let daemon = Daemon::start(&bed, &config);
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, 200, "alice before the backup");

    let backup = bed.state_dir.join("backup.db");
    let backup_arg = backup.to_str().expect("utf-8");
    let said = gatectl_store(&bed, &["store", "backup", backup_arg]);
    assert!(said.contains("backed up"), "{said}");
    let mode = std::fs::metadata(&backup).expect("the backup").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup holds the store's secrets");
    let (ok, _, err) = text(&gatectl_store_output(&bed, &["store", "backup", backup_arg]));
    assert!(!ok && err.contains("exists"), "a backup over an existing file: {err}");
    let bob = Enrolled::new(&bed, "bob", &["vpn"], "client");
    daemon.stop();

    // Restored as docs/operations.md says: the store (and its log) moved aside, the backup in
    // its place. Alice, enrolled before the backup, is approved; bob, enrolled after, is not.
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", bed.store().display());
        if Path::new(&file).exists() {
            std::fs::rename(&file, format!("{file}.old")).expect("move the store aside");
        }
    }
    std::fs::copy(&backup, bed.store()).expect("put the backup in place");
    let _daemon = Daemon::start(&bed, &config);
    assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, 200, "alice from the backup");
    assert_eq!(send(&bed, &bob.request(Some(CLIENT_V4), None), None).status, REJECTED_STATUS, "bob is not in it");
}

#[test]
fn a_client_moves_to_a_new_device_by_revoking_and_enrolling_its_name_again() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let _daemon = Daemon::start(&bed, &config);
    let old = Enrolled::new(&bed, "alice", &["vpn"], "client");
    assert_eq!(send(&bed, &old.request(Some(CLIENT_V4), None), None).status, 200, "the old device, approved");

    // Enrolled: the name is taken, and the message says how to move it.
    let new_path = bed.state_dir.join("alice-new-device.profile");
    let server = format!("unix:{}", bed.socket().display());
    let key = vector_key("foreign");
    let add_again = [
        "client",
        "add",
        "alice",
        "--gate",
        "vpn",
        "--out",
        new_path.to_str().unwrap(),
        "--server",
        &server,
        "--rsa-key",
        key.to_str().unwrap(),
    ];
    let refused = gatectl_store_output(&bed, &add_again);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("already exists") && said.contains("client revoke alice"),
        "{said}"
    );

    // Revoked (its lease closed here at once), then enrolled again: a new profile.
    gatectl_store(&bed, &["client", "revoke", "alice"]);
    let added = gatectl_store(&bed, &add_again);
    assert!(added.contains("enrolled alice again") && added.contains("old profile stays refused"), "{added}");
    let new = Enrolled::read(new_path);
    assert_ne!(new.profile.keys.token, old.profile.keys.token);

    assert_eq!(
        send(&bed, &old.request(Some(CLIENT_V4), None), None).status,
        REJECTED_STATUS,
        "the old device, refused"
    );
    assert_eq!(send(&bed, &new.request(Some(CLIENT_V4), None), None).status, 200, "the new device, approved");
    let shown = gatectl_store(&bed, &["client", "show", "alice"]);
    assert!(shown.contains("status: active"), "{shown}");
}

#[test]
fn the_server_box_key_is_rotated_without_cutting_off_clients_until_the_old_key_is_retired() {
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let _daemon = Daemon::start(&bed, &config);
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    let carol = Enrolled::new(&bed, "carol", &["vpn"], "foreign");
    let approved = |client: &Enrolled| send(&bed, &client.request(Some(CLIENT_V4), None), None).status == 200;
    assert!(approved(&alice) && approved(&carol));

    let rotated = gatectl_store(&bed, &["server-key", "rotate"]);
    assert!(rotated.contains("new box key") && rotated.contains("client update"), "{rotated}");
    let shown = gatectl_store(&bed, &["server-key", "show"]);
    assert!(shown.contains("rotation under way"), "{shown}");
    // Profiles made before the rotation still open the gate, and are counted as such.
    let before = counters(&bed).approved_with_previous_key;
    assert!(approved(&alice) && approved(&carol), "the previous key is still accepted");
    assert_eq!(counters(&bed).approved_with_previous_key, before + 2, "both counted as boxed to the previous key");
    // A profile made now carries the new key. (Made in the rotation's own second, it would be
    // counted among those `retire` cuts off: it may carry either key.)
    gate_tests::approval::align_to_second();
    let bob = Enrolled::new(&bed, "bob", &["vpn"], "client");
    assert_ne!(bob.profile.server_box_public, alice.profile.server_box_public);
    assert!(approved(&bob));
    let (ok, _, err) = text(&gatectl_store_output(&bed, &["server-key", "rotate"]));
    assert!(!ok && err.contains("server-key retire"), "a second rotation while one is under way: {err}");

    // alice's update, written by gatectl and applied by gate-client; carol's profile takes none
    // of it, nor a forged one.
    let update = bed.state_dir.join("alice.update");
    let written = gatectl_store(&bed, &["client", "update", "alice", "--out", update.to_str().unwrap()]);
    assert!(written.contains("gate-client update"), "{written}");
    let carol_before = std::fs::read(&carol.path).unwrap();
    let (ok, _, err) = text(&carol.apply_update(&bed, &update));
    assert!(!ok && err.contains("not an update for this profile"), "{err}");
    let mut forged: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&update).unwrap()).unwrap();
    let body = gate_protocol::encoding::unb64(forged["body"].as_str().unwrap(), "body").unwrap();
    let mut body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    body["server_box_public"] = serde_json::json!(gate_protocol::encoding::b64(&[7; 32]));
    forged["body"] = serde_json::json!(gate_protocol::encoding::b64(body.to_string().as_bytes()));
    let forged_path = bed.state_dir.join("forged.update");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let (ok, _, err) = text(&alice.apply_update(&bed, &forged_path));
    assert!(!ok && err.contains("not an update for this profile"), "a changed update: {err}");
    assert_eq!(std::fs::read(&carol.path).unwrap(), carol_before, "carol's profile untouched");
    let (ok, out, err) = text(&alice.apply_update(&bed, &update));
    assert!(ok && out.contains("the server's box key"), "{out}{err}");
    let (ok, out, _) = text(&alice.apply_update(&bed, &update));
    assert!(ok && out.contains("already up to date"), "applied twice: {out}");
    let alice = alice.reread();
    assert_eq!(alice.profile.server_box_public, bob.profile.server_box_public, "the new key");
    let before = counters(&bed).approved_with_previous_key;
    assert!(approved(&alice));
    assert_eq!(counters(&bed).approved_with_previous_key, before, "alice uses the current key now");
    let out = bed
        .client
        .command(bin("gate-client"))
        .args(["connect", "--profile", alice.path.to_str().unwrap(), "--no-discover", "--json"])
        .args(["--ipv4", &CLIENT_V4.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "the real client with the updated profile: {}", String::from_utf8_lossy(&out.stderr));

    // Retiring the key is refused while it would cut carol off (bob came after the rotation,
    // alice has her update), and named; forced, carol is refused with the uniform answer.
    let (ok, _, err) = text(&gatectl_store_output(&bed, &["server-key", "retire"]));
    assert!(!ok && err.contains("1 active client(s)") && err.contains(": carol;") && err.contains("--force"), "{err}");
    assert!(approved(&carol), "nothing retired");
    let retired = gatectl_store(&bed, &["server-key", "retire", "--force"]);
    assert!(retired.contains("retired"), "{retired}");
    let refusals = counters(&bed).rejected["bad_box"];
    assert_eq!(send(&bed, &carol.request(Some(CLIENT_V4), None), None).status, REJECTED_STATUS, "carol, not updated");
    assert_eq!(counters(&bed).rejected["bad_box"], refusals + 1);
    assert!(approved(&alice) && approved(&bob));
    let trail = gatectl_store(&bed, &["audit"]);
    for event in ["key_rotated", "profile_updated", "key_retired"] {
        assert!(trail.contains(event), "{event} in the audit trail:\n{trail}");
    }
}
