//! gate-daemon's command line, here so the man page and completions (gate-docs) are made from
//! the very definition the binary parses with.
use std::path::PathBuf;

use clap::{CommandFactory as _, Parser};

use crate::config::DEFAULT_CONFIG_PATH;

#[derive(Parser)]
#[command(name = "gate-daemon", version, about = "The gate daemon: a dynamic XDP port gate for VPN servers")]
pub struct Args {
    /// Config file (see gate.toml(5)).
    #[arg(long, short, default_value = DEFAULT_CONFIG_PATH, env = "GATE_CONFIG")]
    pub config: PathBuf,
    /// Only check the config, and what a start would find on this machine (interfaces, users),
    /// then exit: 0 if a start would get past them, 2 with the reason if not.
    #[arg(long)]
    pub check: bool,
}

/// The command line's definition.
#[must_use]
pub fn command() -> clap::Command {
    Args::command()
}
