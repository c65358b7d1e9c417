//! `cargo xtask bench leases [--leases N] [--quick]`: the lease maps at scale (1,000,000 IPv4
//! leases by default) on the daemon's real program and pinned maps (loaded, not attached):
//! what an operator's `gatectl` costs (the real binary, built beside this one), what the
//! daemon's sweep costs, and how long an approval's grant waits while a mass expiry is swept.
//!
//! Each figure has its reference in the same run: single `gatectl allow` calls beside the bulk
//! `allow --from`; aya's iterator (how every scan read the maps before) beside the batched
//! reads; and the sweep holding the approvals' lock for the whole sweep (the daemon before)
//! beside the daemon's sweep now (`sweeper::sweep`: its own handle, batches, yielding to the
//! approvals' `Writers`). The grant loop stands in for the daemon's approvals: a grant every
//! millisecond through the handle approvals use.
use std::{
    net::IpAddr,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use aya::maps::{HashMap, Map, MapData};
use gate_common::{Lease, LeaseKeyV4, MAP_LEASES_V4};
use gate_daemon::writers::Writers;
use gate_maps::{GateState, Protocol, clock};
use gate_tests::{
    loaded::{LoadedGate, closed_lease, hour_lease},
    measure::{ScratchDir, arg, median, percentile, quick, status_kib},
};
use nix::{
    sys::resource::{UsageWho, getrusage},
    time::{ClockId, clock_gettime},
};

const PORT: u16 = 1194;

/// The `i`th address of block `block` (10.0.0.0/8 and up: 16M addresses a block).
fn addr(block: u8, i: u32) -> IpAddr {
    let [_, a, b, c] = i.to_be_bytes();
    IpAddr::from([10 + block, a, b, c])
}

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Runs `program args` as this process's only child and prints its peak resident memory (KiB):
/// the mode `--peak-rss-of` that [`measured`] calls.
fn peak_rss_of(command: &[String]) -> anyhow::Result<()> {
    let status = Command::new(&command[0]).args(&command[1..]).stdout(std::process::Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "{command:?}: {status}");
    println!("{}", getrusage(UsageWho::RUSAGE_CHILDREN)?.max_rss());
    Ok(())
}

/// This process's resident memory now and at its peak, in KiB (`VmRSS`, `VmHWM`).
fn rss_now_and_peak() -> anyhow::Result<(u64, u64)> {
    let field = |name| status_kib("self", name).ok_or_else(|| anyhow::anyhow!("no {name} in /proc/self/status"));
    Ok((field("VmRSS")?, field("VmHWM")?))
}

/// Starts this process's peak resident memory again from what it holds now (proc(5),
/// `clear_refs`: 5).
fn reset_peak_rss() -> anyhow::Result<()> {
    Ok(std::fs::write("/proc/self/clear_refs", "5")?)
}

/// Runs `gatectl args` (output discarded) through a fresh copy of this binary, so the peak
/// memory the kernel reports is gatectl's alone. Returns the wall time and the peak in MiB.
fn measured(gatectl: &str, args: &[&str]) -> anyhow::Result<(Duration, f64)> {
    let started = Instant::now();
    let out = Command::new(std::env::current_exe()?).arg("--peak-rss-of").arg(gatectl).args(args).output()?;
    let elapsed = started.elapsed();
    anyhow::ensure!(out.status.success(), "gatectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let kib: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    Ok((elapsed, kib / 1024.0))
}

fn gatectl_ok(gatectl: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(gatectl).args(args).output()?;
    anyhow::ensure!(out.status.success(), "gatectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// What the grant loop saw while a sweep ran.
struct Waits {
    grants: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// How the dead leases are swept while the grant loop runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sweep {
    /// The sweep and the grants share one handle behind a mutex the sweep holds throughout
    /// (the daemon before).
    HoldingTheLock,
    /// The daemon's sweep now: its own handle, batches, yielding to the approvals' writers.
    OwnHandle,
    /// No sweep for this long: what a grant waits on this machine anyway (the reference for
    /// the worst waits).
    Nothing(Duration),
}

/// Sweeps `count` dead leases (or not: [`Sweep::Nothing`]) while a loop grants one lease a
/// millisecond, as approvals would. Returns the sweep's wall and CPU time and the grants' waits.
fn mass_expiry(gate: &mut LoadedGate, count: u32, sweep: Sweep) -> anyhow::Result<(Duration, Duration, Waits)> {
    let shared_lock = sweep == Sweep::HoldingTheLock;
    let vpn = gate.state.gate_id("vpn")?;
    let doomed: Vec<IpAddr> = (0..count).map(|i| addr(0, i)).collect();
    gate.state.grant_all(vpn, &doomed, closed_lease())?;
    let root = gate.state.pins().root().to_owned();
    let shared = Arc::new(Mutex::new(GateState::open(&root)?));
    let writers = Arc::new(Writers::new(GateState::open(&root)?));
    let stop = Arc::new(AtomicBool::new(false));
    let granter = {
        let (shared, stop, writers) = (Arc::clone(&shared), Arc::clone(&stop), Arc::clone(&writers));
        thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
            let mut waits = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if shared_lock {
                    shared.lock().expect("lock").grant(vpn, addr(1, i), hour_lease())?;
                } else {
                    writers.with(|state| state.grant(vpn, addr(1, i), hour_lease()))?;
                }
                waits.push(started.elapsed());
                i += 1;
                thread::sleep(Duration::from_millis(1));
            }
            Ok(waits)
        })
    };
    thread::sleep(Duration::from_millis(20));
    let (cpu_before, started) = (thread_cpu(), Instant::now());
    let removed = match sweep {
        Sweep::HoldingTheLock => shared.lock().expect("lock").sweep(clock::now_ns(), 0)?,
        Sweep::OwnHandle => gate_daemon::sweeper::sweep(&root, &writers, clock::now_ns(), 0)?.len(),
        Sweep::Nothing(wait) => {
            thread::sleep(wait);
            0
        }
    };
    let (wall, cpu) = (started.elapsed(), thread_cpu() - cpu_before);
    stop.store(true, Ordering::Relaxed);
    let waits = granter.join().expect("the grant loop")?;
    // The reference's dead leases go once its grant loop has stopped.
    let removed = if let Sweep::Nothing(_) = sweep { gate.state.sweep(clock::now_ns(), 0)? } else { removed };
    anyhow::ensure!(removed == count as usize, "swept {removed} of {count}");
    gate.state.revoke_gate(vpn)?;
    let grants = waits.len();
    let (p50, p99) = (percentile(&waits, 0.5), percentile(&waits, 0.99));
    let max = waits.iter().max().copied().unwrap_or_default();
    Ok((wall, cpu, Waits { grants, p50, p99, max }))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--peak-rss-of") {
        return peak_rss_of(&args[2..]);
    }
    gate_tests::measure::accept_args(&["--quick"], &["--leases"]);
    println!("machine: {}\n", gate_tests::measure::machine());
    let count: u32 = arg("--leases", if quick() { 20_000 } else { 1_000_000 })?;
    let singles = if quick() { 5 } else { 50 };
    let dir = ScratchDir::new();
    run(&dir.0, count, singles)
}

