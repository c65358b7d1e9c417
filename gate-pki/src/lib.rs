//! The gate's PKI for its OpenVPN servers: a CA made once, a certificate per server (with its
//! own ECDSA key), a certificate per client for the client's own RSA-4096 key (the key that
//! signs its approval requests, so the VPN session and the approval prove the same holder), and
//! CRLs listing revoked clients. Everything in and out is PEM; where it is kept is the caller's
//! business (the store).
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
    SubjectPublicKeyInfo,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

pub const CA_VALIDITY_DAYS: i64 = 3650;
pub const LEAF_VALIDITY_DAYS: i64 = 825;
/// A CRL is valid this long; the daemon issues a new one well before (OpenVPN refuses every
/// client once its CRL has expired).
pub const CRL_VALIDITY_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("PKI: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("PKI: {0}")]
    Invalid(String),
}

/// A CA: its certificate and its private key (zeroized when dropped).
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

/// A certificate and, for server certificates, the key made for it.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: Option<Zeroizing<String>>,
}

fn serial(number: u64) -> SerialNumber {
    // A leading zero byte keeps the DER integer positive whatever the number.
    let mut bytes = vec![0];
    bytes.extend_from_slice(&number.to_be_bytes());
    SerialNumber::from_slice(&bytes)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "gate");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The common name of the CA certificate `cert_pem` (`None`: not one this crate can read).
#[must_use]
pub fn common_name(cert_pem: &str) -> Option<String> {
    let params = CertificateParams::from_ca_cert_pem(cert_pem).ok()?;
    match params.distinguished_name.get(&DnType::CommonName)? {
        rcgen::DnValue::PrintableString(text) => Some(text.as_str().to_owned()),
        rcgen::DnValue::Utf8String(text) => Some(text.clone()),
        other => Some(format!("{other:?}")),
    }
}

fn validity(params: &mut CertificateParams, now: OffsetDateTime, days: i64) {
    // An hour back: a client whose clock is a little behind still accepts a fresh certificate.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

impl Ca {
    /// A new CA called `common_name`.
    ///
    /// # Errors
    /// Key generation or signing failed.
    pub fn generate(common_name: &str, now: OffsetDateTime) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(serial(1));
        validity(&mut params, now, CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), key_pem: Zeroizing::new(key.serialize_pem()) })
    }

    /// The CA as an issuer: its parameters read back from its certificate, and its key.
    fn issuer(&self) -> Result<(rcgen::Certificate, KeyPair), PkiError> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        let mut params = CertificateParams::from_ca_cert_pem(&self.cert_pem)?;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params.self_signed(&key)?;
        Ok((cert, key))
    }

    fn leaf(
        common_name: &str,
        purpose: ExtendedKeyUsagePurpose,
        number: u64,
        now: OffsetDateTime,
    ) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![purpose];
        params.serial_number = Some(serial(number));
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, now, LEAF_VALIDITY_DAYS);
        params
    }

    /// A server certificate with a fresh key, serial `number`.
    ///
    /// # Errors
    /// Key generation or signing failed.
    pub fn issue_server(&self, common_name: &str, number: u64, now: OffsetDateTime) -> Result<Issued, PkiError> {
        let (ca, ca_key) = self.issuer()?;
        let key = KeyPair::generate()?;
        let cert =
            Self::leaf(common_name, ExtendedKeyUsagePurpose::ServerAuth, number, now).signed_by(&key, &ca, &ca_key)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: Some(Zeroizing::new(key.serialize_pem())) })
    }

    /// A client certificate for the client's own public key (SPKI DER), serial `number`.
    ///
    /// # Errors
    /// Not a key rcgen can certify, or signing failed.
    pub fn issue_client(
        &self,
        common_name: &str,
        spki_der: &[u8],
        number: u64,
        now: OffsetDateTime,
    ) -> Result<Issued, PkiError> {
        let (ca, ca_key) = self.issuer()?;
        let public = SubjectPublicKeyInfo::from_der(spki_der)?;
        let cert = Self::leaf(common_name, ExtendedKeyUsagePurpose::ClientAuth, number, now)
            .signed_by(&public, &ca, &ca_key)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: None })
    }

    /// A CRL numbered `number` listing `revoked` (serial, revocation time).
    ///
    /// # Errors
    /// Signing failed.
    pub fn crl(&self, revoked: &[(u64, OffsetDateTime)], number: u64, now: OffsetDateTime) -> Result<String, PkiError> {
        let (ca, ca_key) = self.issuer()?;
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(CRL_VALIDITY_DAYS),
            crl_number: serial(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial_number, at)| RevokedCertParams {
                    serial_number: serial(*serial_number),
                    revocation_time: *at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&ca, &ca_key)?.pem()?)
    }
}
