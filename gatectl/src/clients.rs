//! `gatectl client ...`: enroll, list, show and revoke clients in the store.
use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use gate_maps::{GateState, PinDir};
use gate_protocol::{
    encoding::{b64, hex},
    keys::{ClientKeys, HmacSecret, Token, rsa_private_from_pem},
    profile::{Profile, VpnProfile},
    rand::rngs::OsRng,
};
use gate_store::{ClientRecord, NewClient, Store};
use serde_json::json;
use sha2::{Digest, Sha256};

use gate_daemon::config::Config;

use crate::{format, paths::Paths};

/// Where a profile points its client when no `--server` is given.
pub const DEFAULT_SERVER: &str = "unix:/run/gate/daemon.sock";

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Enroll a client: make its keys, register it, write its profile (0600). A revoked client's
    /// name is enrolled again (a new device) once its leases are closed: new keys, a new VPN
    /// certificate, and its old profile stays refused.
    Add {
        name: String,
        /// A gate it may open (repeat for several).
        #[arg(long = "gate", required = true)]
        gates: Vec<String>,
        /// Where to write the profile; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// Where the client sends requests: `unix:/path` or `https://host:port`. Repeat it for
        /// the hosts of a cluster: the client tries them in this order until one approves.
        #[arg(long = "server", default_value = DEFAULT_SERVER)]
        servers: Vec<String>,
        /// Use this RSA-4096 private key (PEM) instead of making one, e.g. the key of an
        /// existing VPN certificate.
        #[arg(long)]
        rsa_key: Option<PathBuf>,
    },
    /// Every client.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One client's public details (never its secrets).
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Refuse the client's requests from now on and close its leases.
    Revoke { name: String },
    /// Write a profile update for the client (after `server-key rotate` or `ca rotate`): the
    /// server's current box key, the CAs to trust and a VPN certificate of the CA that issues
    /// now, for the key the client already holds. No secret in it; signed with the client's
    /// secret, so `gate-client update` takes it only for that client's profile.
    Update {
        name: String,
        /// Where to write it; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Unix seconds now (the store's time).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn run(command: ClientCommand, paths: &Paths, pins: &PinDir) -> anyhow::Result<()> {
    match command {
        ClientCommand::Add { name, gates, out, servers, rsa_key } => {
            add(paths, pins, &name, &gates, &out, &servers, rsa_key)
        }
        ClientCommand::List { json } => {
            let clients = paths.store.open()?.clients()?;
            if json {
                let list: Vec<_> = clients.iter().map(client_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", list_table(&clients, unix_now()));
            }
            Ok(())
        }
        ClientCommand::Show { name, json } => {
            let client = paths.store.open()?.client(&name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&client_json(&client))?);
            } else {
                print!("{}", show_text(&client, unix_now()));
            }
            Ok(())
        }
        ClientCommand::Revoke { name } => revoke(&mut paths.store.open()?, pins, &paths.host, &name),
        ClientCommand::Update { name, out } => update(paths, &name, &out),
    }
}

/// Writes `out` with mode 0600, never over an existing file; what it made is removed again
/// if the write fails.
fn write_new(out: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("create {}", out.display()))?;
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = fs::remove_file(out);
    }
    written.with_context(|| format!("write {}", out.display()))
}

fn update(paths: &Paths, name: &str, out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        bail!("{} exists; not overwriting (remove it or choose another --out)", out.display());
    }
    let mut store = paths.store.open()?;
    let client = store.client(name)?;
    if client.revoked_at.is_some() {
        bail!("client {name:?} is revoked: enroll it again (`gatectl client add`) instead of updating its profile");
    }
    let now = unix_now();
    let spki = gate_protocol::keys::rsa_public_der(&client.rsa_public)?;
    let body = gate_protocol::profile_update::UpdateBody {
        name: name.to_owned(),
        token: client.token.to_string(),
        issued_at: now,
        server_box_public: b64(store.server_keys(now)?.public().as_bytes()),
        vpn: Some(gate_protocol::profile_update::VpnTrust {
            ca_pem: store.ca_state(now)?.bundle(),
            cert_pem: store.certificate_for_update(name, &spki, now)?,
        }),
    };
    write_new(out, &gate_protocol::profile_update::sign(&body, &client.secret)?)?;
    let event = crate::audit::by_operator(paths, gate_store::AuditKind::ProfileUpdated, "operator").client(name);
    crate::audit::record_in(&store, &[event]);
    println!("wrote the profile update of {name} to {}: apply it with `gate-client update`", out.display());
    Ok(())
}

