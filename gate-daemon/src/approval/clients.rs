//! Enrolled clients in memory, by token, so an unknown token costs a hash lookup and nothing
//! more. Reloaded whole when the store's `data_version` says another process (gatectl) has
//! committed: enrollments and revocations take effect on the next request.
use std::{collections::HashMap, sync::Arc};

use gate_protocol::keys::Token;
use gate_store::{ClientRecord, Store, StoreError};

#[derive(Default)]
pub struct Clients {
    version: Option<i64>,
    by_token: HashMap<Token, Arc<ClientRecord>>,
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
        let by_token = store.clients()?.into_iter().map(|c| (c.token, Arc::new(c))).collect();
        self.by_token = by_token;
        self.version = Some(version);
        Ok(true)
    }

    #[must_use]
    pub fn get(&self, token: &Token) -> Option<Arc<ClientRecord>> {
        self.by_token.get(token).cloned()
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
