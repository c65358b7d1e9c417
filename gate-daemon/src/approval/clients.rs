//! Enrolled clients in memory, by token, so an unknown token costs a hash lookup and nothing
//! more. When the store's generation says another process (gatectl) has committed, only the
//! clients written since the last look are read (the store's client revisions) and replaced:
//! enrollments and revocations take effect on the next request, at a cost that follows the
//! change, not the number of clients. Each client's shared box key (an X25519 agreement, the
//! costliest part of the box) is computed once, on first use, and kept while its keys stay the
//! same; its parsed RSA key too, but only for the [`PARSED_KEYS_KEPT`] clients that asked last
//! (a parsed key with OpenSSL's Montgomery setup is ~3 KB: kept for 100,000 clients, they were
//! most of the daemon's 532 MiB after a storm). The server's box keys live in the view too: a
//! key rotation is a change like an enrollment, and each client's boxes are agreed with the
//! keys of its entry.
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, OnceLock, PoisonError, Weak},
};

use gate_protocol::{
    keys::{RsaVerifyingKey, Token},
    shared_box::{BoxSecret, SharedBox},
};
use gate_store::{ClientRecord, Store, StoreError};

/// Clients whose parsed RSA key is kept; beyond, the one kept longest is dropped (and parsed
/// again at that client's next request, ~30 µs).
pub const PARSED_KEYS_KEPT: usize = 10_000;

/// The server's box keys requests are opened with; replaced whole by a rotation.
pub struct BoxKeys {
    pub current: BoxSecret,
    /// The key the last rotation replaced, while it is not retired.
    pub previous: Option<BoxSecret>,
    /// Their public halves: what tells one set from another.
    publics: ([u8; 32], Option<[u8; 32]>),
}

impl BoxKeys {
    /// The keys as the store has them now.
    ///
    /// # Errors
    /// The store could not be read, or a key is malformed.
    pub fn read(store: &Store) -> Result<Self, StoreError> {
        let keys = store.server_box_keys(crate::approval::service::unix_now())?;
        let previous = keys.previous.as_ref().map(|(previous, _)| previous);
        Ok(Self {
            current: BoxSecret::new(&keys.current.box_secret)?,
            previous: previous.map(|p| BoxSecret::new(&p.box_secret)).transpose()?,
            publics: (*keys.current.public().as_bytes(), previous.map(|p| *p.public().as_bytes())),
        })
    }

    /// Whether a rotation is under way (a previous key is still accepted).
    #[must_use]
    pub fn rotating(&self) -> bool {
        self.previous.is_some()
    }
}

/// Which of the server's box keys a request was boxed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyUsed {
    Current,
    /// The one a rotation replaced: the client's profile wants an update.
    Previous,
}

pub struct Client {
    pub record: ClientRecord,
    /// The server keys this entry's boxes are agreed with.
    keys: Arc<BoxKeys>,
    /// `None`: the agreement failed (a box key of low order); every request of this client fails.
    shared: OnceLock<Option<Arc<SharedBox>>>,
    /// The same with the previous key, agreed only when a request needs it.
    shared_previous: OnceLock<Option<Arc<SharedBox>>>,
    /// The RSA key parsed for verification, while this client is among the last
    /// [`PARSED_KEYS_KEPT`] to have used it.
    verifying: Mutex<Option<Arc<RsaVerifyingKey>>>,
}

/// The clients holding a parsed key, oldest first, and how many may.
pub struct ParsedKeys {
    order: Mutex<VecDeque<Weak<Client>>>,
    capacity: usize,
}

impl ParsedKeys {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self { order: Mutex::default(), capacity }
    }
}

impl Default for ParsedKeys {
    fn default() -> Self {
        Self::new(PARSED_KEYS_KEPT)
    }
}

/// The box in `slot`, agreed between the client and `key` at its first use.
fn agreed<'a>(
    slot: &'a OnceLock<Option<Arc<SharedBox>>>,
    record: &ClientRecord,
    key: &BoxSecret,
) -> Option<&'a SharedBox> {
    slot.get_or_init(|| SharedBox::agreed(&record.box_public, key).ok().map(Arc::new)).as_deref()
}

impl Client {
    fn new(record: ClientRecord, keys: Arc<BoxKeys>) -> Self {
        Self { record, keys, shared: OnceLock::new(), shared_previous: OnceLock::new(), verifying: Mutex::new(None) }
    }

