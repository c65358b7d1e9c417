//! The daemon's life: put the gate in place, keep the maps clean, and on SIGTERM or SIGINT stop
//! leaving the gate attached and closed. Only `gatectl teardown` removes it.
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    approval::{ApprovalService, http, service::Settings, upkeep},
    config::Config,
    install, openvpn, sweeper,
};

/// The front's uid and gid, if a front user is configured; a user that does not exist is an
/// error (never fall back to something else).
fn front_user(name: &str) -> anyhow::Result<Option<(u32, u32)>> {
    if name.is_empty() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name(name)
        .with_context(|| format!("look up approval.front_user {name:?}"))?
        .with_context(|| format!("approval.front_user {name:?} does not exist (scripts/setup creates gate-web)"))?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

/// This host's name in shared state: the configured one, else the hostname.
fn host_name(config: &Config) -> String {
    if !config.approval.host.is_empty() {
        return config.approval.host.clone();
    }
    gate_store::default_host_name()
}

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

    let installed_gates = installed.gates;
    let state = Arc::new(Mutex::new(installed.state));
    let sweeper = tokio::spawn(sweeper::run(Arc::clone(&state), config.leases.sweep_interval));

    let approval = &config.approval;
    let store = gate_store::Store::open(&approval.store).context("open the store")?;
    let settings = Settings {
        window: approval.window,
        host: host_name(&config),
        public: gate_protocol::approval::Host { ipv4: approval.public_ipv4, ipv6: approval.public_ipv6 },
        leases: config.leases.policy(),
        gate_ids: installed_gates.iter().map(|g| (g.name.clone(), g.id)).collect(),
    };
    let service = Arc::new(
        tokio::task::block_in_place(|| ApprovalService::new(settings, store, Arc::clone(&state)))
            .context("start the approval service")?,
    );
    let front = front_user(&approval.front_user)?;
    let (listener, _socket_file) = http::bind(&approval.socket, front).context("open the internal socket")?;
    log::info!("approval API on {} (store {})", approval.socket.display(), approval.store.display());
    let upkeep = tokio::spawn(upkeep::run(Arc::clone(&service)));
    let vpn = openvpn::start_all(&config, &service);
    let router = http::router(Arc::clone(&service), front.map(|(uid, _)| uid));
    let server = axum::serve(listener, router.into_make_service_with_connect_info::<http::Peer>());
    let mut server = std::pin::pin!(server.into_future());

    let mut terminate = signal(SignalKind::terminate()).context("watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("watch SIGINT")?;
    log::info!("ready");
    tokio::select! {
        _ = terminate.recv() => log::info!("SIGTERM"),
        _ = interrupt.recv() => log::info!("SIGINT"),
        result = &mut server => log::error!("the internal API stopped: {result:?}"),
    }
    sweeper.abort();
    upkeep.abort();
    vpn.stop().await;
    log::info!("stopped; the gate stays attached and closed (remove it with `gatectl teardown`)");
    Ok(())
}
