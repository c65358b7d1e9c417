//! What gatectl prints: terse tables for people, stable JSON for scripts.
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use gate_maps::{
    AttachMode, GateEntry, LeaseCount, LeaseCounts, LeaseEntry, PinDir, StatsTable, clock,
    common::{BitsSize, LeaseState, Reason},
    netlink::XdpState,
};
use serde::Serialize;

pub struct InterfaceView<'a> {
    pub name: &'a str,
    pub mode: AttachMode,
    pub state: XdpState,
}

/// A duration rounded to whole seconds, as "4m 12s".
pub fn duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// How long before `now` (Unix seconds) `then` was, as "4m 12s ago".
pub fn ago(now: u64, then: u64) -> String {
    format!("{} ago", duration(Duration::from_secs(now.saturating_sub(then))))
}

fn state_name(state: LeaseState) -> &'static str {
    match state {
        LeaseState::Live => "live",
        LeaseState::Expired => "expired",
        LeaseState::Idle => "idle",
    }
}

/// Gate names by id.
pub fn gate_names(gates: &[GateEntry]) -> BTreeMap<u32, &str> {
    gates.iter().map(|g| (g.id, g.name.as_str())).collect()
}

fn gate_name<'a>(names: &BTreeMap<u32, &'a str>, id: u32) -> &'a str {
    names.get(&id).copied().unwrap_or("?")
}

pub fn status(
    pins: &PinDir,
    interfaces: &[InterfaceView<'_>],
    backstops: &[(u64, Option<u32>)],
    gates: &[GateEntry],
    leases: &LeaseCounts,
    (capacity_v4, capacity_v6): (u32, u32),
    filter: Option<BitsSize>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pin dir: {}", pins.root().display());
    if interfaces.is_empty() {
        let _ = writeln!(out, "interfaces: none attached");
    }
    for interface in interfaces {
        let gated = match interface.state {
            XdpState::Gated(id) => format!("gated: yes (program {id}, read from the kernel)"),
            XdpState::NotGated(link) => match link.xdp_program {
                None => "gated: NO: the kernel runs no XDP program there (re-created?)".to_owned(),
                Some(id) => format!("gated: NO: the kernel runs program {id} there, not the gate's"),
            },
            XdpState::Absent => "gated: NO: the interface does not exist (gated again when it returns)".to_owned(),
        };
        let _ = writeln!(out, "interface: {}\n  mode: {}\n  {gated}", interface.name, interface.mode);
    }
    if backstops.is_empty() {
        let _ = writeln!(out, "backstop: none (only XDP guards the gated ports)");
    }
    for (id, program) in backstops {
        let program = program.map_or_else(|| "link defunct".to_owned(), |p| format!("program {p}"));
        let _ = writeln!(out, "backstop: cgroup id {id} ({program})");
    }
    let mut by_gate: BTreeMap<u32, Vec<&GateEntry>> = BTreeMap::new();
    for gate in gates {
        by_gate.entry(gate.id).or_default().push(gate);
    }
    for (id, ports) in &by_gate {
        let LeaseCount { live, closed, .. } = leases.gates.get(id).copied().unwrap_or_default();
        let list: Vec<_> = ports.iter().map(|p| format!("{}/{}", p.protocol, p.port)).collect();
        let _ = writeln!(
            out,
            "gate: {}\n  ports: {}\n  leases: {live} live, {closed} closed",
            ports[0].name,
            list.join(", ")
        );
    }
    let _ = writeln!(out, "lease maps: {} of {capacity_v4} IPv4, {} of {capacity_v6} IPv6", leases.v4, leases.v6);
    let _ = match filter {
        // Zero until the daemon's start sizes the bits: until then the gate fails closed.
        Some(BitsSize { slot_mask: 0, .. }) => {
            writeln!(out, "lease filter: not sized yet (leased sources may be dropped until the daemon's start)")
        }
        Some(size) => {
            let bytes = (u64::from(size.slot_mask) + 1) / 8;
            let read = if bytes < 1024 { format!("{bytes} bytes") } else { format!("{} KiB", bytes / 1024) };
            writeln!(out, "lease filter: {read} of bits read, sized for {} leases", size.leases)
        }
        None => writeln!(out, "lease filter: an older build's (until the daemon's next start)"),
    };
    out
}

/// The leases as a table, a row at a time (a million leases print in constant memory): the
/// column widths are fixed up front from what can appear in them.
pub struct LeaseTable<'a> {
    names: BTreeMap<u32, &'a str>,
    widths: [usize; 6],
}

const LEASE_HEADER: [&str; 6] = ["GATE", "ADDRESS", "STATE", "EXPIRES IN", "IDLE CLOSE", "CLIENT"];

