//! The service manager's notify protocol (`sd_notify`): `READY=1` once a service serves,
//! `RELOADING=1` then `READY=1` around a reload, `STOPPING=1`, and `WATCHDOG=1` keepalives while
//! the service says its vital parts still run. Each call does nothing without `$NOTIFY_SOCKET`
//! (the service was not started by systemd with `Type=notify`, or by a test listening there).
use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    // The variable stays set: later messages (reload, watchdog, stop) use it too.
    if let Err(e) = sd_notify::notify(false, states) {
        log::warn!("notify the service manager: {e}");
    }
}

/// The service is up and serving; `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts (finish it with [`ready`]).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The service is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The watchdog interval the service manager asked for (`WatchdogSec=`), if any.
#[must_use]
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// If the service manager asked for a watchdog, pings it at half its interval for as long as
/// `alive` says the service is healthy; when it is not, says why once and stops pinging, so the
/// service manager restarts the service.
pub fn spawn_watchdog(alive: impl Fn() -> Result<(), String> + Send + 'static) -> Option<tokio::task::JoinHandle<()>> {
    let interval = watchdog_interval()?;
    log::info!("watchdog: pinging every {:?}", interval / 2);
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval / 2);
        loop {
            ticks.tick().await;
            match alive() {
                Ok(()) => send(&[NotifyState::Watchdog]),
                Err(why) => {
                    log::error!("watchdog: {why}; no more keepalives, so the service manager restarts this service");
                    return;
                }
            }
        }
    }))
}
