//! The benchmarks in quick mode: each runs, prints a figure for every row, and leaves nothing
//! behind (no namespace, no pinned state, no temporary file). Nothing here asserts a speed.
use std::{
    process::{Command, Output, Stdio},
    sync::{PoisonError, RwLock},
};

use gate_tests::{daemon::bin, unique::PREFIX};

/// Runs a benchmark binary with `--quick`; returns its output and pid.
fn run_quick(name: &str) -> (Output, u32) {
    run_quick_with(name, &[])
}

/// Held while a benchmark runs: shared by most, whole by the netfilter bench, which times a
/// receiver pinned to a core of its own and reads its CPU time (beside the other benchmarks it
/// was starved on a 2-core host: a row of 0% busy, a few thousand drops of 1.3 million sent).
static CPUS: RwLock<()> = RwLock::new(());

/// As [`run_quick`], with `args` too.
fn run_quick_with(name: &str, args: &[&str]) -> (Output, u32) {
    let (_whole, _shared);
    if name == "gate-bench-netfilter" {
        _whole = CPUS.write().unwrap_or_else(PoisonError::into_inner);
    } else {
        _shared = CPUS.read().unwrap_or_else(PoisonError::into_inner);
    }
    let child = Command::new(bin(name))
        .arg("--quick")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for the benchmark");
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    (out, pid)
}

/// Names the benchmark process `pid` made (they carry its pid) that still exist: namespaces,
/// pins, temporary files, cgroups.
fn leftovers(pid: u32) -> Vec<String> {
    let mark = format!("{PREFIX}{pid:x}x");
    let cgroups = gate_daemon::cgroup::mount_point().expect("cgroup2 is mounted");
    let mut names: Vec<String> =
        [std::path::Path::new("/sys/fs/bpf"), "/run/netns".as_ref(), "/tmp".as_ref(), &cgroups]
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
    names.retain(|n| n.starts_with(&mark) || n.starts_with(&format!("{PREFIX}-{pid:x}x")));
    names
}

#[test]
fn quick_xdp_bench_prints_every_row_and_cleans_up() {
    let (out, pid) = run_quick("gate-bench-xdp");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| 1")).collect();
    let (timing, memory): (Vec<&str>, Vec<&str>) = rows.iter().partition(|l| l.split('|').count() == 9);
    assert_eq!(timing.len(), 10, "2 lease counts x 5 packets:\n{stdout}");
    assert_eq!(memory.len(), 2, "memory of the maps at 2 lease counts:\n{stdout}");
    for row in timing {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let gate_ns: u64 = cells[3].parse().unwrap_or_else(|_| panic!("a number in {row}"));
        assert!(gate_ns > 0, "{row}");
    }
    assert_eq!(leftovers(pid), Vec::<String>::new(), "nothing left behind");
}

/// Every line of `rows` starts some line of `stdout`.
fn assert_rows(stdout: &str, rows: &[&str]) {
    for row in rows {
        assert!(stdout.lines().any(|l| l.starts_with(row)), "row {row:?} missing:\n{stdout}");
    }
}

