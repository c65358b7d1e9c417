//! Rotating the server's box key and the OpenVPN CA. Each rotation has two steps, so no client
//! is cut off by surprise:
//!
//! - **Box key**: `rotate` makes a new key current (new profiles and profile updates carry it)
//!   and keeps the old one as `previous`, which every daemon still opens requests with; `retire`
//!   forgets it once the clients carry the new key. One rotation at a time.
//! - **CA**: `rotate` makes the `next` CA: client certificates are issued by it from then on,
//!   and servers and profiles trust both CAs; servers keep their certificate of the current CA
//!   (profiles not yet updated trust only that one). `finish` makes `next` the CA, forgets the
//!   old one and revokes every certificate it issued: servers get a certificate of the new CA,
//!   and a client still holding one of the old is refused.
//!
//! Rows keep the names an older build reads (`default` is always the current key and CA), so
//! its store stays readable; but an older daemon keeps the box key it read at its start and
//! trusts only `default`, so every host is upgraded before a rotation. Each step raises the
//! `key_changes` sequence, which a PostgreSQL store's generation adds in, and announces itself
//! like a client write, so every daemon sees it at once.
use gate_pki::Ca;
use gate_protocol::{crypto_box::PublicKey, keys::ServerKeys, rand::rngs::OsRng};

use crate::{
    Store, StoreError,
    pki::{CA_NAME, at, ca_row, joined_pem},
    sealing::{Sealing, Secret},
    sql::{Db, Tx, args},
    store::{SERVER_KEY_NAME, box_keys, from_sql, to_sql},
};

/// The box key a rotation replaced, accepted until it is retired.
const PREVIOUS_KEY_NAME: &str = "previous";
/// The CA a rotation made, issuing client certificates until it is made the CA.
pub(crate) const NEXT_CA_NAME: &str = "next";
/// Raised by every rotation step (see [`Store::generation`]).
pub(crate) const KEY_CHANGES: &str = "key_changes";
/// The first serial the `next` CA issued: the old CA issued every one below it.
const NEXT_CA_FIRST_SERIAL: &str = "next_ca_first_serial";
/// Counts the CAs made, to name each one apart (`gate CA`, then `gate CA 2`, ...).
const CA_GENERATION: &str = "ca_generation";

/// The box keys the daemon opens requests with.
pub struct ServerBoxKeys {
    pub current: ServerKeys,
    /// Made at (Unix seconds).
    pub current_since: u64,
    /// The key before the last rotation, while it is not retired, and when it was replaced.
    pub previous: Option<(ServerKeys, u64)>,
}

/// Where a CA rotation stands.
pub struct CaState {
    pub current: Ca,
    pub current_since: u64,
    /// The CA made by `rotate`, issuing client certificates, and when.
    pub next: Option<(Ca, u64)>,
}

impl CaState {
    /// The certificates a server and a profile trust: the CA and, during a rotation, the next.
    #[must_use]
    pub fn bundle(&self) -> String {
        match &self.next {
            Some((next, _)) => joined_pem(self.current.cert_pem.clone(), &next.cert_pem),
            None => self.current.cert_pem.clone(),
        }
    }
}

/// The first serial the next CA issued, while a CA rotation is under way.
fn next_ca_first_serial(db: &Db) -> Result<Option<i64>, StoreError> {
    db.query_opt(
        "SELECT value FROM sequences WHERE name = ?1 AND EXISTS (SELECT 1 FROM pki_ca WHERE name = ?2)",
        args![NEXT_CA_FIRST_SERIAL, NEXT_CA_NAME],
    )?
    .map(|mut row| row.int(0))
    .transpose()
}

/// Marks a rotation step for every reader: the sequence PostgreSQL's generation adds in, and
/// the announcement other hosts hear.
fn announce(db: &Db) -> Result<(), StoreError> {
    Store::next(db, KEY_CHANGES, 1)?;
    db.announce_client_change()
}

