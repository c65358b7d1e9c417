//! The store on both of its databases: an SQLite file in a temporary directory and a
//! PostgreSQL server of the test's own (`temp-postgres`). Tests of what every store does run on
//! each ([`Backend::all`]); tests of the SQLite file itself (its mode, its damage checks, its
//! upgrade, its checkpoints) on SQLite only.
use std::{
    fs,
    net::IpAddr,
    os::unix::fs::PermissionsExt,
    sync::{Arc, Barrier},
    thread,
};

use gate_notify::{Notification, Part, State};
use gate_protocol::{
    crypto_box::SecretKey,
    keys::{ClientPublic, HmacSecret, Token, rsa_private_from_pem},
    rand::rngs::OsRng,
};
use gate_store::{
    ApprovalRecord, FROM_NOTIFICATION, FROM_OPERATOR, Heartbeat, HostRow, NewClient, NonceRecord, Recorded, Store,
    StoreAccess, StoreError, StoreKey, StoreLocation, Write,
};
use temp_postgres::TempPostgres;

const PEM: &str = include_str!("../../gate-protocol/tests/vectors/client-rsa-4096.pem");

/// A store made where none was.
fn new_store(path: &std::path::Path) -> Store {
    let (store, created) = Store::open_or_create(path).unwrap();
    assert!(created, "{} existed", path.display());
    store
}

/// Where a store of a test lives.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(TempPostgres),
}

impl Backend {
    /// A new, empty place on each database. (Each test runs its own PostgreSQL server: ~0.6 s.)
    fn all() -> [Self; 2] {
        [
            Self::Sqlite(tempfile::tempdir().unwrap()),
            Self::Postgres(TempPostgres::start().expect("a PostgreSQL server of the test's own")),
        ]
    }

    /// A connection to the store, made on the first (any number may be open at once, as a
    /// daemon, gatectl and other hosts have).
    fn open(&self) -> Store {
        match self {
            Self::Sqlite(dir) => Store::open_or_create(dir.path().join("gate.db")).unwrap().0,
            Self::Postgres(server) => Store::connect(&server.params("postgres")).unwrap(),
        }
    }

    /// A connection as the daemon makes it from its config: with `access`'s files.
    fn open_with(&self, access: &StoreAccess) -> Store {
        let location = match self {
            Self::Sqlite(dir) => StoreLocation::File(dir.path().join("gate.db")),
            Self::Postgres(server) => StoreLocation::parse(&server.url("postgres")).unwrap(),
        };
        location.open_or_create(access).unwrap().0
    }

    /// Everything the database holds, as a backup would: the SQLite file and its log, or
    /// `pg_dump`'s output (bytes in it as hex).
    fn dump(&self) -> Vec<u8> {
        match self {
            Self::Sqlite(dir) => ["gate.db", "gate.db-wal"]
                .iter()
                .flat_map(|f| fs::read(dir.path().join(f)).unwrap_or_default())
                .collect(),
            Self::Postgres(server) => server.dump("postgres").unwrap().into_bytes(),
        }
    }

    /// Runs `test` on each database, saying which (a failure's output shows the last).
    fn each(test: impl Fn(&Self)) {
        for backend in Self::all() {
            println!(
                "on {}",
                match backend {
                    Self::Sqlite(_) => "SQLite",
                    Self::Postgres(_) => "PostgreSQL",
                }
            );
            test(&backend);
        }
    }
}

fn enroll(store: &mut Store, name: &str) -> (ClientPublic, HmacSecret) {
    enroll_at(store, name, 100)
}

fn enroll_at(store: &mut Store, name: &str, now: u64) -> (ClientPublic, HmacSecret) {
    let public = ClientPublic {
        token: Token::random(&mut OsRng),
        box_public: SecretKey::generate(&mut OsRng).public_key(),
        rsa_public: rsa_private_from_pem(PEM).unwrap().to_public_key(),
    };
    let secret = HmacSecret::random(&mut OsRng);
    let gates = ["vpn".to_owned()];
    store.add_client(&NewClient { name, gates: &gates, public: &public, secret: &secret, now }).unwrap();
    (public, secret)
}

#[test]
fn files_holding_secrets_are_0600_even_if_found_looser() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/gate.db");
    let mut store = new_store(&path);
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
    Backend::each(|backend| {
        let mut store = backend.open();
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
    });
}

/// Commits a nonce alone: `true` if it was new.
fn record_nonce(store: &mut Store, token: Token, nonce: u8) -> bool {
    store.commit(&Write::Nonce(nonce_record(token, nonce))).unwrap() == Recorded::Yes
}

fn nonce_record(token: Token, nonce: u8) -> NonceRecord {
    NonceRecord { token, nonce: vec![nonce; 16], expires_at: 1000, host: "h".to_owned() }
}

#[test]
fn a_nonce_is_accepted_once_also_after_reopening() {
    Backend::each(|backend| {
        let token = Token([7; 16]);
        {
            let mut store = backend.open();
            assert!(!store.nonce_seen(token, &[1; 16]).unwrap());
            assert!(record_nonce(&mut store, token, 1));
            assert!(store.nonce_seen(token, &[1; 16]).unwrap());
            assert!(!record_nonce(&mut store, token, 1));
            assert!(record_nonce(&mut store, Token([8; 16]), 1), "nonces are per client");
        }
        let mut store = backend.open();
        assert!(store.nonce_seen(token, &[1; 16]).unwrap(), "seen after a restart");
        assert!(!record_nonce(&mut store, token, 1), "a replay after a restart");
        assert_eq!(store.purge_nonces(1000).unwrap(), 0, "kept until its expiry");
        assert_eq!(store.purge_nonces(1001).unwrap(), 2);
    });
}

fn approval(client: &str, addresses: &[IpAddr], session: Option<&[u8]>) -> ApprovalRecord {
    ApprovalRecord {
        at: 4000,
        client: client.to_owned(),
        gate: "vpn".to_owned(),
        addresses: addresses.to_vec(),
        expires_at: 5000,
        session: session.map(|digest| (digest.to_vec(), 5000)),
        host: "h".to_owned(),
    }
}

