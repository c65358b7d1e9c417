//! The TLS identity: the configured certificate and key, or a self-signed pair made on first
//! run and kept in the state directory (clients do not rely on HTTPS for security: every request
//! and answer is sealed and signed inside).
use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::Arc,
};

use anyhow::{Context as _, bail};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

use crate::config::Config;

const SELF_SIGNED_CERT: &str = "self-signed.crt";
const SELF_SIGNED_KEY: &str = "self-signed.key";

/// The rustls server config for `config`.
///
/// # Errors
/// Unreadable or invalid certificate or key; the self-signed pair cannot be made or stored.
pub fn server_config(config: &Config) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert_path, key_path) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let (cert, key) = (config.state_dir.join(SELF_SIGNED_CERT), config.state_dir.join(SELF_SIGNED_KEY));
            if !cert.exists() || !key.exists() {
                make_self_signed(&config.state_dir, &cert, &key)?;
            }
            log::warn!(
                "TLS: using the self-signed certificate {} (no tls_cert configured; clients do not rely on HTTPS)",
                cert.display()
            );
            (cert, key)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("read {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not PEM certificates", cert_path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("{}: not a PEM private key", key_path.display()))?;
    let mut server = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("{} and {} do not make a TLS identity", cert_path.display(), key_path.display()))?;
    // No ALPN list: a client offering only h2 or http/1.0 still gets through the handshake and
    // then an HTTP answer it can read (505 for HTTP/1.0), not a TLS alert.
    server.alpn_protocols.clear();
    Ok(Arc::new(server))
}

fn make_self_signed(dir: &Path, cert: &Path, key: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let host =
        fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "gate".to_owned(), |h| h.trim().to_owned());
    let made = rcgen::generate_simple_self_signed(vec![host.clone()]).context("make a self-signed certificate")?;
    let write = |path: &Path, text: &str, mode: u32| -> anyhow::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("create {}", path.display()))?;
        file.write_all(text.as_bytes()).with_context(|| format!("write {}", path.display()))
    };
    write(key, &made.key_pair.serialize_pem(), 0o600)?;
    write(cert, &made.cert.pem(), 0o644)?;
    log::warn!("TLS: generated a self-signed certificate for {host:?} in {}", dir.display());
    Ok(())
}
