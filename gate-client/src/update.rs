//! `gate-client update`: folds a profile update (`gatectl client update`) into the profile, after
//! checking it was signed for this very profile. The profile is replaced whole (a new file
//! renamed over it), so a failure leaves the old one as it was.
use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use anyhow::{Context as _, bail};
use gate_protocol::{profile::Profile, profile_update};
use zeroize::Zeroizing;

/// Applies the update in `update` to the profile at `profile`. Returns what changed (empty:
/// the profile had it all already).
///
/// # Errors
/// Either file cannot be read, the update is not for this profile or not signed with its
/// secret, or the new profile cannot be written.
pub fn apply(profile: &Path, update: &Path) -> anyhow::Result<Vec<&'static str>> {
    let text = Zeroizing::new(fs::read_to_string(profile).with_context(|| format!("read {}", profile.display()))?);
    let mut current =
        Profile::from_json(&text).with_context(|| format!("{}: not a usable profile", profile.display()))?;
    let update_text = fs::read_to_string(update).with_context(|| format!("read {}", update.display()))?;
    let body = match profile_update::verify(&update_text, &current) {
        Ok(body) => body,
        Err(gate_protocol::ProtocolError::PayloadMismatch | gate_protocol::ProtocolError::BadHmac) => bail!(
            "{}: not an update for this profile ({}): it is made for one client and signed with its secret",
            update.display(),
            current.name
        ),
        Err(e) => bail!("{}: not a profile update: {e}", update.display()),
    };
    let changed = profile_update::apply(&body, &mut current)?;
    if changed.is_empty() {
        return Ok(changed);
    }
    let json = current.to_json()?;
    let name = profile.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let fresh = profile.with_file_name(format!(".{name}.update-{}", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&fresh)
        .and_then(|mut file| file.write_all(json.as_bytes()).and_then(|()| file.sync_all()))
        .and_then(|()| fs::rename(&fresh, profile));
    if let Err(e) = written {
        let _ = fs::remove_file(&fresh);
        return Err(anyhow::Error::new(e).context(format!("write {}", profile.display())));
    }
    Ok(changed)
}