fn nonce(token: Token, nonce: u8) -> Write {
    Write::Nonce(nonce_record(token, nonce))
}

#[test]
fn writes_committed_together_answer_as_if_made_one_by_one() {
    Backend::each(|backend| {
        let mut store = backend.open();
        let (alice, _) = enroll(&mut store, "alice");
        let (bob, _) = enroll(&mut store, "bob");
        store.revoke_client("bob", 200).unwrap();
        let address: IpAddr = "198.51.100.7".parse().unwrap();
        let other: IpAddr = "198.51.100.8".parse().unwrap();
        let group = [
            nonce(alice.token, 1),
            nonce(alice.token, 1),
            Write::Approval(nonce_record(alice.token, 2), approval("alice", &[address], Some(&[1; 64]))),
            Write::Approval(nonce_record(alice.token, 2), approval("alice", &[other], Some(&[3; 64]))),
            Write::Approval(nonce_record(bob.token, 1), approval("bob", &[address], Some(&[2; 64]))),
        ];
        let answers: Vec<Recorded> = store.commit_group(&group).into_iter().map(Result::unwrap).collect();
        use Recorded::{Replay, Revoked, Yes};
        assert_eq!(answers, [Yes, Replay, Yes, Replay, Revoked], "the same nonce twice in one group is a replay");
        drop(store);
        let store = backend.open();
        assert!(store.nonce_seen(alice.token, &[2; 16]).unwrap(), "an approval's nonce is committed with it");
        assert!(store.nonce_seen(bob.token, &[1; 16]).unwrap(), "a revoked client's nonce is spent");
        assert!(store.address_held_by_live_client("vpn", address, "h", 300).unwrap(), "alice's grant was committed");
        assert!(!store.address_held_by_live_client("vpn", other, "h", 300).unwrap(), "nothing written for a replay");
        assert!(store.spend_session_token(&[1; 64], "alice", "vpn", 300).unwrap());
        assert!(!store.spend_session_token(&[3; 64], "alice", "vpn", 300).unwrap(), "nothing written for a replay");
        assert!(!store.spend_session_token(&[2; 64], "bob", "vpn", 300).unwrap(), "nothing written for the revoked");
    });
}

#[test]
fn a_write_that_fails_in_a_group_fails_alone_and_leaves_nothing() {
    Backend::each(|backend| {
        let mut store = backend.open();
        let (alice, _) = enroll(&mut store, "alice");
        let address: IpAddr = "198.51.100.7".parse().unwrap();
        let other: IpAddr = "198.51.100.8".parse().unwrap();
        store
            .commit(&Write::Approval(nonce_record(alice.token, 9), approval("alice", &[address], Some(&[1; 64]))))
            .unwrap();
        // The same session token digest again: its insert breaks the table's key.
        let group = [
            nonce(alice.token, 1),
            Write::Approval(nonce_record(alice.token, 2), approval("alice", &[other], Some(&[1; 64]))),
            nonce(alice.token, 3),
        ];
        let answers = store.commit_group(&group);
        assert!(matches!(answers[0], Ok(Recorded::Yes)), "{:?}", answers[0]);
        assert!(answers[1].is_err(), "{:?}", answers[1]);
        assert!(matches!(answers[2], Ok(Recorded::Yes)), "{:?}", answers[2]);
        assert!(store.nonce_seen(alice.token, &[1; 16]).unwrap(), "the others were committed");
        assert!(!store.nonce_seen(alice.token, &[2; 16]).unwrap(), "the failed write left no nonce");
        assert!(!store.address_held_by_live_client("vpn", other, "h", 300).unwrap(), "and no grant");
    });
}

