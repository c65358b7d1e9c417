//! Dropping root: after the listeners are bound and the TLS key is read, the front becomes its
//! own unprivileged user, with no supplementary groups and no way back. A missing user is an
//! error: the front never runs as root by accident.
use anyhow::{Context as _, bail};
use nix::unistd::{Gid, Uid, User, getuid, setgid, setgroups, setuid};

/// Becomes `name` if running as root; otherwise stays as is (already unprivileged).
///
/// # Errors
/// The user does not exist, or a step of the drop failed.
pub fn drop_to(name: &str) -> anyhow::Result<()> {
    if !getuid().is_root() {
        log::info!("running as uid {} (not root: nothing to drop)", getuid());
        return Ok(());
    }
    let user = User::from_name(name).with_context(|| format!("look up user {name:?}"))?.with_context(|| {
        format!("user {name:?} does not exist (create it: the front never runs as root); refusing to start")
    })?;
    if user.uid.is_root() {
        bail!("user {name:?} is root; the front must run unprivileged");
    }
    setgroups(&[]).context("drop supplementary groups")?;
    setgid(user.gid).context("setgid")?;
    setuid(user.uid).context("setuid")?;
    if setuid(Uid::from_raw(0)).is_ok() || setgid(Gid::from_raw(0)).is_ok() {
        bail!("could regain root after dropping it");
    }
    log::info!("dropped root: running as {name} (uid {}, gid {})", user.uid, user.gid);
    Ok(())
}