/// The clients each lease was opened for, from the store's grants on this host: by gate name
/// and address (clients behind one NAT share one lease). A lease no approval opened (`gatectl
/// allow`) has none.
#[derive(Default)]
pub struct Holders(BTreeMap<(String, std::net::IpAddr), Vec<String>>);

impl Holders {
    pub fn new(grants: Vec<gate_store::Grant>) -> Self {
        let mut holders = Self::default();
        for grant in grants {
            holders.0.entry((grant.gate, grant.address)).or_default().push(grant.client);
        }
        holders
    }

    /// The clients of `gate`'s lease for `address`, comma-separated; `None` if none.
    pub fn of(&self, gate: &str, address: std::net::IpAddr) -> Option<String> {
        self.0.get(&(gate.to_owned(), address)).map(|clients| clients.join(","))
    }
}

impl<'a> LeaseTable<'a> {
    /// `ipv6`: whether any IPv6 lease may appear (its addresses need the wider column).
    pub fn new(gates: &'a [GateEntry], ipv6: bool) -> Self {
        let names = gate_names(gates);
        let gate = names.values().map(|n| n.len()).chain([LEASE_HEADER[0].len()]).max().unwrap_or_default();
        // "255.255.255.255", "ffff:...:ffff"; "expired"; "23h 59m 59s" (longer ones push on).
        let address = if ipv6 { 39 } else { 15 };
        Self { names, widths: [gate, address, 7, 11, 11, 0] }
    }

    fn line(&self, cells: [&str; 6]) -> String {
        let padded: Vec<String> = cells.iter().zip(self.widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    }

    pub fn header(&self) -> String {
        self.line(LEASE_HEADER)
    }

    pub fn row(&self, lease: &LeaseEntry, now: u64, holders: &Holders) -> String {
        let idle = if lease.lease.idle_timeout_ns == 0 {
            "-".to_owned()
        } else {
            duration(clock::until(now, lease.lease.idle_deadline_ns))
        };
        let gate = gate_name(&self.names, lease.gate);
        self.line([
            gate,
            &lease.addr.to_string(),
            state_name(lease.lease.state(now)),
            &duration(clock::until(now, lease.lease.expires_ns)),
            &idle,
            &holders.of(gate, lease.addr).unwrap_or_else(|| "-".to_owned()),
        ])
    }
}

#[derive(Serialize)]
pub struct LeaseJson<'a> {
    gate: &'a str,
    gate_id: u32,
    address: String,
    state: &'static str,
    expires_in_ms: u64,
    idle_close_in_ms: u64,
    idle_timeout_ms: u64,
    /// The client(s) an approval opened it for; null for one `gatectl allow` opened.
    client: Option<String>,
}

/// What `--json` prints for one lease.
pub fn lease_json<'a>(
    names: &BTreeMap<u32, &'a str>,
    lease: &LeaseEntry,
    now: u64,
    holders: &Holders,
) -> LeaseJson<'a> {
    let ms = |ns: u64| ns / 1_000_000;
    let gate = gate_name(names, lease.gate);
    LeaseJson {
        gate,
        client: holders.of(gate, lease.addr),
        gate_id: lease.gate,
        address: lease.addr.to_string(),
        state: state_name(lease.lease.state(now)),
        expires_in_ms: ms(lease.lease.expires_ns.saturating_sub(now)),
        idle_close_in_ms: ms(lease.lease.idle_deadline_ns.saturating_sub(now)),
        idle_timeout_ms: ms(lease.lease.idle_timeout_ns),
    }
}

/// A JSON array written as its items come (serde's `collect_seq`), so a long listing is never
/// held in memory whole.
pub struct JsonStream<I>(std::cell::RefCell<Option<I>>);

impl<I> JsonStream<I> {
    pub const fn new(items: I) -> Self {
        Self(std::cell::RefCell::new(Some(items)))
    }
}

impl<I: Iterator<Item = T>, T: Serialize> Serialize for JsonStream<I> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.borrow_mut().take() {
            Some(items) => serializer.collect_seq(items),
            None => Err(serde::ser::Error::custom("a stream is written once")),
        }
    }
}

pub fn stats_table(gates: &[GateEntry], stats: &StatsTable) -> String {
    let names = gate_names(gates);
    let mut header = vec!["GATE"];
    header.extend(Reason::ALL.iter().map(|r| r.name()));
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|(id, counts)| {
            let name = if *id == 0 { "(no gate)" } else { gate_name(&names, *id) };
            let mut row = vec![name.to_owned()];
            row.extend(counts.iter().map(u64::to_string));
            row
        })
        .collect();
    table(&header, &rows)
}

