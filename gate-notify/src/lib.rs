//! Self-shutdown notifications (docs/notifications.md). A notification service answers the
//! daemon's poll with a signed document saying, for the product version asked about, whether
//! each part should run: `www` (the front answers every request with a message), `web` (the
//! web servers accept connections), `vpn` (the VPN servers run, approvals are given). Only a
//! document signed by the Ed25519 key pinned in the config counts, and only if it is newer than
//! the last one accepted: a notification can never become a way to shut gate hosts down.
use base64::{Engine as _, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The largest signed document read.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024;
/// The domain label signed before the payload, so no other Ed25519 signature by the same key
/// can pass as a notification.
const LABEL: &[u8] = b"gate-notification-v1\n";

/// A part's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Ok,
    Disabled,
}

/// The three parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Www,
    Web,
    Vpn,
}

impl State {
    /// As written in documents, the store and the CLI: `ok` or `disabled`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Disabled => "disabled",
        }
    }
}

impl Part {
    pub const ALL: [Self; 3] = [Self::Www, Self::Web, Self::Vpn];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Www => "www",
            Self::Web => "web",
            Self::Vpn => "vpn",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == text)
    }
}

/// What a notification says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// Always "gate".
    pub product: String,
    /// The product version this is for, exactly as the daemon reports it.
    pub version: String,
    /// Increases with every notification the service issues; older ones are ignored.
    pub serial: u64,
    /// Unix seconds, for people.
    pub issued_at: u64,
    /// Shown to web users while `www` is disabled, and logged.
    pub message: String,
    pub www: State,
    pub web: State,
    pub vpn: State,
}

impl Notification {
    #[must_use]
    pub const fn state(&self, part: Part) -> State {
        match part {
            Part::Www => self.www,
            Part::Web => self.web,
            Part::Vpn => self.vpn,
        }
    }
}

