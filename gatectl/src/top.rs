//! `gatectl top`: the gate live, per gate: packets passed and dropped a second (by reason), its
//! leases, its approvals a second. The packet counters and leases are read from the pinned maps
//! (the daemon need not run); approvals from the daemon's counters on its socket (shown as "-"
//! when it does not answer). Refreshed every interval in 80 columns; q (or Ctrl-C) quits.
//! `--once --json` takes two readings an interval apart and prints the rates for scripts.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use gate_daemon::approval::reasons::CountersSnapshot;
use gate_maps::{GateState, LeaseCounts, StatsTable, clock, common::Reason};

use crate::terminal::{RawTerminal, quit_within};

/// One reading of everything the view shows.
struct Reading {
    at: Instant,
    stats: StatsTable,
    /// The daemon's counters; `None` when it does not answer.
    counters: Option<CountersSnapshot>,
}

/// Reads the counters now.
fn read(state: &GateState, socket: &Path) -> anyhow::Result<Reading> {
    Ok(Reading { at: Instant::now(), stats: state.stats()?, counters: daemon_counters(socket) })
}

/// The daemon's counters from its socket (`GET /internal/counters`, root's right).
fn daemon_counters(socket: &Path) -> Option<CountersSnapshot> {
    let server = gate_client::transport::Server::Unix(socket.to_owned());
    let response = server.request("GET", gate_daemon::approval::http::COUNTERS_PATH, &[], b"").ok()?;
    (response.status == 200).then(|| serde_json::from_slice(&response.body).ok()).flatten()
}

/// A gate's row.
#[derive(Debug, serde::Serialize)]
struct GateRow {
    gate: String,
    id: u32,
    passed_per_second: f64,
    dropped_per_second: f64,
    /// Each dropping reason's rate, by its `gatectl stats` name.
    dropped_by_reason_per_second: BTreeMap<&'static str, f64>,
    leases_live: usize,
    leases_closed: usize,
    /// `None` when the daemon does not answer.
    approvals_per_second: Option<f64>,
}

/// What one refresh shows.
#[derive(Debug, serde::Serialize)]
struct View {
    interval_seconds: f64,
    /// Whether the daemon answered on its socket.
    daemon: bool,
    approvals_per_second: Option<f64>,
    refusals_per_second: Option<f64>,
    gates: Vec<GateRow>,
    /// Packets of no gate: by reason (unparseable ones are dropped, the rest passed).
    ungated_per_second: BTreeMap<&'static str, f64>,
}

/// The rates between two readings, with the leases now.
fn view(before: &Reading, after: &Reading, names: &BTreeMap<u32, String>, leases: &LeaseCounts) -> View {
    let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
    #[expect(clippy::cast_precision_loss, reason = "a counter's growth in one interval")]
    let rate = |id: u32, reason: Reason| {
        let count = |table: &StatsTable| table.get(&id).map_or(0, |row| row[reason as usize]);
        count(&after.stats).saturating_sub(count(&before.stats)) as f64 / seconds
    };
    let counters = before.counters.as_ref().zip(after.counters.as_ref());
    #[expect(clippy::cast_precision_loss, reason = "a counter's growth in one interval")]
    let per_second = |pick: &dyn Fn(&CountersSnapshot) -> u64| {
        counters.map(|(b, a)| pick(a).saturating_sub(pick(b)) as f64 / seconds)
    };
    let gates = names
        .iter()
        .map(|(&id, name)| {
            let dropped: BTreeMap<&'static str, f64> =
                Reason::ALL.into_iter().filter(|r| r.drops()).map(|r| (r.name(), rate(id, r))).collect();
            let count = leases.gates.get(&id).copied().unwrap_or_default();
            GateRow {
                gate: name.clone(),
                id,
                passed_per_second: Reason::ALL.into_iter().filter(|r| !r.drops()).map(|r| rate(id, r)).sum(),
                dropped_per_second: dropped.values().sum(),
                dropped_by_reason_per_second: dropped,
                leases_live: count.live,
                leases_closed: count.closed,
                approvals_per_second: per_second(&|c| c.approved_by_gate.get(&id).copied().unwrap_or(0)),
            }
        })
        .collect();
    View {
        interval_seconds: seconds,
        daemon: after.counters.is_some(),
        approvals_per_second: per_second(&|c| c.approved),
        refusals_per_second: per_second(&|c| c.rejected.values().sum()),
        gates,
        ungated_per_second: Reason::ALL.into_iter().map(|r| (r.name(), rate(0, r))).filter(|(_, v)| *v > 0.0).collect(),
    }
}

