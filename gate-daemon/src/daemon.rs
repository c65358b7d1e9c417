//! The daemon's life: put the gate in place, keep the maps clean, and on SIGTERM or SIGINT stop
//! leaving the gate attached and closed. Only `gatectl teardown` removes it.
use std::sync::Arc;

use anyhow::Context as _;

use crate::{
    approval::{ApprovalService, heartbeat, http, upkeep},
    config::Config,
    install, links, metrics, openvpn, reload, shutdown, sweeper,
    writers::Writers,
};

/// Puts the shutdown states in force in the daemon's own parts: approvals and leases (`vpn`),
/// and the internal web service (`web`). The OpenVPN supervisors follow the states themselves.
fn apply(
    states: &gate_notify::Published,
    service: &Arc<ApprovalService>,
    web: &mut Option<http::InternalApi>,
    internal: &impl Fn() -> anyhow::Result<http::InternalApi>,
) -> anyhow::Result<()> {
    let vpn_off = states.vpn == gate_notify::State::Disabled;
    if service.set_vpn_disabled(vpn_off) && vpn_off {
        let closed = tokio::task::block_in_place(|| service.close_all_leases());
        log::warn!("vpn disabled: approvals refused, {closed} leases closed; the gate stays closed");
    }
    match (states.web == gate_notify::State::Disabled, web.is_some()) {
        (true, true) => {
            if let Some(api) = web.take() {
                api.close();
            }
            log::warn!("web disabled: the internal API stopped accepting connections and closes the kept ones");
        }
        (false, false) => *web = Some(internal()?),
        _ => {}
    }
    Ok(())
}

