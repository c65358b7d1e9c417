//! The daemon's metrics page (`metrics_listen`, docs/operations.md "Watching it"): every value
//! read at scrape time from where it lives: the verdict counters and leases from the pinned
//! maps (as `gatectl stats` and `status` read them, so they survive restarts), whether each
//! attached interface runs the gate (asked of the kernel), the approval service's counters, the
//! shutdown states in force, the notification polls, and the OpenVPN servers' status files.
use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use gate_config::metrics::{Kind, Page, count_value};
use gate_maps::{GateState, PinDir, clock, common::Reason, netlink, pins::pinned_program};
use gate_notify::Published;
use tokio::sync::watch;

use crate::{
    approval::{ApprovalService, Rejection, reasons::CountersSnapshot},
    openvpn::supervisor::{self, LinkBytes, Traffic},
    shutdown,
};

/// Where the page's values are read from.
pub struct Sources {
    pub pins: PinDir,
    pub service: Arc<ApprovalService>,
    pub states: watch::Receiver<Published>,
    pub vpn_run_dir: PathBuf,
    pub vpn_traffic: Traffic,
}

/// Writes the page.
#[must_use]
pub fn render(sources: &Sources) -> String {
    let mut page = Page::default();
    page.family("gate_build_info", Kind::Gauge, "The running gate-daemon's version.").sample(
        "gate_build_info",
        &[("version", shutdown::VERSION)],
        1.0,
    );
    // Once a page: a snapshot also sorts the last approvals' times.
    let counters = sources.service.counters.snapshot();
    pinned(&mut page, &sources.pins, &counters);
    approvals(&mut page, &sources.service, &counters);
    shutdown_states(&mut page, &sources.states.borrow());
    notification_polls(&mut page);
    openvpn(&mut page, &sources.vpn_run_dir, &sources.vpn_traffic);
    page.finish()
}

/// What the pinned state says: interfaces, verdicts, leases. `gate_state_readable` 0 (and none
/// of the rest) when the maps cannot be read.
fn pinned(page: &mut Page, pins: &PinDir, counters: &CountersSnapshot) {
    let read = GateState::open(pins.root()).and_then(|state| {
        let gates = state.gates()?;
        Ok((state.stats()?, state.backstop_stats()?, state.lease_counts(clock::now_ns())?, state.capacity(), gates))
    });
    page.single(
        "gate_state_readable",
        Kind::Gauge,
        "1 if the gate's pinned maps could be read for this page, 0 if not (the daemon's log says why).",
        if read.is_ok() { 1.0 } else { 0.0 },
    );
    interfaces(page, pins);
    let (stats, backstop, leases, (capacity_v4, capacity_v6), gates) = match read {
        Ok(read) => read,
        Err(e) => {
            log::debug!("metrics: read the pinned state: {e}");
            return;
        }
    };
    let names: BTreeMap<u32, &str> = gates.iter().map(|g| (g.id, g.name.as_str())).collect();
    for (family, help, table) in [
        (
            "gate_xdp_packets_total",
            "Packets XDP judged, by gate and verdict reason (since the gate was put in place).",
            Some(&stats),
        ),
        (
            "gate_backstop_packets_total",
            "Packets the delivery backstop judged at the socket, by gate and reason.",
            backstop.as_ref(),
        ),
    ] {
        let Some(table) = table else { continue };
        page.family(family, Kind::Counter, help);
        for (id, row) in table {
            let gate = names.get(id).copied().unwrap_or("");
            for reason in Reason::ALL {
                // Packets of no gate: one row with an empty gate label.
                page.sample(family, &[("gate", gate), ("reason", reason.name())], count_value(row[reason as usize]));
            }
        }
    }
    page.family(
        "gate_leases",
        Kind::Gauge,
        "Leases in the maps by gate, state and family (closed ones wait for the sweep; their family is not told apart).",
    );
    for (id, name) in &names {
        let count = leases.gates.get(id).copied().unwrap_or_default();
        let live_v4 = (count.live - count.live_v6) as u64;
        page.sample("gate_leases", &[("gate", name), ("state", "live"), ("family", "ipv4")], count_value(live_v4));
        page.sample(
            "gate_leases",
            &[("gate", name), ("state", "live"), ("family", "ipv6")],
            count_value(count.live_v6 as u64),
        );
        page.sample(
            "gate_leases",
            &[("gate", name), ("state", "closed"), ("family", "any")],
            count_value(count.closed as u64),
        );
    }
    // By the installed gates' names: the page's gate labels are the maps' own.
    let approved = &counters.approved_by_gate;
    page.family("gate_approvals_total", Kind::Counter, "Approvals granted since the daemon started, by gate.");
    for (id, name) in &names {
        page.sample("gate_approvals_total", &[("gate", name)], count_value(approved.get(id).copied().unwrap_or(0)));
    }
    page.family(
        "gate_approvals_previous_box_key_total",
        Kind::Counter,
        "Approvals of requests boxed to the server's previous box key (profiles not yet updated in a key rotation).",
    );
    page.sample("gate_approvals_previous_box_key_total", &[], count_value(counters.approved_with_previous_key));
    page.family("gate_lease_map_entries", Kind::Gauge, "Entries in each lease map, live or closed.");
    page.sample("gate_lease_map_entries", &[("family", "ipv4")], count_value(leases.v4 as u64));
    page.sample("gate_lease_map_entries", &[("family", "ipv6")], count_value(leases.v6 as u64));
    page.family("gate_lease_map_capacity", Kind::Gauge, "Entries each lease map holds at most (leases.capacity).");
    page.sample("gate_lease_map_capacity", &[("family", "ipv4")], f64::from(capacity_v4));
    page.sample("gate_lease_map_capacity", &[("family", "ipv6")], f64::from(capacity_v6));
}