/// A rate or a count in at most 7 characters: 9.5, 950, 12.5k, 3.4M.
fn compact(value: f64) -> String {
    match value {
        v if v < 0.05 => "0".to_owned(),
        v if v < 100.0 => format!("{v:.1}"),
        v if v < 10_000.0 => format!("{v:.0}"),
        v if v < 999_950.0 => format!("{:.1}k", v / 1e3),
        v => format!("{:.1}M", v / 1e6),
    }
}

/// The view in at most 80 columns.
fn render(view: &View, host: &str, interval: Duration) -> String {
    let mut out = String::new();
    let optional = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), compact);
    let _ = writeln!(out, "gatectl top  {host}  every {}  q quits", humantime::format_duration(interval));
    let daemon = if view.daemon { "" } else { "  (daemon not answering)" };
    let _ = writeln!(
        out,
        "approvals/s {}  refusals/s {}{daemon}",
        optional(view.approvals_per_second),
        optional(view.refusals_per_second)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<12} {:>9} {:>9} {:>9} {:>8} {:>7} {:>8} {:>10}",
        "GATE", "PASSED/s", "DROPPED/s", "NO-LEASE", "EXPIRED", "IDLE", "LEASES", "APPROVED/s"
    );
    for row in &view.gates {
        let reason = |r: Reason| compact(row.dropped_by_reason_per_second.get(r.name()).copied().unwrap_or(0.0));
        let name: String = row.gate.chars().take(12).collect();
        #[expect(clippy::cast_precision_loss, reason = "a lease count")]
        let leases = compact(row.leases_live as f64);
        let _ = writeln!(
            out,
            "{name:<12} {:>9} {:>9} {:>9} {:>8} {:>7} {leases:>8} {:>10}",
            compact(row.passed_per_second),
            compact(row.dropped_per_second),
            reason(Reason::DroppedNoLease),
            reason(Reason::DroppedExpired),
            reason(Reason::DroppedIdle),
            optional(row.approvals_per_second),
        );
    }
    if !view.ungated_per_second.is_empty() {
        let parts: Vec<String> = view.ungated_per_second.iter().map(|(r, v)| format!("{r} {}", compact(*v))).collect();
        let _ = writeln!(out, "\nno gate, /s: {}", parts.join(", "));
    }
    out
}

/// Leases are counted by walking the maps: at most every interval, and no more often than ten
/// times as long as the last count took, so a million leases do not keep a core busy.
struct LeaseCounter {
    counts: LeaseCounts,
    next: Instant,
}

impl LeaseCounter {
    fn counts(&mut self, state: &GateState) -> anyhow::Result<&LeaseCounts> {
        if Instant::now() >= self.next {
            let started = Instant::now();
            self.counts = state.lease_counts(clock::now_ns())?;
            self.next = Instant::now() + started.elapsed() * 10;
        }
        Ok(&self.counts)
    }
}

