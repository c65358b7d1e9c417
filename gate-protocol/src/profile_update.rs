//! A profile update: what `gatectl client update` writes after a box key or CA rotation and
//! `gate-client update` folds into the client's profile. It holds no secret (the server's box
//! public key, the CA certificates, the client's new certificate for the key it already has)
//! but it decides whom the client trusts, so it is HMAC-signed with the client's own secret:
//! an update made for another client, or changed on the way, is refused.
//!
//! The signature covers the body's exact bytes (b64 in the file), so nothing is canonicalised.
use serde::{Deserialize, Serialize};

use crate::{
    ProtocolError,
    encoding::{b64, unb64},
    keys::{HmacSecret, box_public},
    profile::Profile,
    request::{hmac_tag, verify_hmac},
};

pub const PROFILE_UPDATE_VERSION: u32 = 1;
const LABEL: &str = "gate-profile-update-v1";
/// Far above any real update (two CA certificates and one client certificate, ~6 KB).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The file's JSON shape.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdateFile {
    pub version: u32,
    /// The JSON of [`UpdateBody`], b64: the bytes the signature covers.
    pub body: String,
    /// HMAC-SHA512 with the client's secret, b64.
    pub signature: String,
}

/// What an update changes in a profile, and whose profile it is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    pub name: String,
    /// The token of the profile it is for (hex).
    pub token: String,
    /// Unix seconds.
    pub issued_at: u64,
    /// The server's current box public key, b64.
    pub server_box_public: String,
    /// The CAs to trust and the client's certificate, for a profile with a VPN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn: Option<VpnTrust>,
}

/// The VPN half of an update: what a CA rotation changes (where the VPN listens does not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpnTrust {
    /// Every CA the client trusts the server's certificate from (PEM, one after another).
    pub ca_pem: String,
    /// The client's certificate for the RSA key it holds.
    pub cert_pem: String,
}

fn signed_input(token: &str, body: &str) -> String {
    [LABEL, token, body].join("&")
}

/// Signs `body` with the client's `secret` (server side).
///
/// # Errors
/// The body cannot be encoded.
pub fn sign(body: &UpdateBody, secret: &HmacSecret) -> Result<String, ProtocolError> {
    let json = serde_json::to_vec(body).map_err(|_| ProtocolError::Malformed("profile update"))?;
    let body_b64 = b64(&json);
    let signature = b64(&hmac_tag(secret, &signed_input(&body.token, &body_b64)));
    let file = ProfileUpdateFile { version: PROFILE_UPDATE_VERSION, body: body_b64, signature };
    serde_json::to_string_pretty(&file).map(|json| json + "\n").map_err(|_| ProtocolError::Malformed("profile update"))
}

/// Checks `text` was made for `profile` and signed with its secret, then returns the body.
///
/// # Errors
/// Not an update of this version, made for another profile, or its signature does not verify.
pub fn verify(text: &str, profile: &Profile) -> Result<UpdateBody, ProtocolError> {
    let file: ProfileUpdateFile =
        serde_json::from_str(text).map_err(|_| ProtocolError::Malformed("profile update JSON"))?;
    if file.version != PROFILE_UPDATE_VERSION {
        return Err(ProtocolError::Malformed("profile update version"));
    }
    if file.body.len() > MAX_BODY_BYTES {
        return Err(ProtocolError::TooLarge("profile update"));
    }
    let token = profile.keys.token.to_string();
    let tag = unb64(&file.signature, "profile update signature")?;
    verify_hmac(&profile.keys.secret, &signed_input(&token, &file.body), &tag)?;
    let body: UpdateBody = serde_json::from_slice(&unb64(&file.body, "profile update body")?)
        .map_err(|_| ProtocolError::Malformed("profile update body"))?;
    if body.token != token || body.name != profile.name {
        return Err(ProtocolError::PayloadMismatch);
    }
    Ok(body)
}

/// Folds a verified update into `profile`: the server's box key, and the VPN's CAs and
/// certificate when both have a VPN half. Returns what changed, for the user.
///
/// # Errors
/// The update's server key is malformed.
pub fn apply(body: &UpdateBody, profile: &mut Profile) -> Result<Vec<&'static str>, ProtocolError> {
    let server_box_public = box_public(&unb64(&body.server_box_public, "update server key")?)?;
    let mut changed = Vec::new();
    if server_box_public != profile.server_box_public {
        profile.server_box_public = server_box_public;
        changed.push("the server's box key");
    }
    if let (Some(trust), Some(vpn)) = (&body.vpn, &mut profile.vpn) {
        if trust.ca_pem != vpn.ca_pem {
            vpn.ca_pem.clone_from(&trust.ca_pem);
            changed.push("the VPN's CAs");
        }
        if trust.cert_pem != vpn.cert_pem {
            vpn.cert_pem.clone_from(&trust.cert_pem);
            changed.push("the VPN certificate");
        }
    }
    Ok(changed)
}