impl Store {
    /// The current box key (made on first use) and the previous one while it is accepted.
    ///
    /// # Errors
    /// The database failed, or a stored key is malformed.
    pub fn server_box_keys(&self, now: u64) -> Result<ServerBoxKeys, StoreError> {
        // Read first: a daemon asks at every change it hears, and a reading connection must
        // not write (the current key is made only where there is none).
        let (mut current, mut previous) = (None, None);
        for mut row in self.db().query(
            "SELECT name, box_secret, created_at FROM server_keys WHERE name IN (?1, ?2)",
            args![SERVER_KEY_NAME, PREVIOUS_KEY_NAME],
        )? {
            let (name, created) = (row.text(0)?, from_sql(row.int(2)?));
            let keys = (box_keys(self.sealing(), &name, &row.blob(1)?)?, created);
            if name == SERVER_KEY_NAME {
                current = Some(keys);
            } else {
                previous = Some(keys);
            }
        }
        let (current, current_since) = match current {
            Some(found) => found,
            None => (self.server_keys(now)?, now),
        };
        Ok(ServerBoxKeys { current, current_since, previous })
    }

    /// Makes a new box key current, keeping the current one as the previous (still accepted).
    /// Returns the new public key.
    ///
    /// # Errors
    /// A rotation is under way (its previous key not retired), or the database failed.
    pub fn rotate_server_key(&mut self, now: u64) -> Result<PublicKey, StoreError> {
        self.server_keys(now)?;
        let sealing = self.sealing();
        let fresh = ServerKeys::generate(&mut OsRng);
        self.db().transaction(Tx::Clients, |db| {
            if let Some(mut row) =
                db.query_opt("SELECT created_at FROM server_keys WHERE name = ?1", args![PREVIOUS_KEY_NAME])?
            {
                let since = from_sql(row.int(0)?);
                return Err(StoreError::Invalid(format!(
                    "a box key rotation is under way (the previous key, replaced {} s ago, is still accepted): \
                     retire it first (`gatectl server-key retire`) once the clients carry the current key",
                    now.saturating_sub(since)
                )));
            }
            let mut row = db.query_one("SELECT box_secret FROM server_keys WHERE name = ?1", args![SERVER_KEY_NAME])?;
            let current = box_keys(sealing, SERVER_KEY_NAME, &row.blob(0)?)?;
            let kept = sealing.seal(Secret::ServerBox(PREVIOUS_KEY_NAME), current.box_secret.to_bytes().as_slice())?;
            db.execute(
                "INSERT INTO server_keys (name, box_secret, created_at) VALUES (?1, ?2, ?3)",
                args![PREVIOUS_KEY_NAME, kept, to_sql(now)],
            )?;
            let sealed = sealing.seal(Secret::ServerBox(SERVER_KEY_NAME), fresh.box_secret.to_bytes().as_slice())?;
            db.execute(
                "UPDATE server_keys SET box_secret = ?2, created_at = ?3 WHERE name = ?1",
                args![SERVER_KEY_NAME, sealed, to_sql(now)],
            )?;
            announce(db)
        })?;
        Ok(fresh.public())
    }

    /// Forgets the previous box key: requests boxed to it are refused from now on. Returns
    /// whether there was one.
    ///
    /// # Errors
    /// The database failed.
    pub fn retire_previous_server_key(&mut self) -> Result<bool, StoreError> {
        self.db().transaction(Tx::Clients, |db| {
            let removed = db.execute("DELETE FROM server_keys WHERE name = ?1", args![PREVIOUS_KEY_NAME])? > 0;
            if removed {
                announce(db)?;
            }
            Ok(removed)
        })
    }

    /// The CA (made on first use) and the next one during a rotation.
    ///
    /// # Errors
    /// The database or key generation failed.
    pub fn ca_state(&self, now: u64) -> Result<CaState, StoreError> {
        let (current, current_since) = self.made_ca(now)?;
        Ok(CaState { current, current_since, next: ca_row(self.db(), self.sealing(), NEXT_CA_NAME)? })
    }

