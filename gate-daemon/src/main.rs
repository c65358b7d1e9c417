//! `gate-daemon`: runs the gate described by a config file.
use std::process::ExitCode;

use clap::Parser as _;
use gate_daemon::{cli::Args, config::Config, daemon};

/// mimalloc, not glibc's allocator: in a reconnect storm glibc's malloc and free were ~10% of
/// the daemon's CPU across its approval threads (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    gate_config::logging::init("info");
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
