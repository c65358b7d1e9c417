//! `gate-bench-xdp` (`cargo xtask bench xdp`): nanoseconds per packet through the gate with
//! `BPF_PROG_TEST_RUN`, next to two control programs measured in the same run (one that only
//! passes, one that also does a single hash lookup), with 1, 10,000 and 1,000,000 leases, for:
//! an ungated packet; a stranger the filter turns away; a stranger whose filter counters leases
//! take (the lease lookup decides: up to three more leases beside the count make one); a leased
//! source from this CPU's cache; the same leased source through a copy of the program without
//! the cache (what a cache miss costs). Also the kernel memory of the lease map, the filter (its
//! counters and the bits XDP reads) and the cache.
//! Prints a Markdown table.
//!
//! `--quick` (used by the tests): a few repeats and at most 10,000 leases, to prove it runs.
use gate_tests::measure::median;
use std::{net::IpAddr, process::Command, time::Instant};

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use gate_daemon::program::BASELINE_OBJECT;
use gate_maps::{LeasePolicy, Protocol, clock};
use gate_tests::{
    frames::Frame,
    loaded::{self, LoadedGate},
};

const GATED: u16 = 1194;
const UNGATED: u16 = 53;
/// The first lease address (see [`lease_addr`]).
const LEASED: &str = "240.0.0.1";
const STRANGER: &str = "192.0.2.99";
/// A stranger whose filter counters leases of other addresses take.
const SHADOWED: &str = "192.0.2.77";

struct Settings {
    repeat: u32,
    rounds: usize,
    sizes: Vec<u32>,
}

fn settings() -> Settings {
    let quick = std::env::args().any(|a| a == "--quick");
    if quick {
        Settings { repeat: 1000, rounds: 3, sizes: vec![1, 10_000] }
    } else {
        Settings { repeat: 2_000_000, rounds: 7, sizes: vec![1, 10_000, 1_000_000] }
    }
}

/// The `i`-th lease address in 240.0.0.0/4 (reserved, never a host: these are map keys only).
fn lease_addr(i: u32) -> IpAddr {
    let [_, a, b, c] = (i + 1).to_be_bytes();
    IpAddr::from([240, a, b, c])
}

fn control_ns(program: &Xdp, frame: &[u8], settings: &Settings) -> u128 {
    median(
        (0..settings.rounds)
            .map(|_| {
                let mut options = TestRunOptions::new();
                options.data_in = Some(frame);
                options.repeat = settings.repeat;
                program.test_run(options).expect("run a control program").duration.as_nanos()
            })
            .collect(),
    )
}

fn map_memory(path: &std::path::Path) -> Option<u64> {
    let out = Command::new("bpftool").args(["-j", "map", "show", "pinned"]).arg(path).output().ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    json["bytes_memlock"].as_u64()
}

fn mib(gate: &LoadedGate, map: &str) -> String {
    map_memory(&gate.state.pins().map(map))
        .map_or_else(|| "?".to_owned(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}

fn main() {
    gate_tests::measure::accept_args(&["--quick"], &[]);
    let settings = settings();
    println!("machine: {}\n", gate_tests::measure::machine());
    let max = *settings.sizes.iter().max().expect("at least one size");
    // Room for the leases that take a stranger's filter counters (one per counter, at most).
    let mut gate = LoadedGate::new(&[("vpn", Protocol::Udp, GATED)], max + gate_common::FILTER_HASHES);
    let vpn = gate.state.gate_id("vpn").expect("gate vpn");
    let policy = LeasePolicy {
        connect_window: std::time::Duration::from_secs(3600),
        idle_timeout: std::time::Duration::from_secs(3600),
        max_lifetime: std::time::Duration::from_secs(7200),
    };

    let mut ebpf = Ebpf::load(BASELINE_OBJECT).expect("load the control programs");
    for name in ["pass", "lookup"] {
        let program: &mut Xdp = ebpf.program_mut(name).expect("control program").try_into().expect("XDP");
        program.load().expect("load a control program");
    }
    let control = |name| -> &Xdp { ebpf.program(name).expect("loaded").try_into().expect("XDP") };
    let (pass, lookup) = (control("pass"), control("lookup"));

    let mut uncached = gate.without_cache();
    // A stranger whose filter counters leases of other addresses take (the leases are in
    // 240.0.0.0/4, these below it): the filter says "maybe" and the lease lookup has to answer.
    let shadowed: IpAddr = SHADOWED.parse().unwrap();
    let cover = loaded::filter_cover(&gate.state, vpn, shadowed);
    let cover_lease = policy.lease_at(clock::now_ns());
    gate.state.grant_all(vpn, &cover, cover_lease).expect("grant the covering leases");
    println!(
        "median of {} rounds x {} runs each; control programs measured beside every row; {} more leases beside \
         each count take the filter counters of the stranger {SHADOWED}",
        settings.rounds,
        settings.repeat,
        cover.len()
    );
    println!();
    println!("| leases | packet | gate ns/packet | `pass` ns | gate over `pass` | `lookup` ns | gate over `lookup` |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: |");
    let mut memory = Vec::new();
    let mut granted = 0_u32;
    for &size in &settings.sizes {
        let started = Instant::now();
        let now = clock::now_ns();
        while granted < size {
            gate.state.grant(vpn, lease_addr(granted), policy.lease_at(now)).expect("grant a lease");
            granted += 1;
        }
        let fill = started.elapsed();
        let frames = [
            ("ungated", Frame::udp(STRANGER.parse().unwrap(), UNGATED).bytes(), false),
            ("dropped: no lease, filter says no", Frame::udp(STRANGER.parse().unwrap(), GATED).bytes(), false),
            ("dropped: no lease, filter counters taken", Frame::udp(shadowed, GATED).bytes(), false),
            ("leased: from the CPU's cache", Frame::udp(LEASED.parse().unwrap(), GATED).bytes(), false),
            ("leased: cache off (the miss path)", Frame::udp(LEASED.parse().unwrap(), GATED).bytes(), true),
        ];
        for (name, frame, without_cache) in &frames {
            let ns = median(
                (0..settings.rounds)
                    .map(|_| {
                        if *without_cache {
                            loaded::run_repeat(&mut uncached, frame, settings.repeat).1
                        } else {
                            gate.run_repeat(frame, settings.repeat).1
                        }
                    })
                    .collect(),
            );
            let zero = control_ns(pass, frame, &settings);
            let floor = control_ns(lookup, frame, &settings);
            let over = |base: u128| i128::try_from(ns).unwrap_or(i128::MAX) - i128::try_from(base).unwrap_or(0);
            println!("| {size} | {name} | {ns} | {zero} | {:+} | {floor} | {:+} |", over(zero), over(floor));
        }
        memory.push(format!(
            "| {size} | {} | {} | {} | {} |",
            mib(&gate, gate_common::MAP_LEASES_V4),
            mib(&gate, gate_common::MAP_LEASE_FILTER),
            mib(&gate, gate_common::MAP_LEASE_BITS),
            mib(&gate, gate_common::MAP_LEASE_CACHE)
        ));
        eprintln!("({size} leases granted through GateState::grant in {fill:.2?})");
    }
    println!();
    println!(
        "| leases | lease map (IPv4) kernel memory | filter counters | filter bits (what XDP reads) | cache (all CPUs) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for row in memory {
        println!("{row}");
    }
}
