//! Secrets at rest: the clients' HMAC secrets, the server's box secret, the CA's key and the
//! servers' certificate keys are sealed with the store key (a file on each host, 0600) before
//! they are written, so the database, a dump of it or a backup alone opens nothing.
//!
//! A sealed value is `gs1` (bytes) or `gs1:` + base64 (text), then the key's id (4 bytes of a
//! digest of the key), a random 12-byte nonce and ChaCha20-Poly1305 (OpenSSL) of the secret with
//! its tag; the associated data names what the secret is and whose (`client hmac secret` of
//! `alice`), so a sealed value moved to another row does not open there. Values written before
//! a store had a key stay readable as they are until `gatectl store reseal` seals them.
use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use gate_protocol::encoding::{b64, unb64};
use openssl::{
    rand::rand_bytes,
    sha::sha256,
    symm::{Cipher, decrypt_aead, encrypt_aead},
};
use zeroize::Zeroizing;

use crate::StoreError;

pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
const ID_BYTES: usize = 4;
const MARK: &[u8] = b"gs1";
const TEXT_MARK: &str = "gs1:";

/// What a sealed secret is, and whose: its associated data.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Secret<'a> {
    ClientHmac(&'a str),
    ServerBox(&'a str),
    CaKey(&'a str),
    CertificateKey(i64),
}

impl Secret<'_> {
    fn associated_data(self) -> Vec<u8> {
        let what = match self {
            Self::ClientHmac(name) => format!("client hmac secret\0{name}"),
            Self::ServerBox(name) => format!("server box secret\0{name}"),
            Self::CaKey(name) => format!("ca key\0{name}"),
            Self::CertificateKey(serial) => format!("certificate key\0{serial}"),
        };
        [b"gate store secret v1\0".as_slice(), what.as_bytes()].concat()
    }
}

/// A store key.
#[derive(Clone)]
pub struct StoreKey {
    key: Zeroizing<[u8; KEY_BYTES]>,
    id: [u8; ID_BYTES],
}

/// The id only: the key never goes into a log or a message.
impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreKey({})", self.id())
    }
}

impl StoreKey {
    #[must_use]
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        let digest = sha256(&[b"gate store key id\0".as_slice(), &bytes].concat());
        let mut id = [0; ID_BYTES];
        id.copy_from_slice(&digest[..ID_BYTES]);
        Self { key: Zeroizing::new(bytes), id }
    }

    /// A new random key.
    ///
    /// # Errors
    /// OpenSSL's random source failed.
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = [0; KEY_BYTES];
        rand_bytes(&mut bytes).map_err(|e| StoreError::Invalid(format!("a new store key: {e}")))?;
        Ok(Self::from_bytes(bytes))
    }

    /// Reads a key file: 64 lowercase hex digits on its first line, readable by its owner only.
    ///
    /// # Errors
    /// Unreadable, readable by others, or not a key.
    pub fn read(file: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Open { path: file.to_owned(), source };
        let mode = fs::metadata(file).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::Invalid(format!(
                "{}: mode {mode:o} lets others read the store key; chmod 600 it",
                file.display()
            )));
        }
        let text = Zeroizing::new(fs::read_to_string(file).map_err(io)?);
        let line = text.lines().next().unwrap_or_default().trim();
        let bytes = gate_protocol::encoding::unhex::<KEY_BYTES>(line, "store key").map_err(|_| {
            StoreError::Invalid(format!(
                "{}: not a store key (64 lowercase hex digits; `gatectl store new-key FILE` makes one)",
                file.display()
            ))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Writes the key to a new file, 0600 (never over an existing one).
    ///
    /// # Errors
    /// The file exists or cannot be written.
    pub fn write_new(&self, file: &Path) -> Result<(), StoreError> {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt};
        let io = |source| StoreError::Open { path: file.to_owned(), source };
        let mut out = fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(file).map_err(io)?;
        let text = Zeroizing::new(format!("{}\n", gate_protocol::encoding::hex(self.key.as_slice())));
        out.write_all(text.as_bytes()).map_err(io)
    }

    /// The key's id as sealed values carry it (hex), to name it in messages.
    #[must_use]
    pub fn id(&self) -> String {
        gate_protocol::encoding::hex(&self.id)
    }
}