#[test]
fn grants_of_revoked_clients_spare_addresses_others_hold() {
    Backend::each(|backend| {
        let mut store = backend.open();
        enroll(&mut store, "alice");
        enroll(&mut store, "bob");
        let nat: IpAddr = "198.51.100.7".parse().unwrap();
        let own: IpAddr = "198.51.100.8".parse().unwrap();
        let mut serial = 0;
        let mut grant = |store: &mut Store, client: &str, addresses: &[IpAddr]| {
            serial += 1;
            let nonce = nonce_record(Token([serial; 16]), 0);
            store.commit(&Write::Approval(nonce, approval(client, addresses, None))).unwrap() == Recorded::Yes
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
        for grant in revoked {
            store.delete_grants(&grant.client, &grant.gate, &[grant.address], &grant.host).unwrap();
        }
        assert!(store.revoked_grants("h").unwrap().is_empty(), "deleted");
        assert_eq!(store.purge_grants(5001).unwrap(), 1, "bob's, expired");
    });
}

#[test]
fn the_server_key_is_made_once() {
    Backend::each(|backend| {
        let first = backend.open().server_keys(1).unwrap().public();
        let again = backend.open().server_keys(2).unwrap().public();
        assert_eq!(first, again);
    });
}

#[test]
fn the_same_approval_raced_from_many_connections_is_recorded_once() {
    Backend::each(|backend| {
        let (alice, _) = enroll(&mut backend.open(), "alice");
        for round in 0..20_u8 {
            let racers = 6;
            let start = Arc::new(Barrier::new(racers));
            let answers: Vec<Recorded> = thread::scope(|scope| {
                let handles: Vec<_> = (0..racers)
                    .map(|_| {
                        let mut store = backend.open();
                        let start = Arc::clone(&start);
                        scope.spawn(move || {
                            let address: IpAddr = "198.51.100.7".parse().unwrap();
                            let write =
                                Write::Approval(nonce_record(alice.token, round), approval("alice", &[address], None));
                            start.wait();
                            store.commit(&write).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let approved = answers.iter().filter(|a| **a == Recorded::Yes).count();
            assert_eq!(approved, 1, "round {round}: {answers:?}");
            assert!(answers.iter().all(|a| matches!(a, Recorded::Yes | Recorded::Replay)), "{answers:?}");
        }
    });
}

#[test]
fn an_approval_racing_a_revocation_is_refused_or_seen_by_it() {
    Backend::each(|backend| {
        let mut admin = backend.open();
        let mut approver = backend.open();
        let address: IpAddr = "198.51.100.7".parse().unwrap();
        for round in 0..40_u8 {
            let name = format!("client-{round}");
            let (public, _) = enroll(&mut admin, &name);
            let start = Barrier::new(2);
            let (recorded, grants) = thread::scope(|scope| {
                let approving = scope.spawn(|| {
                    let write = Write::Approval(nonce_record(public.token, round), approval(&name, &[address], None));
                    start.wait();
                    approver.commit(&write).unwrap()
                });
                start.wait();
                admin.revoke_client(&name, 200).unwrap();
                // What the upkeep reads after a revocation to close its leases.
                let grants = admin.revoked_grants("h").unwrap();
                (approving.join().unwrap(), grants)
            });
            let seen = grants.iter().any(|g| g.client == name);
            match recorded {
                Recorded::Yes => assert!(seen, "round {round}: approved, and the revocation missed its grant"),
                Recorded::Revoked => assert!(!seen, "round {round}: refused, yet a grant was written"),
                Recorded::Replay => panic!("round {round}: a fresh nonce taken for a replay"),
            }
            for grant in grants {
                admin.delete_grants(&grant.client, &grant.gate, &[grant.address], &grant.host).unwrap();
            }
        }
    });
}

#[test]
fn stores_opened_at_once_on_an_empty_database_all_work_and_share_one_server_key() {
    Backend::each(|backend| {
        let start = Barrier::new(4);
        let keys: Vec<_> = thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        backend.open().server_keys(1).unwrap().public()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|pair| pair[0] == pair[1]), "one server key");
    });
}

#[test]
fn the_generation_moves_when_another_connection_writes_a_client() {
    Backend::each(|backend| {
        let daemon = backend.open();
        let mut gatectl = backend.open();
        let mut seen = daemon.generation().unwrap();
        assert_eq!(daemon.generation().unwrap(), seen, "nothing happened");
        enroll(&mut gatectl, "alice");
        let after_enroll = daemon.generation().unwrap();
        assert_ne!(after_enroll, seen, "an enrollment");
        seen = after_enroll;
        gatectl.revoke_client("alice", 200).unwrap();
        assert_ne!(daemon.generation().unwrap(), seen, "a revocation");
    });
}

#[test]
fn heartbeats_show_each_host_and_a_second_daemon_under_one_name_is_noticed() {
    Backend::each(|backend| {
        let store = backend.open();
        let beat = |host, instance, leases, approvals, now| {
            let beat =
                Heartbeat { host, instance, version: "1.2.3", started_at: 1_000, leases, approvals, refusals: 2 };
            store.heartbeat(&beat, now).unwrap()
        };
        assert!(!beat("gate-a", 7, None, 0, 1_000), "a first heartbeat");
        assert!(!beat("gate-a", 7, Some(40), 5, 1_005), "the same daemon again");
        assert!(!beat("gate-b", 9, Some(3), 1, 1_006));
        let hosts = store.hosts().unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(
            hosts[0],
            HostRow {
                host: "gate-a".into(),
                version: "1.2.3".into(),
                started_at: 1_000,
                seen_at: 1_005,
                stopped_at: None,
                leases: Some(40),
                approvals: 5,
                refusals: 2
            }
        );
        assert!(beat("gate-a", 8, None, 0, 1_007), "another daemon wrote gate-a's row last");

        store.host_stopped("gate-b", 1, 1_010).unwrap();
        assert_eq!(store.hosts().unwrap()[1].stopped_at, None, "another instance's stop changes nothing");
        store.host_stopped("gate-b", 9, 1_010).unwrap();
        assert_eq!(store.hosts().unwrap()[1].stopped_at, Some(1_010));
        beat("gate-b", 10, None, 0, 1_020);
        assert_eq!(store.hosts().unwrap()[1].stopped_at, None, "running again");
        assert!(store.forget_host("gate-b").unwrap());
        assert!(!store.forget_host("gate-b").unwrap());
        assert_eq!(store.hosts().unwrap().len(), 1);

        let mut gatectl = backend.open();
        enroll(&mut gatectl, "alice");
        enroll(&mut gatectl, "bob");
        gatectl.revoke_client("bob", 200).unwrap();
        let database = store.database().unwrap();
        assert_eq!((database.clients, database.revoked, database.schema_version), (2, 1, 2));
        assert!(!database.version.is_empty() && !database.location.is_empty(), "{database:?}");
    });
}

#[test]
fn certificates_take_increasing_serials_and_a_revoked_clients_are_marked() {
    Backend::each(|backend| {
        let mut store = backend.open();
        let (public, _) = enroll(&mut store, "alice");
        let spki = gate_protocol::keys::rsa_public_der(&public.rsa_public).unwrap();
        let first = store.issue_client_certificate("alice", &spki, 100).unwrap();
        let second = store.issue_client_certificate("alice", &spki, 100).unwrap();
        assert_ne!(first, second);
        let server = store.server_identity("vpn", 100).unwrap();
        assert_eq!(server.cert_pem, backend.open().server_identity("vpn", 100).unwrap().cert_pem, "issued once");
        assert_eq!(store.revocation_mark().unwrap(), (0, 0));
        store.revoke_client("alice", 200).unwrap();
        assert_eq!(store.revocation_mark().unwrap(), (2, 200), "both of alice's certificates");
        let crl = store.crl(300).unwrap();
        assert!(crl.contains("BEGIN X509 CRL"), "{crl}");
        assert_ne!(store.crl(300).unwrap(), crl, "each CRL has its own number");
    });
}

#[test]
fn shutdown_states_keep_the_operators_over_the_notifications() {
    Backend::each(|backend| {
        let mut store = backend.open();
        assert_eq!(store.last_notification_serial("h").unwrap(), 0);
        let notification = Notification {
            product: "gate".into(),
            version: "0".into(),
            serial: 7,
            issued_at: 100,
            message: "maintenance".into(),
            www: State::Disabled,
            web: State::Ok,
            vpn: State::Ok,
        };
        store.record_notification(&notification, "h", 100).unwrap();
        store.set_operator_state(Part::Vpn, Some(State::Disabled), "by hand", "h", 110).unwrap();
        store.set_operator_state(Part::Www, Some(State::Ok), "", "h", 110).unwrap();
        assert_eq!(store.last_notification_serial("h").unwrap(), 7);
        assert_eq!(store.last_notification_serial("other").unwrap(), 0, "per host");
        let rows = store.shutdown_rows("h").unwrap();
        assert_eq!(rows.iter().filter(|r| r.source == FROM_NOTIFICATION).count(), 3);
        assert_eq!(rows.iter().filter(|r| r.source == FROM_OPERATOR).count(), 2);
        let effective = store.effective_shutdown("h").unwrap();
        assert_eq!((effective.www, effective.web, effective.vpn), (State::Ok, State::Ok, State::Disabled));
        assert_eq!(effective.message, "by hand");
        store.set_operator_state(Part::Www, None, "", "h", 120).unwrap();
        assert_eq!(backend.open().effective_shutdown("h").unwrap().www, State::Disabled, "the notification's again");
    });
}

/// A store with clients, closed again (its WAL checkpointed into the file).
fn store_with_clients(path: &std::path::Path, clients: usize) {
    let mut store = new_store(path);
    for i in 0..clients {
        enroll(&mut store, &format!("client-{i}"));
    }
}

fn damage(path: &std::path::Path) -> String {
    match Store::open(path) {
        Err(StoreError::Damaged { reason, .. }) => reason,
        Err(other) => panic!("expected a damaged store, got: {other}"),
        Ok(_) => panic!("a damaged store at {} opened", path.display()),
    }
}

#[test]
fn a_missing_store_is_not_made_by_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gate.db");
    let error = Store::open(&path).err().expect("no store there");
    assert!(matches!(error, StoreError::Missing(_)), "{error}");
    assert!(error.to_string().contains("no store at"), "{error}");
    assert!(!path.exists(), "open made a file");
}

#[test]
fn an_empty_cut_short_corrupt_or_foreign_store_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();

    let empty = dir.path().join("empty.db");
    fs::write(&empty, b"").unwrap();
    assert!(damage(&empty).contains("empty"));
    assert!(matches!(Store::open_or_create(&empty), Err(StoreError::Damaged { .. })), "never made anew over it");
    assert_eq!(fs::metadata(&empty).unwrap().len(), 0, "the file was changed");

    let whole = dir.path().join("whole.db");
    store_with_clients(&whole, 40);
    let bytes = fs::read(&whole).unwrap();
    assert!(bytes.len() > 8 * 4096, "the test store is too small to damage page by page");

    let cut = dir.path().join("cut.db");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let reason = damage(&cut);
    assert!(reason.contains("integrity check"), "{reason}");

    let corrupt = dir.path().join("corrupt.db");
    let mut scrambled = bytes.clone();
    // Page 3 onwards holds the tables' rows: overwrite one page in the middle with noise.
    let page = 4096 * 4;
    for (i, byte) in scrambled[page..page + 4096].iter_mut().enumerate() {
        *byte = (i * 7 + 13) as u8;
    }
    fs::write(&corrupt, &scrambled).unwrap();
    let reason = damage(&corrupt);
    assert!(reason.contains("integrity check"), "{reason}");
    assert_eq!(fs::read(&corrupt).unwrap(), scrambled, "the damaged file was changed");

    let text = dir.path().join("text.db");
    fs::write(&text, "not a database at all, but long enough to have a header of a hundred bytes .............\n")
        .unwrap();
    assert!(damage(&text).contains("not an SQLite database"));

    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    assert!(damage(&foreign).contains("not a gate store"));

    let error = Store::open(&empty).err().unwrap().to_string();
    assert!(error.contains("restore it from a backup"), "{error}");
}

#[test]
fn a_sound_store_opens_with_its_clients() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gate.db");
    store_with_clients(&path, 3);
    let (store, created) = Store::open_or_create(&path).unwrap();
    assert!(!created);
    assert_eq!(store.clients().unwrap().len(), 3);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".new-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_version_1_store_is_upgraded_in_place_and_reports_changes_by_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gate.db");
    let mut store = new_store(&path);
    enroll(&mut store, "alice");
    enroll(&mut store, "bob");
    drop(store);
    // Back to how version 1 stored it: no revision column.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP INDEX clients_by_revision; ALTER TABLE clients DROP COLUMN revision; \
         DELETE FROM schema_version; INSERT INTO schema_version (version) VALUES (1);",
    )
    .unwrap();
    drop(conn);

    let mut store = Store::open(&path).unwrap();
    let names = |clients: &[gate_store::ClientRecord]| clients.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&store.clients().unwrap()), ["alice", "bob"], "the clients came through");
    let (all, seen) = store.clients_since(0).unwrap();
    assert_eq!(names(&all), ["alice", "bob"]);
    let (none, same) = store.clients_since(seen).unwrap();
    assert!(none.is_empty() && same == seen, "nothing since");

    enroll(&mut store, "carol");
    let (changed, after_carol) = store.clients_since(seen).unwrap();
    assert_eq!(names(&changed), ["carol"]);
    assert!(store.revoke_client("alice", 200).unwrap());
    let (changed, _) = store.clients_since(after_carol).unwrap();
    assert_eq!(names(&changed), ["alice"]);
    assert_eq!(changed[0].revoked_at, Some(200));
    drop(store);
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
}