    /// A mark that changes with each CA rotation step: the CAs' names and times.
    ///
    /// # Errors
    /// The database failed.
    pub fn ca_mark(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut mark = Vec::new();
        for mut row in self.db().query("SELECT name, created_at FROM pki_ca ORDER BY name", args![])? {
            mark.push((row.text(0)?, from_sql(row.int(1)?)));
        }
        Ok(mark)
    }

    /// The active clients no profile update was issued to since the box key rotation under way
    /// (enrolled before it, no `profile_updated` in the audit trail since): those `retire`
    /// would cut off. Empty when no rotation is under way.
    ///
    /// # Errors
    /// The database failed.
    pub fn clients_missing_box_key_update(&self) -> Result<Vec<String>, StoreError> {
        let db = self.db();
        let Some(mut row) =
            db.query_opt("SELECT created_at FROM server_keys WHERE name = ?1", args![PREVIOUS_KEY_NAME])?
        else {
            return Ok(Vec::new());
        };
        let rotated_at = row.int(0)?;
        // Enrolled in the rotation's second: may carry either key, so listed.
        let mut names = Vec::new();
        for mut row in db.query(
            "SELECT name FROM clients WHERE revoked_at IS NULL AND created_at <= ?1 AND NOT EXISTS \
             (SELECT 1 FROM audit WHERE audit.event = ?2 AND audit.client = clients.name AND audit.at >= ?1) \
             ORDER BY name",
            args![rotated_at, crate::AuditKind::ProfileUpdated.name()],
        )? {
            names.push(row.text(0)?);
        }
        Ok(names)
    }

    /// The active clients that hold no certificate of the next CA during a CA rotation (no
    /// update issued, not enrolled since): those `finish` would cut off from the VPN. Empty
    /// when no rotation is under way.
    ///
    /// # Errors
    /// The database failed.
    pub fn clients_missing_next_ca_certificate(&self) -> Result<Vec<String>, StoreError> {
        let db = self.db();
        let Some(first) = next_ca_first_serial(db)? else { return Ok(Vec::new()) };
        let mut names = Vec::new();
        for mut row in db.query(
            "SELECT name FROM clients WHERE revoked_at IS NULL AND NOT EXISTS (SELECT 1 FROM certificates \
             WHERE kind = 'client' AND certificates.name = clients.name AND revoked_at IS NULL AND serial >= ?1) \
             ORDER BY name",
            args![first],
        )? {
            names.push(row.text(0)?);
        }
        Ok(names)
    }

    /// The CA that issues a certificate of `kind` now, read inside the issuing transaction
    /// after the serial's lock (a rotation takes it too): a client's from the next CA during a
    /// rotation, a server's always from the current one (profiles not yet updated trust only
    /// that one).
    pub(crate) fn issuing_ca(db: &Db, sealing: &Sealing, kind: &str) -> Result<Ca, StoreError> {
        let next = if kind == "client" { ca_row(db, sealing, NEXT_CA_NAME)? } else { None };
        match next {
            Some((ca, _)) => Ok(ca),
            None => ca_row(db, sealing, CA_NAME)?
                .map(|(ca, _)| ca)
                .ok_or_else(|| StoreError::Invalid("the CA vanished".into())),
        }
    }

    /// The VPN certificate a profile update gives the client `name`: its newest one if the CA
    /// that issues client certificates now issued it, else a new one for its key (SPKI DER).
    ///
    /// # Errors
    /// The database failed, or the key cannot be certified.
    pub fn certificate_for_update(&mut self, name: &str, spki_der: &[u8], now: u64) -> Result<String, StoreError> {
        let db = self.db();
        let newest = db.query_opt(
            "SELECT serial, cert_pem FROM certificates WHERE kind = 'client' AND name = ?1 AND revoked_at IS NULL \
             ORDER BY serial DESC LIMIT 1",
            args![name],
        )?;
        let first_of_next = next_ca_first_serial(db)?;
        if let Some(mut row) = newest {
            let serial = row.int(0)?;
            if first_of_next.is_none_or(|first| serial >= first) {
                return row.text(1);
            }
        }
        self.issue_client_certificate(name, spki_der, now)
    }