/// The document on the wire: the notification's exact JSON bytes (b64) and their signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub payload: String,
    pub signature: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotifyError {
    #[error("not a signed notification: {0}")]
    Malformed(&'static str),
    #[error("bad signature")]
    BadSignature,
    #[error("for product {0:?}, not gate")]
    OtherProduct(String),
    #[error("for version {found:?}, this is {ours:?}")]
    OtherVersion { found: String, ours: String },
    #[error("serial {found} is not newer than the last accepted {last}")]
    NotNewer { found: u64, last: u64 },
    #[error("bad key: {0}")]
    BadKey(&'static str),
}

fn signed_bytes(payload: &[u8]) -> Vec<u8> {
    let mut bytes = LABEL.to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// Signs `notification` with `key`.
///
/// # Panics
/// Never: the notification always serializes.
#[must_use]
pub fn sign(notification: &Notification, key: &SigningKey) -> Signed {
    let payload = serde_json::to_vec(notification).expect("a notification serializes");
    let signature = key.sign(&signed_bytes(&payload));
    Signed { payload: STANDARD.encode(&payload), signature: STANDARD.encode(signature.to_bytes()) }
}

/// Checks a document fetched by the daemon: size, shape, signature by `key`, product, version
/// `ours`, and a serial above `last_serial`. Nothing is trusted before the signature.
///
/// # Errors
/// Why it is ignored.
pub fn verify(document: &[u8], key: &VerifyingKey, ours: &str, last_serial: u64) -> Result<Notification, NotifyError> {
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(NotifyError::Malformed("too large"));
    }
    let signed: Signed =
        serde_json::from_slice(document).map_err(|_| NotifyError::Malformed("not the signed JSON shape"))?;
    let payload = STANDARD.decode(&signed.payload).map_err(|_| NotifyError::Malformed("payload is not base64"))?;
    let signature =
        STANDARD.decode(&signed.signature).map_err(|_| NotifyError::Malformed("signature is not base64"))?;
    let signature = Signature::from_slice(&signature).map_err(|_| NotifyError::Malformed("signature length"))?;
    key.verify(&signed_bytes(&payload), &signature).map_err(|_| NotifyError::BadSignature)?;
    let notification: Notification =
        serde_json::from_slice(&payload).map_err(|_| NotifyError::Malformed("payload is not a notification"))?;
    if notification.product != "gate" {
        return Err(NotifyError::OtherProduct(notification.product));
    }
    if notification.version != ours {
        return Err(NotifyError::OtherVersion { found: notification.version, ours: ours.to_owned() });
    }
    if notification.serial <= last_serial {
        return Err(NotifyError::NotNewer { found: notification.serial, last: last_serial });
    }
    Ok(notification)
}

/// A fresh signing key.
#[must_use]
pub fn generate_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// A signing key as stored (b64 of its 32 bytes).
#[must_use]
pub fn encode_signing_key(key: &SigningKey) -> String {
    STANDARD.encode(key.to_bytes())
}

/// # Errors
/// Not b64 of 32 bytes.
pub fn decode_signing_key(text: &str) -> Result<SigningKey, NotifyError> {
    Ok(SigningKey::from_bytes(&decode_key_bytes(text)?))
}

/// The 32 bytes of a stored key (b64, surrounding whitespace ignored).
fn decode_key_bytes(text: &str) -> Result<[u8; 32], NotifyError> {
    let bytes = STANDARD.decode(text.trim()).map_err(|_| NotifyError::BadKey("not base64"))?;
    bytes.try_into().map_err(|_| NotifyError::BadKey("not 32 bytes"))
}

/// The public key as pinned in the config (b64 of its 32 bytes).
#[must_use]
pub fn encode_verifying_key(key: &VerifyingKey) -> String {
    STANDARD.encode(key.to_bytes())
}

/// # Errors
/// Not b64 of a valid 32-byte Ed25519 public key.
pub fn decode_verifying_key(text: &str) -> Result<VerifyingKey, NotifyError> {
    VerifyingKey::from_bytes(&decode_key_bytes(text)?).map_err(|_| NotifyError::BadKey("not an Ed25519 public key"))
}

/// The effective shutdown states, as the daemon publishes them for the front
/// (`<run dir>/shutdown.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub www: State,
    pub web: State,
    pub vpn: State,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(serial: u64) -> Notification {
        Notification {
            product: "gate".into(),
            version: "0.1.0".into(),
            serial,
            issued_at: 1,
            message: "upgrade now".into(),
            www: State::Disabled,
            web: State::Ok,
            vpn: State::Ok,
        }
    }

    #[test]
    fn only_a_newer_notification_signed_by_the_pinned_key_for_this_version_counts() {
        let key = generate_key();
        let other = generate_key();
        let pinned = key.verifying_key();
        let doc = serde_json::to_vec(&sign(&note(5), &key)).unwrap();
        assert_eq!(verify(&doc, &pinned, "0.1.0", 4), Ok(note(5)));
        assert_eq!(verify(&doc, &pinned, "0.1.0", 5), Err(NotifyError::NotNewer { found: 5, last: 5 }));
        assert!(matches!(verify(&doc, &pinned, "0.2.0", 0), Err(NotifyError::OtherVersion { .. })));
        let foreign = serde_json::to_vec(&sign(&note(9), &other)).unwrap();
        assert_eq!(verify(&foreign, &pinned, "0.1.0", 0), Err(NotifyError::BadSignature));
        // Tampered: the payload changed after signing.
        let mut signed = sign(&note(6), &key);
        let mut payload = STANDARD.decode(&signed.payload).unwrap();
        let at = payload.len() - 3;
        payload[at] ^= 1;
        signed.payload = STANDARD.encode(payload);
        assert_eq!(verify(&serde_json::to_vec(&signed).unwrap(), &pinned, "0.1.0", 0), Err(NotifyError::BadSignature));
        // Unsigned: the bare notification.
        assert!(matches!(
            verify(&serde_json::to_vec(&note(7)).unwrap(), &pinned, "0.1.0", 0),
            Err(NotifyError::Malformed(_))
        ));
    }

    #[test]
    fn keys_round_trip() {
        let key = generate_key();
        assert_eq!(decode_signing_key(&encode_signing_key(&key)).unwrap().to_bytes(), key.to_bytes());
        assert_eq!(decode_verifying_key(&encode_verifying_key(&key.verifying_key())).unwrap(), key.verifying_key());
        assert!(decode_verifying_key("nope").is_err());
    }
}
