//! Key material. Secrets zeroize on drop and never print.
use std::fmt;

use crypto_box::{PublicKey, SecretKey};
use rand::{CryptoRng, RngCore};
use rsa::{RsaPrivateKey, RsaPublicKey};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{
    ProtocolError,
    encoding::{hex, unhex},
};

pub const TOKEN_BYTES: usize = 16;
pub const SECRET_BYTES: usize = 64;
pub const BOX_KEY_BYTES: usize = 32;
pub const RSA_BITS: usize = 4096;

/// Names a client in requests; not secret, but unguessable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub [u8; TOKEN_BYTES]);

impl Token {
    pub fn random(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = [0; TOKEN_BYTES];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// # Errors
    /// Not 32 lowercase hex characters.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        unhex(text, "token").map(Self)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({self})")
    }
}

/// The per-client HMAC-SHA512 key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HmacSecret(pub [u8; SECRET_BYTES]);

impl HmacSecret {
    pub fn random(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = [0; SECRET_BYTES];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// # Errors
    /// Not exactly 64 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtocolError> {
        <[u8; SECRET_BYTES]>::try_from(bytes)
            .map(Self)
            .map_err(|_| ProtocolError::BadKey("HMAC secret must be 64 bytes"))
    }
}

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacSecret(..)")
    }
}

/// A box public key from its 32 bytes.
///
/// # Errors
/// Not 32 bytes.
pub fn box_public(bytes: &[u8]) -> Result<PublicKey, ProtocolError> {
    PublicKey::from_slice(bytes).map_err(|_| ProtocolError::BadKey("box public key must be 32 bytes"))
}

/// A box secret key from its 32 bytes.
///
/// # Errors
/// Not 32 bytes.
pub fn box_secret(bytes: &[u8]) -> Result<SecretKey, ProtocolError> {
    SecretKey::from_slice(bytes).map_err(|_| ProtocolError::BadKey("box secret key must be 32 bytes"))
}

/// Everything a client holds (its half of the profile).
pub struct ClientKeys {
    pub token: Token,
    pub secret: HmacSecret,
    pub box_secret: SecretKey,
    pub rsa: RsaPrivateKey,
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKeys").field("token", &self.token).finish_non_exhaustive()
    }
}

/// What the server registers about a client besides its secret.
#[derive(Clone, Debug)]
pub struct ClientPublic {
    pub token: Token,
    pub box_public: PublicKey,
    pub rsa_public: RsaPublicKey,
}

impl ClientKeys {
    /// Fresh keys. RSA-4096 generation takes seconds: make test keys once per run.
    ///
    /// # Errors
    /// RSA key generation failed.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Result<Self, ProtocolError> {
        let rsa = RsaPrivateKey::new(rng, RSA_BITS).map_err(|_| ProtocolError::BadKey("RSA key generation failed"))?;
        Ok(Self {
            token: Token::random(rng),
            secret: HmacSecret::random(rng),
            box_secret: SecretKey::generate(rng),
            rsa,
        })
    }

    #[must_use]
    pub fn public(&self) -> ClientPublic {
        ClientPublic {
            token: self.token,
            box_public: self.box_secret.public_key(),
            rsa_public: self.rsa.to_public_key(),
        }
    }
}

/// A gate server's box key pair.
pub struct ServerKeys {
    pub box_secret: SecretKey,
}

impl ServerKeys {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Self { box_secret: SecretKey::generate(rng) }
    }

    #[must_use]
    pub fn public(&self) -> PublicKey {
        self.box_secret.public_key()
    }
}

/// An RSA public key as SPKI DER (how the server registers it).
///
/// # Errors
/// Encoding failed.
/// A client's RSA public key made ready to verify request signatures: OpenSSL's own key, built
/// once per client and kept, so each verification costs what `openssl speed rsa4096` measures
/// (its Montgomery setup is cached in the key after the first use).
pub struct RsaVerifyingKey(openssl::pkey::PKey<openssl::pkey::Public>);

