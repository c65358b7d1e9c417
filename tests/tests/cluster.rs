//! Two gate hosts on one PostgreSQL store (issue 14): each a real daemon on its own gateway
//! namespace and pin dir, both configured with the same `postgres://` store, on a PostgreSQL
//! server of the test's own. A client enrolled once is approved by either; a nonce spent on one
//! is a replay on the other; a revocation made on one closes the leases the other opened; a box
//! key rotated through one is followed by the other.
use std::{
    net::IpAddr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use gate_protocol::wire::REJECTED_STATUS;
use gate_protocol::{keys::Token, rand::rngs::OsRng};
use gate_tests::{
    approval::{
        Enrolled, KeptAlive, counters, gatectl_store, headers, keep_alive, leased, raw, send, send_raw, vector_key,
    },
    bed::{CLIENT_V4, STRANGER_V4, TestBed},
    cluster::{DatabaseLink, GATED, Host, SharedStore},
    daemon::{Daemon, bin},
};

const HOST_A_PUBLIC: &str = "203.0.113.1";
const HOST_B_PUBLIC: &str = "203.0.113.2";

/// A host telling approved clients to connect to `public` (so an approval names it).
fn host(store: &SharedStore, name: &str, public: &str) -> Host {
    Host::start(store, name, &format!("public_ipv4 = \"{public}\"\n"))
}

/// The shared store, then two hosts on it (dropped hosts first: their daemons stop before the
/// database does).
fn cluster() -> ([Host; 2], SharedStore) {
    let store = SharedStore::start().expect("a PostgreSQL store of the test's own");
    ([host(&store, "gate-a", HOST_A_PUBLIC), host(&store, "gate-b", HOST_B_PUBLIC)], store)
}

fn refusals(host: &Host, reason: &str) -> u64 {
    refusals_on(&host.bed, reason)
}

#[test]
fn a_client_enrolled_once_is_approved_by_every_host_and_a_nonce_spent_on_one_is_a_replay_on_the_other() {
    let ([a, b], _store) = cluster();
    let alice = Enrolled::new(&a.bed, "alice", &["vpn"], "client");

    let first = alice.request(Some(CLIENT_V4), None);
    let bytes = raw(&headers(&first, None), first.body_json().as_bytes());
    assert_eq!(send_raw(&a.bed, &bytes).status, 200, "host A approves");
    assert_eq!(leased(&a.bed), [IpAddr::from(CLIENT_V4)]);
    assert_eq!(send_raw(&b.bed, &bytes).status, REJECTED_STATUS, "the same request on host B");
    assert_eq!(refusals(&b, "replay"), 1, "refused as a replay: {:?}", counters(&b.bed));
    assert!(leased(&b.bed).is_empty(), "host B opened nothing");

    let second = alice.request(Some(STRANGER_V4), None);
    assert_eq!(send(&b.bed, &second, None).status, 200, "host B approves a fresh request of the same client");
    assert_eq!(leased(&b.bed), [IpAddr::from(STRANGER_V4)]);
    assert_eq!(leased(&a.bed), [IpAddr::from(CLIENT_V4)], "each host opens its own gate only");
    drop(a.daemon);
    drop(b.daemon);
}

#[test]
fn the_same_request_raced_to_both_hosts_is_approved_once() {
    let ([a, b], _store) = cluster();
    let alice = Enrolled::new(&a.bed, "alice", &["vpn"], "client");
    for round in 0..50 {
        let request = alice.request(Some(CLIENT_V4), None);
        let bytes = raw(&headers(&request, None), request.body_json().as_bytes());
        let (to_a, to_b) = thread::scope(|scope| {
            let on_a = scope.spawn(|| send_raw(&a.bed, &bytes).status);
            let on_b = scope.spawn(|| send_raw(&b.bed, &bytes).status);
            (on_a.join().unwrap(), on_b.join().unwrap())
        });
        let approved = [to_a, to_b].iter().filter(|status| **status == 200).count();
        assert_eq!(approved, 1, "round {round}: host A answered {to_a}, host B {to_b}");
    }
    assert_eq!(refusals(&a, "replay") + refusals(&b, "replay"), 50, "every loser a replay");
}

#[test]
fn a_revocation_on_one_host_closes_the_leases_the_other_opened_within_a_second() {
    let ([a, b], _store) = cluster();
    let alice = Enrolled::new(&a.bed, "alice", &["vpn"], "client");
    let bob = Enrolled::new(&b.bed, "bob", &["vpn"], "foreign");
    assert_eq!(send(&b.bed, &alice.request(Some(CLIENT_V4), None), None).status, 200);
    assert_eq!(send(&b.bed, &bob.request(Some(STRANGER_V4), None), None).status, 200);
    assert_eq!(leased(&b.bed), [IpAddr::from(CLIENT_V4), IpAddr::from(STRANGER_V4)]);

    // Revoked through host A: its gatectl closes A's leases (none) and commits the revocation;
    // host B's daemon sees it in the shared store and closes the lease it opened.
    let out = gatectl_store(&a.bed, &["client", "revoke", "alice"]);
    assert!(out.contains("revoked alice"), "{out}");
    let start = Instant::now();
    while leased(&b.bed).contains(&CLIENT_V4.into()) {
        assert!(start.elapsed() < Duration::from_secs(1), "alice's lease on host B still open after a second");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(leased(&b.bed), [IpAddr::from(STRANGER_V4)], "bob's stays open");
    let before = refusals(&b, "revoked");
    assert_eq!(send(&b.bed, &alice.request(Some(CLIENT_V4), None), None).status, REJECTED_STATUS);
    assert_eq!(refusals(&b, "revoked"), before + 1, "refused on host B as revoked");
    let _ = (&a.daemon, &b.daemon);
}

/// Statements the database has logged.
fn statements(database: &temp_postgres::TempPostgres) -> usize {
    database.server_log().lines().filter(|l| l.contains("LOG:  statement:") || l.contains("LOG:  execute")).count()
}

#[test]
fn a_flood_of_made_up_tokens_costs_the_shared_database_a_few_queries_a_second() {
    let ([a, _b], store) = cluster();
    let database = &store.database;
    let alice = Enrolled::new(&a.bed, "alice", &["vpn"], "client");
    database.log_statements().unwrap();
    let request = alice.request(Some(CLIENT_V4), None);
    let mut connection = KeptAlive::connect(&a.bed.socket());
    thread::sleep(Duration::from_millis(500));
    let (before, start) = (statements(database), Instant::now());
    let strangers = 1000;
    for _ in 0..strangers {
        let mut made_up = headers(&request, None);
        made_up[0].1 = Token::random(&mut OsRng).to_string();
        let bytes = keep_alive(&raw(&made_up, request.body_json().as_bytes()));
        assert_eq!(connection.send(&bytes), REJECTED_STATUS);
    }
    let seconds = start.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(300));
    let queries = statements(database) - before;
    assert_eq!(refusals(&a, "unknown_token"), strangers, "{:?}", counters(&a.bed));
    // Both hosts' upkeep looks 4 times a second; the made-up tokens at most 20 times a second.
    let allowed = ((4.0 * 2.0 + 20.0) * 2.0 * (seconds + 0.3)).ceil() as usize + 10;
    println!("{queries} statements for {strangers} made-up tokens in {seconds:.1} s (allowed {allowed})");
    assert!(queries <= allowed, "{queries} statements for {strangers} made-up tokens in {seconds:.1} s");
    // And the limit does not hide a client enrolled meanwhile for long.
    let bob = Enrolled::new(&a.bed, "bob", &["vpn"], "foreign");
    thread::sleep(Duration::from_millis(60));
    assert_eq!(send(&a.bed, &bob.request(Some(STRANGER_V4), None), None).status, 200, "bob, enrolled during the lull");
}

#[test]
fn with_the_database_down_approvals_are_refused_leases_run_on_and_approvals_resume_when_it_returns() {
    let ([a, _b], store) = cluster();
    let database = &store.database;
    let alice = Enrolled::new(&a.bed, "alice", &["vpn"], "client");
    assert_eq!(send(&a.bed, &alice.request(Some(CLIENT_V4), None), None).status, 200);

    database.stop().expect("stop the database");
    let before = refusals(&a, "internal");
    let requests = 50;
    for _ in 0..requests {
        let response = send(&a.bed, &alice.request(Some(STRANGER_V4), None), None);
        assert_eq!(response.status, REJECTED_STATUS, "the uniform refusal while the store is away");
    }
    assert_eq!(refusals(&a, "internal"), before + requests, "{:?}", counters(&a.bed));
    assert_eq!(leased(&a.bed), [IpAddr::from(CLIENT_V4)], "the lease opened before runs on; nothing new opened");
    let store_lines = |log: &str| log.lines().filter(|l| l.contains("store: ")).count();
    let lines = store_lines(&a.daemon.log());
    assert!((1..=4).contains(&lines), "{lines} store lines for {requests} failed approvals:\n{}", a.daemon.log());

    database.start_again().expect("start the database again");
    let start = Instant::now();
    while send(&a.bed, &alice.request(Some(STRANGER_V4), None), None).status != 200 {
        assert!(start.elapsed() < Duration::from_secs(5), "no approval 5 s after the database returned");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(a.daemon.log().contains("store: answering again"), "{}", a.daemon.log());
}

#[test]
fn a_dump_of_the_clusters_database_holds_no_secret_in_the_clear() {
    let ([a, _b], store) = cluster();
    let alice = Enrolled::new(&a.bed, "alice", &["vpn"], "client");
    assert_eq!(send(&a.bed, &alice.request(Some(CLIENT_V4), None), None).status, 200);
    let dump = store.database.dump("gate").expect("pg_dump");
    assert!(dump.contains("alice"), "the dump holds the clients");
    let secret: String = alice.profile.keys.secret.0.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!dump.contains(&secret), "alice's HMAC secret in the clear");
    assert!(!dump.contains("PRIVATE KEY"), "a private key in the clear");
}

#[test]
fn a_client_whose_first_host_is_down_is_approved_by_the_next_which_names_itself() {
    let ([a, b], _store) = cluster();
    let profile = a.bed.state_dir.join("carol.profile");
    let key = vector_key("client");
    let (on_a, on_b) = (format!("unix:{}", a.bed.socket().display()), format!("unix:{}", b.bed.socket().display()));
    let args = ["client", "add", "carol", "--gate", "vpn", "--out", profile.to_str().unwrap()];
    let servers = ["--server", &on_a, "--server", &on_b, "--rsa-key", key.to_str().unwrap()];
    gatectl_store(&a.bed, &[&args[..], &servers[..]].concat());
    let gate_client = || {
        let out = Command::new(bin("gate-client"))
            .args(["connect", "--json", "--ipv4", &CLIENT_V4.to_string(), "--profile"])
            .arg(&profile)
            .output()
            .expect("run gate-client");
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (out.status.success(), answer["host"]["ipv4"].as_str().unwrap_or_default().to_owned(), out.stderr)
    };
    let (approved, host, _) = gate_client();
    assert!(approved && host == HOST_A_PUBLIC, "the first host answers while it is up: {host:?}");

    drop(a.daemon);
    let (approved, host, stderr) = gate_client();
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(approved, "host B approves when host A does not answer: {stderr}");
    assert_eq!(host, HOST_B_PUBLIC, "the approval names host B");
    assert!(stderr.contains(&format!("trying {on_b}")), "{stderr}");
    assert_eq!(leased(&b.bed), [IpAddr::from(CLIENT_V4)], "host B opened its gate");
}

#[test]
fn a_single_hosts_store_moves_into_the_clusters_database_and_its_clients_keep_their_profiles() {
    let store = SharedStore::start().expect("a PostgreSQL store of the test's own");

    // One host on its own SQLite store, a client approved there.
    let mut bed = TestBed::new();
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let daemon = Daemon::start(&bed, &config);
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    let first = alice.request(Some(CLIENT_V4), None);
    let bytes = raw(&headers(&first, None), first.body_json().as_bytes());
    assert_eq!(send_raw(&bed, &bytes).status, 200);
    daemon.stop();

    let out = gatectl_store(&bed, &["store", "copy", "--to", &store.url, "--to-key-file", store.key.to_str().unwrap()]);
    assert!(out.contains("copied"), "{out}");
    bed.share_store(&store.url, &store.key);
    let config = bed.config(&[("vpn", "udp", GATED)], "");
    let host = Host { daemon: Daemon::start(&bed, &config), bed };
    let before = refusals(&host, "replay");
    assert_eq!(send_raw(&host.bed, &bytes).status, REJECTED_STATUS, "approved before the move: a replay after it");
    assert_eq!(refusals(&host, "replay"), before + 1);
    let after = alice.request(Some(STRANGER_V4), None);
    assert_eq!(send(&host.bed, &after, None).status, 200, "the profile made before the move works");
    assert!(!store.database.dump("gate").unwrap().contains("PRIVATE KEY"), "sealed on the way in");
}

#[test]
fn an_operators_shutdown_for_all_hosts_stops_approvals_on_each_and_a_hosts_own_setting_wins() {
    let ([a, b], _store) = cluster();
    let alice = Enrolled::new(&a.bed, "alice", &["vpn"], "client");
    let approves = |host: &Host| send(&host.bed, &alice.request(Some(CLIENT_V4), None), None).status == 200;
    let within = |what: &str, done: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(3), "{what} after 3 s");
            thread::sleep(Duration::from_millis(100));
        }
    };
    gatectl_store(&a.bed, &["shutdown", "set", "vpn", "disabled", "--all-hosts"]);
    within("host A still approving", &|| !approves(&a));
    within("host B still approving", &|| !approves(&b));
    assert!(refusals(&b, "vpn_disabled") > 0, "{:?}", counters(&b.bed));

    gatectl_store(&a.bed, &["--host", "gate-b", "shutdown", "set", "vpn", "ok"]);
    within("host B's own setting not winning", &|| approves(&b));
    assert!(!approves(&a), "host A keeps the setting for all hosts");

    gatectl_store(&a.bed, &["shutdown", "clear", "vpn", "--all-hosts"]);
    within("host A not approving after the clear", &|| approves(&a));
}

