//! `gatectl trace ADDRESS`: every verdict XDP gives to packets from one source, live: the time,
//! the interface, the gate, the protocol and port, the reason. The switch is on while this runs
//! and off when it ends (q, Ctrl-C, `--for`, `--count`); were gatectl killed, the program stops
//! tracing by itself within seconds.
use std::{
    collections::BTreeMap,
    io::Write as _,
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use gate_maps::{GateState, PinDir, clock, common::Reason, common::TraceEvent, trace::Tracer};

use crate::terminal::{RawTerminal, quit_within};

/// How often the buffer is read.
const POLL: Duration = Duration::from_millis(100);

/// One traced verdict as printed with `--json`.
#[derive(serde::Serialize)]
struct Traced<'a> {
    time: String,
    interface: String,
    gate: Option<&'a str>,
    protocol: Option<&'static str>,
    port: Option<u16>,
    reason: &'static str,
    dropped: bool,
}

/// The interface names by index, in this network namespace.
fn interfaces() -> BTreeMap<u32, String> {
    nix::net::if_::if_nameindex()
        .map(|list| list.iter().map(|i| (i.index(), i.name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default()
}

/// The reason of a number the program wrote.
fn reason(number: u32) -> Option<Reason> {
    Reason::ALL.into_iter().find(|r| *r as u32 == number)
}

fn describe<'a>(
    event: &TraceEvent,
    gates: &'a BTreeMap<u32, String>,
    interfaces: &mut BTreeMap<u32, String>,
) -> Traced<'a> {
    // The coarse clock's time, as wall time: now less how long ago.
    let ago = Duration::from_nanos(clock::now_ns().saturating_sub(event.at_ns));
    let time = humantime::format_rfc3339_millis(SystemTime::now() - ago).to_string();
    if !interfaces.contains_key(&event.ifindex) {
        *interfaces = self::interfaces();
    }
    let interface = interfaces.get(&event.ifindex).cloned().unwrap_or_else(|| format!("ifindex {}", event.ifindex));
    let protocol = match event.protocol {
        6 => Some("tcp"),
        17 => Some("udp"),
        _ => None,
    };
    let reason = reason(event.reason);
    Traced {
        time,
        interface,
        gate: gates.get(&event.gate).map(String::as_str),
        protocol,
        port: protocol.map(|_| u16::from_be_bytes(event.port)),
        reason: reason.map_or("unknown", Reason::name),
        dropped: reason.is_some_and(Reason::drops),
    }
}

fn line(traced: &Traced<'_>) -> String {
    let to = match (traced.protocol, traced.port) {
        (Some(protocol), Some(port)) => format!("{protocol}/{port}"),
        _ => "no port".to_owned(),
    };
    let verdict = if traced.dropped { "DROP" } else { "pass" };
    format!(
        "{}  {}  {}  {to}  {verdict}  {}",
        traced.time,
        traced.interface,
        traced.gate.unwrap_or("(no gate)"),
        traced.reason
    )
}

/// Runs `gatectl trace`.
///
/// # Errors
/// No gate, another trace, or the maps cannot be read.
pub fn run(
    pins: &PinDir,
    source: IpAddr,
    within: Option<Duration>,
    count: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let gates: BTreeMap<u32, String> =
        GateState::open(pins.root())?.gates()?.into_iter().map(|g| (g.id, g.name)).collect();
    let mut tracer = Tracer::start(pins, source)?;
    let interactive = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let _raw = interactive.then(RawTerminal::enter).transpose()?;
    let newline = if interactive { "\r\n" } else { "\n" };
    let quits = match (within, count) {
        (Some(d), _) => format!("for {}", humantime::format_duration(d)),
        (None, Some(n)) => format!("for {n} packets"),
        (None, None) => "q quits".to_owned(),
    };
    eprint!("tracing the verdicts on packets from {} ({quits}){newline}", gate_maps::lease_address(source));
    let started = Instant::now();
    let mut interfaces = interfaces();
    let (mut shown, mut watching, mut alive_at) = (0_u64, true, Instant::now());
    loop {
        for event in tracer.events() {
            let traced = describe(&event, &gates, &mut interfaces);
            let text = if json { serde_json::to_string(&traced)? } else { line(&traced) };
            let mut out = std::io::stdout().lock();
            write!(out, "{text}{newline}")?;
            out.flush()?;
            shown += 1;
            if count.is_some_and(|n| shown >= n) {
                return Ok(());
            }
        }
        if within.is_some_and(|d| started.elapsed() >= d) || quit_within(POLL, &mut watching)? {
            return Ok(());
        }
        if alive_at.elapsed() >= Duration::from_secs(1) {
            tracer.keep_alive()?;
            alive_at = Instant::now();
        }
    }
}
