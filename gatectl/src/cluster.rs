//! `gatectl cluster ...`: the hosts sharing the store (one, or a cluster's), as their
//! heartbeats left them, and the database.
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use gate_store::{DatabaseInfo, HostRow, Store};

use crate::{clients::unix_now, format};

/// A host whose last heartbeat is older than this (three of its beats, every 5 s) is shown
/// silent: down, cut off from the database, or stuck.
const SILENT_AFTER: Duration = Duration::from_secs(15);

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The database, and every host that writes heartbeats into the store: up, stopped, or
    /// silent (no heartbeat for 15 s). Exits non-zero while a host is silent.
    Status {
        /// Stable JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Forget a host taken out of the cluster (a host still running reappears within 5 s).
    Forget { host: String },
}

/// # Errors
/// The store failed; a host is silent (`status`); no host of that name (`forget`).
pub fn run(command: ClusterCommand, store: &Store) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { json } => {
            let (database, hosts, now) = (store.database()?, store.hosts()?, unix_now());
            if json {
                println!("{}", serde_json::to_string_pretty(&status_json(&database, &hosts, now))?);
            } else {
                print!("{}", status_text(&database, &hosts, now));
            }
            let silent: Vec<&str> =
                hosts.iter().filter(|h| state(h, now) == "silent").map(|h| h.host.as_str()).collect();
            if !silent.is_empty() {
                bail!("{} host(s) silent: {}", silent.len(), silent.join(", "));
            }
        }
        ClusterCommand::Forget { host } => {
            if !store.forget_host(&host)? {
                bail!("no host {host:?} in the store");
            }
            println!("forgot host {host}");
        }
    }
    Ok(())
}

/// `up`, `stopped` (cleanly) or `silent`.
fn state(host: &HostRow, now: u64) -> &'static str {
    if host.stopped_at.is_some() {
        "stopped"
    } else if now.saturating_sub(host.seen_at) > SILENT_AFTER.as_secs() {
        "silent"
    } else {
        "up"
    }
}

fn status_text(database: &DatabaseInfo, hosts: &[HostRow], now: u64) -> String {
    let mut out = format!(
        "database: {} {}, {} (schema version {})\nclients: {} enrolled, {} of them revoked\n\n",
        database.product,
        database.version,
        database.location,
        database.schema_version,
        database.clients,
        database.revoked
    );
    if hosts.is_empty() {
        out.push_str("no host has written a heartbeat yet (a daemon writes one at start)\n");
        return out;
    }
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            vec![
                h.host.clone(),
                state(h, now).to_owned(),
                format::ago(now, h.seen_at),
                h.version.clone(),
                format::ago(now, h.started_at),
                h.leases.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                h.approvals.to_string(),
                h.refusals.to_string(),
            ]
        })
        .collect();
    out.push_str(&format::table(
        &["host", "state", "last seen", "version", "started", "leases", "approvals", "refusals"],
        &rows,
    ));
    out.push_str("\n(leases: live at the host's last sweep; approvals and refusals: since it started)\n");
    out
}

fn status_json(database: &DatabaseInfo, hosts: &[HostRow], now: u64) -> serde_json::Value {
    let hosts: Vec<serde_json::Value> = hosts
        .iter()
        .map(|h| {
            serde_json::json!({
                "host": h.host,
                "state": state(h, now),
                "seen_at": h.seen_at,
                "seen_seconds_ago": now.saturating_sub(h.seen_at),
                "stopped_at": h.stopped_at,
                "version": h.version,
                "started_at": h.started_at,
                "leases": h.leases,
                "approvals": h.approvals,
                "refusals": h.refusals,
            })
        })
        .collect();
    serde_json::json!({
        "database": {
            "product": database.product,
            "version": database.version,
            "location": database.location,
            "schema_version": database.schema_version,
            "clients": database.clients,
            "revoked": database.revoked,
        },
        "hosts": hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, seen_at: u64, stopped_at: Option<u64>) -> HostRow {
        HostRow {
            host: name.into(),
            version: "0.1.0".into(),
            started_at: 900,
            seen_at,
            stopped_at,
            leases: Some(3),
            approvals: 7,
            refusals: 1,
        }
    }

    #[test]
    fn a_host_is_silent_after_three_missed_heartbeats_and_stopped_only_when_it_said_so() {
        assert_eq!(state(&host("a", 985, None), 1_000), "up");
        assert_eq!(state(&host("a", 984, None), 1_000), "silent");
        assert_eq!(state(&host("a", 500, Some(500)), 1_000), "stopped");
    }

    #[test]
    fn the_json_names_every_field() {
        let database = DatabaseInfo {
            product: "PostgreSQL",
            version: "15.10".into(),
            location: "postgres db.example.net database gate".into(),
            schema_version: 2,
            clients: 3,
            revoked: 1,
        };
        let json = status_json(&database, &[host("gate-1", 998, None)], 1_000);
        assert_eq!(json["database"]["product"], "PostgreSQL");
        assert_eq!(json["hosts"][0]["state"], "up");
        assert_eq!(json["hosts"][0]["seen_seconds_ago"], 2);
        assert_eq!(json["hosts"][0]["leases"], 3);
        assert_eq!(json["hosts"][0]["stopped_at"], serde_json::Value::Null);
        let text = status_text(&database, &[host("gate-1", 998, None)], 1_000);
        assert!(text.contains("gate-1  up     2s ago"), "{text}");
    }
}