fn add(
    paths: &Paths,
    pins: &PinDir,
    name: &str,
    gates: &[String],
    out: &Path,
    servers: &[String],
    rsa_key: Option<PathBuf>,
) -> anyhow::Result<()> {
    gate_store::validate_client_name(name)?;
    for server in servers {
        if !(server.starts_with("unix:/") || server.starts_with("https://")) {
            bail!("--server {server:?}: give unix:/path/to/socket or https://host[:port]");
        }
    }
    let Some((server, fallback_servers)) = servers.split_first() else { bail!("give a --server") };
    if out.exists() {
        bail!("{} exists; not overwriting a profile (remove it or choose another --out)", out.display());
    }
    check_gates(pins, paths.config.as_ref(), gates)?;
    let mut store = paths.store.open_or_create(paths.config.as_ref())?;
    // A revoked name is enrolled again (a new device): the store refuses it while a lease of it
    // is still open anywhere.
    let again = match store.client(name) {
        Ok(existing) if existing.revoked_at.is_none() => bail!(
            "client {name:?} already exists (to move it to a new device: `gatectl client revoke {name}`, then add it again)"
        ),
        Ok(existing) => existing.revoked_at,
        Err(_) => None,
    };
    let rsa = match rsa_key {
        Some(path) => {
            let pem =
                zeroize::Zeroizing::new(fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?);
            rsa_private_from_pem(&pem).with_context(|| format!("{}", path.display()))?
        }
        None => {
            eprintln!("making an RSA-4096 key (a few seconds)...");
            ClientKeys::generate(&mut OsRng)?.rsa
        }
    };
    let keys = ClientKeys {
        token: Token::random(&mut OsRng),
        secret: HmacSecret::random(&mut OsRng),
        box_secret: gate_protocol::crypto_box::SecretKey::generate(&mut OsRng),
        rsa,
    };
    let server_box_public = store.server_keys(unix_now())?.public();
    // The VPN certificate for the client's own RSA key; withdrawn again if enrollment fails.
    let spki = gate_protocol::keys::rsa_public_der(&keys.rsa.to_public_key())?;
    let cert_pem = store.issue_client_certificate(name, &spki, unix_now())?;
    let vpn = vpn_endpoint(pins, &gates[0]).map(|(protocol, port)| VpnProfile {
        ca_pem: store.ca_state(unix_now()).map(|cas| cas.bundle()).unwrap_or_default(),
        cert_pem: cert_pem.clone(),
        protocol,
        port,
    });
    let profile = Profile {
        name: name.to_owned(),
        gate: gates[0].clone(),
        server: server.clone(),
        fallback_servers: fallback_servers.to_vec(),
        server_box_public,
        keys,
        vpn,
    };
    let json = profile.to_json()?;
    // The profile first (never over another), then the registration; a failure of the second
    // removes the first, so neither exists without the other.
    if let Err(e) = write_new(out, &json) {
        let _ = store.withdraw_client_certificates(name, unix_now());
        return Err(e);
    }
    let public = profile.keys.public();
    let registered =
        store.add_client(&NewClient { name, gates, public: &public, secret: &profile.keys.secret, now: unix_now() });
    if let Err(e) = registered.map_err(anyhow::Error::from) {
        let _ = fs::remove_file(out);
        let _ = store.withdraw_client_certificates(name, unix_now());
        return Err(e.context(format!("enroll {name:?}")));
    }
    let again_note = again.map(|at| format!(" again (revoked {})", format::ago(unix_now(), at))).unwrap_or_default();
    let event = crate::audit::by_operator(paths, gate_store::AuditKind::Enrolled, "operator")
        .client(name)
        .detail(format!("gates {}{again_note}", gates.join(", ")));
    crate::audit::record_in(&store, &[event]);
    println!(
        "enrolled {name}{again_note} for {}; profile written to {} (keep it secret)",
        gates.join(", "),
        out.display()
    );
    if again.is_some() {
        println!("its old profile stays refused: a new token, new keys and a new VPN certificate");
    }
    Ok(())
}

