//! What travels: the path, header names, size limits, the body (one shape for request and
//! approval), and the payload sealed inside a request. Every JSON type refuses unknown fields.
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

pub const APPROVE_METHOD: &str = "POST";
pub const APPROVE_PATH: &str = "/v1/approve";

pub const HEADER_TOKEN: &str = "gate-token";
pub const HEADER_TIMESTAMP: &str = "gate-timestamp";
pub const HEADER_NONCE: &str = "gate-nonce";
pub const HEADER_SIGNATURE: &str = "gate-signature";

/// The whole request body.
pub const MAX_BODY_BYTES: usize = 8192;
/// The sealed payload, decoded.
pub const MAX_SEALED_BYTES: usize = 4096;
/// Request nonces: 16 random bytes.
pub const NONCE_BYTES: usize = 16;
/// `crypto_box` nonces.
pub const BOX_NONCE_BYTES: usize = 24;
/// An RSA-4096 signature.
pub const RSA_SIGNATURE_BYTES: usize = 512;
/// An HMAC-SHA512.
pub const HMAC_BYTES: usize = 64;
/// The longest decimal Unix time accepted (u64).
pub const MAX_TIMESTAMP_DIGITS: usize = 20;

/// The answer to every refused request, byte for byte.
pub const REJECTED_BODY: &str = r#"{"error":"rejected"}"#;
/// Its HTTP status.
pub const REJECTED_STATUS: u16 = 403;

/// `bytes` as the JSON object `T`, or `None`. Only an object: serde's derive would also take an
/// array, matched by position, and the protocol says "a JSON object" (a second parser in the
/// path must never read the same bytes differently).
pub fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let first = bytes.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

/// The JSON body of a request and of an approval: sealed data, its box nonce, and a signature
/// (RSA in a request, HMAC in an approval). All b64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedBody {
    pub data: String,
    pub nonce: String,
    pub signature: String,
}

/// The request's four headers, as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeaders {
    pub token: String,
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

/// What the client seals into a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub gate: String,
    pub timestamp: u64,
    pub nonce: String,
    pub client_version: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// Set by the front on requests it forwards to the daemon's internal socket: the client's
/// address as observed on the connection (never taken from a client).
pub const INTERNAL_HEADER_OBSERVED_SOURCE: &str = "gate-observed-source";

/// The echo endpoint: answers the caller's address as the server sees it.
pub const SOURCE_PATH: &str = "/v1/source";

/// The echo endpoint's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceAnswer {
    pub address: std::net::IpAddr,
}

/// Set by the front on every request it rebuilt and forwards; the daemon refuses requests to
/// the client routes without it.
pub const INTERNAL_HEADER_VALIDATED: &str = "gate-front-validated";