/// The keys a store seals and opens with: the current one seals; it and the previous ones open
/// (a key being rotated).
#[derive(Clone, Default)]
pub struct Sealing {
    keys: Vec<StoreKey>,
}

impl Sealing {
    /// `current` seals; `current` and `previous` open.
    #[must_use]
    pub fn new(current: StoreKey, previous: Vec<StoreKey>) -> Self {
        Self { keys: std::iter::once(current).chain(previous).collect() }
    }

    /// Whether a key is set (else secrets are written as they are).
    #[must_use]
    pub fn is_on(&self) -> bool {
        !self.keys.is_empty()
    }

    /// `secret` sealed with the current key, or as it is without one.
    pub(crate) fn seal(&self, what: Secret<'_>, secret: &[u8]) -> Result<Vec<u8>, StoreError> {
        let Some(key) = self.keys.first() else { return Ok(secret.to_vec()) };
        let mut nonce = [0; NONCE_BYTES];
        rand_bytes(&mut nonce).map_err(|e| StoreError::Invalid(format!("seal: {e}")))?;
        let mut tag = [0; TAG_BYTES];
        let sealed = encrypt_aead(
            Cipher::chacha20_poly1305(),
            key.key.as_slice(),
            Some(&nonce),
            &what.associated_data(),
            secret,
            &mut tag,
        )
        .map_err(|e| StoreError::Invalid(format!("seal: {e}")))?;
        Ok([MARK, &key.id, &nonce, &sealed, &tag].concat())
    }

    /// The secret of a value read from the store: opened if sealed, as it is if it was written
    /// before the store had a key (`plain_len` bytes).
    pub(crate) fn open(
        &self,
        what: Secret<'_>,
        stored: &[u8],
        plain_len: usize,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let header = MARK.len() + ID_BYTES + NONCE_BYTES;
        if stored.len() == plain_len || !stored.starts_with(MARK) || stored.len() < header + TAG_BYTES {
            return Ok(Zeroizing::new(stored.to_vec()));
        }
        let id = &stored[MARK.len()..MARK.len() + ID_BYTES];
        let nonce = &stored[MARK.len() + ID_BYTES..header];
        let (sealed, tag) = stored[header..].split_at(stored.len() - header - TAG_BYTES);
        let Some(key) = self.keys.iter().find(|k| k.id == id) else {
            return Err(StoreError::Sealed(format!(
                "{what:?} is sealed with store key {}, which this host does not have{}",
                gate_protocol::encoding::hex(id),
                if self.keys.is_empty() { " (no approval.store_key_file)" } else { "" }
            )));
        };
        decrypt_aead(Cipher::chacha20_poly1305(), key.key.as_slice(), Some(nonce), &what.associated_data(), sealed, tag)
            .map(Zeroizing::new)
            .map_err(|_| {
                StoreError::Sealed(format!("{what:?} does not open with store key {}: altered or moved", key.id()))
            })
    }

    /// A text secret (a PEM key), sealed as `gs1:` and base64.
    pub(crate) fn seal_text(&self, what: Secret<'_>, secret: &str) -> Result<String, StoreError> {
        if !self.is_on() {
            return Ok(secret.to_owned());
        }
        Ok(format!("{TEXT_MARK}{}", b64(&self.seal(what, secret.as_bytes())?)))
    }

