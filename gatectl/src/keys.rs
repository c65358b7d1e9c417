//! `gatectl server-key` and `gatectl ca`: rotating the server's box key and the OpenVPN CA,
//! each in two steps with the clients' profile updates (`gatectl client update`) between them.
//! The store keeps the state of each rotation; every daemon sharing it follows at once.
use clap::Subcommand;
use gate_protocol::encoding::b64;
use gate_store::{AuditKind, Store};

use crate::{clients::unix_now, format, paths::Paths};

#[derive(Subcommand)]
pub enum ServerKeyCommand {
    /// The current box key's public half and whether a rotation is under way.
    Show,
    /// Make a new box key current. The old one stays accepted (requests boxed to it are
    /// approved and counted as such) until `retire`; new profiles and updates carry the new one.
    Rotate,
    /// Stop accepting the previous box key: clients whose profile still carries it are
    /// refused until they apply an update. Refused while active clients enrolled before the
    /// rotation were issued no update (named), unless --force.
    Retire {
        /// Retire it even so: those clients are refused until they get an update.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum CaCommand {
    /// The CA, and the next one during a rotation.
    Show,
    /// Make the next CA: it issues client certificates from now on, and servers and new
    /// profiles trust both. VPN servers restart with both (their clients reconnect).
    Rotate,
    /// Make the next CA the CA: the old one is forgotten and every certificate it issued
    /// revoked; VPN servers restart with a certificate of the new CA. Clients that did not
    /// apply an update since `rotate` can no longer connect to the VPN. Refused while active
    /// clients of a VPN gate hold no certificate of the next CA (named), unless --force.
    Finish {
        /// Finish it even so: those clients cannot connect to the VPN until they get an update.
        #[arg(long)]
        force: bool,
    },
}

/// Refuses a step that would cut off `left` (clients not updated) unless `force`.
fn not_cut_off(left: &[String], force: bool, step: &str, what: &str) -> anyhow::Result<()> {
    if left.is_empty() || force {
        return Ok(());
    }
    let shown: Vec<&str> = left.iter().take(10).map(String::as_str).collect();
    let more = if left.len() > shown.len() { format!(" and {} more", left.len() - shown.len()) } else { String::new() };
    anyhow::bail!(
        "{} active client(s) {what}: {}{more}; give each `gatectl client update NAME --out FILE` \
         (applied with `gate-client update`), or {step} --force to cut them off",
        left.len(),
        shown.join(", ")
    )
}

fn record(store: &Store, paths: &Paths, kind: AuditKind, cause: &str, detail: String) {
    crate::audit::record_in(store, &[crate::audit::by_operator(paths, kind, cause).detail(detail)]);
}

/// # Errors
/// The store cannot be opened, or refuses the step (a rotation already under way, none to end).
pub fn server_key(command: ServerKeyCommand, paths: &Paths) -> anyhow::Result<()> {
    let mut store = paths.store.open()?;
    let now = unix_now();
    match command {
        ServerKeyCommand::Show => {
            let keys = store.server_box_keys(now)?;
            println!(
                "box key {} (current since {})",
                b64(keys.current.public().as_bytes()),
                format::ago(now, keys.current_since)
            );
            match keys.previous {
                Some((previous, _)) => println!(
                    "rotation under way: the previous key {} is still accepted; give each client \
                     `gatectl client update`, then `gatectl server-key retire`",
                    b64(previous.public().as_bytes())
                ),
                None => println!("no rotation under way"),
            }
        }
        ServerKeyCommand::Rotate => {
            let public = store.rotate_server_key(now)?;
            let public = b64(public.as_bytes());
            record(&store, paths, AuditKind::KeyRotated, "server_key", format!("new box key {public}"));
            println!("new box key {public}; the previous one stays accepted until `gatectl server-key retire`");
            println!(
                "next: `gatectl client update NAME --out FILE` for each client, applied with `gate-client update`"
            );
        }
        ServerKeyCommand::Retire { force } => {
            let left = store.clients_missing_box_key_update()?;
            not_cut_off(&left, force, "`gatectl server-key retire`", "were issued no update since the rotation")?;
            if store.retire_previous_server_key()? {
                record(&store, paths, AuditKind::KeyRetired, "server_key", "previous box key retired".into());
                println!("the previous box key is retired: requests boxed to it are refused from now on");
            } else {
                println!("no previous box key to retire (no rotation under way)");
            }
        }
    }
    Ok(())
}

/// # Errors
/// The store cannot be opened, or refuses the step (a rotation already under way, none to end).
pub fn ca(command: CaCommand, paths: &Paths) -> anyhow::Result<()> {
    let mut store = paths.store.open()?;
    let now = unix_now();
    match command {
        CaCommand::Show => {
            let state = store.ca_state(now)?;
            println!("CA {} (since {})", subject(&state.current.cert_pem), format::ago(now, state.current_since));
            match state.next {
                Some((next, since)) => println!(
                    "rotation under way since {}: next CA {} issues client certificates; give each client \
                     `gatectl client update`, then `gatectl ca finish`",
                    format::ago(now, since),
                    subject(&next.cert_pem)
                ),
                None => println!("no rotation under way"),
            }
        }
        CaCommand::Rotate => {
            store.rotate_ca(now)?;
            let next = store.ca_state(now)?.next.map(|(next, _)| subject(&next.cert_pem)).unwrap_or_default();
            record(&store, paths, AuditKind::KeyRotated, "ca", format!("next CA {next}"));
            println!("made the next CA {next}: it issues client certificates; servers trust both CAs");
            println!(
                "next: `gatectl client update NAME --out FILE` for each client, applied with `gate-client update`"
            );
            println!("then: `gatectl ca finish`");
        }
        CaCommand::Finish { force } => {
            let mut left = store.clients_missing_next_ca_certificate()?;
            // Only clients of a gate with a VPN server need a certificate, where the config says.
            if let Some(config) = &paths.config {
                let vpn_gates: Vec<&str> = config.openvpn.iter().map(|server| server.gate.as_str()).collect();
                left.retain(|name| {
                    store.client(name).is_ok_and(|c| c.gates.iter().any(|g| vpn_gates.contains(&g.as_str())))
                });
            }
            not_cut_off(&left, force, "`gatectl ca finish`", "hold no certificate of the next CA")?;
            let revoked = store.finish_ca_rotation(now)?;
            let ca = subject(&store.ca_state(now)?.current.cert_pem);
            record(&store, paths, AuditKind::KeyRetired, "ca", format!("CA {ca}; {revoked} certificate(s) revoked"));
            println!("{ca} is the CA now; the old CA is forgotten and its {revoked} certificate(s) revoked");
            println!("VPN servers restart with a certificate of the new CA; clients not updated cannot connect");
        }
    }
    Ok(())
}

/// A CA's name as `gatectl` shows it: its common name, read from the PEM's subject.
fn subject(cert_pem: &str) -> String {
    gate_pki::common_name(cert_pem).unwrap_or_else(|| "(unreadable)".into())
}
