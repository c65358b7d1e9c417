//! The PKI's state in the store: the CA (made on first use), the certificates it issued, and
//! CRLs. Revoking a client revokes its certificates in the same transaction.
use std::time::{Duration, UNIX_EPOCH};

use gate_pki::{Ca, Issued};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::{
    Store, StoreError,
    store::{from_sql, to_sql},
};

const CA_NAME: &str = "default";

fn at(unix: u64) -> OffsetDateTime {
    OffsetDateTime::from(UNIX_EPOCH + Duration::from_secs(unix))
}

fn pki(e: gate_pki::PkiError) -> StoreError {
    StoreError::Invalid(e.to_string())
}

/// A server's certificate and key.
pub struct ServerIdentity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

impl Store {
    /// The CA, made on first use (by whichever process asks first).
    ///
    /// # Errors
    /// SQLite or key generation failed.
    pub fn ca(&self, now: u64) -> Result<Ca, StoreError> {
        let conn = self.connection();
        let existing = |conn: &rusqlite::Connection| {
            conn.query_row("SELECT cert_pem, key_pem FROM pki_ca WHERE name = ?1", [CA_NAME], |r| {
                Ok(Ca { cert_pem: r.get(0)?, key_pem: Zeroizing::new(r.get(1)?) })
            })
            .optional()
        };
        if let Some(ca) = existing(conn)? {
            return Ok(ca);
        }
        let fresh = Ca::generate("gate CA", at(now)).map_err(pki)?;
        conn.execute(
            "INSERT INTO pki_ca (name, cert_pem, key_pem, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            params![CA_NAME, fresh.cert_pem, fresh.key_pem.as_str(), to_sql(now)],
        )?;
        existing(conn)?.ok_or_else(|| StoreError::Invalid("the CA vanished".into()))
    }

    fn next(tx: &rusqlite::Transaction<'_>, sequence: &str, first: u64) -> Result<u64, StoreError> {
        tx.execute(
            "INSERT INTO sequences (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = value + 1",
            params![sequence, to_sql(first)],
        )?;
        let value: i64 = tx.query_row("SELECT value FROM sequences WHERE name = ?1", [sequence], |r| r.get(0))?;
        Ok(from_sql(value))
    }

    fn issue(
        &mut self,
        kind: &str,
        name: &str,
        now: u64,
        make: impl FnOnce(&Ca, u64) -> Result<Issued, StoreError>,
    ) -> Result<Issued, StoreError> {
        let ca = self.ca(now)?;
        let tx = self.connection_mut().transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Serial 1 is the CA's.
        let serial = Self::next(&tx, "certificate_serial", 2)?;
        let issued = make(&ca, serial)?;
        tx.execute(
            "INSERT INTO certificates (serial, kind, name, cert_pem, key_pem, issued_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                to_sql(serial),
                kind,
                name,
                issued.cert_pem,
                issued.key_pem.as_ref().map(|k| k.as_str()),
                to_sql(now)
            ],
        )?;
        tx.commit()?;
        Ok(issued)
    }

    /// A certificate for a client's own public key (SPKI DER).
    ///
    /// # Errors
    /// SQLite failed, or the key cannot be certified.
    pub fn issue_client_certificate(&mut self, name: &str, spki_der: &[u8], now: u64) -> Result<String, StoreError> {
        self.issue("client", name, now, |ca, serial| ca.issue_client(name, spki_der, serial, at(now)).map_err(pki))
            .map(|issued| issued.cert_pem)
    }

    /// Revokes the client certificates of `name` (an enrollment that failed half way).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn withdraw_client_certificates(&self, name: &str, now: u64) -> Result<(), StoreError> {
        self.connection().execute(
            "UPDATE certificates SET revoked_at = ?2 WHERE kind = 'client' AND name = ?1 AND revoked_at IS NULL",
            params![name, to_sql(now)],
        )?;
        Ok(())
    }

    /// The identity of the server `name`, issued on first use.
    ///
    /// # Errors
    /// SQLite or issuing failed.
    pub fn server_identity(&mut self, name: &str, now: u64) -> Result<ServerIdentity, StoreError> {
        let ca = self.ca(now)?;
        let found = self
            .connection()
            .query_row(
                "SELECT cert_pem, key_pem FROM certificates WHERE kind = 'server' AND name = ?1 AND revoked_at IS NULL \
                 ORDER BY serial DESC LIMIT 1",
                [name],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
            )
            .optional()?;
        let (cert_pem, key_pem) = match found {
            Some((cert, Some(key))) => (cert, Zeroizing::new(key)),
            _ => {
                let issued =
                    self.issue("server", name, now, |ca, serial| ca.issue_server(name, serial, at(now)).map_err(pki))?;
                (issued.cert_pem, issued.key_pem.unwrap_or_default())
            }
        };
        Ok(ServerIdentity { ca_pem: ca.cert_pem, cert_pem, key_pem })
    }

    /// A mark that changes whenever a certificate is revoked: (how many, latest time).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn revocation_mark(&self) -> Result<(u64, u64), StoreError> {
        Ok(self.connection().query_row(
            "SELECT count(*), coalesce(max(revoked_at), 0) FROM certificates WHERE revoked_at IS NOT NULL",
            [],
            |r| Ok((from_sql(r.get(0)?), from_sql(r.get(1)?))),
        )?)
    }

    /// A fresh CRL listing every revoked certificate.
    ///
    /// # Errors
    /// SQLite or signing failed.
    pub fn crl(&mut self, now: u64) -> Result<String, StoreError> {
        let ca = self.ca(now)?;
        let tx = self.connection_mut().transaction_with_behavior(TransactionBehavior::Immediate)?;
        let number = Self::next(&tx, "crl_number", 1)?;
        let revoked: Vec<(u64, OffsetDateTime)> = {
            let mut statement =
                tx.prepare("SELECT serial, revoked_at FROM certificates WHERE revoked_at IS NOT NULL")?;
            let rows = statement.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
            let mut list = Vec::new();
            for row in rows {
                let (serial, when) = row?;
                list.push((from_sql(serial), at(from_sql(when))));
            }
            list
        };
        tx.commit()?;
        ca.crl(&revoked, number, at(now)).map_err(pki)
    }
}
