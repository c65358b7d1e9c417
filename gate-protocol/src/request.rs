//! A request: built by the client ([`build`]), parsed and checked layer by layer by the server
//! ([`Request`]). The server's order of checks lives in the daemon; each check here is cheap to
//! call in any order and touches nothing but its inputs.
use crypto_box::{PublicKey, SecretKey};
use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use rsa::{
    pss::BlindedSigningKey,
    signature::{RandomizedSigner, SignatureEncoding},
};
use sha2::Sha512;

use crate::{
    ProtocolError, canonical,
    encoding::{b64, hex, unb64, unhex},
    keys::{ClientKeys, HmacSecret, RsaVerifyingKey, ServerKeys, Token},
    shared_box::SharedBox,
    wire::{
        BOX_NONCE_BYTES, HMAC_BYTES, MAX_BODY_BYTES, MAX_SEALED_BYTES, MAX_TIMESTAMP_DIGITS, NONCE_BYTES, Payload,
        RSA_SIGNATURE_BYTES, RequestHeaders, SealedBody, json_object,
    },
};

type HmacSha512 = Hmac<Sha512>;

/// A request ready to send.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub headers: RequestHeaders,
    pub body: SealedBody,
}

impl Outgoing {
    /// The body as sent.
    ///
    /// # Panics
    /// Never: three strings always serialize.
    #[must_use]
    pub fn body_json(&self) -> String {
        serde_json::to_string(&self.body).expect("a struct of strings serializes")
    }
}