#[test]
fn checkpoints_elsewhere_keep_every_commit_and_change_no_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gate.db");
    let mut store = new_store(&path);
    let checkpointer = store.checkpoint_elsewhere().unwrap().expect("an SQLite store checkpoints");
    let (alice, _) = enroll(&mut store, "alice");
    let before = store.generation().unwrap();
    for n in 0..=255 {
        assert!(record_nonce(&mut store, alice.token, n));
    }
    let wal = || fs::metadata(dir.path().join("gate.db-wal")).unwrap().len();
    assert!(wal() > 0);
    assert!(checkpointer.run().unwrap() > 0, "pages copied into the database file");
    assert_eq!(store.generation().unwrap(), before, "a checkpoint is no one's commit");
    // The log starts over at the next commit once everything in it was copied.
    let copied_log = wal();
    assert!(record_nonce(&mut store, Token([9; 16]), 0));
    checkpointer.run().unwrap();
    assert_eq!(wal(), copied_log, "the log was reused from its start, not grown");
    drop((store, checkpointer));
    let store = Store::open(&path).unwrap();
    assert!((0..=255).all(|n| store.nonce_seen(alice.token, &[n; 16]).unwrap()));
}

#[test]
fn over_tls_the_store_checks_the_databases_certificate() {
    let server = TempPostgres::start_with_tls().expect("a PostgreSQL server with TLS");
    let url = server.tls_url("postgres").unwrap();
    let location = StoreLocation::parse(&url).unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key = with_key(keys.path(), "store.key", None);
    let with_ca = |ca_file: Option<std::path::PathBuf>| StoreAccess { ca_file, ..key.clone() };

    let store = location.open(&with_ca(Some(server.ca_file()))).expect("verified against its CA");
    store.server_keys(1).unwrap();
    let encrypted = server.psql("postgres", "SELECT count(*) FROM pg_stat_ssl WHERE ssl").unwrap();
    assert_eq!(encrypted.trim(), "1", "the store's connection is the one with TLS");

    let impostor = TempPostgres::start_with_tls().unwrap();
    let error = location.open(&with_ca(Some(impostor.ca_file()))).err().expect("another CA's word is not enough");
    assert!(error.to_string().contains("certificate verify failed"), "{error}");
    let error = location.open(&with_ca(None)).err().expect("the system's roots do not know a private CA");
    assert!(error.to_string().contains("certificate verify failed"), "{error}");

    let prefer = StoreLocation::parse(&url.replace("sslmode=require", "sslmode=prefer")).unwrap();
    let error = prefer.open(&with_ca(Some(server.ca_file()))).err().expect("a CA with TLS optional");
    assert!(error.to_string().contains("sslmode=require"), "{error}");
    let plain = StoreLocation::parse(&url.replace("sslmode=require", "sslmode=disable")).unwrap();
    assert!(plain.open(&with_ca(None)).is_err(), "the server takes TLS only");
}

