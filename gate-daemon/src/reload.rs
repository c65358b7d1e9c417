//! SIGHUP for the daemon: the config is read and checked again (everything `--check` checks),
//! then what changed is applied without touching the rest:
//!
//! - gates added, removed or moved to other ports, and interfaces attached or detached, by the
//!   same install a start runs (programs swapped into the pinned links atomically; leases kept).
//!   Ports the new config drops stay gated until everything else is in place, so a reload that
//!   fails half-way opens nothing; the gate table is then put back as it was;
//! - the lease settings (for new leases), the approval window, host name and public addresses,
//!   the sweep interval, the notification settings;
//! - OpenVPN servers added, removed or changed: only those are started, stopped or restarted,
//!   the others keep their clients.
//!
//! Keys a running daemon cannot change (where its state lives, the lease maps' size, the socket
//! the front uses and who may use it, where its servers run) are refused by name, and an invalid
//! config changes nothing: the daemon runs on with the config in force.
use std::{collections::BTreeSet, path::Path, sync::Arc};

use anyhow::{Context as _, bail};
use gate_maps::{GateEntry, GateSpec};
use tokio::task::JoinHandle;

use crate::{
    approval::{ApprovalService, service::Settings},
    config::Config,
    install::{self, Purpose},
    links::LinkWatchHandle,
    openvpn::Supervisors,
    shutdown, sweeper,
    writers::Writers,
};

/// The first key whose change needs a restart of the daemon, if any.
#[must_use]
pub fn needs_restart(old: &Config, new: &Config) -> Option<&'static str> {
    [
        ("pin_dir", old.pin_dir != new.pin_dir),
        ("leases.capacity", old.leases.capacity != new.leases.capacity),
        ("approval.socket", old.approval.socket != new.approval.socket),
        ("approval.store", old.approval.store != new.approval.store),
        ("approval.store_password_file", old.approval.store_password_file != new.approval.store_password_file),
        ("approval.store_ca_file", old.approval.store_ca_file != new.approval.store_ca_file),
        ("approval.store_key_file", old.approval.store_key_file != new.approval.store_key_file),
        (
            "approval.store_previous_key_file",
            old.approval.store_previous_key_file != new.approval.store_previous_key_file,
        ),
        ("approval.front_user", old.approval.front_user != new.approval.front_user),
        ("vpn.run_dir", old.vpn.run_dir != new.vpn.run_dir),
        ("metrics_listen", old.metrics_listen != new.metrics_listen),
        // The servers run in the backstop's cgroup, and the backstop guards them there.
        ("backstop", old.backstop != new.backstop),
    ]
    .into_iter()
    .find_map(|(key, changed)| changed.then_some(key))
}

/// What the approval service needs from `config`, with the installed gates' ids.
#[must_use]
pub fn settings(config: &Config, gates: &[GateEntry]) -> Settings {
    let approval = &config.approval;
    Settings {
        window: approval.window,
        host: config.host_name(),
        public: gate_protocol::approval::Host { ipv4: approval.public_ipv4, ipv6: approval.public_ipv6 },
        leases: config.leases.policy(),
        gate_ids: gates.iter().map(|g| (g.name.clone(), g.id)).collect(),
        audit_keep: config.audit.keep,
    }
}

/// The parts of a running daemon a reload changes.
pub struct Parts {
    pub config: Config,
    pub state: Arc<Writers>,
    pub service: Arc<ApprovalService>,
    pub links: LinkWatchHandle,
    pub sweeper: JoinHandle<()>,
    pub notifier: JoinHandle<()>,
    pub states: tokio::sync::watch::Sender<gate_notify::Published>,
    pub vpn: Supervisors,
}