#[test]
fn a_revocation_on_one_host_is_pushed_to_the_other_at_once() {
    let ([a, b], _store) = cluster();
    // The looks come every 250 ms: each of 5 revocations arriving within 100 ms of its commit
    // (a chance of 0.4^5 = 1% by looks alone) says it was heard, not looked for.
    for round in 0..5_u8 {
        let name = format!("pushed-{round}");
        let client = Enrolled::new(&a.bed, &name, &["vpn"], "client");
        let address = std::net::Ipv4Addr::new(198, 18, 0, round + 1);
        assert_eq!(send(&b.bed, &client.request(Some(address), None), None).status, 200);
        assert_eq!(leased(&b.bed), [IpAddr::from(address)]);
        thread::sleep(Duration::from_millis(u64::from(round) * 47));
        // gatectl on host A without its maps: the revocation reaches host B through the store.
        let mut admin = a.bed.store_flags();
        admin.extend(["--pin-dir".into(), "/nonexistent".into(), "client".into(), "revoke".into(), name.clone()]);
        let out = Command::new(bin("gatectl")).args(&admin).output().expect("run gatectl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let revoked = Instant::now();
        while leased(&b.bed).contains(&IpAddr::from(address)) {
            assert!(revoked.elapsed() < Duration::from_millis(100), "round {round}: host B's lease open 100 ms on");
            thread::sleep(Duration::from_millis(2));
        }
    }
}

#[test]
fn a_host_that_was_down_applies_the_revocations_it_missed_before_it_approves_again() {
    let store = SharedStore::start().expect("a PostgreSQL store of the test's own");
    let a = host(&store, "gate-a", HOST_A_PUBLIC);
    let mut bed = TestBed::new();
    bed.share_store(&store.url, &store.key);
    let config = bed.config(&[("vpn", "udp", GATED)], "[approval]\nhost = \"gate-b\"\n");
    let b = Daemon::start(&bed, &config);
    let alice = Enrolled::new(&a.bed, "alice", &["vpn"], "client");
    assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, 200);

    // Host B dies; alice is revoked meanwhile. Its lease lives on in B's pinned maps.
    b.kill9();
    gatectl_store(&a.bed, &["client", "revoke", "alice"]);
    assert_eq!(leased(&bed), [IpAddr::from(CLIENT_V4)], "the lease outlived the daemon");

    let _b = Daemon::start(&bed, &config);
    let start = Instant::now();
    while leased(&bed).contains(&IpAddr::from(CLIENT_V4)) {
        assert!(start.elapsed() < Duration::from_secs(1), "the missed revocation not applied a second after the start");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, REJECTED_STATUS);
    assert_eq!(counters(&bed).rejected.get("revoked").copied(), Some(1), "refused as revoked");
}