/// A new store key in a file of `dir`, and what opening a store with it (and `previous`) takes.
fn with_key(dir: &std::path::Path, name: &str, previous: Option<&str>) -> StoreAccess {
    let file = dir.join(name);
    if !file.exists() {
        StoreKey::generate().unwrap().write_new(&file).unwrap();
    }
    StoreAccess { key_file: Some(file), previous_key_file: previous.map(|p| dir.join(p)), ..StoreAccess::default() }
}

/// Whether `dump` holds `secret` as bytes or as hex (as `pg_dump` writes bytes).
fn holds(dump: &[u8], secret: &[u8]) -> bool {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    dump.windows(secret.len()).any(|w| w == secret) || dump.windows(hex.len()).any(|w| w == hex.as_bytes())
}

/// A line of a PEM key's body: present in a dump if the key is.
fn pem_line(pem: &str) -> Vec<u8> {
    pem.lines().nth(1).expect("a PEM body").as_bytes().to_vec()
}

#[test]
fn secrets_are_sealed_at_rest_and_open_only_with_the_store_key() {
    Backend::each(|backend| {
        let keys = tempfile::tempdir().unwrap();
        let access = with_key(keys.path(), "store.key", None);
        let mut store = backend.open_with(&access);
        let (_, secret) = enroll(&mut store, "alice");
        let box_secret = store.server_keys(1).unwrap().box_secret.to_bytes();
        let ca_key = store.ca(1).unwrap().key_pem;
        let server_key = store.server_identity("vpn", 1).unwrap().key_pem;
        drop(store);

        let dump = backend.dump();
        assert!(holds(&dump, b"alice"), "the dump is readable: the test looks in the right place");
        assert!(!holds(&dump, &secret.0), "a client's HMAC secret in the clear");
        assert!(!holds(&dump, &box_secret), "the server's box secret in the clear");
        assert!(!holds(&dump, &pem_line(&ca_key)), "the CA's key in the clear");
        assert!(!holds(&dump, &pem_line(&server_key)), "a server's key in the clear");

        let store = backend.open_with(&access);
        assert_eq!(store.client("alice").unwrap().secret.0, secret.0);
        assert_eq!(store.server_keys(2).unwrap().box_secret.to_bytes(), box_secret);
        assert_eq!(*store.ca(2).unwrap().key_pem, *ca_key);
        let error = backend.open().client("alice").expect_err("no key, no secret");
        assert!(matches!(error, StoreError::Sealed(_)), "{error}");
        let other = with_key(keys.path(), "other.key", None);
        let error = backend.open_with(&other).client("alice").expect_err("another key");
        assert!(error.to_string().contains("store key"), "{error}");
    });
}

#[test]
fn secrets_from_before_a_key_and_under_an_old_key_are_sealed_anew_by_reseal() {
    Backend::each(|backend| {
        let keys = tempfile::tempdir().unwrap();
        let mut plain = backend.open();
        let (_, early) = enroll(&mut plain, "early");
        plain.server_keys(1).unwrap();
        drop(plain);
        assert!(holds(&backend.dump(), &early.0), "written without a key: in the clear (the dump check sees it)");

        let first = with_key(keys.path(), "first.key", None);
        let mut store = backend.open_with(&first);
        assert_eq!(store.client("early").unwrap().secret.0, early.0, "written before the key: read as it is");
        assert_eq!(store.reseal().unwrap(), 2, "early's secret and the server's box secret");
        assert_eq!(store.reseal().unwrap(), 0, "all sealed");
        let (_, alice) = enroll(&mut store, "alice");
        drop(store);
        assert!(backend.open().client("early").is_err(), "sealed now");
        assert!(!holds(&backend.dump(), &early.0), "resealed: no longer in the clear, not even in free pages");

        let rotating = with_key(keys.path(), "second.key", Some("first.key"));
        let mut store = backend.open_with(&rotating);
        assert_eq!(store.client("alice").unwrap().secret.0, alice.0, "the previous key still opens");
        assert_eq!(store.reseal().unwrap(), 3);
        drop(store);
        let second = with_key(keys.path(), "second.key", None);
        let store = backend.open_with(&second);
        assert_eq!(store.client("early").unwrap().secret.0, early.0);
        assert_eq!(store.client("alice").unwrap().secret.0, alice.0);
        assert!(backend.open_with(&first).client("alice").is_err(), "the old key opens nothing now");
    });
}

