//! Enrolled clients in memory, by token, so an unknown token costs a hash lookup and nothing
//! more. When the store's `data_version` says another process (gatectl) has committed, only the
//! clients written since the last look are read (the store's client revisions) and replaced:
//! enrollments and revocations take effect on the next request, at a cost that follows the
//! change, not the number of clients. Each client's shared box key (an X25519 agreement, the
//! costliest part of the box) and parsed RSA key are computed once, on first use, and kept
//! while its keys stay the same.
use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use gate_protocol::{
    crypto_box::SalsaBox,
    keys::{RsaVerifyingKey, ServerKeys, Token},
};
use gate_store::{ClientRecord, Store, StoreError};

pub struct Client {
    pub record: ClientRecord,
    shared: OnceLock<Arc<SalsaBox>>,
    /// The RSA key parsed for verification (`None`: OpenSSL refused it; every request fails).
    verifying: OnceLock<Option<Arc<RsaVerifyingKey>>>,
}

impl Client {
    /// The box between this client and the server.
    pub fn shared_box(&self, server: &ServerKeys) -> &SalsaBox {
        self.shared.get_or_init(|| Arc::new(SalsaBox::new(&self.record.box_public, &server.box_secret)))
    }

    /// The client's RSA key, ready to verify its signatures (made at the first request).
    pub fn verifying_key(&self) -> Option<&RsaVerifyingKey> {
        self.verifying.get_or_init(|| RsaVerifyingKey::new(&self.record.rsa_public).ok().map(Arc::new)).as_deref()
    }
}

#[derive(Default)]
pub struct Clients {
    version: Option<i64>,
    /// The highest client revision read so far.
    revision: i64,
    by_token: HashMap<Token, Arc<Client>>,
    /// Each client's token, so a client written again replaces its old entry.
    token_of: HashMap<String, Token>,
}

impl Clients {
    /// Reads what changed if the store changed since the last look. Returns whether it did.
    ///
    /// # Errors
    /// The store could not be read; the previous view is kept whole.
    pub fn refresh(&mut self, store: &Store) -> Result<bool, StoreError> {
        let version = store.data_version()?;
        if self.version == Some(version) {
            return Ok(false);
        }
        let (changed, revision) = store.clients_since(self.revision)?;
        for record in changed {
            self.replace(record);
        }
        self.revision = revision;
        self.version = Some(version);
        Ok(true)
    }

    /// Puts `record` in place of what the view had for its client (found by name: a re-keyed
    /// client's old token stops working).
    fn replace(&mut self, record: ClientRecord) {
        let old = self.token_of.remove(&record.name).and_then(|token| self.by_token.remove(&token));
        // What was computed for a client is kept while its keys are the same.
        let (shared, verifying) = (OnceLock::new(), OnceLock::new());
        if let Some(old) = old {
            if let Some(computed) = old.shared.get().filter(|_| old.record.box_public == record.box_public) {
                let _ = shared.set(Arc::clone(computed));
            }
            if let Some(parsed) = old.verifying.get().filter(|_| old.record.rsa_public == record.rsa_public) {
                let _ = verifying.set(parsed.clone());
            }
        }
        self.token_of.insert(record.name.clone(), record.token);
        self.by_token.insert(record.token, Arc::new(Client { record, shared, verifying }));
    }

    #[must_use]
    pub fn get(&self, token: &Token) -> Option<Arc<Client>> {
        self.by_token.get(token).cloned()
    }

    /// A client by name.
    #[must_use]
    pub fn by_name(&self, name: &str) -> Option<Arc<Client>> {
        self.token_of.get(name).and_then(|token| self.get(token))
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use gate_protocol::{
        crypto_box::SecretKey,
        keys::{ClientPublic, HmacSecret, rsa_private_from_pem},
        rand::rngs::OsRng,
    };
    use gate_store::NewClient;

    use super::*;

    const PEM: &str = include_str!("../../../gate-protocol/tests/vectors/client-rsa-4096.pem");

    fn enroll(store: &mut Store, name: &str) {
        let public = ClientPublic {
            token: Token::random(&mut OsRng),
            box_public: SecretKey::generate(&mut OsRng).public_key(),
            rsa_public: rsa_private_from_pem(PEM).unwrap().to_public_key(),
        };
        let secret = HmacSecret::random(&mut OsRng);
        let gates = ["vpn".to_owned()];
        store.add_client(&NewClient { name, gates: &gates, public: &public, secret: &secret, now: 1 }).unwrap();
    }

    #[test]
    fn a_change_by_another_connection_replaces_only_the_clients_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.db");
        let (mut daemon, _) = Store::open_or_create(&path).unwrap();
        // gatectl's connection (another process on a gateway).
        let mut operator = Store::open(&path).unwrap();
        for name in ["alice", "bob", "carol"] {
            enroll(&mut daemon, name);
        }
        let mut view = Clients::default();
        assert!(view.refresh(&daemon).unwrap());
        assert_eq!(view.len(), 3);
        let (alice, bob) = (view.by_name("alice").unwrap(), view.by_name("bob").unwrap());
        assert!(!view.refresh(&daemon).unwrap(), "nothing changed: nothing read");

        enroll(&mut operator, "dave");
        assert!(operator.revoke_client("bob", 5).unwrap());
        assert!(view.refresh(&daemon).unwrap());
        assert_eq!(view.len(), 4);
        assert!(view.get(&view.by_name("dave").unwrap().record.token).is_some(), "the new client is in");
        let revoked = view.by_name("bob").unwrap();
        assert_eq!(revoked.record.revoked_at, Some(5), "the revocation is seen");
        assert!(view.get(&bob.record.token).is_some_and(|b| b.record.revoked_at == Some(5)));
        assert!(Arc::ptr_eq(&alice, &view.by_name("alice").unwrap()), "an unchanged client was not read again");
    }
}