/// HMAC-SHA512 of `input` under `secret`.
#[must_use]
pub fn hmac_tag(secret: &HmacSecret, input: &str) -> [u8; HMAC_BYTES] {
    let mut mac = HmacSha512::new_from_slice(&secret.0).expect("HMAC takes any key length");
    mac.update(input.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Checks `tag` against HMAC-SHA512 of `input` in constant time.
pub(crate) fn verify_hmac(secret: &HmacSecret, input: &str, tag: &[u8]) -> Result<(), ProtocolError> {
    let mut mac = HmacSha512::new_from_slice(&secret.0).expect("HMAC takes any key length");
    mac.update(input.as_bytes());
    mac.verify_slice(tag).map_err(|_| ProtocolError::BadHmac)
}

/// Builds a request sealing `payload` (whose `timestamp` and `nonce` become the headers) to the
/// server's box key, with the given box nonce; `rng` draws the RSA-PSS salt and blinding.
///
/// # Errors
/// Sealing or signing failed (malformed keys).
pub fn build(
    keys: &ClientKeys,
    server: &PublicKey,
    payload: &Payload,
    box_nonce: [u8; BOX_NONCE_BYTES],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Outgoing, ProtocolError> {
    let sender = Sender { token: keys.token, secret: &keys.secret, box_secret: &keys.box_secret };
    build_signed_by(&sender, server, payload, box_nonce, |message| {
        let signer = BlindedSigningKey::<Sha512>::new(keys.rsa.clone());
        let signature =
            signer.try_sign_with_rng(rng, message).map_err(|_| ProtocolError::BadKey("RSA signing failed"))?;
        Ok(signature.to_vec())
    })
}

/// A client's keys but its RSA key: what [`build_signed_by`] needs besides a signer.
pub struct Sender<'a> {
    pub token: Token,
    pub secret: &'a HmacSecret,
    pub box_secret: &'a SecretKey,
}

/// As [`build`], with the RSA-4096 PSS-SHA512 signature (salt of 64 bytes) made by `sign` over
/// the bytes it is given: the same request from a signer of another implementation (the storm
/// benchmark signs a hundred thousand requests with OpenSSL, ~50 times faster).
///
/// # Errors
/// Sealing failed, or `sign` did.
pub fn build_signed_by(
    sender: &Sender<'_>,
    server: &PublicKey,
    payload: &Payload,
    box_nonce: [u8; BOX_NONCE_BYTES],
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, ProtocolError>,
) -> Result<Outgoing, ProtocolError> {
    let plaintext = serde_json::to_vec(payload).map_err(|_| ProtocolError::Malformed("payload"))?;
    let sealed = SharedBox::new(server, sender.box_secret)?.seal(&box_nonce, &plaintext)?;
    let data = b64(&sealed);
    let nonce = b64(&box_nonce);
    let signature = sign(canonical::rsa_input(&data, &nonce).as_bytes())?;
    let body = SealedBody { data, nonce, signature: b64(&signature) };
    let token = sender.token.to_string();
    let timestamp = payload.timestamp.to_string();
    let tag = hmac_tag(sender.secret, &canonical::request_hmac_input(&token, &timestamp, &payload.nonce, &body));
    Ok(Outgoing {
        headers: RequestHeaders { token, timestamp, nonce: payload.nonce.clone(), signature: b64(&tag) },
        body,
    })
}

/// A fresh request nonce, as sent.
pub fn random_nonce(rng: &mut (impl RngCore + CryptoRng)) -> String {
    let mut bytes = [0; NONCE_BYTES];
    rng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// A request received, parsed and size-checked but not yet trusted.
#[derive(Clone, Debug)]
pub struct Request {
    pub token: Token,
    pub timestamp: u64,
    pub headers: RequestHeaders,
    pub body: SealedBody,
    hmac: Vec<u8>,
    sealed: Vec<u8>,
    box_nonce: [u8; BOX_NONCE_BYTES],
    rsa_signature: Vec<u8>,
}

fn decimal(text: &str) -> Result<u64, ProtocolError> {
    let canonical = !text.is_empty()
        && text.len() <= MAX_TIMESTAMP_DIGITS
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(ProtocolError::Malformed("timestamp"));
    }
    text.parse().map_err(|_| ProtocolError::Malformed("timestamp"))
}

impl Request {
    /// Parses the headers and body: sizes first, then shapes and encodings. No key is used.
    ///
    /// # Errors
    /// Anything oversized, missing, of the wrong type or badly encoded.
    pub fn parse(headers: RequestHeaders, body: &[u8]) -> Result<Self, ProtocolError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(ProtocolError::TooLarge("body"));
        }
        let token = Token::parse(&headers.token)?;
        let timestamp = decimal(&headers.timestamp)?;
        unhex::<NONCE_BYTES>(&headers.nonce, "nonce")?;
        let hmac = unb64(&headers.signature, "HMAC")?;
        if hmac.len() != HMAC_BYTES {
            return Err(ProtocolError::Malformed("HMAC length"));
        }
        let body: SealedBody = json_object(body).ok_or(ProtocolError::Malformed("body"))?;
        let sealed = unb64(&body.data, "data")?;
        if sealed.len() > MAX_SEALED_BYTES {
            return Err(ProtocolError::TooLarge("data"));
        }
        let box_nonce = <[u8; BOX_NONCE_BYTES]>::try_from(unb64(&body.nonce, "box nonce")?)
            .map_err(|_| ProtocolError::Malformed("box nonce length"))?;
        let rsa_signature = unb64(&body.signature, "RSA signature")?;
        if rsa_signature.len() != RSA_SIGNATURE_BYTES {
            return Err(ProtocolError::Malformed("RSA signature length"));
        }
        Ok(Self { token, timestamp, headers, body, hmac, sealed, box_nonce, rsa_signature })
    }

    /// Layer 1: the HMAC, in constant time.
    ///
    /// # Errors
    /// [`ProtocolError::BadHmac`].
    pub fn verify_hmac(&self, secret: &HmacSecret) -> Result<(), ProtocolError> {
        let input = canonical::request_hmac_input(
            &self.headers.token,
            &self.headers.timestamp,
            &self.headers.nonce,
            &self.body,
        );
        verify_hmac(secret, &input, &self.hmac)
    }

    /// Layer 2: opens the box with the server's key and the client's registered public key.
    ///
    /// # Errors
    /// [`ProtocolError::BadBox`].
    pub fn open(&self, server: &ServerKeys, client_box: &PublicKey) -> Result<Vec<u8>, ProtocolError> {
        self.open_with(&SharedBox::new(client_box, &server.box_secret)?)
    }

    /// Layer 2 with the shared key computed beforehand (the X25519 agreement costs more than
    /// the rest of the box; a server keeps one per client).
    ///
    /// # Errors
    /// [`ProtocolError::BadBox`].
    pub fn open_with(&self, shared: &SharedBox) -> Result<Vec<u8>, ProtocolError> {
        shared.open(&self.box_nonce, &self.sealed)
    }

    /// Layer 3: the RSA-PSS signature with the client's registered key.
    ///
    /// # Errors
    /// [`ProtocolError::BadSignature`].
    pub fn verify_rsa(&self, key: &RsaVerifyingKey) -> Result<(), ProtocolError> {
        let message = canonical::rsa_input(&self.body.data, &self.body.nonce);
        if key.verifies(message.as_bytes(), &self.rsa_signature) { Ok(()) } else { Err(ProtocolError::BadSignature) }
    }

    /// The opened payload, which must repeat the headers' timestamp and nonce.
    ///
    /// # Errors
    /// Not the payload's JSON shape, or not matching the headers.
    pub fn payload(&self, plaintext: &[u8]) -> Result<Payload, ProtocolError> {
        let payload: Payload = json_object(plaintext).ok_or(ProtocolError::Malformed("payload"))?;
        if payload.timestamp != self.timestamp || payload.nonce != self.headers.nonce {
            return Err(ProtocolError::PayloadMismatch);
        }
        Ok(payload)
    }
}
