//! [`SharedBox`]: NaCl's `crypto_box` with its key agreement done once (libsodium's
//! `crypto_box_beforenm`): X25519 between one side's secret key and the other's public key,
//! HSalsa20 over the result, then XSalsa20-Poly1305 with that key for every box between the two.
//! The same box as `crypto_box::SalsaBox`, byte for byte (tested below), but the X25519 runs in
//! OpenSSL, ~2.5x faster on this machine kind than curve25519-dalek's (docs/benchmarks.md): in a
//! reconnect storm every client is new to the daemon and costs one agreement.
use crypto_box::{PublicKey, SecretKey};
use crypto_secretbox::{
    Kdf, KeyInit, XSalsa20Poly1305,
    aead::{Aead, generic_array::GenericArray},
};
use openssl::{
    derive::Deriver,
    pkey::{Id, PKey, Private},
};
use zeroize::Zeroizing;

use crate::{ProtocolError, wire::BOX_NONCE_BYTES};

pub struct SharedBox(XSalsa20Poly1305);

/// A secret box key as OpenSSL holds it for agreements. Made once for a key that agrees often
/// (the server's): OpenSSL computes the public key on import, a second X25519.
pub struct BoxSecret(PKey<Private>);

impl BoxSecret {
    /// # Errors
    /// [`ProtocolError::BadBox`]: OpenSSL refused the key (it does not for 32 bytes).
    pub fn new(secret: &SecretKey) -> Result<Self, ProtocolError> {
        let key = PKey::private_key_from_raw_bytes(&*Zeroizing::new(secret.to_bytes()), Id::X25519);
        Ok(Self(key.map_err(|_| ProtocolError::BadBox)?))
    }
}

impl SharedBox {
    /// The box between the holder of `secret` and the holder of `public`'s secret key.
    ///
    /// # Errors
    /// As [`Self::agreed`].
    pub fn new(public: &PublicKey, secret: &SecretKey) -> Result<Self, ProtocolError> {
        Self::agreed(public, &BoxSecret::new(secret)?)
    }

    /// As [`Self::new`], with the secret key made ready beforehand.
    ///
    /// # Errors
    /// [`ProtocolError::BadBox`] if the agreement fails: OpenSSL refuses a public key of low
    /// order (the agreement would be all zeros, a key anyone knows), as libsodium does.
    pub fn agreed(public: &PublicKey, secret: &BoxSecret) -> Result<Self, ProtocolError> {
        let agreed = agree(public, secret).map_err(|_| ProtocolError::BadBox)?;
        let key = Zeroizing::new(XSalsa20Poly1305::kdf(GenericArray::from_slice(&*agreed), &GenericArray::default()));
        Ok(Self(XSalsa20Poly1305::new(&key)))
    }

    /// Seals `plaintext` with a `nonce` used once.
    ///
    /// # Errors
    /// [`ProtocolError::BadBox`] (the cipher refused; it does not for a plaintext in memory).
    pub fn seal(&self, nonce: &[u8; BOX_NONCE_BYTES], plaintext: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        self.0.encrypt(GenericArray::from_slice(nonce), plaintext).map_err(|_| ProtocolError::BadBox)
    }

    /// Opens what [`Self::seal`] sealed on the other side.
    ///
    /// # Errors
    /// [`ProtocolError::BadBox`]: another key, nonce or a changed byte.
    pub fn open(&self, nonce: &[u8; BOX_NONCE_BYTES], sealed: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        self.0.decrypt(GenericArray::from_slice(nonce), sealed).map_err(|_| ProtocolError::BadBox)
    }
}

/// X25519 in OpenSSL.
fn agree(public: &PublicKey, secret: &BoxSecret) -> Result<Zeroizing<[u8; 32]>, openssl::error::ErrorStack> {
    let theirs = PKey::public_key_from_raw_bytes(public.as_bytes(), Id::X25519)?;
    let mut deriver = Deriver::new(&secret.0)?;
    deriver.set_peer(&theirs)?;
    let mut agreed = Zeroizing::new([0; 32]);
    let written = deriver.derive(&mut *agreed)?;
    debug_assert_eq!(written, 32);
    Ok(agreed)
}

#[cfg(test)]
mod tests {
    use crypto_box::SalsaBox;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    use super::*;

    /// Boxes sealed one way open the other, and are the same bytes, for many key pairs.
    #[test]
    fn the_same_box_as_crypto_box() {
        let mut rng = ChaCha20Rng::seed_from_u64(25519);
        for _ in 0..200 {
            let (a, b) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
            let mut nonce = [0; BOX_NONCE_BYTES];
            rng.fill_bytes(&mut nonce);
            let mut plaintext = vec![0; usize::try_from(rng.next_u32() % 600).unwrap()];
            rng.fill_bytes(&mut plaintext);
            let ours = SharedBox::new(&b.public_key(), &a).unwrap();
            let reference = SalsaBox::new(&b.public_key(), &a);
            let sealed = ours.seal(&nonce, &plaintext).unwrap();
            assert_eq!(sealed, reference.encrypt(GenericArray::from_slice(&nonce), plaintext.as_slice()).unwrap());
            let theirs = SharedBox::agreed(&a.public_key(), &BoxSecret::new(&b).unwrap()).unwrap();
            assert_eq!(theirs.open(&nonce, &sealed).unwrap(), plaintext);
            let mut changed = sealed.clone();
            changed[0] ^= 1;
            assert!(theirs.open(&nonce, &changed).is_err());
        }
    }

    /// A public key of low order (here the all-zero point) is refused, not agreed to zero.
    #[test]
    fn a_public_key_of_low_order_is_refused() {
        let ours = SecretKey::generate(&mut ChaCha20Rng::seed_from_u64(1));
        assert!(SharedBox::new(&PublicKey::from([0; 32]), &ours).is_err());
    }
}
