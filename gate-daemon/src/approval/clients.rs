//! Enrolled clients in memory, by token, so an unknown token costs a hash lookup and nothing
//! more. Reloaded whole when the store's `data_version` says another process (gatectl) has
//! committed: enrollments and revocations take effect on the next request. Each client's shared
//! box key (an X25519 agreement, the costliest part of the box) is computed once, on first use,
//! and kept across reloads.
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
    by_token: HashMap<Token, Arc<Client>>,
}

impl Clients {
    /// Reloads if the store changed since the last load. Returns whether it reloaded.
    ///
    /// # Errors
    /// The store could not be read; the previous view is kept.
    pub fn refresh(&mut self, store: &Store) -> Result<bool, StoreError> {
        let version = store.data_version()?;
        if self.version == Some(version) {
            return Ok(false);
        }
        let by_token = store
            .clients()?
            .into_iter()
            .map(|record| {
                // What was computed for a client is kept across reloads while its keys are the same.
                let (shared, verifying) = (OnceLock::new(), OnceLock::new());
                if let Some(old) = self.by_token.get(&record.token) {
                    if let Some(computed) = old.shared.get().filter(|_| old.record.box_public == record.box_public) {
                        let _ = shared.set(Arc::clone(computed));
                    }
                    if let Some(parsed) = old.verifying.get().filter(|_| old.record.rsa_public == record.rsa_public) {
                        let _ = verifying.set(parsed.clone());
                    }
                }
                (record.token, Arc::new(Client { record, shared, verifying }))
            })
            .collect();
        self.by_token = by_token;
        self.version = Some(version);
        Ok(true)
    }

    #[must_use]
    pub fn get(&self, token: &Token) -> Option<Arc<Client>> {
        self.by_token.get(token).cloned()
    }

    /// A client by name (a scan: used only after a reload).
    #[must_use]
    pub fn by_name(&self, name: &str) -> Option<Arc<Client>> {
        self.by_token.values().find(|c| c.record.name == name).cloned()
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