impl Parts {
    /// Reads `file` again and applies what changed; a line saying what that was.
    ///
    /// # Errors
    /// The new config is invalid, fails a check, changes a key that needs a restart, or cannot
    /// be put in place (the gate then stays as it was).
    pub async fn reload(&mut self, file: &Path) -> anyhow::Result<String> {
        let new = tokio::task::block_in_place(|| {
            let new = Config::load(file)?;
            new.check_system(file)?;
            Ok::<_, anyhow::Error>(new)
        })?;
        if let Some(key) = needs_restart(&self.config, &new) {
            bail!("{key} changed: that needs a restart of gate-daemon");
        }
        let old_specs = self.config.gate_specs();
        let new_specs = new.gate_specs();
        let ports = |specs: &[GateSpec]| specs.iter().map(|s| (s.protocol, s.port)).collect::<BTreeSet<_>>();
        let keep: Vec<GateSpec> =
            old_specs.iter().filter(|s| !ports(&new_specs).contains(&(s.protocol, s.port))).cloned().collect();
        let installed = tokio::task::block_in_place(|| {
            let result = install::install_for(&new, Purpose::Reload { keep: &keep });
            if result.is_err() {
                // Gates the new config added were gated by the failed install: the table goes
                // back to the config in force (those ports were open before it).
                if let Err(e) = self.state.with(|state| state.sync_gates(&old_specs)) {
                    log::error!("reload: put the gate table back: {e}");
                }
            }
            result
        })
        .context("put the new config's gate in place (the gate stays as it was)")?;
        // Everything is in place: now the dropped ports are un-gated, as the new config says.
        let gates = tokio::task::block_in_place(|| self.state.with(|state| state.sync_gates(&new_specs)))
            .context("un-gate the ports the new config drops")?;
        self.links.update(installed.loaded, new.interfaces.clone());
        self.service.set_settings(settings(&new, &gates));
        let mut changes = describe(&self.config, &new);
        if new.leases.sweep_interval != self.config.leases.sweep_interval {
            self.sweeper.abort();
            self.sweeper = tokio::spawn(sweeper::run(
                new.pin_dir.clone(),
                Arc::clone(&self.state),
                new.leases.sweep_interval,
                Arc::clone(&self.service),
            ));
        }
        if new.notifications != self.config.notifications {
            self.notifier.abort();
            let (service, states) = (Arc::clone(&self.service), self.states.clone());
            self.notifier = tokio::spawn(shutdown::run(new.notifications.clone(), service, states));
            changes.push("notification settings".into());
        }
        let applied = self.vpn.apply(&new).await;
        for (what, names) in
            [("openvpn started", &applied.started), ("restarted", &applied.restarted), ("stopped", &applied.stopped)]
        {
            if !names.is_empty() {
                changes.push(format!("{what}: {}", names.join(", ")));
            }
        }
        self.config = new;
        Ok(if changes.is_empty() { "nothing changed".into() } else { changes.join("; ") })
    }
}

/// What changed in the gate, the interfaces and the settings, for the log.
fn describe(old: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    let mut diff = |what: &str, old: BTreeSet<String>, new: BTreeSet<String>| {
        let added: Vec<&String> = new.difference(&old).collect();
        let removed: Vec<&String> = old.difference(&new).collect();
        if !added.is_empty() || !removed.is_empty() {
            let list = |v: Vec<&String>| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            changes.push(format!("{what}: +[{}] -[{}]", list(added), list(removed)));
        }
    };
    let gates = |c: &Config| c.gates.iter().map(|g| format!("{} {}/{}", g.name, g.protocol, g.port)).collect();
    diff("gates", gates(old), gates(new));
    let interfaces = |c: &Config| c.interfaces.iter().map(|i| i.name.clone()).collect();
    diff("interfaces", interfaces(old), interfaces(new));
    if old.leases != new.leases {
        changes.push("lease settings (for new leases)".into());
    }
    if old.approval != new.approval {
        changes.push("approval settings".into());
    }
    if old.xdp != new.xdp {
        changes.push("xdp settings".into());
    }
    changes
}