/// The gate's VPN port, from the pinned gates (UDP preferred); `None` without gate state.
fn vpn_endpoint(pins: &PinDir, gate: &str) -> Option<(String, u16)> {
    let state = GateState::open(pins.root()).ok()?;
    let mut ports: Vec<_> = state.gates().ok()?.into_iter().filter(|g| g.name == gate).collect();
    ports.sort_by_key(|g| g.protocol != gate_maps::Protocol::Udp);
    ports.first().map(|g| (g.protocol.to_string(), g.port))
}

/// A gate name must be one the running gate knows, else one the daemon's config lists; with
/// neither, the operator is trusted (and warned).
fn check_gates(pins: &PinDir, config: Option<&Config>, gates: &[String]) -> anyhow::Result<()> {
    if let Ok(state) = GateState::open(pins.root()) {
        for gate in gates {
            state.gate_id(gate)?;
        }
    } else if let Some(config) = config {
        for gate in gates {
            if !config.gates.iter().any(|g| &g.name == gate) {
                let known: Vec<&str> = config.gates.iter().map(|g| g.name.as_str()).collect();
                bail!("no gate named {gate:?} in the daemon's config (it has: {})", known.join(", "));
            }
        }
    } else {
        eprintln!("warning: no gate state at {} and no config; gate names not checked", pins.root().display());
    }
    Ok(())
}

fn revoke(store: &mut Store, pins: &PinDir, host: &str, name: &str) -> anyhow::Result<()> {
    let operator = crate::audit::operator();
    let newly = store.revoke_client(name, unix_now())?;
    if newly {
        let event =
            gate_store::AuditEvent::new(unix_now(), host, gate_store::AuditKind::Revoked, "operator", &operator)
                .client(name);
        crate::audit::record_in(store, &[event]);
    }
    let closed = match GateState::open(pins.root()) {
        Ok(mut state) => gate_store::end_grants(store, &mut state, host, unix_now(), &operator)
            .map(|n| format!("closed {n} lease(s)"))
            .unwrap_or_else(|e| format!("closing its leases failed ({e}); the daemon closes them within a second")),
        Err(_) => "no gate state here; the daemon closes its leases when it runs".to_owned(),
    };
    if newly {
        println!("revoked {name}; {closed}");
    } else {
        println!("{name} was already revoked; {closed}");
    }
    Ok(())
}

fn rsa_fingerprint(client: &ClientRecord) -> String {
    gate_protocol::keys::rsa_public_der(&client.rsa_public)
        .map(|der| format!("SHA256:{}", hex(&Sha256::digest(der))))
        .unwrap_or_default()
}

fn client_json(client: &ClientRecord) -> serde_json::Value {
    json!({
        "name": client.name,
        "token": client.token.to_string(),
        "gates": client.gates,
        "created_at": client.created_at,
        "revoked_at": client.revoked_at,
        "box_public": b64(client.box_public.as_bytes()),
        "rsa_fingerprint": rsa_fingerprint(client),
    })
}

fn list_table(clients: &[ClientRecord], now: u64) -> String {
    if clients.is_empty() {
        return "no clients\n".to_owned();
    }
    let width = clients.iter().map(|c| c.name.len()).max().unwrap_or(0).max(4);
    let mut out = format!("{:width$}  {:20}  {:14}  status\n", "name", "gates", "enrolled");
    for c in clients {
        let gates = c.gates.iter().cloned().collect::<Vec<_>>().join(",");
        let status = c.revoked_at.map_or_else(|| "active".to_owned(), |at| format!("revoked {}", format::ago(now, at)));
        out.push_str(&format!("{:width$}  {gates:20}  {:14}  {status}\n", c.name, format::ago(now, c.created_at)));
    }
    out
}

fn show_text(c: &ClientRecord, now: u64) -> String {
    let status = c.revoked_at.map_or_else(|| "active".to_owned(), |at| format!("revoked {}", format::ago(now, at)));
    format!(
        "client: {}\n  status: {status}\n  gates: {}\n  enrolled: {}\n  token: {}\n  box key: {}\n  rsa key: {}\n",
        c.name,
        c.gates.iter().cloned().collect::<Vec<_>>().join(", "),
        format::ago(now, c.created_at),
        c.token,
        b64(c.box_public.as_bytes()),
        rsa_fingerprint(c),
    )
}
