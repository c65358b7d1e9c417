//! Self-shutdown: poll the notification URL, keep what a valid notification says, merge it with
//! the operator's settings (the operator wins), publish the states in force for the front, and
//! hand them to the parts of the daemon through a watch channel. A notification that fails any
//! check is logged and ignored; a network error changes nothing.
use std::{path::PathBuf, sync::Arc, time::Duration};

use gate_client::transport::Server;
use gate_notify::Published;
use tokio::sync::watch;

use crate::{
    approval::{ApprovalService, service::unix_now},
    config::NotificationsConfig,
};

/// How often the store is read for the states in force (operator changes show within this).
const RECHECK: Duration = Duration::from_secs(1);

/// The daemon's version, as sent and as notifications must name it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Splits `scheme://authority/path` into a server and a path (with the version query added).
fn target(url: &str) -> Option<(Server, String)> {
    let scheme_end = url.find("://")? + 3;
    let path_start = url[scheme_end..].find('/').map_or(url.len(), |i| scheme_end + i);
    let server = Server::parse(&url[..path_start]).ok()?;
    let path = if path_start == url.len() { "/" } else { &url[path_start..] };
    let joiner = if path.contains('?') { '&' } else { '?' };
    Some((server, format!("{path}{joiner}version={VERSION}")))
}

/// Fetches and checks one notification; records it if it is good.
fn poll_once(config: &NotificationsConfig, service: &ApprovalService) {
    let Some((server, path)) = target(&config.url) else {
        log::warn!("notifications: cannot use URL {:?}", config.url);
        return;
    };
    let Ok(key) = gate_notify::decode_verifying_key(&config.public_key) else { return };
    let response = match server.request("GET", &path, &[], b"") {
        Ok(response) if response.status == 200 => response,
        Ok(response) => {
            log::warn!("notifications: {} answered {}; states unchanged", config.url, response.status);
            return;
        }
        Err(e) => {
            log::warn!("notifications: {e}; states unchanged");
            return;
        }
    };
    let host = &service.settings().host;
    let mut store = service.store();
    let last = store.last_notification_serial(host).unwrap_or(u64::MAX);
    match gate_notify::verify(&response.body, &key, VERSION, last) {
        Ok(notification) => {
            log::warn!(
                "notifications: accepted serial {}: www {:?}, web {:?}, vpn {:?}: {:?}",
                notification.serial,
                notification.www,
                notification.web,
                notification.vpn,
                notification.message
            );
            if let Err(e) = store.record_notification(&notification, host, unix_now()) {
                log::error!("notifications: record: {e}");
            }
        }
        Err(gate_notify::NotifyError::NotNewer { .. }) => {}
        Err(e) => log::warn!("notifications: ignored a notification from {}: {e}", config.url),
    }
}

fn publish(path: &PathBuf, states: &Published) {
    let text = serde_json::to_string_pretty(states).unwrap_or_default();
    let temp = path.with_extension("new");
    let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&temp, text));
    let renamed = written.and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&temp, path)
    });
    if let Err(e) = renamed {
        log::error!("shutdown: publish {}: {e}", path.display());
    }
}

/// The states in force now, from the store.
///
/// # Errors
/// The store could not be read.
pub fn current(service: &ApprovalService) -> Result<Published, gate_store::StoreError> {
    service.store().effective_shutdown(&service.settings().host)
}

/// Runs until dropped: polls, and publishes every change to `states` and to the front's file.
pub async fn run(config: NotificationsConfig, service: Arc<ApprovalService>, states: watch::Sender<Published>) {
    let polling = !config.url.is_empty() && !config.interval.is_zero();
    let mut next_poll = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(RECHECK);
    publish(&config.publish, &states.borrow());
    loop {
        ticker.tick().await;
        if polling && tokio::time::Instant::now() >= next_poll {
            next_poll = tokio::time::Instant::now() + config.interval;
            let (config, service) = (config.clone(), Arc::clone(&service));
            let _ = tokio::task::spawn_blocking(move || poll_once(&config, &service)).await;
        }
        let service = Arc::clone(&service);
        let Ok(Ok(now)) = tokio::task::spawn_blocking(move || current(&service)).await else { continue };
        if *states.borrow() != now {
            log::warn!(
                "shutdown states now: www {}, web {}, vpn {}{}",
                now.www.name(),
                now.web.name(),
                now.vpn.name(),
                if now.message.is_empty() { String::new() } else { format!(" ({:?})", now.message) }
            );
            publish(&config.publish, &now);
            let _ = states.send(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_server_and_path() {
        let (_, path) = target("http://127.0.0.1:8080/gate/notice").unwrap();
        assert_eq!(path, format!("/gate/notice?version={VERSION}"));
        let (_, path) = target("https://notify.example.org").unwrap();
        assert_eq!(path, format!("/?version={VERSION}"));
        let (_, path) = target("https://n.example.org/x?a=1").unwrap();
        assert_eq!(path, format!("/x?a=1&version={VERSION}"));
        assert!(target("ftp://x").is_none());
    }
}
