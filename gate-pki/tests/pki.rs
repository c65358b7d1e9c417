//! Certificates checked by OpenSSL (the library OpenVPN uses), as OpenVPN will see them.
use std::{path::Path, process::Command};

use gate_pki::Ca;
use gate_protocol::keys::{rsa_private_from_pem, rsa_public_der};
use time::OffsetDateTime;

const CLIENT_PEM: &str = include_str!("../../gate-protocol/tests/vectors/client-rsa-4096.pem");

fn verify(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").arg("verify").args(args).current_dir(dir).output().expect("openssl");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn certificates_verify_and_revocation_shows_in_the_crl() {
    let dir = std::env::temp_dir().join(format!("gate-pki-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let now = OffsetDateTime::now_utc();
    let ca = Ca::generate("gate test CA", now).unwrap();
    let server = ca.issue_server("gate-server-vpn", 2, now).unwrap();
    let spki = rsa_public_der(&rsa_private_from_pem(CLIENT_PEM).unwrap().to_public_key()).unwrap();
    let client = ca.issue_client("alice", &spki, 3, now).unwrap();
    assert!(client.key_pem.is_none(), "the client keeps its own key");
    for (file, text) in [("ca.pem", &ca.cert_pem), ("server.pem", &server.cert_pem), ("client.pem", &client.cert_pem)] {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let (ok, out) = verify(&dir, &["-CAfile", "ca.pem", "-purpose", "sslserver", "server.pem"]);
    assert!(ok, "{out}");
    let (ok, out) = verify(&dir, &["-CAfile", "ca.pem", "-purpose", "sslclient", "client.pem"]);
    assert!(ok, "{out}");
    let (ok, _) = verify(&dir, &["-CAfile", "ca.pem", "-purpose", "sslserver", "client.pem"]);
    assert!(!ok, "a client certificate is no server certificate");

    std::fs::write(dir.join("crl.pem"), ca.crl(&[], 1, now).unwrap()).unwrap();
    let (ok, out) = verify(&dir, &["-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", "client.pem"]);
    assert!(ok, "not revoked yet: {out}");
    std::fs::write(dir.join("crl.pem"), ca.crl(&[(3, now)], 2, now).unwrap()).unwrap();
    let (ok, out) = verify(&dir, &["-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", "client.pem"]);
    assert!(!ok && out.contains("revoked"), "revoked: {out}");
    let (ok, out) = verify(&dir, &["-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", "server.pem"]);
    assert!(ok, "others unaffected: {out}");
    let _ = std::fs::remove_dir_all(&dir);
}
