//! The exact strings the signatures cover (docs/protocol.md). Each starts with a label, so a
//! signature made for one purpose never verifies for another.
use crate::wire::{APPROVE_METHOD, APPROVE_PATH, SealedBody};

pub const REQUEST_LABEL: &str = "gate-approve-v1";
pub const APPROVAL_LABEL: &str = "gate-approval-v1";

/// What the request's HMAC covers.
#[must_use]
pub fn request_hmac_input(token: &str, timestamp: &str, nonce: &str, body: &SealedBody) -> String {
    [REQUEST_LABEL, token, timestamp, nonce, APPROVE_METHOD, APPROVE_PATH, &body.data, &body.nonce, &body.signature]
        .join("&")
}

/// What the request's RSA signature covers: the sealed payload and its box nonce, as b64.
#[must_use]
pub fn rsa_input(data: &str, box_nonce: &str) -> String {
    [REQUEST_LABEL, data, box_nonce].join("&")
}

/// What the approval's HMAC covers: bound to the request by its nonce.
#[must_use]
pub fn approval_hmac_input(token: &str, request_nonce: &str, body: &SealedBody) -> String {
    [APPROVAL_LABEL, token, request_nonce, &body.data, &body.nonce].join("&")
}
