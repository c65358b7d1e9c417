//! The PKI's state in the store: the CA (made on first use), the certificates it issued, and
//! CRLs. Revoking a client revokes its certificates in the same transaction.
use std::time::{Duration, UNIX_EPOCH};

use gate_pki::{Ca, Issued};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::{
    Store, StoreError,
    sealing::{Sealing, Secret},
    sql::{Db, Tx, args},
    store::{from_sql, to_sql},
};

pub(crate) const CA_NAME: &str = "default";

pub(crate) fn at(unix: u64) -> OffsetDateTime {
    OffsetDateTime::from(UNIX_EPOCH + Duration::from_secs(unix))
}

pub(crate) fn pki(e: gate_pki::PkiError) -> StoreError {
    StoreError::Invalid(e.to_string())
}

/// The CA stored as `name` (`default`, or `next` during a rotation) and when it was made.
pub(crate) fn ca_row(db: &Db, sealing: &Sealing, name: &str) -> Result<Option<(Ca, u64)>, StoreError> {
    let Some(mut row) =
        db.query_opt("SELECT cert_pem, key_pem, created_at FROM pki_ca WHERE name = ?1", args![name])?
    else {
        return Ok(None);
    };
    let key_pem = sealing.open_text(Secret::CaKey(name), &row.text(1)?)?;
    Ok(Some((Ca { cert_pem: row.text(0)?, key_pem }, from_sql(row.int(2)?))))
}