    /// Starts a CA rotation: makes the next CA, which issues client certificates from now on.
    ///
    /// # Errors
    /// A rotation is under way already, or the database or key generation failed.
    pub fn rotate_ca(&mut self, now: u64) -> Result<(), StoreError> {
        self.ca(now)?;
        let sealing = self.sealing();
        self.db().transaction(Tx::Clients, |db| {
            if let Some(mut row) = db.query_opt("SELECT created_at FROM pki_ca WHERE name = ?1", args![NEXT_CA_NAME])? {
                let since = from_sql(row.int(0)?);
                return Err(StoreError::Invalid(format!(
                    "a CA rotation is under way (started {} s ago): finish it first (`gatectl ca finish`) once the \
                     clients carry the next CA",
                    now.saturating_sub(since)
                )));
            }
            // The serial's lock first: a certificate being issued meanwhile either took its
            // serial before (and is the old CA's) or reads the next CA after.
            let first = Self::next(db, "certificate_serial", 2)?;
            db.execute(
                "INSERT INTO sequences (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
                args![NEXT_CA_FIRST_SERIAL, to_sql(first)],
            )?;
            let generation = Self::next(db, CA_GENERATION, 2)?;
            let fresh = Ca::generate(&format!("gate CA {generation}"), at(now)).map_err(crate::pki::pki)?;
            let sealed = sealing.seal_text(Secret::CaKey(NEXT_CA_NAME), &fresh.key_pem)?;
            db.execute(
                "INSERT INTO pki_ca (name, cert_pem, key_pem, created_at) VALUES (?1, ?2, ?3, ?4)",
                args![NEXT_CA_NAME, &fresh.cert_pem, sealed, to_sql(now)],
            )?;
            announce(db)
        })
    }

    /// Ends a CA rotation: the next CA becomes the CA, the old one is forgotten, and every
    /// certificate it issued is revoked (servers are issued new ones at their restart).
    /// Returns how many certificates were revoked.
    ///
    /// # Errors
    /// No rotation is under way, or the database failed.
    pub fn finish_ca_rotation(&mut self, now: u64) -> Result<u64, StoreError> {
        let sealing = self.sealing();
        self.db().transaction(Tx::Clients, |db| {
            let Some((next, next_since)) = ca_row(db, sealing, NEXT_CA_NAME)? else {
                return Err(StoreError::Invalid("no CA rotation is under way (`gatectl ca rotate` starts one)".into()));
            };
            let first = db
                .query_opt("SELECT value FROM sequences WHERE name = ?1", args![NEXT_CA_FIRST_SERIAL])?
                .map(|mut row| row.int(0))
                .transpose()?
                .ok_or_else(|| StoreError::Invalid("the next CA's first serial is missing".into()))?;
            // Every server certificate is the old CA's (servers are issued by the current one
            // also during a rotation); clients' are the next one's from its first serial on.
            let revoked = db.execute(
                "UPDATE certificates SET revoked_at = ?2 WHERE (serial < ?1 OR kind = 'server') AND revoked_at IS NULL",
                args![first, to_sql(now)],
            )?;
            let sealed = sealing.seal_text(Secret::CaKey(CA_NAME), &next.key_pem)?;
            db.execute(
                "UPDATE pki_ca SET cert_pem = ?2, key_pem = ?3, created_at = ?4 WHERE name = ?1",
                args![CA_NAME, &next.cert_pem, sealed, to_sql(next_since)],
            )?;
            db.execute("DELETE FROM pki_ca WHERE name = ?1", args![NEXT_CA_NAME])?;
            db.execute("DELETE FROM sequences WHERE name = ?1", args![NEXT_CA_FIRST_SERIAL])?;
            announce(db)?;
            Ok(revoked)
        })
    }
}
