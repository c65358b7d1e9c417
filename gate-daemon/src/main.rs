//! `gate-daemon`: runs the gate described by a config file.
use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use gate_daemon::{
    config::{Config, DEFAULT_CONFIG_PATH},
    daemon,
};

#[derive(Parser)]
#[command(version, about = "The gate daemon: a dynamic XDP port gate for VPN servers")]
struct Args {
    /// Config file.
    #[arg(long, short, default_value = DEFAULT_CONFIG_PATH, env = "GATE_CONFIG")]
    config: PathBuf,
    /// Only check the config and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("config {} is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            log::error!("start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