#[test]
fn a_shared_store_needs_a_store_key() {
    let server = TempPostgres::start().unwrap();
    let location = StoreLocation::parse(&server.url("postgres")).unwrap();
    let error = location.open_or_create(&StoreAccess::default()).err().expect("no key");
    assert!(error.to_string().contains("approval.store_key_file"), "{error}");
}

#[test]
fn a_hosts_store_is_copied_whole_into_a_clusters_database_and_sealed_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut single = new_store(&dir.path().join("gate.db"));
    let (alice, alice_secret) = enroll(&mut single, "alice");
    enroll(&mut single, "bob");
    single.revoke_client("bob", 200).unwrap();
    let server_key = single.server_keys(1).unwrap().public();
    let spki = gate_protocol::keys::rsa_public_der(&alice.rsa_public).unwrap();
    single.issue_client_certificate("alice", &spki, 100).unwrap();
    let vpn = single.server_identity("vpn", 100).unwrap();
    let address: IpAddr = "198.51.100.7".parse().unwrap();
    let approved = Write::Approval(nonce_record(alice.token, 1), approval("alice", &[address], Some(&[1; 64])));
    assert_eq!(single.commit(&approved).unwrap(), Recorded::Yes);
    single.set_operator_state(Part::Web, Some(State::Disabled), "moving", "h", 300).unwrap();

    let server = TempPostgres::start().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let access = with_key(keys.path(), "cluster.key", None);
    let location = StoreLocation::parse(&server.url("postgres")).unwrap();
    let mut cluster = location.open_or_create(&access).unwrap().0;
    assert!(single.copy_into(&mut cluster).unwrap() > 10);

    assert_eq!(cluster.server_keys(2).unwrap().public(), server_key, "profiles made before still work");
    assert_eq!(cluster.client("alice").unwrap().secret.0, alice_secret.0);
    assert!(cluster.is_revoked("bob").unwrap());
    assert!(cluster.nonce_seen(alice.token, &[1; 16]).unwrap(), "a request approved before is still a replay");
    assert!(cluster.address_held_by_live_client("vpn", address, "h", 300).unwrap(), "the grant came along");
    assert!(!cluster.spend_session_token(&[9; 64], "alice", "vpn", 300).unwrap());
    assert!(cluster.spend_session_token(&[1; 64], "alice", "vpn", 300).unwrap(), "the session token came along");
    assert_eq!(cluster.server_identity("vpn", 300).unwrap().cert_pem, vpn.cert_pem, "the same VPN identity");
    assert_eq!(cluster.revocation_mark().unwrap(), single.revocation_mark().unwrap());
    assert_eq!(cluster.effective_shutdown("h").unwrap().web, State::Disabled);
    let fresh = cluster.issue_client_certificate("alice", &spki, 400).unwrap();
    assert!(!fresh.is_empty(), "serials go on from where the host's were");
    let (_, revision) = cluster.clients_since(0).unwrap();
    assert_eq!(revision, single.clients_since(0).unwrap().1, "revisions came along");

    let dump = server.dump("postgres").unwrap().into_bytes();
    assert!(!holds(&dump, &alice_secret.0), "sealed with the cluster's key on the way");
    assert!(!holds(&dump, &pem_line(&vpn.key_pem)));
    let error = single.copy_into(&mut cluster).unwrap_err().to_string();
    assert!(error.contains("only into an empty one"), "{error}");
}

#[test]
fn a_backup_taken_while_clients_are_enrolled_is_one_snapshot() {
    // `gatectl store backup` copies a live store: a client enrolled between the read of
    // `clients` and that of `client_gates` would come with gates and without its row, which
    // the backup's foreign key refuses. Read from one snapshot, every backup is whole.
    Backend::each(|backend| {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let mut store = backend.open();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut enrolled = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    enroll(&mut store, &format!("w{enrolled}"));
                    enrolled += 1;
                }
                enrolled
            })
        };
        let source = backend.open();
        let dir = tempfile::tempdir().unwrap();
        let mut seen = 0;
        for i in 0..40 {
            let mut backup = new_store(&dir.path().join(format!("backup-{i}.db")));
            let copied = source.copy_into(&mut backup);
            let clients = backup.clients().unwrap();
            assert!(copied.is_ok(), "backup {i}: {:?}", copied.err());
            assert!(clients.iter().all(|c| c.gates.contains("vpn")), "backup {i}: a client without its gate");
            assert!(clients.len() >= seen, "backup {i} holds fewer clients than the one before");
            seen = clients.len();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let enrolled = writer.join().unwrap();
        assert!(seen > 0 && enrolled >= seen, "the backups saw {seen} of {enrolled} clients enrolled meanwhile");
    });
}

#[test]
fn an_operators_state_for_all_hosts_applies_to_each_unless_the_host_has_its_own() {
    Backend::each(|backend| {
        let store = backend.open();
        store
            .set_operator_state(Part::Vpn, Some(State::Disabled), "cluster maintenance", gate_store::ALL_HOSTS, 10)
            .unwrap();
        for host in ["gate-a", "gate-b"] {
            let effective = store.effective_shutdown(host).unwrap();
            assert_eq!(effective.vpn, State::Disabled, "{host}");
            assert_eq!(effective.message, "cluster maintenance");
        }
        store.set_operator_state(Part::Vpn, Some(State::Ok), "", "gate-b", 20).unwrap();
        assert_eq!(store.effective_shutdown("gate-b").unwrap().vpn, State::Ok, "gate-b's own setting wins");
        assert_eq!(store.effective_shutdown("gate-a").unwrap().vpn, State::Disabled);
        store.set_operator_state(Part::Vpn, None, "", gate_store::ALL_HOSTS, 30).unwrap();
        assert_eq!(store.effective_shutdown("gate-a").unwrap().vpn, State::Ok, "cleared for all");
    });
}

