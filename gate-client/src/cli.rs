//! gate-client's command line, here so the man page and completions (gate-docs) are made from
//! the very definition the binary parses with.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use clap::{CommandFactory as _, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gate-client", version, about = "Ask a gate host to open its gate for this client")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Apply a profile update from the gate's operator (`gatectl client update`, after a key or
    /// CA rotation): checked against the profile's own secret, then written into it.
    Update {
        #[arg(long)]
        profile: PathBuf,
        /// The update file.
        update: PathBuf,
    },
    /// End the VPN started by `connect --up`.
    Down {
        #[arg(long)]
        profile: PathBuf,
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

/// The command line's definition.
#[must_use]
pub fn command() -> clap::Command {
    Cli::command()
}
