//! The daemon's life: put the gate in place, keep the maps clean, and on SIGTERM or SIGINT stop
//! leaving the gate attached and closed. Only `gatectl teardown` removes it.
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{config::Config, install, sweeper};

/// Runs until a stop signal.
///
/// # Errors
/// The gate could not be put in place, or signals cannot be watched.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let installed = tokio::task::block_in_place(|| install::install(&config)).context("put the gate in place")?;
    for attachment in &installed.attachments {
        log::info!("gate on {} ({} mode)", attachment.interface, attachment.mode);
    }
    for gate in &installed.gates {
        log::info!("gated {}/{} as {:?} (id {})", gate.protocol, gate.port, gate.name, gate.id);
    }
    if installed.took_over {
        let leases = installed.state.leases().map(|l| l.len()).unwrap_or_default();
        log::info!("took over the pinned state at {} with {leases} leases", config.pin_dir.display());
    }

    let state = Arc::new(Mutex::new(installed.state));
    let sweeper = tokio::spawn(sweeper::run(Arc::clone(&state), config.leases.sweep_interval));

    let mut terminate = signal(SignalKind::terminate()).context("watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("watch SIGINT")?;
    log::info!("ready");
    tokio::select! {
        _ = terminate.recv() => log::info!("SIGTERM"),
        _ = interrupt.recv() => log::info!("SIGINT"),
    }
    sweeper.abort();
    log::info!("stopped; the gate stays attached and closed (remove it with `gatectl teardown`)");
    Ok(())
}
