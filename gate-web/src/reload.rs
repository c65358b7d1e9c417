//! SIGHUP for the front: the config is read again and what may change while it runs (the TLS
//! certificate and key, the limits, the trusted proxies) applies to every new connection; open
//! connections finish under what they started with. Keys that need a restart (the listening
//! addresses, the daemon's socket, the user, the state and shutdown files, the metrics address) are refused by name,
//! and an invalid new config changes nothing.
use std::{path::Path, sync::Arc};

use anyhow::{Context as _, bail};

use crate::{admission::Admission, config::Config, routes::Front, server::Serving, tls};

/// The first key whose change needs a restart, if any.
#[must_use]
pub fn needs_restart(old: &Config, new: &Config) -> Option<&'static str> {
    [
        ("listen", old.listen != new.listen),
        ("daemon_socket", old.daemon_socket != new.daemon_socket),
        ("user", old.user != new.user),
        ("state_dir", old.state_dir != new.state_dir),
        ("shutdown_file", old.shutdown_file != new.shutdown_file),
        ("metrics_listen", old.metrics_listen != new.metrics_listen),
    ]
    .into_iter()
    .find_map(|(key, changed)| changed.then_some(key))
}

/// Reads `file` again and, if it can be applied, returns what new connections are served with
/// (and sets the admission's limits); `old` is the config in force.
///
/// # Errors
/// The file is invalid, changes a key that needs a restart, or names a certificate or key that
/// cannot be read (by the front's user: it runs unprivileged by now).
pub fn reload(
    file: &Path,
    old: &Config,
    running: &Serving,
    admission: &Admission,
) -> anyhow::Result<(Config, Serving)> {
    let new = Config::load(file)?;
    if let Some(key) = needs_restart(old, &new) {
        bail!("{key} changed: that needs a restart of gate-web");
    }
    // A configured certificate is read again (a renewed one is the common case); the
    // self-signed pair never changes.
    let tls = match &new.tls_cert {
        Some(cert) => tokio_rustls::TlsAcceptor::from(
            tls::server_config(&new)
                .with_context(|| format!("read the certificate {} and its key as the front's user", cert.display()))?,
        ),
        None if old.tls_cert.is_some() => bail!("tls_cert removed: that needs a restart of gate-web"),
        None => running.tls.clone(),
    };
    admission.set_limits(&new.limits, new.trusted_proxies.clone());
    let old = &running.front;
    old.rate.set_per_minute(new.limits.approvals_per_minute);
    let front = Arc::new(Front::new(&new, Arc::clone(&old.rate), Arc::clone(&old.shutdown), Arc::clone(&old.tally)));
    Ok((new, Serving { tls, front }))
}
