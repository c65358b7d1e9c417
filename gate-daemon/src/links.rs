//! Keeps every listed interface gated while the daemon runs: an interface deleted and
//! re-created (driver reload, NIC reset, hot-plug, a network manager re-making a VLAN, bond or
//! veth) comes back without XDP, so on every rtnetlink link change, and every few seconds in
//! case a message was lost, each listed interface is checked against the kernel's view and
//! attached again if its program is not the gate's (`install::reconcile`). Address changes
//! arrive on the same subscription and rewrite the table of this host's addresses, by which XDP
//! tells its packets from transit. A pin dir removed under the daemon (`gatectl teardown
//! --force`) is reported once to the run loop, which stops with an error: the gated ports are
//! open then, and a supervisor's restart puts the gate back.
use std::{
    collections::BTreeSet,
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use gate_maps::{
    GateState, PinDir,
    netlink::{self, LinkWatch},
};

use crate::{
    config::InterfaceConfig,
    install::{self, Reconciled},
    program::Loaded,
};

/// How long one wait for link messages lasts.
const TICK: Duration = Duration::from_millis(250);
/// Checked this often even without a message.
const RECHECK: Duration = Duration::from_secs(5);

/// When the watch last went round its loop (at least every [`TICK`] while it runs): the
/// watchdog's sign that the part that keeps the gate attached is alive.
#[derive(Clone)]
pub struct Heartbeat {
    start: Instant,
    millis: Arc<AtomicU64>,
}

impl Heartbeat {
    fn new() -> Self {
        Self { start: Instant::now(), millis: Arc::new(AtomicU64::new(0)) }
    }

    fn beat(&self) {
        let millis = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(millis, Ordering::Relaxed);
    }

    /// How long since the last round.
    #[must_use]
    pub fn age(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.millis.load(Ordering::Relaxed)))
    }
}

/// The running watch: how to hand it what a reload installed.
pub struct LinkWatchHandle {
    pub heartbeat: Heartbeat,
    updates: std::sync::mpsc::Sender<(Loaded, Vec<InterfaceConfig>)>,
}

impl LinkWatchHandle {
    /// From now on, keeps `interfaces` gated with `loaded` (a reload's programs and list).
    pub fn update(&self, loaded: Loaded, interfaces: Vec<InterfaceConfig>) {
        // The thread only ends with the daemon (or after a teardown it reported).
        let _ = self.updates.send((loaded, interfaces));
    }
}

/// Starts watching on a thread of its own (the checks are blocking syscalls). The subscription
/// is made before this returns, so no change after the install is missed. `torn_down` is told
/// once, if the pinned state is removed under the daemon.
///
/// # Errors
/// The subscription or the pinned maps cannot be opened.
pub fn spawn(
    mut loaded: Loaded,
    pins: PinDir,
    mut interfaces: Vec<InterfaceConfig>,
    torn_down: tokio::sync::oneshot::Sender<String>,
) -> io::Result<LinkWatchHandle> {
    let (updates, updated) = std::sync::mpsc::channel();
    let mut watch = LinkWatch::new(TICK)?;
    let mut state = GateState::open(pins.root()).map_err(io::Error::other)?;
    let heartbeat = Heartbeat::new();
    let beats = heartbeat.clone();
    std::thread::Builder::new().name("link-watch".into()).spawn(move || {
        let mut last = Instant::now();
        let mut absent: BTreeSet<String> = BTreeSet::new();
        loop {
            beats.beat();
            let mut changed = watch.changed();
            while let Ok((new_loaded, new_interfaces)) = updated.try_recv() {
                (loaded, interfaces) = (new_loaded, new_interfaces);
                absent.clear();
                changed = true;
            }
            if !changed && last.elapsed() < RECHECK {
                continue;
            }
            last = Instant::now();
            if !pins.links_dir().exists() {
                let _ = torn_down.send(format!(
                    "the gate's pinned state at {} was removed under this daemon (gatectl teardown --force?): \
                     the gated ports are open to everyone",
                    pins.root().display()
                ));
                return;
            }
            sync_addresses(&mut state);
            for interface in &interfaces {
                let name = &interface.name;
                match install::reconcile(&mut loaded, &pins, interface) {
                    Ok(Reconciled::Gated) => {
                        absent.remove(name);
                    }
                    Ok(Reconciled::Reattached(attachment)) => {
                        absent.remove(name);
                        log::warn!("{name}: came back without the gate; attached again ({} mode)", attachment.mode);
                    }
                    Ok(Reconciled::Unpinned) => {}
                    Ok(Reconciled::Absent) => {
                        if absent.insert(name.clone()) {
                            log::warn!("{name}: gone; it is gated again as soon as it returns");
                        }
                    }
                    Err(e) => log::error!("{name}: not gated: {e}"),
                }
            }
        }
    })?;
    Ok(LinkWatchHandle { heartbeat, updates })
}

/// Rewrites the table of this host's addresses from rtnetlink.
fn sync_addresses(state: &mut GateState) {
    let result = netlink::addresses()
        .map_err(|e| e.to_string())
        .and_then(|addrs| state.set_local_addresses(&addrs).map_err(|e| e.to_string()));
    match result {
        Ok(0) => {}
        Ok(changed) => log::info!("addresses changed: {changed} slots of the local address table rewritten"),
        Err(e) => log::error!(
            "local address table not updated (packets to a new address may pass XDP as transit; the backstop still judges them): {e}"
        ),
    }
}
