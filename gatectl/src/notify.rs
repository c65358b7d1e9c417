//! `gatectl shutdown ...` (the operator's own shutdown states, recorded as the operator's) and
//! `gatectl notify ...` (run one's own notification service: a key pair, signed documents).
use std::{fs::OpenOptions, io::Write as _, os::unix::fs::OpenOptionsExt, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use gate_notify::{Notification, Part, State};
use gate_store::Store;

use crate::clients::unix_now;

#[derive(Subcommand)]
pub enum ShutdownCommand {
    /// The states in force, and where each comes from.
    Show,
    /// Set a part's state by hand (it wins over notifications until cleared).
    Set {
        /// www, web or vpn.
        part: String,
        /// ok or disabled.
        state: String,
        /// Shown to web users while www is disabled.
        #[arg(long, default_value = "")]
        message: String,
        /// For every host of the cluster that shares the store (a host's own setting wins).
        #[arg(long)]
        all_hosts: bool,
    },
    /// Remove the operator's setting for a part (or `all`): notifications decide again.
    Clear {
        part: String,
        /// The setting made for every host, not this host's own.
        #[arg(long)]
        all_hosts: bool,
    },
}

#[derive(Subcommand)]
pub enum NotifyCommand {
    /// Make a signing key (written 0600); prints the public key for the daemons' config.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a notification; writes the document the service serves.
    Sign {
        #[arg(long)]
        key: PathBuf,
        /// The gate version it applies to (daemons ignore other versions).
        #[arg(long)]
        version: String,
        /// Must grow with every notification you issue.
        #[arg(long)]
        serial: u64,
        #[arg(long, default_value = "")]
        message: String,
        #[arg(long, default_value = "ok")]
        www: String,
        #[arg(long, default_value = "ok")]
        web: String,
        #[arg(long, default_value = "ok")]
        vpn: String,
        #[arg(long)]
        out: PathBuf,
    },
}

fn part(text: &str) -> anyhow::Result<Part> {
    Part::parse(text).with_context(|| format!("{text:?}: a part is www, web or vpn"))
}

fn state(text: &str) -> anyhow::Result<State> {
    match text {
        "ok" => Ok(State::Ok),
        "disabled" => Ok(State::Disabled),
        _ => bail!("{text:?}: a state is ok or disabled"),
    }
}

/// The shutdown section of `gatectl status` and `gatectl shutdown show`.
pub fn describe(store: &Store, host: &str) -> anyhow::Result<String> {
    let rows = store.shutdown_rows(host)?;
    let effective = store.effective_shutdown(host)?;
    let mut out = String::from("shutdown:\n");
    for part in Part::ALL {
        let now = match part {
            Part::Www => effective.www,
            Part::Web => effective.web,
            Part::Vpn => effective.vpn,
        };
        let operator = |for_host: &str| {
            rows.iter().find(|r| r.part == part && r.source == gate_store::FROM_OPERATOR && r.host == for_host)
        };
        let from = operator(host)
            .map(|r| format!("set by the operator ({})", r.state.name()))
            .or_else(|| {
                operator(gate_store::ALL_HOSTS)
                    .map(|r| format!("set by the operator for all hosts ({})", r.state.name()))
            })
            .or_else(|| {
                rows.iter()
                    .find(|r| r.part == part && r.source == gate_store::FROM_NOTIFICATION)
                    .map(|_| "from the last notification".to_owned())
            })
            .unwrap_or_else(|| "default".to_owned());
        out.push_str(&format!("  {:4} {:9} {from}\n", part.name(), now.name()));
    }
    if !effective.message.is_empty() {
        out.push_str(&format!("  message: {}\n", effective.message));
    }
    let serial = store.last_notification_serial(host)?;
    if serial > 0 {
        out.push_str(&format!("  last notification accepted: serial {serial}\n"));
    }
    Ok(out)
}

pub fn shutdown(command: ShutdownCommand, store: &Store, host: &str, operator: &str) -> anyhow::Result<()> {
    let event =
        |kind, detail: String| gate_store::AuditEvent::new(unix_now(), host, kind, "operator", operator).detail(detail);
    match command {
        ShutdownCommand::Show => {}
        ShutdownCommand::Set { part: p, state: s, message, all_hosts } => {
            let (p, s) = (part(&p)?, state(&s)?);
            let target = if all_hosts { gate_store::ALL_HOSTS } else { host };
            store.set_operator_state(p, Some(s), &message, target, unix_now())?;
            let detail = format!(
                "{} {} for {target}{}",
                p.name(),
                s.name(),
                if message.is_empty() { String::new() } else { format!(": {message:?}") }
            );
            crate::audit::record_in(store, &[event(gate_store::AuditKind::ShutdownSet, detail)]);
            let whom = if all_hosts { "every host's daemon applies" } else { "the daemon applies" };
            println!("{} {} (set by the operator; {whom} it within a second)", p.name(), s.name());
        }
        ShutdownCommand::Clear { part: p, all_hosts } => {
            let parts = if p == "all" { Part::ALL.to_vec() } else { vec![part(&p)?] };
            let target = if all_hosts { gate_store::ALL_HOSTS } else { host };
            for p in parts {
                store.set_operator_state(p, None, "", target, unix_now())?;
                let detail = format!("{} for {target}", p.name());
                crate::audit::record_in(store, &[event(gate_store::AuditKind::ShutdownCleared, detail)]);
                println!("{}: operator setting cleared", p.name());
            }
        }
    }
    print!("{}", describe(store, host)?);
    Ok(())
}

pub fn notify(command: NotifyCommand) -> anyhow::Result<()> {
    match command {
        NotifyCommand::Keygen { out } => {
            let key = gate_notify::generate_key();
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("create {} (an existing key is never overwritten)", out.display()))?;
            writeln!(file, "{}", gate_notify::encode_signing_key(&key))?;
            println!("public_key = \"{}\"", gate_notify::encode_verifying_key(&key.verifying_key()));
            Ok(())
        }
        NotifyCommand::Sign { key, version, serial, message, www, web, vpn, out } => {
            let text = std::fs::read_to_string(&key).with_context(|| format!("read {}", key.display()))?;
            let key = gate_notify::decode_signing_key(&text).with_context(|| format!("{}", key.display()))?;
            let notification = Notification {
                product: "gate".into(),
                version,
                serial,
                issued_at: unix_now(),
                message,
                www: state(&www)?,
                web: state(&web)?,
                vpn: state(&vpn)?,
            };
            let signed = gate_notify::sign(&notification, &key);
            std::fs::write(&out, serde_json::to_string_pretty(&signed)? + "\n")
                .with_context(|| format!("write {}", out.display()))?;
            println!("signed notification serial {serial} written to {}", out.display());
            Ok(())
        }
    }
}