/// `gatectl cluster status --json` through host `on`'s store flags: (exited well, the JSON).
fn cluster_status(on: &TestBed) -> (bool, serde_json::Value) {
    let mut args = on.store_flags();
    args.extend(["cluster".into(), "status".into(), "--json".into()]);
    let out = Command::new(bin("gatectl")).args(&args).output().expect("run gatectl");
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or_default())
}

/// Waits up to `within` for `check` to hold of the status; returns it.
fn status_where(on: &TestBed, within: Duration, check: impl Fn(bool, &serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (ok, status) = cluster_status(on);
        if check(ok, &status) {
            return status;
        }
        assert!(start.elapsed() < within, "cluster status never matched: {status:#}");
        thread::sleep(Duration::from_millis(250));
    }
}

fn host_in<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["hosts"].as_array().and_then(|h| h.iter().find(|h| h["host"] == name)).unwrap_or(&serde_json::Value::Null)
}

#[test]
fn cluster_status_shows_each_hosts_leases_and_approvals_and_which_stopped_or_went_silent() {
    let store = SharedStore::start().expect("a PostgreSQL store of the test's own");
    let sweep_often = "[leases]\nsweep_interval = \"1s\"\n";
    let a = Host::start_with(&store, "gate-a", sweep_often, "");
    let b = Host::start_with(&store, "gate-b", sweep_often, "");
    let alice = Enrolled::new(&a.bed, "alice", &["vpn"], "client");
    assert_eq!(send(&a.bed, &alice.request(Some(CLIENT_V4), None), None).status, 200);
    assert_eq!(send(&a.bed, &alice.request(Some(STRANGER_V4), None), None).status, 200);
    let approved = alice.request(Some(CLIENT_V4), None);
    let bytes = raw(&headers(&approved, None), approved.body_json().as_bytes());
    assert_eq!(send_raw(&b.bed, &bytes).status, 200);
    assert_eq!(send_raw(&b.bed, &bytes).status, REJECTED_STATUS, "a replay");

    // Heartbeats come every 5 s; the leases are counted by each host's sweep.
    let status = status_where(&a.bed, Duration::from_secs(12), |ok, s| {
        ok && host_in(s, "gate-a")["leases"] == 2 && host_in(s, "gate-b")["leases"] == 1
    });
    let (host_a, host_b) = (host_in(&status, "gate-a"), host_in(&status, "gate-b"));
    assert_eq!((host_a["state"].as_str(), host_b["state"].as_str()), (Some("up"), Some("up")), "{status:#}");
    assert_eq!((host_a["approvals"].as_u64(), host_b["approvals"].as_u64()), (Some(2), Some(1)), "{status:#}");
    assert_eq!(host_b["refusals"], 1, "{status:#}");
    assert_eq!(host_a["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["database"]["product"], "PostgreSQL");
    assert_eq!(status["database"]["clients"], 1);
    let mut args = a.bed.store_flags();
    args.extend(["cluster".into(), "status".into()]);
    let text = Command::new(bin("gatectl")).args(&args).output().expect("run gatectl");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("database: PostgreSQL") && text.lines().any(|l| l.starts_with("gate-b  up")), "{text}");

    // A second daemon configured with gate-a's name is noticed in the log.
    let twin = Host::start(&store, "gate-a", "");
    let start = Instant::now();
    let said = "another daemon writes heartbeats as host \"gate-a\"";
    while !a.daemon.log().contains(said) && !twin.daemon.log().contains(said) {
        assert!(start.elapsed() < Duration::from_secs(12), "two daemons named gate-a, nothing logged");
        thread::sleep(Duration::from_millis(200));
    }
    twin.daemon.stop();

    // Host B stops cleanly: stopped at once. Host A dies: silent once 15 s pass without a
    // heartbeat, and the status exits non-zero.
    let Host { daemon, bed: _bed_b } = b;
    daemon.stop();
    let status = status_where(&a.bed, Duration::from_secs(2), |_, s| host_in(s, "gate-b")["state"] == "stopped");
    assert!(host_in(&status, "gate-b")["stopped_at"].is_u64());
    a.daemon.kill9();
    status_where(&a.bed, Duration::from_secs(25), |ok, s| !ok && host_in(s, "gate-a")["state"] == "silent");
    let out = gatectl_store(&a.bed, &["cluster", "forget", "gate-b"]);
    assert!(out.contains("forgot host gate-b"), "{out}");
    assert_eq!(host_in(&cluster_status(&a.bed).1, "gate-b"), &serde_json::Value::Null);
}

#[test]
fn a_host_cut_off_from_the_database_refuses_approvals_and_applies_the_revocations_it_missed_first() {
    let store = SharedStore::start().expect("a PostgreSQL store of the test's own");
    let link = DatabaseLink::start(&store.database).expect("a link to cut");
    // Host A reaches the database through the link; host B directly.
    let mut bed = TestBed::new();
    bed.share_store(&link.url("gate"), &store.key);
    let config = bed.config(&[("vpn", "udp", GATED)], "[approval]\nhost = \"gate-a\"\n");
    let a = Daemon::start(&bed, &config);
    let b = host(&store, "gate-b", HOST_B_PUBLIC);
    let alice = Enrolled::new(&b.bed, "alice", &["vpn"], "client");
    let bob = Enrolled::new(&b.bed, "bob", &["vpn"], "foreign");
    assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, 200);

    link.cut();
    // Host B goes on; host A refuses with the uniform answer (no approval without the shared
    // replay store) and keeps the lease it opened: it cannot learn of the revocation.
    assert_eq!(send(&b.bed, &bob.request(Some(STRANGER_V4), None), None).status, 200, "host B approves");
    assert_eq!(send(&bed, &bob.request(Some(STRANGER_V4), None), None).status, REJECTED_STATUS, "host A, cut off");
    gatectl_store(&b.bed, &["client", "revoke", "alice"]);
    thread::sleep(Duration::from_millis(1_500));
    assert_eq!(leased(&bed), [IpAddr::from(CLIENT_V4)], "host A keeps its lease while cut off");
    assert!(leased(&bed).iter().all(|a| *a != IpAddr::from(STRANGER_V4)), "and opened nothing for bob");

    // Healed: host A never approves alice again, closes her lease, and approves bob.
    link.heal();
    let healed = Instant::now();
    while counters(&bed).rejected.get("revoked").copied().unwrap_or(0) == 0 {
        assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, REJECTED_STATUS);
        assert!(healed.elapsed() < Duration::from_secs(5), "alice not refused as revoked 5 s after the heal");
        thread::sleep(Duration::from_millis(100));
    }
    while leased(&bed).contains(&IpAddr::from(CLIENT_V4)) {
        assert!(healed.elapsed() < Duration::from_secs(5), "alice's lease on host A open 5 s after the heal");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(send(&bed, &bob.request(Some(STRANGER_V4), None), None).status, 200, "host A approves again");
    let log = a.stop();
    assert!(log.contains("approvals are refused until the store answers"), "{log}");
    assert!(log.contains("store: answering again after"), "{log}");
    drop(b);
}