    /// The text secret of a value read from the store (as it is if not sealed).
    pub(crate) fn open_text(&self, what: Secret<'_>, stored: &str) -> Result<Zeroizing<String>, StoreError> {
        let Some(encoded) = stored.strip_prefix(TEXT_MARK) else { return Ok(Zeroizing::new(stored.to_owned())) };
        let sealed =
            unb64(encoded, "sealed secret").map_err(|_| StoreError::Sealed(format!("{what:?}: not base64")))?;
        let opened = self.open(what, &sealed, usize::MAX)?;
        String::from_utf8(opened.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| StoreError::Sealed(format!("{what:?}: not text")))
    }

    /// Whether a stored value is sealed with the current key (what `reseal` leaves behind).
    pub(crate) fn sealed_with_current(&self, stored: &[u8]) -> bool {
        let Some(key) = self.keys.first() else { return true };
        let text = stored.strip_prefix(TEXT_MARK.as_bytes()).and_then(|e| unb64(std::str::from_utf8(e).ok()?, "").ok());
        let bytes = text.as_deref().unwrap_or(stored);
        bytes.starts_with(MARK) && bytes.get(MARK.len()..MARK.len() + ID_BYTES) == Some(key.id.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> StoreKey {
        StoreKey::from_bytes([byte; KEY_BYTES])
    }

    #[test]
    fn a_sealed_secret_opens_with_its_key_for_its_row_only() {
        let sealing = Sealing::new(key(1), vec![]);
        let secret = [7_u8; 64];
        let sealed = sealing.seal(Secret::ClientHmac("alice"), &secret).unwrap();
        assert_ne!(sealed.len(), secret.len());
        assert!(!sealed.windows(8).any(|w| w == [7; 8]), "the secret shows through");
        assert_eq!(*sealing.open(Secret::ClientHmac("alice"), &sealed, 64).unwrap(), secret);
        assert!(matches!(sealing.open(Secret::ClientHmac("bob"), &sealed, 64), Err(StoreError::Sealed(_))), "moved");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(matches!(sealing.open(Secret::ClientHmac("alice"), &altered, 64), Err(StoreError::Sealed(_))));
        let stranger = Sealing::new(key(2), vec![]);
        let e = stranger.open(Secret::ClientHmac("alice"), &sealed, 64).unwrap_err().to_string();
        assert!(e.contains(&key(1).id()), "names the key it needs: {e}");
        let rotated = Sealing::new(key(2), vec![key(1)]);
        assert_eq!(*rotated.open(Secret::ClientHmac("alice"), &sealed, 64).unwrap(), secret, "the previous key opens");
        assert!(!rotated.sealed_with_current(&sealed) && sealing.sealed_with_current(&sealed));
    }

    #[test]
    fn text_and_unsealed_values_round_trip() {
        let sealing = Sealing::new(key(1), vec![]);
        let pem = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n";
        let sealed = sealing.seal_text(Secret::CaKey("default"), pem).unwrap();
        assert!(sealed.starts_with("gs1:") && !sealed.contains("PRIVATE KEY"), "{sealed}");
        assert_eq!(sealing.open_text(Secret::CaKey("default"), &sealed).unwrap().as_str(), pem);
        assert!(sealing.sealed_with_current(sealed.as_bytes()));
        assert_eq!(sealing.open_text(Secret::CaKey("default"), pem).unwrap().as_str(), pem, "written before the key");
        assert_eq!(*sealing.open(Secret::ServerBox("default"), &[3; 32], 32).unwrap(), [3; 32]);
        assert!(Sealing::default().open_text(Secret::CaKey("default"), &sealed).is_err(), "no key, no secret");
    }

    #[test]
    fn key_files_are_private_and_exact() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("store.key");
        let made = StoreKey::generate().unwrap();
        made.write_new(&file).unwrap();
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(StoreKey::read(&file).unwrap().id(), made.id());
        assert!(made.write_new(&file).is_err(), "never over a key");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(StoreKey::read(&file).unwrap_err().to_string().contains("chmod 600"));
        fs::write(&file, "not a key\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(StoreKey::read(&file).unwrap_err().to_string().contains("not a store key"));
    }
}