    /// Opens what the client boxed (`open` with each box in turn): with the box it shares
    /// with the server's current key, else, during a rotation, with the previous key's. Each
    /// box is agreed at its first use and kept. Returns the box that opened it (the answer is
    /// sealed in the same: the client knows only that key), what `open` gave, and which key.
    pub fn open_box<T, E>(&self, open: impl Fn(&SharedBox) -> Result<T, E>) -> Option<(&SharedBox, T, KeyUsed)> {
        let current = agreed(&self.shared, &self.record, &self.keys.current);
        if let Some(shared) = current
            && let Ok(opened) = open(shared)
        {
            return Some((shared, opened, KeyUsed::Current));
        }
        let previous = agreed(&self.shared_previous, &self.record, self.keys.previous.as_ref()?)?;
        open(previous).ok().map(|opened| (previous, opened, KeyUsed::Previous))
    }

    /// The client's RSA key, ready to verify its signatures: parsed at its first request and
    /// kept while it is among the last clients to ask (`kept` says how many). `None`: OpenSSL
    /// refused the key (every request of this client fails).
    pub fn verifying_key(self: &Arc<Self>, kept: &ParsedKeys) -> Option<Arc<RsaVerifyingKey>> {
        let mut slot = self.verifying.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = slot.as_ref() {
            return Some(Arc::clone(key));
        }
        let key = Arc::new(RsaVerifyingKey::new(&self.record.rsa_public).ok()?);
        *slot = Some(Arc::clone(&key));
        drop(slot);
        let dropped = {
            let mut order = kept.order.lock().unwrap_or_else(PoisonError::into_inner);
            order.push_back(Arc::downgrade(self));
            if order.len() > kept.capacity { order.pop_front() } else { None }
        };
        if let Some(oldest) = dropped.and_then(|weak| weak.upgrade()) {
            *oldest.verifying.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        Some(key)
    }
}

#[derive(Default)]
pub struct Clients {
    /// The server's box keys, read with the clients (`None` before the first look).
    keys: Option<Arc<BoxKeys>>,
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
        let version = store.generation()?;
        if self.version == Some(version) {
            return Ok(false);
        }
        let keys = BoxKeys::read(store)?;
        let (changed, revision) = store.clients_since(self.revision)?;
        if self.keys.as_ref().is_none_or(|known| known.publics != keys.publics) {
            self.rekey(Arc::new(keys));
        }
        for record in changed {
            self.replace(record);
        }
        self.revision = revision;
        self.version = Some(version);
        Ok(true)
    }

    /// New server keys (a rotation, or the first look): every entry is made again with them,
    /// its boxes agreed anew at its next request.
    fn rekey(&mut self, keys: Arc<BoxKeys>) {
        if self.keys.is_some() {
            log::info!(
                "approval: the server's box keys changed (a rotation is {})",
                if keys.rotating() { "under way: the previous key is still accepted" } else { "not under way" }
            );
        }
        self.keys = Some(Arc::clone(&keys));
        for entry in self.by_token.values_mut() {
            *entry = Arc::new(Client::new(entry.record.clone(), Arc::clone(&keys)));
        }
    }

    /// Puts `record` in place of what the view had for its client (found by name: a re-keyed
    /// client's old token stops working).
    fn replace(&mut self, record: ClientRecord) {
        let keys = Arc::clone(self.keys.as_ref().expect("the keys are read before the clients"));
        let old = self.token_of.remove(&record.name).and_then(|token| self.by_token.remove(&token));
        // The boxes are kept while the client's box key is the same; the RSA key is parsed
        // again at the next request (its place in the kept order went with the old entry).
        let entry = Client::new(record, keys);
        if let Some(old) = old.filter(|o| o.record.box_public == entry.record.box_public) {
            for (from, to) in [(&old.shared, &entry.shared), (&old.shared_previous, &entry.shared_previous)] {
                if let Some(computed) = from.get() {
                    let _ = to.set(computed.clone());
                }
            }
        }
        self.token_of.insert(entry.record.name.clone(), entry.record.token);
        self.by_token.insert(entry.record.token, Arc::new(entry));
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

    #[test]
    fn only_the_clients_that_asked_last_keep_their_parsed_key() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open_or_create(dir.path().join("gate.db")).unwrap();
        for name in ["a", "b", "c"] {
            enroll(&mut store, name);
        }
        let mut view = Clients::default();
        view.refresh(&store).unwrap();
        let client = |name: &str| view.by_name(name).unwrap();
        let parsed = |name: &str| client(name).verifying.lock().unwrap().is_some();
        let kept = ParsedKeys::new(2);
        assert!(client("a").verifying_key(&kept).is_some() && client("b").verifying_key(&kept).is_some());
        assert!(parsed("a") && parsed("b"));
        assert!(client("c").verifying_key(&kept).is_some());
        assert_eq!((parsed("a"), parsed("b"), parsed("c")), (false, true, true), "a, kept longest, went");
        assert!(client("a").verifying_key(&kept).is_some(), "parsed again when it asks again");
        assert_eq!((parsed("a"), parsed("b"), parsed("c")), (true, false, true));
    }
}
