//! `gate-client`: open a gate with an enrolled profile.
use std::{
    fs,
    process::ExitCode,
    time::{Duration, UNIX_EPOCH},
};

use clap::Parser as _;
use gate_client::{
    cli::{Cli, Command},
    connect::{Approved, Ask, ConnectError, connect},
};
use gate_protocol::{approval::Approval, profile::Profile};

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
        Command::Update { profile, update } => {
            return match gate_client::update::apply(&profile, &update) {
                Ok(changed) if changed.is_empty() => {
                    println!("{}: already up to date", profile.display());
                    ExitCode::SUCCESS
                }
                Ok(changed) => {
                    println!("{}: updated {}", profile.display(), changed.join(", "));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(2, &format!("{e:#}")),
            };
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
