//! `cargo xtask bench cluster [--rounds N] [--quick]`: two gate hosts on one PostgreSQL store
//! (a server of the bench's own, on its Unix socket), each a real daemon on its own namespaces
//! and pin dir. Each round enrolls a client through host A's `gatectl`, has host B approve it,
//! then revokes it as `gatectl` on host A does (a commit to the shared store) and measures how
//! long until host B's lease for the client's address is gone from B's maps: the time a
//! revocation takes to reach another host. `--quick` (the tests): 5 rounds.
use std::{
    net::{IpAddr, Ipv4Addr},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use gate_maps::GateState;
use gate_store::{StoreAccess, StoreLocation};
use gate_tests::{
    approval::{Enrolled, send},
    cluster::{Host, SharedStore},
    measure::{arg, percentile, quick},
};

/// How long a revocation may take to arrive before the bench gives up on it.
const GIVE_UP: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    gate_tests::measure::accept_args(&["--quick"], &["--rounds"]);
    println!("machine: {}\n", gate_tests::measure::machine());
    let rounds: usize = arg("--rounds", if quick() { 5 } else { 100 })?;
    anyhow::ensure!((1..=10_000).contains(&rounds), "--rounds: 1 to 10000");
    // fsync on, as a production database: the revocation's commit waits for the disk.
    let store = SharedStore::start_on(temp_postgres::TempPostgres::start_durable()?)?;
    let (a, b) = (Host::start(&store, "gate-a", ""), Host::start(&store, "gate-b", ""));
    // What `gatectl client revoke` on host A does to the store, timed from its commit.
    let access = StoreAccess { key_file: Some(store.key.clone()), ..StoreAccess::default() };
    let mut admin = StoreLocation::parse(&store.url)?.open(&access)?;
    let maps_b = GateState::open(&b.bed.pin_dir.0).context("host B's maps")?;
    let gate = maps_b.gate_id("vpn")?;

    let (mut arrived, mut commits) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for round in 0..rounds {
        let name = format!("cluster-{round}");
        let client = Enrolled::new(&a.bed, &name, &["vpn"], "client");
        let address = Ipv4Addr::from(0xc612_0000 | u32::try_from(round)?);
        let status = send(&b.bed, &client.request(Some(address), None), None).status;
        anyhow::ensure!(status == 200, "round {round}: host B answered {status}");
        anyhow::ensure!(maps_b.lease(gate, IpAddr::V4(address))?.is_some(), "round {round}: no lease on host B");
        // Revocations land anywhere in host B's 250 ms look, not at one phase of it.
        thread::sleep(Duration::from_millis((u64::try_from(round)? * 97) % 250));
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let start = Instant::now();
        admin.revoke_client(&name, now)?;
        commits.push(start.elapsed());
        while maps_b.lease(gate, IpAddr::V4(address))?.is_some() {
            anyhow::ensure!(start.elapsed() < GIVE_UP, "round {round}: host B's lease still open after {GIVE_UP:?}");
            thread::sleep(Duration::from_millis(1));
        }
        arrived.push(start.elapsed());
    }
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
    let row = |what: &str, samples: &[Duration]| {
        let max = samples.iter().max().copied().unwrap_or_default();
        println!(
            "| {what} | {rounds} | {} / {} / {} ms |",
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.99)),
            ms(max)
        );
    };
    println!("two hosts on one PostgreSQL store; a client revoked on host A, its lease on host B\n");
    println!("| from the revocation's commit on host A | rounds | p50 / p99 / max |");
    println!("| --- | ---: | ---: |");
    row("to its commit", &commits);
    row("to host B's lease closed", &arrived);
    a.daemon.stop();
    b.daemon.stop();
    drop((a.bed, b.bed, store));
    Ok(())
}