pub fn stats_json(gates: &[GateEntry], stats: &StatsTable) -> serde_json::Value {
    let names = gate_names(gates);
    let rows: Vec<_> = stats
        .iter()
        .map(|(id, counts)| {
            let mut row = serde_json::Map::new();
            let gate = if *id == 0 { serde_json::Value::Null } else { gate_name(&names, *id).into() };
            row.insert("gate".into(), gate);
            row.insert("gate_id".into(), (*id).into());
            for reason in Reason::ALL {
                row.insert(reason.name().into(), counts[reason as usize].into());
            }
            serde_json::Value::Object(row)
        })
        .collect();
    serde_json::json!({ "gates": rows })
}

/// Left-aligned columns two spaces apart.
pub fn table<R: AsRef<[String]>>(header: &[&str], rows: &[R]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row.as_ref()) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.as_ref().iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    //! Scripts read `--json`: its field names and values are pinned here, at a fixed `now`.
    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const NOW: u64 = 1_000 * SECOND;

    fn gates() -> Vec<GateEntry> {
        vec![GateEntry { id: 1, name: "vpn".into(), protocol: gate_maps::Protocol::Udp, port: 1194 }]
    }

    fn lease(idle_timeout: u64) -> LeaseEntry {
        LeaseEntry {
            gate: 1,
            addr: "198.51.100.7".parse().unwrap(),
            lease: gate_maps::common::Lease {
                expires_ns: NOW + 90 * SECOND,
                idle_deadline_ns: NOW + 30 * SECOND,
                idle_timeout_ns: idle_timeout,
            },
        }
    }

    #[test]
    fn leases_json_has_stable_field_names_and_values() {
        let gates = gates();
        let names = gate_names(&gates);
        let holders = Holders::new(vec![gate_store::Grant {
            client: "alice".into(),
            gate: "vpn".into(),
            address: "198.51.100.7".parse().unwrap(),
            expires_at: 1,
            host: "h".into(),
        }]);
        let listed = JsonStream::new([lease(60 * SECOND)].into_iter().map(|l| lease_json(&names, &l, NOW, &holders)));
        let json = serde_json::to_value(&listed).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "gate": "vpn",
                "gate_id": 1,
                "address": "198.51.100.7",
                "state": "live",
                "expires_in_ms": 90_000,
                "idle_close_in_ms": 30_000,
                "idle_timeout_ms": 60_000,
                "client": "alice",
            }])
        );
        let expired =
            serde_json::to_value(lease_json(&names, &lease(0), NOW + 100 * SECOND, &Holders::default())).unwrap();
        assert_eq!(expired["state"], "expired");
        assert_eq!(expired["client"], serde_json::Value::Null, "a lease no approval opened has no client");
        assert_eq!(expired["expires_in_ms"], 0, "a deadline in the past is 0, never negative");
    }

    #[test]
    fn stats_json_names_every_reason_and_the_gateless_row() {
        let mut stats = StatsTable::new();
        let mut counts = [0; gate_maps::common::NUM_REASONS as usize];
        counts[Reason::DroppedNoLease as usize] = 7;
        stats.insert(0, [0; gate_maps::common::NUM_REASONS as usize]);
        stats.insert(1, counts);
        let json = stats_json(&gates(), &stats);
        let rows = json["gates"].as_array().unwrap();
        assert_eq!(rows[0]["gate"], serde_json::Value::Null, "id 0: packets to no gate");
        assert_eq!((rows[1]["gate"].as_str(), rows[1]["gate_id"].as_u64()), (Some("vpn"), Some(1)));
        assert_eq!(rows[1]["dropped_no_lease"], 7);
        for reason in Reason::ALL {
            assert!(rows[1].get(reason.name()).is_some(), "{} missing", reason.name());
        }
    }

    #[test]
    fn tables_align_their_columns() {
        let gates = gates();
        for ipv6 in [false, true] {
            let table = LeaseTable::new(&gates, ipv6);
            let mut v6 = lease(60 * SECOND);
            v6.addr = "2001:db8:ffff:ffff:ffff:ffff:ffff:fff7".parse().unwrap();
            let rows = if ipv6 { vec![lease(60 * SECOND), v6] } else { vec![lease(60 * SECOND)] };
            let holders = Holders::default();
            let rows = rows.iter().map(|l| table.row(l, NOW, &holders));
            let text: String = std::iter::once(table.header()).chain(rows.clone()).collect();
            let rows: Vec<String> = rows.collect();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), rows.len() + 1, "{text}");
            assert!(lines[0].starts_with("GATE  ADDRESS"), "{text}");
            for line in &lines[1..] {
                assert_eq!(lines[0].find("STATE"), line.find("live"), "columns line up:\n{text}");
                assert_eq!(lines[0].find("EXPIRES"), line.find("1m 30s"), "columns line up:\n{text}");
            }
        }
    }
}