impl RsaVerifyingKey {
    /// # Errors
    /// OpenSSL refuses the key's numbers.
    pub fn new(key: &RsaPublicKey) -> Result<Self, ProtocolError> {
        use rsa::traits::PublicKeyParts as _;
        let bad = |_| ProtocolError::BadKey("RSA public key for verification");
        let n = openssl::bn::BigNum::from_slice(&key.n().to_bytes_be()).map_err(bad)?;
        let e = openssl::bn::BigNum::from_slice(&key.e().to_bytes_be()).map_err(bad)?;
        let rsa = openssl::rsa::Rsa::from_public_components(n, e).map_err(bad)?;
        Ok(Self(openssl::pkey::PKey::from_rsa(rsa).map_err(bad)?))
    }

    /// Whether `signature` is RSASSA-PSS with SHA-512, MGF1-SHA-512 and a 64-byte salt over
    /// `message` (exactly these parameters: any other salt length, digest or padding fails).
    #[must_use]
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use openssl::{
            hash::MessageDigest,
            rsa::Padding,
            sign::{RsaPssSaltlen, Verifier},
        };
        let verified = || -> Result<bool, openssl::error::ErrorStack> {
            let mut verifier = Verifier::new(MessageDigest::sha512(), &self.0)?;
            verifier.set_rsa_padding(Padding::PKCS1_PSS)?;
            verifier.set_rsa_mgf1_md(MessageDigest::sha512())?;
            verifier.set_rsa_pss_saltlen(RsaPssSaltlen::custom(64))?;
            verifier.verify_oneshot(signature, message)
        };
        verified().unwrap_or(false)
    }
}

impl fmt::Debug for RsaVerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaVerifyingKey")
    }
}

pub fn rsa_public_der(key: &RsaPublicKey) -> Result<Vec<u8>, ProtocolError> {
    use rsa::pkcs8::EncodePublicKey;
    key.to_public_key_der().map(|der| der.into_vec()).map_err(|_| ProtocolError::BadKey("RSA public key encoding"))
}

/// An RSA public key from SPKI DER; only 4096-bit keys are accepted.
///
/// # Errors
/// Not an RSA-4096 SPKI DER.
pub fn rsa_public_from_der(der: &[u8]) -> Result<RsaPublicKey, ProtocolError> {
    use rsa::{pkcs8::DecodePublicKey, traits::PublicKeyParts};
    let key = RsaPublicKey::from_public_key_der(der).map_err(|_| ProtocolError::BadKey("not an RSA public key"))?;
    if key.size() * 8 != RSA_BITS {
        return Err(ProtocolError::BadKey("RSA key is not 4096 bits"));
    }
    Ok(key)
}

/// An RSA private key as PKCS#8 PEM (zeroized when dropped).
///
/// # Errors
/// Encoding failed.
pub fn rsa_private_pem(key: &RsaPrivateKey) -> Result<zeroize::Zeroizing<String>, ProtocolError> {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    key.to_pkcs8_pem(LineEnding::LF).map_err(|_| ProtocolError::BadKey("RSA private key encoding"))
}

/// An RSA private key from PKCS#8 or PKCS#1 PEM; only 4096-bit keys are accepted.
///
/// # Errors
/// Not an RSA-4096 private key in PEM.
pub fn rsa_private_from_pem(pem: &str) -> Result<RsaPrivateKey, ProtocolError> {
    use rsa::{pkcs1::DecodeRsaPrivateKey, pkcs8::DecodePrivateKey, traits::PublicKeyParts};
    let key = RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| ProtocolError::BadKey("not an RSA private key in PEM"))?;
    if key.size() * 8 != RSA_BITS {
        return Err(ProtocolError::BadKey("RSA key is not 4096 bits"));
    }
    key.validate().map_err(|_| ProtocolError::BadKey("RSA private key is inconsistent"))?;
    Ok(key)
}