#[test]
fn quick_approval_bench_prints_every_row_and_cleans_up() {
    let (out, pid) = run_quick("gate-bench-approval");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_rows(
        &stdout,
        &[
            "| HMAC-SHA512 check |",
            "| box open |",
            "| RSA-4096 PSS verify |",
            "| sequential approvals (10): p50",
            "| concurrent approvals",
            "| bad-HMAC refusals (2 clients, 50)",
            "| bad-HMAC refusals on kept-alive connections (2 clients, 50)",
            "| of those, per second of the daemon's CPU",
            "| RSA verifications during the bad-HMAC floods | 0 |",
            "| **service overhead",
            "| sequential approvals (10): p50 request → answer |",
            "| **the front adds to an approval",
            "| approval request sent → first packet through the gate answered",
        ],
    );
    assert_eq!(leftovers(pid), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn quick_clients_bench_prints_every_row_and_cleans_up() {
    let (out, pid) = run_quick("gate-bench-clients");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_rows(
        &stdout,
        &[
            "| first load of the view |",
            "| the view's memory",
            "| reload after gatectl changed one client (median of 5) |",
            "| check when nothing changed",
        ],
    );
    assert_eq!(leftovers(pid), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn quick_leases_bench_prints_every_row_and_cleans_up() {
    let (out, pid) = run_quick("gate-bench-leases");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_rows(
        &stdout,
        &[
            "| `gatectl allow ADDR` (one lease; median of 5) |",
            "| `gatectl allow --from FILE` (20000 addresses) |",
            "| read every lease: aya's iterator (before) |",
            "| read every lease: batched reads (now) |",
            "| `gatectl leases` (table, to /dev/null) |",
            "| `gatectl leases --json` (to /dev/null) |",
            "| `gatectl revoke ADDR` (median of 20) |",
            "| sweep with nothing dead |",
            "| rebuild the filter (19980 leases: counters, then bits at their size) |",
            "| mass expiry of 20000, sweep holding the approvals' lock (before) |",
            "| mass expiry of 20000, sweep own handle, batches, yielding to approvals (now) |",
        ],
    );
    assert_eq!(leftovers(pid), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn quick_storm_bench_approves_every_client_in_every_storm_and_cleans_up() {
    let (out, pid) = run_quick("gate-bench-storm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_rows(
        &stdout,
        &[
            "| on the socket | 4 |",
            "| on the socket + bad-HMAC flood | 4 |",
            "| through the front | 4 |",
            "| through the front + bad-HMAC flood | 4 |",
            "| on the socket, store in PostgreSQL | 4 |",
        ],
    );
    assert_eq!(leftovers(pid), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn quick_netfilter_bench_prints_every_row_and_cleans_up() {
    let (out, pid) = run_quick("gate-bench-netfilter");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_rows(
        &stdout,
        &[
            "| gate: `GateState::grant`",
            "| `ipset add`",
            "| `nft add element`",
            "| - | (receiver down",
            "## Flood: 64-byte UDP frames as XDP live frames (",
            "## Flood: 64-byte UDP frames as XDP live frames, sender on CPU 0, receiver (threaded NAPI) on CPU 1",
            "## Flood: the same, paced to one frame in 3",
        ],
    );
    let (floods, nic) = stdout.split_once("## NIC-like path").expect("the NIC-like tables");
    let tables: Vec<&str> = floods.split("## Flood: ").skip(1).collect();
    assert_eq!(tables.len(), 5, "a table per sender:\n{stdout}");
    for (table, own_cores) in tables.iter().zip([false, false, true, true, true]) {
        for cells in rows(table) {
            let dropped: f64 = cells[4].parse().unwrap_or_else(|_| panic!("a drop rate in {cells:?}"));
            assert!(dropped > 0.0, "{cells:?}");
            if own_cores {
                let busy: f64 = cells[8].trim_end_matches('%').parse().unwrap_or_else(|_| panic!("{cells:?}"));
                assert!(busy > 0.0, "the receiver's own thread did the work: {cells:?}");
            }
        }
    }
    // The NIC-like path, one source and random sources: every setup dropped (nearly) every
    // frame it was handed, and the floor row is there.
    let nic_tables: Vec<&str> = nic.split("## NIC-like path").collect();
    assert_eq!(nic_tables.len(), 2, "one source, random sources:\n{nic}");
    for table in nic_tables {
        assert!(table.contains("| - | (the path's floor"), "{table}");
        // The goal's verdict, at every count of the quick run, against one setup each.
        let verdict = table
            .lines()
            .find(|l| l.starts_with("the gate over the strongest setup at each count: "))
            .unwrap_or_else(|| panic!("no verdict line:\n{table}"));
        assert_eq!(verdict.matches("x at ").count(), 2, "{verdict}");
        assert!(verdict.contains("every count") || verdict.contains("under 4x at "), "{verdict}");
        for cells in rows(table) {
            let dropped: f64 = cells[4].trim_end_matches('%').parse().unwrap_or_else(|_| panic!("{cells:?}"));
            assert!(dropped > 99.0, "the setup dropped what it was handed: {cells:?}");
        }
    }
    assert_eq!(leftovers(pid), Vec::<String>::new(), "nothing left behind");
}

/// The cells of the gate's and each netfilter setup's row of a flood `table`, at 10 and 10,000
/// approved addresses; panics on a row missing.
fn rows(table: &str) -> Vec<Vec<&str>> {
    let mut rows = Vec::new();
    for size in ["10", "10000"] {
        for mechanism in [
            "gate (XDP)",
            "iptables + ipset",
            "iptables raw PREROUTING + ipset",
            "nftables set",
            "nftables netdev ingress set",
        ] {
            let line = table
                .lines()
                .find(|l| l.starts_with(&format!("| {size} | {mechanism}")))
                .unwrap_or_else(|| panic!("no {mechanism} row for {size}:\n{table}"));
            rows.push(line.split('|').map(str::trim).collect());
        }
    }
    rows
}

/// The cell `column` (1 is the first) of the row starting with `start`, as a number.
fn cell(stdout: &str, start: &str, column: usize) -> f64 {
    let line = stdout.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no row {start:?}:\n{stdout}"));
    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
    cells[column].parse().unwrap_or_else(|_| panic!("a number in column {column} of {line}"))
}

#[test]
fn quick_backstop_and_unparseable_floods_print_both_rows_and_clean_up() {
    let (out, pid) = run_quick_with("gate-bench-netfilter", &["--backstop"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(cell(&stdout, "| off |", 3) > 0.0, "datagrams met the socket without the backstop");
    assert!(cell(&stdout, "| on |", 4) > 0.0, "the backstop passed the leased flood");
    assert_eq!(leftovers(pid), Vec::<String>::new(), "nothing left behind");

    let (out, pid) = run_quick_with("gate-bench-netfilter", &["--unparseable"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(cell(&stdout, "| drop |", 3) > 0.0, "XDP dropped the unparseable flood");
    assert!(cell(&stdout, "| pass |", 4) > 0.0, "passed on, the backstop dropped it");
    assert_eq!(leftovers(pid), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn quick_cluster_bench_measures_every_revocation_and_cleans_up() {
    let (out, pid) = run_quick("gate-bench-cluster");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_rows(&stdout, &["| to its commit | 5 |", "| to host B's lease closed | 5 |"]);
    assert_eq!(leftovers(pid), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn a_benchmark_refuses_an_argument_it_does_not_take_before_running_anything() {
    for (name, takes) in [
        ("gate-bench-netfilter", "--nic-random"),
        ("gate-bench-xdp", "--quick"),
        ("gate-bench-leases", "--leases VALUE"),
        ("gate-bench-storm", "--only VALUE"),
    ] {
        // A request for help, a typo, a flag of another benchmark or one without its value.
        for wrong in [&["--help"][..], &["--nic-randum"], &["--quick", "--leases"]] {
            let out = Command::new(bin(name)).args(wrong).output().unwrap_or_else(|e| panic!("run {name}: {e}"));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {wrong:?}: {stderr}");
            assert!(stderr.contains(takes), "{name} {wrong:?} says what it takes: {stderr}");
            // Every benchmark prints its machine first: nothing was printed, nothing ran.
            assert!(out.stdout.is_empty(), "{name} {wrong:?} ran: {}", String::from_utf8_lossy(&out.stdout));
        }
    }
}
