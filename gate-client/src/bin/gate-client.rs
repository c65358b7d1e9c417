//! `gate-client`: open a gate with an enrolled profile.
use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, UNIX_EPOCH},
};

use clap::{Parser, Subcommand};
use gate_client::connect::{Approved, Ask, ConnectError, connect};
use gate_protocol::{approval::Approval, profile::Profile};

#[derive(Parser)]
#[command(version, about = "Ask a gate host to open its gate for this client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send an approval request and print what was opened and which host to use.
    Connect {
        /// The profile from `gatectl client add`.
        #[arg(long)]
        profile: PathBuf,
        /// This client's public IPv4 address, if known.
        #[arg(long)]
        ipv4: Option<Ipv4Addr>,
        /// This client's public IPv6 address, if known.
        #[arg(long)]
        ipv6: Option<Ipv6Addr>,
        /// Send to this server instead of the profile's.
        #[arg(long)]
        server: Option<String>,
        /// Learn this client's public addresses from this HTTPS server (repeatable; default:
        /// the server itself, over each address it resolves to).
        #[arg(long = "discover-via")]
        discover_via: Vec<String>,
        /// Do not ask for this client's addresses; open only those given and the observed source.
        #[arg(long)]
        no_discover: bool,
        /// Print the verified approval as JSON.
        #[arg(long)]
        json: bool,
        /// Then start OpenVPN against the host that approved, logging in with the approval's
        /// one-time session token; returns once the tunnel is up.
        #[arg(long)]
        up: bool,
        /// Where `--up` keeps its files (default /run/gate-client/<profile name>).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// End the VPN started by `connect --up`.
    Down {
        #[arg(long)]
        profile: PathBuf,
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

fn load(path: &std::path::Path) -> Result<Profile, ExitCode> {
    let text = fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| fail(2, &format!("read {}: {e}", path.display())))?;
    Profile::from_json(&text).map_err(|e| fail(2, &format!("{}: not a usable profile: {e}", path.display())))
}

fn main() -> ExitCode {
    let (profile, ipv4, ipv6, server, discover_via, no_discover, json, up, state_dir) = match Cli::parse().command {
        Command::Connect { profile, ipv4, ipv6, server, discover_via, no_discover, json, up, state_dir } => {
            (profile, ipv4, ipv6, server, discover_via, no_discover, json, up, state_dir)
        }
        Command::Down { profile, state_dir } => {
            let profile = match load(&profile) {
                Ok(p) => p,
                Err(code) => return code,
            };
            return match gate_client::vpn::down(&gate_client::vpn::state_dir(&profile, state_dir)) {
                Ok(true) => {
                    println!("VPN of {} stopped", profile.name);
                    ExitCode::SUCCESS
                }
                Ok(false) => fail(1, "no VPN running for this profile"),
                Err(e) => fail(1, &format!("{e:#}")),
            };
        }
    };
    let text = match fs::read_to_string(&profile) {
        Ok(text) => zeroize::Zeroizing::new(text),
        Err(e) => return fail(2, &format!("read {}: {e}", profile.display())),
    };
    let profile = match Profile::from_json(&text) {
        Ok(p) => p,
        Err(e) => return fail(2, &format!("{}: not a usable profile: {e}", profile_path_hint(&profile))),
    };
    match connect(&profile, &Ask { ipv4, ipv6, server, discover_via, no_discover }) {
        Ok(Approved { approval, server: approving }) => {
            if up {
                // The VPN server of the host that approved: its lease is there.
                let host = match gate_client::transport::Server::parse(&approving) {
                    Ok(gate_client::transport::Server::Https { host, .. }) => host,
                    _ => String::new(),
                };
                let dir = gate_client::vpn::state_dir(&profile, state_dir);
                if let Err(e) = gate_client::vpn::up(&profile, &approval, &host, &dir) {
                    return fail(1, &format!("{e:#}"));
                }
                eprintln!("VPN up (state in {})", dir.display());
            }
            if json {
                match serde_json::to_string_pretty(&approval) {
                    Ok(text) => println!("{text}"),
                    Err(e) => return fail(1, &e.to_string()),
                }
            } else {
                print!("{}", describe(&approval));
            }
            ExitCode::SUCCESS
        }
        Err(e @ ConnectError::Refused) => fail(1, &e.to_string()),
        Err(e) => fail(1, &e.to_string()),
    }
}

fn profile_path_hint(path: &std::path::Path) -> String {
    path.display().to_string()
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("gate-client: {message}");
    ExitCode::from(code)
}

fn time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

fn describe(a: &Approval) -> String {
    let mut out = format!("approved: gate {}\n", a.gate);
    let host: Vec<String> =
        a.host.ipv4.map(|v| v.to_string()).into_iter().chain(a.host.ipv6.map(|v| v.to_string())).collect();
    out.push_str(&format!(
        "  host: {}\n",
        if host.is_empty() { "(not configured: use the address you reached)".to_owned() } else { host.join(", ") }
    ));
    for opened in &a.opened {
        out.push_str(&format!("  opened: {} until {}\n", opened.address, time(opened.expires_at)));
    }
    out.push_str(&format!(
        "  connect by: {} (then open while traffic flows at least every {}s)\n",
        time(a.connect_by),
        a.idle_timeout_secs
    ));
    out.push_str(&format!("  session token valid until {}\n", time(a.session_token_expires_at)));
    out
}
