//! The store on a real SQLite file in a temporary directory.
use std::{fs, net::IpAddr, os::unix::fs::PermissionsExt};

use gate_protocol::{
    crypto_box::SecretKey,
    keys::{ClientPublic, HmacSecret, Token, rsa_private_from_pem},
    rand::rngs::OsRng,
};
use gate_store::{ApprovalRecord, NewClient, Store, StoreError};

const PEM: &str = include_str!("../../gate-protocol/tests/vectors/client-rsa-4096.pem");

fn enroll(store: &mut Store, name: &str) -> (ClientPublic, HmacSecret) {
    let public = ClientPublic {
        token: Token::random(&mut OsRng),
        box_public: SecretKey::generate(&mut OsRng).public_key(),
        rsa_public: rsa_private_from_pem(PEM).unwrap().to_public_key(),
    };
    let secret = HmacSecret::random(&mut OsRng);
    let gates = ["vpn".to_owned()];
    store.add_client(&NewClient { name, gates: &gates, public: &public, secret: &secret, now: 100 }).unwrap();
    (public, secret)
}

#[test]
fn files_holding_secrets_are_0600_even_if_found_looser() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/gate.db");
    let mut store = Store::open(&path).unwrap();
    enroll(&mut store, "alice");
    for file in ["gate.db", "gate.db-wal", "gate.db-shm"] {
        let mode = fs::metadata(dir.path().join("state").join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    drop(store);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    Store::open(&path).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn clients_round_trip_and_names_are_unique() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("gate.db")).unwrap();
    let (public, secret) = enroll(&mut store, "alice");
    let record = store.client("alice").unwrap();
    assert_eq!(record.token, public.token);
    assert_eq!(record.secret.0, secret.0);
    assert_eq!(record.box_public, public.box_public);
    assert_eq!(record.rsa_public, public.rsa_public);
    assert_eq!(record.gates.iter().collect::<Vec<_>>(), ["vpn"]);
    assert!(matches!(
        store.add_client(&NewClient {
            name: "alice",
            gates: &["vpn".into()],
            public: &public,
            secret: &secret,
            now: 1
        }),
        Err(StoreError::ClientExists(_))
    ));
    assert!(matches!(store.client("bob"), Err(StoreError::NoSuchClient(_))));
    assert!(store.revoke_client("alice", 200).unwrap());
    assert!(!store.revoke_client("alice", 300).unwrap(), "revoking twice changes nothing");
    assert_eq!(store.client("alice").unwrap().revoked_at, Some(200));
}

#[test]
fn a_nonce_is_accepted_once_also_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gate.db");
    let token = Token([7; 16]);
    {
        let store = Store::open(&path).unwrap();
        assert!(store.record_nonce(token, &[1; 16], 1000, "h").unwrap());
        assert!(!store.record_nonce(token, &[1; 16], 1000, "h").unwrap());
        assert!(store.record_nonce(Token([8; 16]), &[1; 16], 1000, "h").unwrap(), "nonces are per client");
    }
    let store = Store::open(&path).unwrap();
    assert!(!store.record_nonce(token, &[1; 16], 1000, "h").unwrap(), "a replay after a restart");
    assert_eq!(store.purge_nonces(1000).unwrap(), 0, "kept until its expiry");
    assert_eq!(store.purge_nonces(1001).unwrap(), 2);
}

#[test]
fn grants_of_revoked_clients_spare_addresses_others_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("gate.db")).unwrap();
    enroll(&mut store, "alice");
    enroll(&mut store, "bob");
    let nat: IpAddr = "198.51.100.7".parse().unwrap();
    let own: IpAddr = "198.51.100.8".parse().unwrap();
    let grant = |store: &mut Store, client, addresses: &[IpAddr]| {
        let record = ApprovalRecord { client, gate: "vpn", addresses, expires_at: 5000, session: None, host: "h" };
        store.record_approval(&record).unwrap()
    };
    assert!(grant(&mut store, "alice", &[nat, own]));
    assert!(grant(&mut store, "bob", &[nat]));
    store.revoke_client("alice", 200).unwrap();
    assert!(!grant(&mut store, "alice", &[own]), "no grant once revoked");
    let revoked = store.revoked_grants("h").unwrap();
    assert_eq!(revoked.len(), 2);
    assert!(store.address_held_by_live_client("vpn", nat, "h", 300).unwrap());
    assert!(!store.address_held_by_live_client("vpn", own, "h", 300).unwrap());
    assert!(!store.address_held_by_live_client("vpn", nat, "h", 5000).unwrap(), "bob's grant has expired");
}

#[test]
fn the_server_key_is_made_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gate.db");
    let first = Store::open(&path).unwrap().server_keys(1).unwrap().public();
    let again = Store::open(&path).unwrap().server_keys(2).unwrap().public();
    assert_eq!(first, again);
}