#[test]
fn a_host_follows_its_database_to_the_replica_promoted_in_a_failover_and_forgets_no_nonce() {
    let store = SharedStore::start().expect("a PostgreSQL store of the test's own");
    let standby = store.database.start_standby().expect("a streaming replica, synchronous");
    // Both servers in one URL, the one that takes writes chosen: libpq's way to follow a failover.
    let socket = |server: &temp_postgres::TempPostgres| format!("{}:5432", server.dir().display()).replace('/', "%2F");
    let url = format!(
        "postgres://{}@{},{}/gate?target_session_attrs=read-write",
        temp_postgres::USER,
        socket(&store.database),
        socket(&standby)
    );
    let mut bed = TestBed::new();
    bed.share_store(&url, &store.key);
    let config = bed.config(&[("vpn", "udp", GATED)], "[approval]\nhost = \"gate-a\"\n");
    let _daemon = Daemon::start(&bed, &config);
    let alice = Enrolled::new(&bed, "alice", &["vpn"], "client");
    let before = alice.request(Some(CLIENT_V4), None);
    let bytes = raw(&headers(&before, None), before.body_json().as_bytes());
    assert_eq!(send_raw(&bed, &bytes).status, 200);

    // The primary dies; the replica is promoted. Approvals resume there by themselves.
    store.database.stop().expect("stop the primary");
    standby.promote().expect("promote the replica");
    let failed_over = Instant::now();
    while send(&bed, &alice.request(Some(STRANGER_V4), None), None).status != 200 {
        assert!(failed_over.elapsed() < Duration::from_secs(10), "no approval 10 s after the failover");
        thread::sleep(Duration::from_millis(200));
    }
    let before_replays = refusals_on(&bed, "replay");
    assert_eq!(send_raw(&bed, &bytes).status, REJECTED_STATUS, "approved before the failover: a replay after it");
    assert_eq!(refusals_on(&bed, "replay"), before_replays + 1, "refused as a replay: {:?}", counters(&bed));
    gatectl_store(&bed, &["client", "revoke", "alice"]);
    assert_eq!(send(&bed, &alice.request(Some(CLIENT_V4), None), None).status, REJECTED_STATUS, "revoked");
}

