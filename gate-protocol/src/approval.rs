//! The answer to an approved request: sealed by the server to the client's box key, HMAC-signed
//! with the client's secret and bound to the request's nonce. The client checks all three before
//! it trusts a word.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crypto_box::PublicKey;
use serde::{Deserialize, Serialize};

use crate::{
    ProtocolError, canonical,
    encoding::{b64, unb64},
    keys::{ClientKeys, HmacSecret, ServerKeys, Token},
    request::{hmac_tag, verify_hmac},
    shared_box::SharedBox,
    wire::{BOX_NONCE_BYTES, MAX_SEALED_BYTES, SealedBody},
};

/// One address the gate was opened for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opened {
    pub address: IpAddr,
    /// Hard expiry, Unix seconds.
    pub expires_at: u64,
}

/// The public addresses of the host that approved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub approved: bool,
    pub request_nonce: String,
    pub gate: String,
    pub opened: Vec<Opened>,
    pub connect_by: u64,
    pub idle_timeout_secs: u64,
    pub host: Host,
    pub session_token: String,
    pub session_token_expires_at: u64,
}

/// Seals `approval` for the client (server side).
///
/// # Errors
/// Sealing failed.
pub fn seal(
    approval: &Approval,
    token: Token,
    secret: &HmacSecret,
    server: &ServerKeys,
    client_box: &PublicKey,
    box_nonce: [u8; BOX_NONCE_BYTES],
) -> Result<SealedBody, ProtocolError> {
    seal_with(approval, token, secret, &SharedBox::new(client_box, &server.box_secret)?, box_nonce)
}

/// As [`seal`], with the shared box key computed beforehand.
///
/// # Errors
/// Sealing failed.
pub fn seal_with(
    approval: &Approval,
    token: Token,
    secret: &HmacSecret,
    shared: &SharedBox,
    box_nonce: [u8; BOX_NONCE_BYTES],
) -> Result<SealedBody, ProtocolError> {
    let plaintext = serde_json::to_vec(approval).map_err(|_| ProtocolError::Malformed("approval"))?;
    let sealed = shared.seal(&box_nonce, &plaintext)?;
    let mut body = SealedBody { data: b64(&sealed), nonce: b64(&box_nonce), signature: String::new() };
    let tag = hmac_tag(secret, &canonical::approval_hmac_input(&token.to_string(), &approval.request_nonce, &body));
    body.signature = b64(&tag);
    Ok(body)
}

/// Opens an approval (client side): HMAC first, then the box, then the request binding.
///
/// # Errors
/// Any layer fails, or the approval answers another request.
pub fn open(
    body: &SealedBody,
    keys: &ClientKeys,
    server_box: &PublicKey,
    request_nonce: &str,
) -> Result<Approval, ProtocolError> {
    let tag = unb64(&body.signature, "approval HMAC")?;
    verify_hmac(&keys.secret, &canonical::approval_hmac_input(&keys.token.to_string(), request_nonce, body), &tag)?;
    let sealed = unb64(&body.data, "approval data")?;
    if sealed.len() > MAX_SEALED_BYTES {
        return Err(ProtocolError::TooLarge("approval data"));
    }
    let box_nonce = <[u8; BOX_NONCE_BYTES]>::try_from(unb64(&body.nonce, "approval box nonce")?)
        .map_err(|_| ProtocolError::Malformed("approval box nonce length"))?;
    let plaintext = SharedBox::new(server_box, &keys.box_secret)?.open(&box_nonce, &sealed)?;
    let approval: Approval = crate::wire::json_object(&plaintext).ok_or(ProtocolError::Malformed("approval"))?;
    if approval.request_nonce != request_nonce {
        return Err(ProtocolError::PayloadMismatch);
    }
    Ok(approval)
}