fn run(dir: &std::path::Path, count: u32, singles: u32) -> anyhow::Result<()> {
    // Room beside the dead for the grant loops (one a millisecond for as long as a sweep).
    let mut gate = LoadedGate::new(&[("vpn", Protocol::Udp, PORT)], count + singles + 20_000);
    let vpn = gate.state.gate_id("vpn")?;
    let gatectl = std::env::current_exe()?.with_file_name("gatectl").to_string_lossy().into_owned();
    let pins = gate.state.pins().root().to_string_lossy().into_owned();
    let with_pins =
        |args: &[&str]| -> Vec<String> { ["--pin-dir", &pins].iter().chain(args).map(|s| (*s).to_owned()).collect() };
    let call = |args: &[&str]| gatectl_ok(&gatectl, &with_pins(args).iter().map(String::as_str).collect::<Vec<_>>());
    let timed = |args: &[&str]| measured(&gatectl, &with_pins(args).iter().map(String::as_str).collect::<Vec<_>>());

    // The reference for a bulk grant: one `gatectl allow` a lease.
    let mut single = Vec::new();
    for i in 0..singles {
        let started = Instant::now();
        call(&["allow", &addr(2, i).to_string(), "--gate", "vpn", "--ttl", "1h"])?;
        single.push(started.elapsed());
    }
    let single = median(single);
    gate.state.revoke_gate(vpn)?;

    let list = dir.join("allow.list");
    let text: String = (0..count).map(|i| format!("{}\n", addr(3, i))).collect();
    std::fs::write(&list, text)?;
    let (bulk, bulk_mib) = timed(&["allow", "--from", &list.to_string_lossy(), "--gate", "vpn", "--ttl", "1h"])?;
    anyhow::ensure!(gate.state.lease_counts(clock::now_ns())?.total() == count as usize, "the bulk grant");

    // Reading every lease: aya's iterator (two calls a lease) against the batched reads.
    let data = MapData::from_pin(gate.state.pins().map(MAP_LEASES_V4))?;
    let iterated: HashMap<MapData, LeaseKeyV4, Lease> = HashMap::try_from(Map::HashMap(data))?;
    let started = Instant::now();
    let seen = iterated.iter().filter(Result::is_ok).count();
    let aya_scan = started.elapsed();
    anyhow::ensure!(seen == count as usize, "aya's iterator saw {seen}");
    let started = Instant::now();
    let batched: usize = gate.state.lease_chunks()?.map(|c| c.map(|c| c.len())).sum::<Result<usize, _>>()?;
    let batch_scan = started.elapsed();
    anyhow::ensure!(batched == count as usize, "the batched reads saw {batched}");

    let (table, table_mib) = timed(&["leases"])?;
    let (json, json_mib) = timed(&["leases", "--json"])?;
    let mut revokes = Vec::new();
    for i in (0..count).step_by((count / 20).max(1) as usize).take(20) {
        let target = addr(3, i).to_string();
        let started = Instant::now();
        call(&["revoke", &target])?;
        revokes.push(started.elapsed());
    }
    let revoke = median(revokes);

    // The periodic sweep when nothing is dead: the scan alone.
    let (cpu_before, started) = (thread_cpu(), Instant::now());
    let swept = GateState::open(gate.state.pins().root())?.sweep(clock::now_ns(), 0)?;
    let (live_sweep, live_sweep_cpu) = (started.elapsed(), thread_cpu() - cpu_before);
    anyhow::ensure!(swept == 0, "nothing was dead");
    // The daemon's start at this count: every lease's counters from the leases, then the bits
    // at their size from the counters (which is all a resize of the bits does).
    reset_peak_rss()?;
    let (rss_before, _) = rss_now_and_peak()?;
    let started = Instant::now();
    let counted = gate.state.rebuild_filter()?;
    let rebuild = started.elapsed();
    let rebuild_mib = rss_now_and_peak()?.1.saturating_sub(rss_before) as f64 / 1024.0;
    gate.state.revoke_gate(vpn)?;

    let before = mass_expiry(&mut gate, count, Sweep::HoldingTheLock)?;
    let now = mass_expiry(&mut gate, count, Sweep::OwnHandle)?;
    let (.., reference) = mass_expiry(&mut gate, count, Sweep::Nothing(now.0))?;

    let n = count;
    println!("lease maps at {n} IPv4 leases (capacity {}), {} CPUs\n", gate.state.capacity().0, num_cpus());
    println!("| measure | value |");
    println!("| --- | ---: |");
    println!("| `gatectl allow ADDR` (one lease; median of {singles}) | {single:.1?} |");
    println!(
        "| the same, {n} times over (extrapolated) | {:.0?} |",
        Duration::from_secs_f64(single.as_secs_f64() * f64::from(n))
    );
    println!("| `gatectl allow --from FILE` ({n} addresses) | {bulk:.2?}, peak {bulk_mib:.0} MiB |");
    println!("| read every lease: aya's iterator (before) | {aya_scan:.2?} |");
    println!("| read every lease: batched reads (now) | {batch_scan:.2?} |");
    println!("| `gatectl leases` (table, to /dev/null) | {table:.2?}, peak {table_mib:.0} MiB |");
    println!("| `gatectl leases --json` (to /dev/null) | {json:.2?}, peak {json_mib:.0} MiB |");
    println!("| `gatectl revoke ADDR` (median of 20) | {revoke:.1?} |");
    println!("| sweep with nothing dead | {live_sweep:.2?} wall, {live_sweep_cpu:.2?} CPU |");
    println!(
        "| rebuild the filter ({counted} leases: counters, then bits at their size) | {rebuild:.2?}, peak +{rebuild_mib:.0} MiB |"
    );
    for (name, (wall, cpu, waits)) in
        [("holding the approvals' lock (before)", before), ("own handle, batches, yielding to approvals (now)", now)]
    {
        println!(
            "| mass expiry of {n}, sweep {name} | {wall:.2?} wall, {cpu:.2?} CPU; a grant every ms waited p50 {:.2?}, \
             p99 {:.2?}, max {:.2?} ({} grants) |",
            waits.p50, waits.p99, waits.max, waits.grants
        );
    }
    println!(
        "| reference: no sweep, the same grant loop as long | a grant every ms waited p50 {:.2?}, p99 {:.2?}, max {:.2?} \
         ({} grants) |",
        reference.p50, reference.p99, reference.max, reference.grants
    );
    Ok(())
}

fn num_cpus() -> usize {
    thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
