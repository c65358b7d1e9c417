//! `gatectl`: the operator's view of the gate, read from and written to the pinned maps directly,
//! so it works with the daemon stopped or dead. A library so that its command line's definition
//! ([`command`]) makes the man pages and completions (gate-docs); the binary calls [`main`].
mod audit;
mod clients;
mod cluster;
mod format;
mod keys;
mod notify;
mod paths;
mod store;
mod terminal;
mod top;
mod trace;

use std::{io::Write as _, net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::{CommandFactory as _, Parser, Subcommand};
use gate_maps::{GateState, LeasePolicy, PinDir, clock, lease::ttl_lease, pins::pinned_program};

#[derive(Parser)]
#[command(name = "gatectl", version, about = "Inspect and change the gate (reads the pinned BPF maps directly)")]
struct Cli {
    /// The daemon's config, read for the paths below [default: /etc/gate/gate.toml, if it
    /// exists; else the daemon's defaults].
    #[arg(long, global = true, env = "GATE_CONFIG")]
    config: Option<PathBuf>,
    /// The gate's bpffs pin directory [default: the config's `pin_dir`].
    #[arg(long, global = true, env = "GATE_PIN_DIR")]
    pin_dir: Option<PathBuf>,
    /// The store of enrolled clients: an SQLite file, or a cluster's `postgres://` URL
    /// [default: the config's `approval.store`]. Only `client add` makes an SQLite store, and
    /// only on the path the config names.
    #[arg(long, global = true, env = "GATE_STORE", value_parser = parse_store)]
    store: Option<gate_store::StoreLocation>,
    /// The PostgreSQL store's password, in a file only its owner may read [default: the
    /// config's `approval.store_password_file`].
    #[arg(long, global = true, env = "GATE_STORE_PASSWORD_FILE")]
    store_password_file: Option<PathBuf>,
    /// The CA that signed the PostgreSQL server's certificate (TLS) [default: the config's
    /// `approval.store_ca_file`, else the system's roots].
    #[arg(long, global = true, env = "GATE_STORE_CA_FILE")]
    store_ca_file: Option<PathBuf>,
    /// The store key its secrets are sealed with [default: the config's `approval.store_key_file`].
    #[arg(long, global = true, env = "GATE_STORE_KEY_FILE")]
    store_key_file: Option<PathBuf>,
    /// A store key being rotated out [default: the config's `approval.store_previous_key_file`].
    #[arg(long, global = true, env = "GATE_STORE_PREVIOUS_KEY_FILE")]
    store_previous_key_file: Option<PathBuf>,
    /// Where the daemon keeps its OpenVPN servers' state [default: the config's `vpn.run_dir`].
    #[arg(long, global = true, env = "GATE_VPN_RUN_DIR")]
    vpn_run_dir: Option<PathBuf>,
    /// This host's name in the store [default: the config's `approval.host`, else the hostname].
    #[arg(long, global = true, env = "GATE_HOST")]
    host: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Interfaces (as the kernel sees them), backstop, gates and lease counts (the default).
    /// Exits non-zero when a listed interface is not gated. Run it in the daemon's network
    /// namespace: interfaces are looked up there.
    Status,
    /// Every lease with its deadlines.
    Leases {
        /// Stable JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Open a gate for an address, or for every address of a list, for a fixed time.
    Allow {
        /// Source address to let through (IPv4 or IPv6).
        #[arg(required_unless_present = "from", conflicts_with = "from")]
        addr: Option<IpAddr>,
        /// Open the gate for every address in FILE instead (one a line; blank lines and text
        /// after `#` are skipped; `-` reads stdin): all or none, in one hold of the lock.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// Gate name, as in the daemon's config.
        #[arg(long)]
        gate: String,
        /// How long at most, e.g. 90s, 5m, 1h.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Close earlier if no packet from the address passes for this long (traffic keeps the
        /// lease open, as for an approved VPN client). Without it the lease lasts the whole TTL.
        #[arg(long, value_parser = humantime::parse_duration)]
        idle: Option<Duration>,
    },
    /// Close an address's leases, on one gate or all.
    Revoke {
        addr: IpAddr,
        #[arg(long)]
        gate: Option<String>,
    },
    /// Verdict counters per gate and reason.
    Stats {
        /// Stable JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The gate live, per gate: packets passed and dropped a second by reason, leases,
    /// approvals a second; refreshed every interval in 80 columns; q quits. Approvals come from
    /// the daemon's socket (`-` while it does not answer), the rest from the pinned maps.
    Top {
        /// Take two readings an interval apart, print the rates once and exit.
        #[arg(long)]
        once: bool,
        /// With --once: stable JSON for scripts.
        #[arg(long, requires = "once")]
        json: bool,
        /// Time between readings, e.g. 1s, 500ms.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        interval: Duration,
    },
    /// Every verdict XDP gives to packets from one source, live (time, interface, gate, port,
    /// reason): why is this client dropped? On while this runs, off when it ends (q quits).
    /// Run it in the daemon's network namespace: interfaces are named there.
    Trace {
        /// The source address (IPv4 or IPv6).
        address: IpAddr,
        /// Stop after this long, e.g. 30s.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        within: Option<Duration>,
        /// Stop after this many packets.
        #[arg(long)]
        count: Option<u64>,
        /// One JSON object a line, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The audit trail: leases opened and closed (by approvals, gatectl, revocations), enrollments,
    /// revocations, shutdown changes, notifications accepted; oldest first.
    Audit {
        /// Only events since then: a duration back (2h, 7d) or a time (2026-12-01T10:00:00Z).
        #[arg(long, value_parser = audit::parse_since)]
        since: Option<u64>,
        /// Only this client's events.
        #[arg(long)]
        client: Option<String>,
        /// Only events of this address.
        #[arg(long)]
        address: Option<IpAddr>,
        /// At most this many, the newest.
        #[arg(long, default_value_t = 1000)]
        limit: u64,
        /// Stable JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Enrolled clients: add, list, show, revoke.
    #[command(subcommand)]
    Client(clients::ClientCommand),
    /// The store's keys: make a store key, seal every secret with the current one.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// The server's box key: show, rotate (the old one stays accepted), retire the old one.
    #[command(subcommand)]
    ServerKey(keys::ServerKeyCommand),
    /// The VPN's CA: show, rotate (a next CA beside it), finish (the next CA replaces it).
    #[command(subcommand)]
    Ca(keys::CaCommand),
    /// The hosts sharing the store and the database: status, forget.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Self-shutdown states: show, set by hand, clear.
    #[command(subcommand)]
    Shutdown(notify::ShutdownCommand),
    /// Run one's own notification service: keygen, sign.
    #[command(subcommand)]
    Notify(notify::NotifyCommand),
    /// Remove the gate: detach from every interface and delete its maps. Gated ports open to all.
    /// Refused while a gate-daemon runs on the pin dir.
    Teardown {
        /// Tear down even under a running daemon (a hung one, say). It notices and stops with
        /// an error, so a supervisor that restarts it puts the gate back.
        #[arg(long)]
        force: bool,
    },
}

/// The command line's definition.
#[must_use]
pub fn command() -> clap::Command {
    Cli::command()
}

/// gatectl: parses the command line, runs it, says what failed.
#[must_use]
pub fn main() -> ExitCode {
    gate_config::logging::init("warn");
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatectl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn parse_store(text: &str) -> Result<gate_store::StoreLocation, String> {
    gate_store::StoreLocation::parse(text).map_err(|e| e.to_string())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let paths = paths::Paths::resolve(paths::Flags {
        config: cli.config,
        pin_dir: cli.pin_dir,
        store: cli.store,
        store_password_file: cli.store_password_file,
        store_ca_file: cli.store_ca_file,
        store_key_file: cli.store_key_file,
        store_previous_key_file: cli.store_previous_key_file,
        vpn_run_dir: cli.vpn_run_dir,
        host: cli.host,
    })?;
    let pins = PinDir::new(&paths.pin_dir);
    let command = cli.command.unwrap_or(Command::Status);
    // Everything but an offline notice's keys and signatures reads root's maps or store.
    if !matches!(command, Command::Notify(_)) && !nix::unistd::geteuid().is_root() {
        bail!("this needs root: the gate's maps and its store are root's (run gatectl as root)");
    }
    match command {
        Command::Status => {
            let not_gated = status(&pins)?;
            print!("{}", vpn_status(&paths.vpn_run_dir));
            if paths.store.location.exists() {
                match paths.store.open() {
                    Ok(store) => print!("\n{}", notify::describe(&store, &paths.host)?),
                    Err(e) => print!("\nstore: {e:#}\n"),
                }
            }
            if not_gated > 0 {
                bail!("{not_gated} listed interface(s) NOT GATED: packets to gated ports pass XDP there");
            }
            Ok(())
        }
        Command::Leases { json } => {
            let state = GateState::open(pins.root())?;
            let gates = state.gates()?;
            let now = clock::now_ns();
            let holders = lease_holders(&paths);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if json {
                let names = format::gate_names(&gates);
                let failed = std::cell::RefCell::new(None);
                let leases = state
                    .lease_chunks()?
                    .map_while(|chunk| chunk.map_err(|e| failed.borrow_mut().replace(e)).ok())
                    .flatten()
                    .map(|lease| format::lease_json(&names, &lease, now, &holders));
                serde_json::to_writer_pretty(&mut out, &format::JsonStream::new(leases))?;
                writeln!(out)?;
                if let Some(e) = failed.into_inner() {
                    return Err(e.into());
                }
            } else {
                let table = format::LeaseTable::new(&gates, state.has_v6_leases());
                let mut any = false;
                for chunk in state.lease_chunks()? {
                    for lease in chunk? {
                        if !any {
                            out.write_all(table.header().as_bytes())?;
                            any = true;
                        }
                        out.write_all(table.row(&lease, now, &holders).as_bytes())?;
                    }
                }
                if !any {
                    writeln!(out, "no leases")?;
                }
            }
            out.flush()?;
            Ok(())
        }
        Command::Allow { addr: None, from: Some(list), gate, ttl, idle } => {
            let addrs = read_allow_list(&list)?;
            let lease = lease_for(clock::now_ns(), ttl, idle)?;
            let mut state = GateState::open(pins.root())?;
            let id = state.gate_id(&gate)?;
            let replaced = state.grant_all(id, &addrs, lease)?;
            let opened = allow_events(&paths, &gate, &addrs, ttl, idle);
            audit::record(&paths, &opened);
            let idle = idle_note(idle);
            println!(
                "opened {gate} for {} addresses from {} for {}{idle} ({replaced} of them replaced a lease)",
                addrs.len(),
                list.display(),
                format::duration(ttl)
            );
            Ok(())
        }
        Command::Allow { addr, from: _, gate, ttl, idle } => {
            let addr = addr.context("give an address or --from FILE")?;
            refuse_unusable(addr)?;
            let now = clock::now_ns();
            let lease = lease_for(now, ttl, idle)?;
            let mut state = GateState::open(pins.root())?;
            let id = state.gate_id(&gate)?;
            let kept = gate_maps::lease_address(addr);
            let before = state.lease(id, addr)?;
            state.grant(id, addr, lease)?;
            audit::record(&paths, &allow_events(&paths, &gate, &[kept], ttl, idle));
            if let Some(before) = before
                && before.closes_at_ns() > lease.closes_at_ns()
            {
                eprintln!(
                    "gatectl: note: this replaced a lease of {addr} on {gate} that had {} left; it now has {}",
                    format::duration(clock::until(now, before.closes_at_ns())),
                    format::duration(clock::until(now, lease.closes_at_ns()))
                );
            }
            let idle = idle_note(idle);
            let mapped = if kept == addr { String::new() } else { format!(" (as the IPv4 host {kept})") };
            println!("opened {gate} for {addr}{mapped} for {}{idle}", format::duration(ttl));
            Ok(())
        }
        Command::Revoke { addr, gate } => {
            let mut state = GateState::open(pins.root())?;
            let id = gate.as_deref().map(|g| state.gate_id(g)).transpose()?;
            // The gates it has a lease on, read first: the trail names each one closed.
            let mut held = Vec::new();
            for entry in state.gates()? {
                if id.is_none_or(|id| id == entry.id)
                    && !held.contains(&entry.name)
                    && state.lease(entry.id, addr)?.is_some()
                {
                    held.push(entry.name);
                }
            }
            let removed = state.revoke(addr, id)?;
            let operator = audit::operator();
            let closed: Vec<gate_store::AuditEvent> = held
                .iter()
                .map(|gate| {
                    gate_store::AuditEvent::new(
                        clients::unix_now(),
                        &paths.host,
                        gate_store::AuditKind::LeaseClosed,
                        "revoke",
                        &operator,
                    )
                    .lease(gate, gate_maps::lease_address(addr))
                })
                .collect();
            audit::record(&paths, &closed);
            let scope = gate.unwrap_or_else(|| "any gate".to_owned());
            if removed == 0 {
                bail!("{addr} had no lease on {scope}");
            }
            println!("closed {removed} lease(s) of {addr} on {scope}");
            Ok(())
        }
        Command::Stats { json } => {
            let state = GateState::open(pins.root())?;
            let gates = state.gates()?;
            let stats = state.stats()?;
            let backstop = state.backstop_stats()?;
            if json {
                let mut out = format::stats_json(&gates, &stats);
                out["backstop"] =
                    backstop.map_or(serde_json::Value::Null, |b| format::stats_json(&gates, &b)["gates"].take());
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("xdp:\n{}", format::stats_table(&gates, &stats));
                if let Some(backstop) = backstop {
                    print!("\nbackstop:\n{}", format::stats_table(&gates, &backstop));
                }
            }
            Ok(())
        }
        Command::Top { once, json, interval } => {
            top::run(pins.root(), &paths.socket, &paths.host, interval, once, json)
        }
        Command::Trace { address, within, count, json } => trace::run(&pins, address, within, count, json),
        Command::Audit { since, client, address, limit, json } => {
            audit::show(&paths, since, client, address, limit, json)
        }
        Command::Client(command) => clients::run(command, &paths, &pins),
        Command::Store(command) => store::run(command, &paths),
        Command::ServerKey(command) => keys::server_key(command, &paths),
        Command::Ca(command) => keys::ca(command, &paths),
        Command::Cluster(command) => cluster::run(command, &paths.store.open()?),
        Command::Shutdown(command) => notify::shutdown(command, &paths.store.open()?, &paths.host, &audit::operator()),
        Command::Notify(command) => notify::notify(command),
        Command::Teardown { force } => teardown(&pins, force),
    }
}

/// Which client each lease is for, from the store's grants on this host; none (and a note)
/// without a readable store.
fn lease_holders(paths: &paths::Paths) -> format::Holders {
    if !paths.store.location.exists() {
        return format::Holders::default();
    }
    match paths.store.open().and_then(|store| Ok(store.live_grants(&paths.host, clients::unix_now())?)) {
        Ok(grants) => format::Holders::new(grants),
        Err(e) => {
            eprintln!("gatectl: note: the clients of the leases are not shown: {e:#}");
            format::Holders::default()
        }
    }
}

/// The trail's rows for `allow` opening `gate` for `addrs`.
fn allow_events(
    paths: &paths::Paths,
    gate: &str,
    addrs: &[IpAddr],
    ttl: Duration,
    idle: Option<Duration>,
) -> Vec<gate_store::AuditEvent> {
    let (now, operator) = (clients::unix_now(), audit::operator());
    let detail = format!("for {}{}", format::duration(ttl), idle_note(idle));
    addrs
        .iter()
        .map(|&addr| {
            gate_store::AuditEvent::new(now, &paths.host, gate_store::AuditKind::LeaseOpened, "allow", &operator)
                .lease(gate, gate_maps::lease_address(addr))
                .detail(detail.clone())
        })
        .collect()
}

/// What `allow` says of `--idle`: nothing without it.
fn idle_note(idle: Option<Duration>) -> String {
    idle.map(|i| format!(", closing after {} without traffic", format::duration(i))).unwrap_or_default()
}

/// The lease `allow` writes at `now`: the whole `ttl`, or closing after `idle` without traffic.
fn lease_for(now: u64, ttl: Duration, idle: Option<Duration>) -> anyhow::Result<gate_maps::common::Lease> {
    if ttl.is_zero() {
        bail!("--ttl must be longer than zero");
    }
    Ok(match idle {
        Some(idle) if idle.is_zero() => bail!("--idle must be longer than zero"),
        Some(idle) => {
            LeasePolicy { connect_window: idle.min(ttl), idle_timeout: idle, max_lifetime: ttl }.lease_at(now)
        }
        None => ttl_lease(now, ttl),
    })
}

/// Lines of an allow list `allow --from` reports at most, so a wrong file does not flood the
/// terminal.
const LIST_ERRORS_SHOWN: usize = 5;

/// The addresses of an allow list (`-`: stdin), each checked as `allow` checks one. Any bad
/// line refuses the whole list, naming the lines.
fn read_allow_list(path: &std::path::Path) -> anyhow::Result<Vec<IpAddr>> {
    let text = if path == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("read the allow list from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read the allow list {}", path.display()))?
    };
    let mut addrs = Vec::new();
    let mut errors = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        let checked = entry
            .parse::<IpAddr>()
            .map_err(|_| anyhow::anyhow!("{entry:?} is not an IPv4 or IPv6 address"))
            .and_then(|addr| refuse_unusable(addr).map(|()| addr));
        match checked {
            Ok(addr) => addrs.push(addr),
            Err(e) => errors.push(format!("line {}: {e}", number + 1)),
        }
    }
    if !errors.is_empty() {
        let more = errors.len().saturating_sub(LIST_ERRORS_SHOWN);
        let more = if more > 0 { format!("\n  ... and {more} more") } else { String::new() };
        bail!(
            "{}: {} bad line(s), nothing opened:\n  {}{more}",
            path.display(),
            errors.len(),
            errors[..errors.len().min(LIST_ERRORS_SHOWN)].join("\n  ")
        );
    }
    if addrs.is_empty() {
        bail!("{}: no addresses in the list, nothing opened", path.display());
    }
    Ok(addrs)
}

/// Addresses no packet comes from, and those an approval never opens (loopback and link-local
/// reach no gated interface from outside: a lease for them is a typo).
fn refuse_unusable(addr: IpAddr) -> anyhow::Result<()> {
    if addr.is_unspecified() || addr.is_multicast() {
        bail!("{addr} cannot be the source of a packet; give a unicast address");
    }
    if let IpAddr::V4(v4) = addr
        && v4.is_broadcast()
    {
        bail!("{addr} cannot be the source of a packet; give a unicast address");
    }
    if !gate_maps::lease::openable(addr) {
        bail!("{addr} is an address approvals never open (loopback or link-local); give the client's public address");
    }
    Ok(())
}

/// Prints the status; `Ok(n)` with the number of listed interfaces that are not gated.
fn status(pins: &PinDir) -> anyhow::Result<usize> {
    let attachments = pins.attachments().with_context(|| format!("read {}", pins.links_dir().display()))?;
    let state = GateState::open(pins.root())?;
    let gates = state.gates()?;
    let leases = state.lease_counts(clock::now_ns())?;
    let mut interfaces = Vec::new();
    for attachment in &attachments {
        let state = gate_maps::netlink::xdp_state(&attachment.interface, pinned_program(&attachment.path))
            .with_context(|| format!("ask the kernel about {}", attachment.interface))?;
        interfaces.push(format::InterfaceView { name: &attachment.interface, mode: attachment.mode, state });
    }
    let backstops: Vec<(u64, Option<u32>)> = pins
        .backstops()
        .with_context(|| format!("read {}", pins.backstop_dir().display()))?
        .into_iter()
        .map(|(id, path)| (id, pinned_program(&path)))
        .collect();
    let filter = state.filter_bits_size()?;
    print!("{}", format::status(pins, &interfaces, &backstops, &gates, &leases, state.capacity(), filter));
    Ok(interfaces.iter().filter(|i| !matches!(i.state, gate_maps::netlink::XdpState::Gated(_))).count())
}

/// The OpenVPN servers, from the status files the daemon keeps; nothing if there are none.
fn vpn_status(run_dir: &std::path::Path) -> String {
    let servers = gate_daemon::openvpn::supervisor::statuses(run_dir);
    if servers.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nopenvpn:\n");
    for s in servers {
        let pid = s.pid.map(|p| format!("pid {p}  ")).unwrap_or_default();
        let error = s.error.as_deref().map(|e| format!("  ({e})")).unwrap_or_default();
        let clients = &s.clients;
        out.push_str(&format!(
            "  {}  {}/{}  {}  {pid}as {}  {} client{}{}{}\n",
            s.name,
            s.protocol,
            s.port,
            s.state,
            s.user,
            clients.len(),
            if clients.len() == 1 { "" } else { "s" },
            if clients.is_empty() { String::new() } else { format!(" ({})", clients.join(", ")) },
            error,
        ));
    }
    out
}

fn teardown(pins: &PinDir, force: bool) -> anyhow::Result<()> {
    let attachments = pins.attachments().with_context(|| format!("read {}", pins.links_dir().display()))?;
    if attachments.is_empty() && !pins.root().exists() {
        bail!("no gate at {}", pins.root().display());
    }
    // A running daemon owns the gate: removing it under the daemon would open the ports while
    // it keeps serving. Held until the end, so no daemon starts half-way.
    let _lock = match pins.links_dir().exists().then(|| pins.lock_for_daemon()) {
        None => None,
        Some(Ok(lock)) => Some(lock),
        Some(Err(gate_maps::LockError::Held { pid, .. })) => {
            let pid = pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
            if !force {
                bail!("a gate-daemon (pid {pid}) runs on {}; stop it first, then tear down", pins.root().display());
            }
            eprintln!(
                "gatectl: --force: tearing down under the running gate-daemon (pid {pid}); every gated port opens \
                 to everyone, and the daemon stops with an error when it notices (a supervisor's restart gates \
                 them again)"
            );
            None
        }
        Some(Err(other)) => return Err(other.into()),
    };
    for attachment in &attachments {
        std::fs::remove_file(&attachment.path).with_context(|| format!("unpin {}", attachment.path.display()))?;
        println!("detached from {} ({})", attachment.interface, attachment.mode);
    }
    std::fs::remove_dir_all(pins.root()).with_context(|| format!("remove {}", pins.root().display()))?;
    println!("removed {}; gated ports are now open to everyone", pins.root().display());
    Ok(())
}
