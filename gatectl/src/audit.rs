//! The audit trail from gatectl's side: who the operator is, what gatectl's own changes write
//! to the trail, and `gatectl audit`, which reads it.
use std::net::IpAddr;

use anyhow::Context as _;
use gate_store::{AuditEvent, AuditKind, AuditQuery, Store};

use crate::{clients::unix_now, paths::Paths};

/// Who runs gatectl, for the trail: the user behind sudo, or the login user behind `su`
/// (the kernel's login uid survives both), else the user it runs as.
#[must_use]
pub fn operator() -> String {
    let name_of = |uid: u32| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {uid}"), |user| user.name)
    };
    let running = name_of(nix::unistd::getuid().as_raw());
    if let Ok(sudo) = std::env::var("SUDO_USER")
        && !sudo.is_empty()
        && sudo != running
    {
        return format!("{sudo} (sudo)");
    }
    let login = std::fs::read_to_string("/proc/self/loginuid").ok().and_then(|text| text.trim().parse::<u32>().ok());
    match login.filter(|&uid| uid != u32::MAX).map(name_of) {
        Some(login) if login != running => format!("{login} (as {running})"),
        _ => running,
    }
}

/// An event of the operator's, now, on this host: `kind`, for `cause`.
#[must_use]
pub fn by_operator(paths: &Paths, kind: AuditKind, cause: &str) -> AuditEvent {
    AuditEvent::new(unix_now(), &paths.host, kind, cause, &operator())
}

/// Writes `events` to the trail of the store `paths` names, if there is one. The change itself
/// is made by then, so a failure is said, not returned.
pub fn record(paths: &Paths, events: &[AuditEvent]) {
    if events.is_empty() {
        return;
    }
    if !paths.store.location.exists() {
        eprintln!("gatectl: note: no store at {}: this change is not in the audit trail", paths.store.location);
        return;
    }
    if let Err(e) = paths.store.open().and_then(|store| Ok(store.record_audit(events)?)) {
        eprintln!("gatectl: warning: the change is made, but the audit trail could not record it: {e:#}");
    }
}

/// Writes `events` to the open `store`'s trail; as [`record`], a failure is said.
pub fn record_in(store: &Store, events: &[AuditEvent]) {
    if let Err(e) = store.record_audit(events) {
        eprintln!("gatectl: warning: the change is made, but the audit trail could not record it: {e}");
    }
}

/// `--since`: a duration back from now (`2h`, `7d`) or a time (`2026-12-01T10:00:00Z`).
pub fn parse_since(text: &str) -> Result<u64, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(unix_now().saturating_sub(ago.as_secs()));
    }
    humantime::parse_rfc3339_weak(text)
        .map_err(|_| format!("{text:?}: give a duration (2h, 7d) or a time (2026-12-01T10:00:00Z)"))?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| format!("{text:?} is before 1970"))
}

/// A Unix time as the trail shows it.
fn time(at: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at)).to_string()
}

/// `gatectl audit`.
///
/// # Errors
/// The store cannot be read.
pub fn show(
    paths: &Paths,
    since: Option<u64>,
    client: Option<String>,
    address: Option<IpAddr>,
    limit: u64,
    json: bool,
) -> anyhow::Result<()> {
    let store = paths.store.open().context("open the store (the audit trail lives there)")?;
    let query = AuditQuery { since, client, address: address.map(gate_maps::lease_address), limit };
    let events = store.audit_trail(&query)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(());
    }
    if events.is_empty() {
        println!("no audit events");
        return Ok(());
    }
    for event in &events {
        let mut line =
            format!("{}  {}  {}  {} by {}", time(event.at), event.host, event.event.name(), event.cause, event.actor);
        if let Some(client) = &event.client {
            line.push_str(&format!("  client {client}"));
        }
        if let (Some(gate), Some(address)) = (&event.gate, event.address) {
            line.push_str(&format!("  {gate} {address}"));
        } else if let Some(gate) = &event.gate {
            line.push_str(&format!("  {gate}"));
        }
        if !event.detail.is_empty() {
            line.push_str(&format!("  ({})", event.detail));
        }
        println!("{line}");
    }
    if events.len() as u64 == limit {
        eprintln!("gatectl: the newest {limit} shown; --limit or --since for others");
    }
    Ok(())
}
