//! `gate-daemon`: runs the gate described by a config file.
use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use gate_daemon::{
    config::{Config, DEFAULT_CONFIG_PATH},
    daemon,
};

/// mimalloc, not glibc's allocator: in a reconnect storm glibc's malloc and free were ~10% of
/// the daemon's CPU across its approval threads (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "The gate daemon: a dynamic XDP port gate for VPN servers")]
struct Args {
    /// Config file.
    #[arg(long, short, default_value = DEFAULT_CONFIG_PATH, env = "GATE_CONFIG")]
    config: PathBuf,
    /// Only check the config, and what a start would find on this machine (interfaces, users),
    /// then exit: 0 if a start would get past them, 2 with the reason if not.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let check = args.check;
    let load = |file: &std::path::Path| {
        let config = Config::load(file)?;
        if check {
            config.check_system(file)?;
            config.check_store(file)?;
        }
        Ok(config)
    };
    gate_config::run_service("gate_daemon", &args.config, args.check, load, daemon::run)
}
