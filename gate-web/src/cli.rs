//! gate-web's command line, here so the man page and completions (gate-docs) are made from the
//! very definition the binary parses with.
use std::path::PathBuf;

use clap::{CommandFactory as _, Parser};

use crate::config::DEFAULT_CONFIG_PATH;

#[derive(Parser)]
#[command(name = "gate-web", version, about = "The gate's public front: TLS, a static route table, rebuilt requests")]
pub struct Args {
    /// Config file (see gate-web.toml(5)).
    #[arg(long, short, default_value = DEFAULT_CONFIG_PATH, env = "GATE_WEB_CONFIG")]
    pub config: PathBuf,
    /// Only check the config and exit.
    #[arg(long)]
    pub check: bool,
}

/// The command line's definition.
#[must_use]
pub fn command() -> clap::Command {
    Args::command()
}
