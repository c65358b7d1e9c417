//! `gate-web`: run the front described by a config file.
use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::Parser;
use gate_web::{
    config::{Config, DEFAULT_CONFIG_PATH},
    forward::Daemon,
    privileges,
    ratelimit::RateLimit,
    routes::Front,
    server, tls,
};

#[derive(Parser)]
#[command(version, about = "The gate's public front: TLS, a static route table, rebuilt requests")]
struct Args {
    #[arg(long, short, default_value = DEFAULT_CONFIG_PATH, env = "GATE_WEB_CONFIG")]
    config: PathBuf,
    /// Only check the config and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    gate_config::run_service(&args.config, args.check, Config::load, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Everything that needs root happens first: binding, reading the TLS key.
    let mut listeners = Vec::new();
    for address in &config.listen {
        let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("listen on {address}"))?;
        listeners.push((*address, listener));
    }
    let tls = tokio_rustls::TlsAcceptor::from(tls::server_config(&config)?);
    privileges::drop_to(&config.user)?;

    let shutdown_view = Arc::new(gate_web::shutdown::ShutdownView::default());
    let front = Arc::new(Front {
        daemon: Daemon { socket: config.daemon_socket.clone(), timeout: config.limits.daemon_timeout },
        limits: config.limits.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        rate: RateLimit::new(config.limits.approvals_per_minute),
        shutdown: Arc::clone(&shutdown_view),
    });
    let (web_on, web_watch) = tokio::sync::watch::channel(true);
    let follower = tokio::spawn(gate_web::shutdown::follow(config.shutdown_file.clone(), shutdown_view, web_on));
    let connections = Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections));
    let mut tasks = Vec::new();
    for (address, listener) in listeners {
        log::info!("listening on {address} (TLS), forwarding to {}", config.daemon_socket.display());
        tasks.push(tokio::spawn(server::serve(
            listener,
            tls.clone(),
            Arc::clone(&front),
            Arc::clone(&connections),
            web_watch.clone(),
        )));
    }
    let mut signals = gate_config::StopSignals::new()?;
    log::info!("ready");
    signals.stopped().await;
    follower.abort();
    for task in tasks {
        task.abort();
    }
    Ok(())
}
