//! Self-shutdown: poll the notification URL, keep what a valid notification says, merge it with
//! the operator's settings (the operator wins), publish the states in force for the front, and
//! hand them to the parts of the daemon through a watch channel. A notification that fails any
//! check is logged and ignored; a network error changes nothing.
use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

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

/// How long one poll may take, connection to the last byte.
const POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// Redirects followed, at most (a notice moved to another host or path).
const MAX_REDIRECTS: u32 = 3;
/// The largest notice read; a signed notice is well under a kilobyte.
const MAX_NOTICE_BYTES: u64 = 64 * 1024;

/// How a poll ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// A valid, newer notification: recorded.
    Accepted,
    /// A valid notification already seen (or an older one): nothing to do.
    Unchanged,
    /// The answer failed a check (signature, version, form): ignored.
    Invalid,
    /// The server answered with a status other than 200.
    HttpError,
    /// No answer (network, TLS, timeout, too large).
    Unreachable,
    /// The URL or the public key in the config cannot be used.
    Misconfigured,
}

impl PollOutcome {
    const ALL: [Self; 6] =
        [Self::Accepted, Self::Unchanged, Self::Invalid, Self::HttpError, Self::Unreachable, Self::Misconfigured];

    const fn name(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Unchanged => "unchanged",
            Self::Invalid => "invalid",
            Self::HttpError => "http_error",
            Self::Unreachable => "unreachable",
            Self::Misconfigured => "misconfigured",
        }
    }
}

/// Polls by outcome since the daemon started.
pub struct Polls([AtomicU64; PollOutcome::ALL.len()]);

impl Polls {
    fn count(&self, outcome: PollOutcome) {
        self.0[outcome as usize].fetch_add(1, Relaxed);
    }

    /// Each outcome's name and count.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        PollOutcome::ALL.iter().map(|o| (o.name(), self.0[*o as usize].load(Relaxed)))
    }
}

/// The daemon's polls (one notifier a process, restarted by a reload, counting on).
pub static POLLS: Polls = Polls([const { AtomicU64::new(0) }; PollOutcome::ALL.len()]);

/// The URL polled: the configured one with the daemon's version added to its query.
fn notice_url(url: &str) -> Option<String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return None;
    }
    let joiner = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{joiner}version={VERSION}"))
}

/// GETs `url` with a maintained HTTP client (ureq: HTTP/1.0 and 1.1 answers, any framing),
/// redirects, time and size bounded. TLS certificates are not verified: a notice counts only
/// by its signature.
fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let tls = ureq::tls::TlsConfig::builder().disable_verification(true).build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(POLL_TIMEOUT))
        .max_redirects(MAX_REDIRECTS)
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.body_mut().with_config().limit(MAX_NOTICE_BYTES).read_to_vec().map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// Fetches and checks one notification; records it if it is good.
fn poll_once(config: &NotificationsConfig, service: &ApprovalService) {
    POLLS.count(poll(config, service));
}

fn poll(config: &NotificationsConfig, service: &ApprovalService) -> PollOutcome {
    let Some(url) = notice_url(&config.url) else {
        log::warn!("notifications: cannot use URL {:?} (give http:// or https://)", config.url);
        return PollOutcome::Misconfigured;
    };
    let Ok(key) = gate_notify::decode_verifying_key(&config.public_key) else { return PollOutcome::Misconfigured };
    let body = match fetch(&url) {
        Ok((200, body)) => body,
        Ok((status, _)) => {
            log::warn!("notifications: {} answered {status}; states unchanged", config.url);
            return PollOutcome::HttpError;
        }
        Err(e) => {
            log::warn!("notifications: {}: {e}; states unchanged", config.url);
            return PollOutcome::Unreachable;
        }
    };
    let host = &service.settings().host;
    let mut store = service.store();
    let last = store.last_notification_serial(host).unwrap_or(u64::MAX);
    match gate_notify::verify(&body, &key, VERSION, last) {
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
            let detail = format!(
                "serial {}: www {}, web {}, vpn {}{}",
                notification.serial,
                notification.www.name(),
                notification.web.name(),
                notification.vpn.name(),
                if notification.message.is_empty() { String::new() } else { format!(": {:?}", notification.message) }
            );
            let event = gate_store::AuditEvent::new(
                unix_now(),
                host,
                gate_store::AuditKind::NotificationAccepted,
                "notification",
                &config.url,
            )
            .detail(detail);
            if let Err(e) = store.record_audit(&[event]) {
                log::error!("notifications: the audit trail: {e}");
            }
            PollOutcome::Accepted
        }
        Err(gate_notify::NotifyError::NotNewer { .. }) => PollOutcome::Unchanged,
        Err(e) => {
            log::warn!("notifications: ignored a notification from {}: {e}", config.url);
            PollOutcome::Invalid
        }
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
    fn the_version_is_added_to_the_query() {
        let url = notice_url("http://127.0.0.1:8080/gate/notice").unwrap();
        assert_eq!(url, format!("http://127.0.0.1:8080/gate/notice?version={VERSION}"));
        let url = notice_url("https://n.example.org/x?a=1").unwrap();
        assert_eq!(url, format!("https://n.example.org/x?a=1&version={VERSION}"));
        assert!(notice_url("ftp://x").is_none());
    }
}
