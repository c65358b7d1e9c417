//! `cargo xtask bench clients [--clients N] [--quick]`: the daemon's view of enrolled clients at scale.
//! Enrolls N clients (100,000 by default) in a fresh store through the store's own API, then
//! times the daemon's client view (`approval::clients::Clients`): its first load, its memory,
//! and how long it takes to catch up after the real `gatectl` (built beside this binary) revokes
//! one client (it reads the clients written since, by revision). All clients
//! share one RSA key (a key is 550 bytes of DER; making 100,000 would take hours) but each has
//! its own token, secret and box key.
use std::time::Instant;

use gate_daemon::approval::clients::Clients;
use gate_protocol::{
    crypto_box::SecretKey,
    keys::{ClientPublic, HmacSecret, Token, rsa_private_from_pem},
    rand::rngs::OsRng,
};
use gate_store::{NewClient, Store};
use gate_tests::measure::{ScratchDir, arg, median, quick, status_kib};

const PEM: &str = include_str!("../../../gate-protocol/tests/vectors/client-rsa-4096.pem");

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    status_kib("self", "VmRSS").unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    gate_tests::measure::accept_args(&["--quick"], &["--clients"]);
    println!("machine: {}\n", gate_tests::measure::machine());
    let count: usize = arg("--clients", if quick() { 300 } else { 100_000 })?;
    let dir = ScratchDir::new();
    run(&dir.0.join("gate.db"), count)
}

fn run(path: &std::path::Path, count: usize) -> anyhow::Result<()> {
    let (mut store, _) = Store::open_or_create(path)?;
    let rsa_public = rsa_private_from_pem(PEM)?.to_public_key();
    let gates = ["vpn".to_owned()];
    let started = Instant::now();
    for i in 0..count {
        let public = ClientPublic {
            token: Token::random(&mut OsRng),
            box_public: SecretKey::generate(&mut OsRng).public_key(),
            rsa_public: rsa_public.clone(),
        };
        let secret = HmacSecret::random(&mut OsRng);
        let name = format!("client-{i}");
        store.add_client(&NewClient { name: &name, gates: &gates, public: &public, secret: &secret, now: 1 })?;
    }
    let enrolled = started.elapsed();
    let file_mib = std::fs::metadata(path)?.len() as f64 / 1_048_576.0;

    let before = rss_kib();
    let mut clients = Clients::default();
    let started = Instant::now();
    clients.refresh(&store)?;
    let first_load = started.elapsed();
    let view_kib = rss_kib().saturating_sub(before);

    // The real gatectl (another process, as on a gateway) revokes one client; the view notices.
    let gatectl = std::env::current_exe()?.with_file_name("gatectl");
    let mut reloads = Vec::new();
    for round in 0..5 {
        let out = std::process::Command::new(&gatectl)
            .args(["--pin-dir", "/nonexistent", "--store"])
            .arg(path)
            .args(["client", "revoke", &format!("client-{round}")])
            .output()?;
        anyhow::ensure!(out.status.success(), "gatectl: {}", String::from_utf8_lossy(&out.stderr));
        let started = Instant::now();
        assert!(clients.refresh(&store)?, "the view saw the change");
        reloads.push(started.elapsed());
    }
    let mut unchanged = Vec::new();
    for _ in 0..101 {
        let started = Instant::now();
        assert!(!clients.refresh(&store)?);
        unchanged.push(started.elapsed());
    }
    let unchanged = median(unchanged);

    println!(
        "clients view at {count} enrolled clients (store {file_mib:.0} MiB; enrolled one by one in {enrolled:.1?})\n"
    );
    println!("| measure | value |");
    println!("| --- | ---: |");
    println!("| first load of the view | {first_load:.1?} |");
    println!("| the view's memory (resident, after the first load) | {:.1} MiB |", view_kib as f64 / 1024.0);
    println!("| reload after gatectl changed one client (median of 5) | {:.1?} |", median(reloads));
    println!("| check when nothing changed (one pragma; median of 101) | {unchanged:.1?} |");
    assert_eq!(clients.len(), count);
    Ok(())
}