/// Runs `gatectl top`.
///
/// # Errors
/// The pinned maps cannot be read, or the terminal cannot be used.
pub fn run(pins: &Path, socket: &Path, host: &str, interval: Duration, once: bool, json: bool) -> anyhow::Result<()> {
    if interval < Duration::from_millis(100) {
        anyhow::bail!("--interval must be at least 100ms");
    }
    let state = GateState::open(pins)?;
    let names = |state: &GateState| -> anyhow::Result<BTreeMap<u32, String>> {
        Ok(state.gates()?.into_iter().map(|g| (g.id, g.name)).collect())
    };
    let mut leases = LeaseCounter { counts: LeaseCounts::default(), next: Instant::now() };
    let mut before = read(&state, socket)?;
    if once {
        std::thread::sleep(interval);
        let after = read(&state, socket)?;
        let view = view(&before, &after, &names(&state)?, leases.counts(&state)?);
        if json {
            println!("{}", serde_json::to_string_pretty(&view)?);
        } else {
            print!("{}", render(&view, host, interval));
        }
        return Ok(());
    }
    let interactive = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let clear = nix::unistd::isatty(std::io::stdout()).unwrap_or(false);
    let _raw = interactive.then(RawTerminal::enter).transpose()?;
    let mut watching = true;
    loop {
        if quit_within(interval, &mut watching)? {
            return Ok(());
        }
        let after = read(&state, socket)?;
        let text = render(&view(&before, &after, &names(&state)?, leases.counts(&state)?), host, interval);
        let mut out = std::io::stdout().lock();
        if clear {
            // Home, clear the screen; in raw mode a newline does not return the carriage.
            write!(out, "\x1b[H\x1b[2J{}", text.replace('\n', "\r\n"))?;
        } else {
            writeln!(out, "{text}")?;
        }
        out.flush()?;
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at: Instant, no_lease: u64, passed: u64, approved: Option<u64>) -> Reading {
        let mut row = [0; gate_maps::common::NUM_REASONS as usize];
        row[Reason::DroppedNoLease as usize] = no_lease;
        row[Reason::PassedLease as usize] = passed;
        let counters = approved.map(|n| CountersSnapshot {
            requests: n,
            approved: n,
            approved_by_gate: [(1, n)].into(),
            approved_with_previous_key: 0,
            rejected: BTreeMap::new(),
            hmac_checks: 0,
            rsa_verifications: 0,
            approval_us_p50: 0,
            approval_us_p99: 0,
            approval_crypto_us_p50: 0,
            approval_over_crypto_p50: 0.0,
        });
        Reading { at, stats: [(0, [0; 9]), (1, row)].into(), counters }
    }

    #[test]
    fn rates_are_per_second_over_the_interval_and_fit_80_columns() {
        let start = Instant::now();
        let before = reading(start, 1_000, 10, Some(4));
        let after = reading(start + Duration::from_secs(2), 2_001_000, 30, Some(10));
        let names = [(1, "a-gate-with-a-long-name".to_owned())].into();
        let mut leases = LeaseCounts::default();
        leases.gates.insert(1, gate_maps::LeaseCount { live: 1_234_567, closed: 3, live_v6: 0 });
        let view = view(&before, &after, &names, &leases);
        assert_eq!(view.gates[0].dropped_by_reason_per_second["dropped_no_lease"], 1_000_000.0);
        assert_eq!((view.gates[0].passed_per_second, view.gates[0].approvals_per_second), (10.0, Some(3.0)));
        let text = render(&view, "gw1", Duration::from_secs(1));
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        assert!(text.contains("a-gate-with-") && text.contains(" 1.0M ") && text.contains(" 1.2M "), "{text}");
        let gone = view_without_daemon(&before, &after, &names, &leases);
        assert!(
            render(&gone, "gw1", Duration::from_secs(1))
                .contains("approvals/s -  refusals/s -  (daemon not answering)")
        );
    }

    fn view_without_daemon(
        before: &Reading,
        after: &Reading,
        names: &BTreeMap<u32, String>,
        leases: &LeaseCounts,
    ) -> View {
        let after = Reading { at: after.at, stats: after.stats.clone(), counters: None };
        view(before, &after, names, leases)
    }
}
