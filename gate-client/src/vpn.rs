//! `--up` and `down`: after an approval, run OpenVPN against the host that approved, logging
//! in with the approval's one-time session token; and end it. Files (key, token) live in a
//! state directory only root can read, and go away with `down`.
use std::{
    fs,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use gate_protocol::{approval::Approval, keys::rsa_private_pem, profile::Profile};

/// How long `--up` waits for the tunnel.
const UP_TIMEOUT: Duration = Duration::from_secs(30);

/// The state directory of a profile: given, or `/run/gate-client/<name>`.
#[must_use]
pub fn state_dir(profile: &Profile, given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| PathBuf::from("/run/gate-client").join(&profile.name))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).with_context(|| format!("write {}", path.display()))
}

/// Starts OpenVPN for `approval` and waits until the tunnel is up.
///
/// # Errors
/// No VPN section in the profile, OpenVPN missing, or no tunnel within the timeout.
pub fn up(profile: &Profile, approval: &Approval, server_host: &str, dir: &Path) -> anyhow::Result<()> {
    let vpn = profile.vpn.as_ref().context("the profile has no VPN section (the gate runs no OpenVPN server)")?;
    let remote = approval
        .host
        .ipv4
        .map(|a| a.to_string())
        .or_else(|| approval.host.ipv6.map(|a| a.to_string()))
        .unwrap_or_else(|| server_host.to_owned());
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    if let Some(pid) = running_pid(dir) {
        bail!("OpenVPN already runs for this profile (pid {pid}); `gate-client down` first");
    }
    write_private(&dir.join("ca.pem"), &vpn.ca_pem)?;
    write_private(&dir.join("cert.pem"), &vpn.cert_pem)?;
    write_private(&dir.join("key.pem"), &rsa_private_pem(&profile.keys.rsa)?)?;
    write_private(&dir.join("auth.txt"), &format!("{}\n{}\n", profile.name, approval.session_token))?;
    let proto = if vpn.protocol == "tcp" { "tcp-client" } else { "udp" };
    let conf = format!(
        "client\ndev tun\nproto {proto}\nremote {remote} {port}\nnobind\nca {ca}\ncert {cert}\nkey {key}\n\
         remote-cert-tls server\nauth-user-pass {auth}\nauth-nocache\n\
         data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nconnect-retry-max 3\nverb 3\n",
        port = vpn.port,
        ca = dir.join("ca.pem").display(),
        cert = dir.join("cert.pem").display(),
        key = dir.join("key.pem").display(),
        auth = dir.join("auth.txt").display(),
    );
    write_private(&dir.join("client.conf"), &conf)?;
    let log = dir.join("openvpn.log");
    let _ = fs::remove_file(&log);
    let status = Command::new("openvpn")
        .arg("--config")
        .arg(dir.join("client.conf"))
        .arg("--daemon")
        .arg("--writepid")
        .arg(dir.join("openvpn.pid"))
        .arg("--log")
        .arg(&log)
        .status()
        .context("run openvpn (is it installed?)")?;
    if !status.success() {
        bail!("openvpn failed to start ({status}); see {}", log.display());
    }
    let deadline = Instant::now() + UP_TIMEOUT;
    loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Initialization Sequence Completed") {
            // The token is spent; it need not stay on disk.
            let _ = fs::remove_file(dir.join("auth.txt"));
            return Ok(());
        }
        if text.contains("AUTH_FAILED") || Instant::now() > deadline {
            let _ = down(dir);
            bail!(
                "the VPN did not come up ({}); see {}",
                if text.contains("AUTH_FAILED") { "refused" } else { "timed out" },
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn running_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = fs::read_to_string(dir.join("openvpn.pid")).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Ends the VPN of the profile whose state is in `dir`; removes its key and token files.
///
/// # Errors
/// The process cannot be signalled.
pub fn down(dir: &Path) -> anyhow::Result<bool> {
    let running = running_pid(dir);
    if let Some(pid) = running {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
            .with_context(|| format!("stop openvpn (pid {pid})"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for file in ["key.pem", "auth.txt", "openvpn.pid"] {
        let _ = fs::remove_file(dir.join(file));
    }
    Ok(running.is_some())
}