#[test]
fn the_audit_trail_keeps_approvals_with_their_commit_and_answers_by_client_address_and_time() {
    use gate_store::{AuditEvent, AuditKind, AuditQuery};
    Backend::each(|backend| {
        let mut store = backend.open();
        let (alice, _) = enroll(&mut store, "alice");
        let (bob, _) = enroll(&mut store, "bob");
        store.revoke_client("bob", 200).unwrap();
        let (first, second): (IpAddr, IpAddr) = ("198.51.100.7".parse().unwrap(), "2001:db8::7".parse().unwrap());
        let group = [
            Write::Approval(nonce_record(alice.token, 1), approval("alice", &[first, second], None)),
            Write::Approval(nonce_record(alice.token, 1), approval("alice", &[first], None)),
            Write::Approval(nonce_record(bob.token, 1), approval("bob", &[first], None)),
        ];
        let answers: Vec<Recorded> = store.commit_group(&group).into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, [Recorded::Yes, Recorded::Replay, Recorded::Revoked]);
        let closed = AuditEvent::new(4500, "h", AuditKind::LeaseClosed, "revoke", "root").lease("vpn", first);
        store.record_audit(std::slice::from_ref(&closed)).unwrap();
        let all = |query: AuditQuery| store.audit_trail(&AuditQuery { limit: 100, ..query }).unwrap();

        let trail = all(AuditQuery::default());
        let opened: Vec<_> = trail.iter().filter(|e| e.event == AuditKind::LeaseOpened).collect();
        assert_eq!(opened.len(), 2, "one row an address of the approval, none for a replay or the revoked: {trail:?}");
        assert!(opened.iter().all(|e| e.client.as_deref() == Some("alice") && e.actor == "alice" && e.at == 4000));
        assert_eq!((opened[0].cause.as_str(), opened[0].detail.as_str()), ("approval", "for 1000s"));
        assert_eq!(trail.last(), Some(&closed), "oldest first");

        assert_eq!(all(AuditQuery { address: Some(second), ..Default::default() }).len(), 1);
        assert_eq!(all(AuditQuery { address: Some(first), ..Default::default() }).len(), 2);
        assert_eq!(all(AuditQuery { client: Some("bob".into()), ..Default::default() }), []);
        assert_eq!(all(AuditQuery { since: Some(4001), ..Default::default() }), std::slice::from_ref(&closed));
        let newest = store.audit_trail(&AuditQuery { limit: 1, ..Default::default() }).unwrap();
        assert_eq!(newest, std::slice::from_ref(&closed), "a limit keeps the newest");

        assert_eq!(store.purge_audit(4001).unwrap(), 2, "rows before the time go");
        assert_eq!(all(AuditQuery::default()), [closed]);
    });
}

#[test]
fn a_revoked_name_is_enrolled_again_once_its_leases_are_closed_and_its_old_keys_stay_refused() {
    Backend::each(|backend| {
        let mut store = backend.open();
        let (old, _) = enroll(&mut store, "alice");
        let address: IpAddr = "198.51.100.7".parse().unwrap();
        let approved = Write::Approval(nonce_record(old.token, 1), approval("alice", &[address], Some(&[9; 64])));
        assert_eq!(store.commit(&approved).unwrap(), Recorded::Yes);
        let again = |store: &mut Store| {
            let public = ClientPublic {
                token: Token::random(&mut OsRng),
                box_public: SecretKey::generate(&mut OsRng).public_key(),
                rsa_public: rsa_private_from_pem(PEM).unwrap().to_public_key(),
            };
            let gates = ["vpn2".to_owned()];
            let secret = HmacSecret::random(&mut OsRng);
            store
                .add_client(&NewClient { name: "alice", gates: &gates, public: &public, secret: &secret, now: 300 })
                .map(|()| public)
        };
        assert!(matches!(again(&mut store), Err(StoreError::ClientExists(_))), "an enrolled name is taken");
        store.revoke_client("alice", 200).unwrap();
        let (_, revision) = store.clients_since(0).unwrap();
        match again(&mut store) {
            Err(StoreError::LeasesLeft { grants: 1, hosts, .. }) => assert_eq!(hosts, "h"),
            other => panic!("a revoked name with a lease still open: {:?}", other.map(|p| p.token)),
        }
        // Its leases closed (what end_grants does on each host), it is enrolled again.
        store.delete_grants("alice", "vpn", &[address], "h").unwrap();
        let new = again(&mut store).unwrap();
        let alice = store.client("alice").unwrap();
        assert_eq!((alice.token, alice.revoked_at, alice.created_at), (new.token, None, 300));
        assert_eq!(alice.gates.iter().collect::<Vec<_>>(), ["vpn2"], "its gates are the new ones");
        let (changed, _) = store.clients_since(revision).unwrap();
        assert_eq!(
            changed.iter().map(|c| c.token).collect::<Vec<_>>(),
            [new.token],
            "the daemons' views see the new keys"
        );
        assert!(
            !store.spend_session_token(&[9; 64], "alice", "vpn", 250).unwrap(),
            "a session token of the old device opens nothing once the name is enrolled again"
        );
    });
}

/// Whether the CA certificate `ca_pem` signed `cert_pem` (`openssl verify`, no other CA given;
/// the tests' times are in 1970).
fn issued_by(ca_pem: &str, cert_pem: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    fs::write(dir.path().join("cert.pem"), cert_pem).unwrap();
    std::process::Command::new("openssl")
        .args(["verify", "-no_check_time", "-CAfile", "ca.pem", "cert.pem"])
        .current_dir(dir.path())
        .output()
        .expect("run openssl")
        .status
        .success()
}