/// PEM blocks one after another, each on its own lines.
pub(crate) fn joined_pem(mut first: String, second: &str) -> String {
    if !first.ends_with('\n') {
        first.push('\n');
    }
    first.push_str(second);
    first
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
    /// The database or key generation failed.
    pub fn ca(&self, now: u64) -> Result<Ca, StoreError> {
        self.made_ca(now).map(|(ca, _)| ca)
    }

    /// [`Self::ca`] and when it was made (Unix seconds).
    pub(crate) fn made_ca(&self, now: u64) -> Result<(Ca, u64), StoreError> {
        if let Some(found) = ca_row(self.db(), self.sealing(), CA_NAME)? {
            return Ok(found);
        }
        let fresh = Ca::generate("gate CA", at(now)).map_err(pki)?;
        let sealed = self.sealing().seal_text(Secret::CaKey(CA_NAME), &fresh.key_pem)?;
        self.db().execute(
            "INSERT INTO pki_ca (name, cert_pem, key_pem, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            args![CA_NAME, &fresh.cert_pem, sealed, to_sql(now)],
        )?;
        ca_row(self.db(), self.sealing(), CA_NAME)?.ok_or_else(|| StoreError::Invalid("the CA vanished".into()))
    }

    /// The next number of `sequence` (`first` the first time), inside the caller's
    /// transaction: the upsert holds the sequence's row until it commits.
    pub(crate) fn next(db: &Db, sequence: &str, first: u64) -> Result<u64, StoreError> {
        db.execute(
            "INSERT INTO sequences (name, value) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET value = sequences.value + 1",
            args![sequence, to_sql(first)],
        )?;
        Ok(from_sql(db.query_one("SELECT value FROM sequences WHERE name = ?1", args![sequence])?.int(0)?))
    }

    fn issue(
        &mut self,
        kind: &str,
        name: &str,
        now: u64,
        make: impl FnOnce(&Ca, u64) -> Result<Issued, StoreError>,
    ) -> Result<Issued, StoreError> {
        self.ca(now)?;
        let sealing = self.sealing();
        self.db().transaction(Tx::Rows, |db| {
            // Serial 1 is the CA's. The issuer is read after the serial's lock, which a CA
            // rotation takes too: it is the one the serial belongs to.
            let serial = Self::next(db, "certificate_serial", 2)?;
            let ca = Self::issuing_ca(db, sealing, kind)?;
            let issued = make(&ca, serial)?;
            let key_pem = match &issued.key_pem {
                Some(key) => Some(sealing.seal_text(Secret::CertificateKey(to_sql(serial)), key)?),
                None => None,
            };
            db.execute(
                "INSERT INTO certificates (serial, kind, name, cert_pem, key_pem, issued_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                args![to_sql(serial), kind, name, &issued.cert_pem, key_pem, to_sql(now)],
            )?;
            Ok(issued)
        })
    }

    /// A certificate for a client's own public key (SPKI DER).
    ///
    /// # Errors
    /// The database failed, or the key cannot be certified.
    pub fn issue_client_certificate(&mut self, name: &str, spki_der: &[u8], now: u64) -> Result<String, StoreError> {
        self.issue("client", name, now, |ca, serial| ca.issue_client(name, spki_der, serial, at(now)).map_err(pki))
            .map(|issued| issued.cert_pem)
    }

    /// Revokes the client certificates of `name` (an enrollment that failed half way).
    ///
    /// # Errors
    /// The database failed.
    pub fn withdraw_client_certificates(&self, name: &str, now: u64) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE certificates SET revoked_at = ?2 WHERE kind = 'client' AND name = ?1 AND revoked_at IS NULL",
            args![name, to_sql(now)],
        )?;
        Ok(())
    }

    /// The identity of the server `name`, issued on first use.
    ///
    /// # Errors
    /// The database or issuing failed.
    pub fn server_identity(&mut self, name: &str, now: u64) -> Result<ServerIdentity, StoreError> {
        let trusted = self.ca_state(now)?.bundle();
        let found = self.db().query_opt(
            "SELECT cert_pem, key_pem, serial FROM certificates WHERE kind = 'server' AND name = ?1 \
             AND revoked_at IS NULL ORDER BY serial DESC LIMIT 1",
            args![name],
        )?;
        let found = match found {
            Some(mut row) => Some((row.text(0)?, row.opt_text(1)?, row.int(2)?)),
            None => None,
        };
        let (cert_pem, key_pem) = match found {
            Some((cert, Some(key), serial)) => (cert, self.sealing().open_text(Secret::CertificateKey(serial), &key)?),
            _ => {
                let issued =
                    self.issue("server", name, now, |ca, serial| ca.issue_server(name, serial, at(now)).map_err(pki))?;
                (issued.cert_pem, issued.key_pem.unwrap_or_default())
            }
        };
        Ok(ServerIdentity { ca_pem: trusted, cert_pem, key_pem })
    }

    /// A mark that changes whenever a certificate is revoked: (how many, latest time).
    ///
    /// # Errors
    /// The database failed.
    pub fn revocation_mark(&self) -> Result<(u64, u64), StoreError> {
        let mut row = self.db().query_one(
            "SELECT count(*), coalesce(max(revoked_at), 0) FROM certificates WHERE revoked_at IS NOT NULL",
            args![],
        )?;
        Ok((from_sql(row.int(0)?), from_sql(row.int(1)?)))
    }

    /// A fresh CRL listing every revoked certificate, from each CA trusted (two during a CA
    /// rotation: OpenVPN wants one from the issuer of every certificate it checks).
    ///
    /// # Errors
    /// The database or signing failed.
    pub fn crl(&mut self, now: u64) -> Result<String, StoreError> {
        let cas = self.ca_state(now)?;
        let (number, revoked) = self.db().transaction(Tx::Rows, |db| {
            let number = Self::next(db, "crl_number", 1)?;
            let mut revoked: Vec<(u64, OffsetDateTime)> = Vec::new();
            for mut row in
                db.query("SELECT serial, revoked_at FROM certificates WHERE revoked_at IS NOT NULL", args![])?
            {
                revoked.push((from_sql(row.int(0)?), at(from_sql(row.int(1)?))));
            }
            Ok((number, revoked))
        })?;
        let pem = cas.current.crl(&revoked, number, at(now)).map_err(pki)?;
        match &cas.next {
            Some((next, _)) => Ok(joined_pem(pem, &next.crl(&revoked, number, at(now)).map_err(pki)?)),
            None => Ok(pem),
        }
    }
}