/// `gate_interface_gated`: 1 where the kernel runs the gate's program on an attached interface.
fn interfaces(page: &mut Page, pins: &PinDir) {
    page.family(
        "gate_interface_gated",
        Kind::Gauge,
        "1 if the kernel runs the gate's XDP program on this listed interface, 0 if not (re-created, replaced, absent).",
    );
    for attachment in pins.attachments().unwrap_or_default() {
        let gated = netlink::xdp_state(&attachment.interface, pinned_program(&attachment.path))
            .is_ok_and(|state| matches!(state, netlink::XdpState::Gated(_)));
        let mode = attachment.mode.to_string();
        page.sample(
            "gate_interface_gated",
            &[("interface", &attachment.interface), ("mode", &mode)],
            if gated { 1.0 } else { 0.0 },
        );
    }
}

fn approvals(page: &mut Page, service: &ApprovalService, snapshot: &CountersSnapshot) {
    page.single(
        "gate_approval_requests_total",
        Kind::Counter,
        "Requests on the internal socket (from the front or root), since the daemon started.",
        count_value(snapshot.requests),
    );
    page.family(
        "gate_approval_refusals_total",
        Kind::Counter,
        "Requests refused since the daemon started, by the check that refused them (docs/protocol.md).",
    );
    for reason in Rejection::ALL {
        let count = snapshot.rejected.get(reason.name()).copied().unwrap_or(0);
        page.sample("gate_approval_refusals_total", &[("reason", reason.name())], count_value(count));
    }
    page.family(
        "gate_approval_duration_seconds",
        Kind::Histogram,
        "Time inside the daemon per granted approval, request read to leases written.",
    )
    .histogram("gate_approval_duration_seconds", &[], &service.counters.latency.snapshot());
}

fn shutdown_states(page: &mut Page, states: &Published) {
    page.family(
        "gate_shutdown_disabled",
        Kind::Gauge,
        "1 while a self-shutdown state disables this part (www, web, vpn), from a notification or the operator.",
    );
    for (part, state) in [("www", states.www), ("web", states.web), ("vpn", states.vpn)] {
        let disabled = state == gate_notify::State::Disabled;
        page.sample("gate_shutdown_disabled", &[("part", part)], if disabled { 1.0 } else { 0.0 });
    }
}

fn notification_polls(page: &mut Page) {
    page.family(
        "gate_notification_polls_total",
        Kind::Counter,
        "Polls of the notification URL since the daemon started, by outcome.",
    );
    for (outcome, count) in shutdown::POLLS.counts() {
        page.sample("gate_notification_polls_total", &[("outcome", outcome)], count_value(count));
    }
}

/// The servers' status files (`<run_dir>/<name>/status.json`, as `gatectl status` reads them),
/// and the byte counts their management interfaces last gave.
fn openvpn(page: &mut Page, run_dir: &std::path::Path, traffic: &Traffic) {
    let servers = supervisor::statuses(run_dir);
    if servers.is_empty() {
        return;
    }
    page.family("gate_openvpn_up", Kind::Gauge, "1 while the OpenVPN server runs and is ready, 0 otherwise.");
    for server in &servers {
        let up = if server.state == "running" { 1.0 } else { 0.0 };
        page.sample("gate_openvpn_up", &[("server", &server.name)], up);
    }
    page.family("gate_openvpn_sessions", Kind::Gauge, "Clients connected to the OpenVPN server.");
    for server in &servers {
        page.sample("gate_openvpn_sessions", &[("server", &server.name)], count_value(server.clients.len() as u64));
    }
    page.family("gate_openvpn_restarts_total", Kind::Counter, "Times the server was restarted after it died.");
    for server in &servers {
        page.sample("gate_openvpn_restarts_total", &[("server", &server.name)], f64::from(server.restarts));
    }
    let traffic = traffic.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    for (family, help, pick) in [
        (
            "gate_openvpn_received_bytes_total",
            "Bytes the server received on its link since it started (OpenVPN's load-stats).",
            (|b: &LinkBytes| b.received) as fn(&LinkBytes) -> u64,
        ),
        ("gate_openvpn_sent_bytes_total", "Bytes the server sent on its link since it started.", |b: &LinkBytes| {
            b.sent
        }),
    ] {
        page.family(family, Kind::Counter, help);
        for server in &servers {
            if let Some(bytes) = traffic.get(&server.name) {
                page.sample(family, &[("server", &server.name)], count_value(pick(bytes)));
            }
        }
    }
}