#[test]
fn a_box_key_rotation_keeps_the_previous_key_until_it_is_retired_and_every_reader_sees_each_step() {
    Backend::each(|backend| {
        let mut gatectl = backend.open();
        let daemon = backend.open();
        let first = daemon.server_box_keys(100).unwrap();
        assert!(first.previous.is_none());
        let mut seen = daemon.generation().unwrap();

        let new_public = gatectl.rotate_server_key(200).unwrap();
        let rotated = daemon.server_box_keys(300).unwrap();
        assert_eq!(rotated.current.public(), new_public);
        assert_ne!(new_public, first.current.public(), "a new key");
        let (previous, since) = rotated.previous.expect("the old key stays accepted");
        assert_eq!((previous.public(), since), (first.current.public(), 200));
        assert_eq!(rotated.current_since, 200);
        assert_ne!(daemon.generation().unwrap(), seen, "the daemon's view looks again");
        // What a build that predates rotation reads: the current key under its old name.
        assert_eq!(backend.open().server_keys(400).unwrap().public(), new_public);

        // Who `retire` would cut off: active, enrolled before the rotation, no update issued since.
        let mut operator = backend.open();
        enroll_at(&mut operator, "alice", 150);
        enroll_at(&mut operator, "bob", 150);
        enroll_at(&mut operator, "dave", 250);
        operator.revoke_client("bob", 260).unwrap();
        assert_eq!(daemon.clients_missing_box_key_update().unwrap(), ["alice"], "bob is revoked, dave came after");
        let updated = |at| {
            gate_store::AuditEvent::new(at, "h", gate_store::AuditKind::ProfileUpdated, "operator", "root")
                .client("alice")
        };
        operator.record_audit(&[updated(190)]).unwrap();
        assert_eq!(daemon.clients_missing_box_key_update().unwrap(), ["alice"], "an update from before does not count");
        operator.record_audit(&[updated(250)]).unwrap();
        assert!(daemon.clients_missing_box_key_update().unwrap().is_empty(), "issued since");
        seen = daemon.generation().unwrap();

        let again = gatectl.rotate_server_key(400).unwrap_err().to_string();
        assert!(again.contains("under way") && again.contains("server-key retire"), "{again}");
        assert_eq!(daemon.server_box_keys(400).unwrap().current.public(), new_public, "nothing changed");

        assert!(gatectl.retire_previous_server_key().unwrap());
        assert!(daemon.clients_missing_box_key_update().unwrap().is_empty(), "no rotation: nobody to update");
        assert!(daemon.server_box_keys(500).unwrap().previous.is_none(), "retired");
        assert_ne!(daemon.generation().unwrap(), seen, "the retirement is seen too");
        assert!(!gatectl.retire_previous_server_key().unwrap(), "nothing left to retire");
        let next = gatectl.rotate_server_key(600).unwrap();
        assert_ne!(next, new_public, "a second rotation once the first is over");
    });
}

#[test]
fn a_ca_rotation_issues_clients_from_the_next_ca_and_its_end_revokes_what_the_old_one_issued() {
    Backend::each(|backend| {
        let mut store = backend.open();
        let (public, _) = enroll(&mut store, "alice");
        let spki = gate_protocol::keys::rsa_public_der(&public.rsa_public).unwrap();
        let old_client = store.issue_client_certificate("alice", &spki, 100).unwrap();
        let old_server = store.server_identity("openvpn-main", 100).unwrap();
        let old_ca = store.ca_state(100).unwrap().current.cert_pem;
        assert_eq!(old_server.ca_pem, old_ca, "one CA before a rotation");
        assert_eq!(store.certificate_for_update("alice", &spki, 150).unwrap(), old_client, "no rotation: kept");
        let mark = store.ca_mark().unwrap();

        assert!(store.clients_missing_next_ca_certificate().unwrap().is_empty(), "no rotation");
        store.rotate_ca(200).unwrap();
        assert_eq!(store.clients_missing_next_ca_certificate().unwrap(), ["alice"], "her certificate is the old CA's");
        assert_ne!(store.ca_mark().unwrap(), mark, "servers restart on it");
        let refused = store.rotate_ca(210).unwrap_err().to_string();
        assert!(refused.contains("under way") && refused.contains("ca finish"), "{refused}");
        let state = store.ca_state(220).unwrap();
        let (next, _) = state.next.as_ref().expect("the next CA");
        assert_eq!(gate_pki::common_name(&next.cert_pem).as_deref(), Some("gate CA 2"), "named apart");
        assert_eq!(state.bundle().matches("BEGIN CERTIFICATE").count(), 2, "both are trusted");
        let new_client = store.issue_client_certificate("bob", &spki, 220).unwrap();
        assert!(issued_by(&next.cert_pem, &new_client) && !issued_by(&old_ca, &new_client));
        let updated = store.certificate_for_update("alice", &spki, 230).unwrap();
        assert!(issued_by(&next.cert_pem, &updated), "an update gives a certificate of the next CA");
        assert_eq!(store.certificate_for_update("alice", &spki, 240).unwrap(), updated, "once");
        assert!(store.clients_missing_next_ca_certificate().unwrap().is_empty(), "alice has one of the next CA");
        let server = backend.open().server_identity("openvpn-main", 250).unwrap();
        assert_eq!(server.cert_pem, old_server.cert_pem, "servers keep the old CA's: old profiles trust only it");
        assert_eq!(server.ca_pem, state.bundle());
        let other = store.server_identity("openvpn-other", 250).unwrap();
        assert!(issued_by(&old_ca, &other.cert_pem), "a server new in the rotation: the old CA's too");
        let crls = store.crl(260).unwrap();
        assert_eq!(crls.matches("BEGIN X509 CRL").count(), 2, "one CRL from each CA OpenVPN checks");

        let revoked = store.finish_ca_rotation(300).unwrap();
        assert_eq!(revoked, 3, "alice's old certificate and both servers'");
        let state = store.ca_state(310).unwrap();
        assert!(state.next.is_none());
        assert_eq!(state.current.cert_pem, next.cert_pem, "the next CA is the CA");
        assert_eq!(state.bundle().matches("BEGIN CERTIFICATE").count(), 1);
        let server = store.server_identity("openvpn-main", 320).unwrap();
        assert!(issued_by(&next.cert_pem, &server.cert_pem), "a new server certificate from the new CA");
        assert_eq!(store.certificate_for_update("alice", &spki, 330).unwrap(), updated, "the update's stays");
        assert_eq!(store.crl(340).unwrap().matches("BEGIN X509 CRL").count(), 1);
        assert!(store.finish_ca_rotation(350).unwrap_err().to_string().contains("no CA rotation"));
        store.rotate_ca(360).unwrap();
        let third = store.ca_state(370).unwrap().next.expect("a second rotation").0;
        assert_eq!(gate_pki::common_name(&third.cert_pem).as_deref(), Some("gate CA 3"));
    });
}