fn refusals_on(bed: &TestBed, reason: &str) -> u64 {
    counters(bed).rejected.get(reason).copied().unwrap_or(0)
}

#[test]
fn a_box_key_rotated_through_one_host_is_followed_by_the_other_at_its_next_request() {
    let ([a, b], _store) = cluster();
    let alice = Enrolled::new(&a.bed, "alice", &["vpn"], "client");
    assert_eq!(send(&b.bed, &alice.request(Some(CLIENT_V4), None), None).status, 200, "host B knows the key");

    // Rotated through host A's gatectl, no client written since: host B counts alice's old
    // profile as boxed to the previous key, and approves a profile made since (the new key).
    gatectl_store(&a.bed, &["server-key", "rotate"]);
    let previous = counters(&b.bed).approved_with_previous_key;
    assert_eq!(send(&b.bed, &alice.request(Some(CLIENT_V4), None), None).status, 200, "the previous key");
    assert_eq!(counters(&b.bed).approved_with_previous_key, previous + 1, "host B knows the key changed");
    gate_tests::approval::align_to_second();
    let bob = Enrolled::new(&a.bed, "bob", &["vpn"], "foreign");
    assert_ne!(bob.profile.server_box_public, alice.profile.server_box_public);
    assert_eq!(send(&b.bed, &bob.request(Some(STRANGER_V4), None), None).status, 200, "the new key");

    // Retired through host A (forced: alice never got her update): host B refuses her next
    // request at once, with nothing but the key's change to tell it.
    gatectl_store(&a.bed, &["server-key", "retire", "--force"]);
    let before = refusals(&b, "bad_box");
    assert_eq!(send(&b.bed, &alice.request(Some(CLIENT_V4), None), None).status, REJECTED_STATUS);
    assert_eq!(refusals(&b, "bad_box"), before + 1, "refused on host B: the box no longer opens");
    assert_eq!(send(&b.bed, &bob.request(Some(STRANGER_V4), None), None).status, 200);
}