/// The front's uid and gid, if a front user is configured; a user that does not exist is an
/// error (never fall back to something else).
fn front_user(name: &str) -> anyhow::Result<Option<(u32, u32)>> {
    if name.is_empty() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name(name)
        .with_context(|| format!("look up approval.front_user {name:?}"))?
        .with_context(|| format!("approval.front_user {name:?} does not exist (create it, or leave front_user empty so only root may call)"))?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

/// The link watch goes round at least every quarter second; this long without a round, it is
/// stuck, and the watchdog stops pinging.
const LINK_WATCH_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs until a stop signal.
///
/// # Errors
/// The gate could not be put in place, or signals cannot be watched.
pub async fn run(config: Config, file: std::path::PathBuf) -> anyhow::Result<()> {
    let uid = nix::unistd::geteuid();
    if !uid.is_root() {
        anyhow::bail!(
            "gate-daemon must run as root (uid {uid} here); under systemd its unit keeps only the capabilities it needs"
        );
    }
    // Before anything is touched: a damaged store stops the start here, with the gate as it was.
    let approval = &config.approval;
    let (store, created) = tokio::task::block_in_place(|| approval.store.open_or_create(&approval.store_access()))
        .with_context(|| format!("open the store {}", approval.store))?;
    if created {
        log::warn!("made a new store at {} (no clients yet, a new server key)", approval.store);
    }
    let front = front_user(&approval.front_user)?;
    let installed = tokio::task::block_in_place(|| install::install(&config)).context("put the gate in place")?;
    // After the install, which holds the pin dir's lock: a second daemon is refused for that,
    // by name, not for the metrics port the first one holds.
    let metrics_listener = config.metrics_listen.map(gate_config::metrics::bind).transpose()?;
    for attachment in &installed.attachments {
        log::info!("gate on {} ({} mode)", attachment.interface, attachment.mode);
    }
    for gate in &installed.gates {
        log::info!("gated {}/{} as {:?} (id {})", gate.protocol, gate.port, gate.name, gate.id);
    }
    if installed.backstops.is_empty() {
        log::warn!("the delivery backstop is off: only XDP on the listed interfaces guards the gated ports");
    }
    for path in &installed.removed {
        log::info!("removed {}", path.display());
    }
    if installed.took_over {
        let leases = installed.state.lease_counts(gate_maps::clock::now_ns()).map(|c| c.total()).unwrap_or_default();
        log::info!("took over the pinned state at {} with {leases} leases", config.pin_dir.display());
    }

    let _lock = installed.lock;
    let (torn_down_tx, mut torn_down) = tokio::sync::oneshot::channel();
    let links =
        links::spawn(installed.loaded, crate::install::pins_of(&config), config.interfaces.clone(), torn_down_tx)
            .context("watch links over rtnetlink")?;
    let heartbeat = links.heartbeat.clone();
    let state = Arc::new(Writers::new(installed.state));

    let settings = reload::settings(&config, &installed.gates);
    let service = Arc::new(
        tokio::task::block_in_place(|| ApprovalService::new(settings, store, Arc::clone(&state)))
            .context("start the approval service")?,
    );
    // The shutdown states in force at start (a restart honours them), then as they change.
    let initial = tokio::task::block_in_place(|| shutdown::current(&service)).context("read the shutdown states")?;
    let (states, mut watch_states) = tokio::sync::watch::channel(initial);
    let sweeper = tokio::spawn(sweeper::run(
        config.pin_dir.clone(),
        Arc::clone(&state),
        config.leases.sweep_interval,
        Arc::clone(&service),
    ));
    let notifier = tokio::spawn(shutdown::run(config.notifications.clone(), Arc::clone(&service), states.clone()));
    upkeep::listen(Arc::clone(&service));
    let presence = Arc::new(heartbeat::Presence::default());
    let upkeep = tokio::spawn(upkeep::run(Arc::clone(&service), Arc::clone(&presence)));
    let checkpointer = service.store().checkpoint_elsewhere().context("open the store for its checkpoints")?;
    let checkpoints = checkpointer.map(|checkpointer| tokio::spawn(upkeep::checkpoints(checkpointer)));
    let vpn = openvpn::start_all(&config, &service, watch_states.clone());
    let metrics_page = metrics_listener
        .map(|listener| {
            let sources = metrics::Sources {
                pins: install::pins_of(&config),
                service: Arc::clone(&service),
                states: watch_states.clone(),
                vpn_run_dir: config.vpn.run_dir.clone(),
                vpn_traffic: vpn.traffic(),
            };
            gate_config::metrics::serve(listener, Arc::new(move || metrics::render(&sources)))
        })
        .transpose()?;

    // The socket and who may use it never change while the daemon runs (a reload refuses to).
    let socket = config.approval.socket.clone();
    let store_path = config.approval.store.clone();
    let internal = || -> anyhow::Result<_> {
        let (listener, socket_file) = http::bind(&socket, front).context("open the internal socket")?;
        let router = http::router(Arc::clone(&service), front.map(|(uid, _)| uid));
        log::info!("approval API on {} (store {})", socket.display(), store_path);
        Ok(http::InternalApi::serve(listener, router, socket_file))
    };
    let mut web: Option<http::InternalApi> = None;
    apply(&watch_states.borrow_and_update(), &service, &mut web, &internal)?;
    let mut parts =
        reload::Parts { config, state, service: Arc::clone(&service), links, sweeper, notifier, states, vpn };

    let mut signals = gate_config::ServiceSignals::new()?;
    log::info!("ready");
    let status =
        |config: &Config| format!("gating {} port(s) on {} interface(s)", config.gates.len(), config.interfaces.len());
    gate_config::systemd::ready(&status(&parts.config));
    let watchdog = gate_config::systemd::spawn_watchdog(move || match heartbeat.age() {
        age if age < LINK_WATCH_STALL => Ok(()),
        age => Err(format!("the link watch, which keeps the gate attached, has not run for {}s", age.as_secs())),
    });
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                gate_config::Signal::Stop => break,
                gate_config::Signal::Reload => {
                    gate_config::systemd::reloading();
                    match parts.reload(&file).await {
                        Ok(changes) => log::info!("reloaded {}: {changes}", file.display()),
                        Err(e) => log::error!("reload refused, running on with the config in force: {e:#}"),
                    }
                    gate_config::systemd::ready(&status(&parts.config));
                }
            },
            Ok(reason) = &mut torn_down => {
                outcome = Err(anyhow::anyhow!("{reason}; stopping, so that a restart puts the gate back"));
                break;
            }
            changed = watch_states.changed() => {
                if changed.is_err() { break; }
                let now = watch_states.borrow_and_update().clone();
                if let Err(e) = apply(&now, &service, &mut web, &internal) {
                    log::error!("{e:#}");
                }
            }
        }
    }
    gate_config::systemd::stopping();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    if let Some(api) = web.take() {
        api.close();
    }
    parts.sweeper.abort();
    if let Some(page) = metrics_page {
        page.abort();
    }
    upkeep.abort();
    if let Some(checkpoints) = checkpoints {
        checkpoints.abort();
    }
    parts.notifier.abort();
    parts.vpn.stop().await;
    tokio::task::block_in_place(|| presence.stopped(&service));
    if outcome.is_ok() {
        log::info!("stopped; the gate stays attached and closed (remove it with `gatectl teardown`)");
    }
    outcome
}
