//! What can go wrong in the protocol layers. The daemon maps every variant to the same answer;
//! the variants exist for its log and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("too large: {0}")]
    TooLarge(&'static str),
    #[error("HMAC does not match")]
    BadHmac,
    #[error("box does not open")]
    BadBox,
    #[error("RSA signature does not verify")]
    BadSignature,
    #[error("payload does not match the headers")]
    PayloadMismatch,
    #[error("key material is invalid: {0}")]
    BadKey(&'static str),
}
