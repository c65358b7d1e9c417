//! Following the daemon's shutdown states (the file it publishes): `www` disabled makes every
//! route answer 503 with the notification's message; `web` disabled stops the listeners (new
//! connections are refused) until it is ok again. A missing file means nothing is shut down.
use std::{
    path::PathBuf,
    sync::{
        RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use gate_notify::{Published, State};

const RECHECK: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct ShutdownView {
    www: AtomicBool,
    message: RwLock<String>,
}

impl ShutdownView {
    /// The message to answer with while `www` is disabled.
    #[must_use]
    pub fn www_message(&self) -> Option<String> {
        self.www
            .load(Ordering::Relaxed)
            .then(|| self.message.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}

/// Watches `file` until dropped.
pub async fn follow(file: PathBuf, view: std::sync::Arc<ShutdownView>, web: tokio::sync::watch::Sender<bool>) {
    let mut current = Published::default();
    let mut ticker = tokio::time::interval(RECHECK);
    loop {
        ticker.tick().await;
        let published: Published =
            std::fs::read(&file).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default();
        if published == current {
            continue;
        }
        view.www.store(published.www == State::Disabled, Ordering::Relaxed);
        published.message.clone_into(&mut view.message.write().unwrap_or_else(std::sync::PoisonError::into_inner));
        if published.web != current.web {
            let on = published.web == State::Ok;
            let _ = web.send(on);
            log::warn!(
                "web {}: {}",
                if on { "ok" } else { "disabled" },
                if on { "accepting connections again" } else { "no longer accepting connections" }
            );
        }
        if published.www != current.www {
            log::warn!(
                "www {}",
                if published.www == State::Ok {
                    "ok"
                } else {
                    "disabled: every request gets the notification's message"
                }
            );
        }
        current = published;
    }
}
