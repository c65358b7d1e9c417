//! `gate-web`: run the front described by a config file.
use std::{path::PathBuf, process::ExitCode, sync::Arc};

use gate_config::Signal;

use anyhow::Context as _;
use clap::Parser as _;
use gate_web::{
    admission::Admission,
    cli::Args,
    config::Config,
    privileges,
    ratelimit::RateLimit,
    reload,
    routes::Front,
    server::{self, Serving},
    tally::{SUMMARY_INTERVAL, Tally},
    tls,
};

fn main() -> ExitCode {
    gate_config::logging::init("info");
    let args = Args::parse();
    gate_config::run_service("gate_web", &args.config, args.check, Config::load, run)
}

/// Descriptors the front needs beyond one per connection: listeners, the daemon's socket per
/// forwarded request, the runtime, logs.
const SPARE_DESCRIPTORS: u64 = 256;

/// Raises the descriptor limit so `max_connections` (each also forwarding to the daemon) cannot
/// run out of descriptors first: the soft limit up to the hard one, and, as root, the hard one
/// too. Says so if it stays short.
fn raise_descriptor_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let needed = 2 * max_connections as u64 + SPARE_DESCRIPTORS;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    if soft >= needed {
        return;
    }
    let raised = if hard >= needed || setrlimit(Resource::RLIMIT_NOFILE, needed, needed).is_err() {
        setrlimit(Resource::RLIMIT_NOFILE, needed.min(hard), hard).map(|()| needed.min(hard))
    } else {
        Ok(needed)
    };
    match raised {
        Ok(limit) if limit >= needed => log::info!("descriptor limit raised from {soft} to {limit}"),
        _ => log::warn!(
            "the descriptor limit ({soft}, hard {hard}) is below the {needed} that limits.max_connections needs; \
             raise LimitNOFILE or lower max_connections"
        ),
    }
}

async fn run(mut config: Config, file: PathBuf) -> anyhow::Result<()> {
    raise_descriptor_limit(config.limits.max_connections);
    // Everything that needs root happens first: binding, reading the TLS key.
    let mut listeners = Vec::new();
    for address in &config.listen {
        let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("listen on {address}"))?;
        listeners.push((*address, listener));
    }
    let metrics_listener = config.metrics_listen.map(gate_config::metrics::bind).transpose()?;
    let tls = tokio_rustls::TlsAcceptor::from(tls::server_config(&config)?);
    privileges::drop_to(&config.user)?;

    let shutdown_view = Arc::new(gate_web::shutdown::ShutdownView::default());
    let tally = Arc::new(Tally::default());
    let reporter = tokio::spawn({
        let tally = Arc::clone(&tally);
        async move { tally.report(SUMMARY_INTERVAL).await }
    });
    let rate = Arc::new(RateLimit::new(config.limits.approvals_per_minute));
    let front = Arc::new(Front::new(&config, rate, Arc::clone(&shutdown_view), Arc::clone(&tally)));
    let (web_on, web_watch) = tokio::sync::watch::channel(true);
    let follower = tokio::spawn(gate_web::shutdown::follow(config.shutdown_file.clone(), shutdown_view, web_on));
    let admission = Arc::new(Admission::new(&config.limits, config.trusted_proxies.clone(), tally));
    let metrics_page = metrics_listener
        .map(|listener| {
            let admission = Arc::clone(&admission);
            gate_config::metrics::serve(listener, Arc::new(move || gate_web::metrics::render(&admission)))
        })
        .transpose()?;
    let (serving, serving_watch) = tokio::sync::watch::channel(Arc::new(Serving { tls, front }));
    let mut tasks = Vec::new();
    for (address, listener) in listeners {
        log::info!("listening on {address} (TLS), forwarding to {}", config.daemon_socket.display());
        tasks.push(tokio::spawn(server::serve(
            listener,
            serving_watch.clone(),
            Arc::clone(&admission),
            web_watch.clone(),
        )));
    }
    let mut signals = gate_config::ServiceSignals::new()?;
    log::info!("ready");
    let status = |config: &Config| format!("listening on {} address(es)", config.listen.len());
    gate_config::systemd::ready(&status(&config));
    // Pinged from the runtime that serves: a stuck runtime stops the pings.
    let watchdog = gate_config::systemd::spawn_watchdog(|| Ok(()));
    while signals.next().await == Signal::Reload {
        gate_config::systemd::reloading();
        let running = Arc::clone(&serving.borrow());
        match reload::reload(&file, &config, &running, &admission) {
            Ok((new, next)) => {
                config = new;
                serving.send_replace(Arc::new(next));
                log::info!("reloaded {}: new connections get its certificate and limits", file.display());
            }
            Err(e) => log::error!("reload refused, running on with the config in force: {e:#}"),
        }
        gate_config::systemd::ready(&status(&config));
    }
    gate_config::systemd::stopping();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    follower.abort();
    reporter.abort();
    if let Some(page) = metrics_page {
        page.abort();
    }
    for task in tasks {
        task.abort();
    }
    Ok(())
}
