//! The profile file `gatectl client add` writes and `gate-client` reads: everything one client
//! needs to ask one gate host (or cluster) for approval. It holds secrets: written 0600.
use std::fmt;

use crypto_box::PublicKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{
    ProtocolError,
    encoding::{b64, unb64},
    keys::{ClientKeys, HmacSecret, Token, box_public, box_secret, rsa_private_from_pem, rsa_private_pem},
};

pub const PROFILE_VERSION: u32 = 1;

/// The file's JSON shape. Unknown fields are refused so a typo never passes silently.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub version: u32,
    /// The client's name at enrollment (for display; requests carry the token).
    pub name: String,
    /// The gate it may open.
    pub gate: String,
    /// Where to send requests: `unix:/path` (the daemon's socket) or `https://host:port`.
    pub server: String,
    /// A cluster's other hosts, tried in order when the ones before do not approve (absent for
    /// one host, so such a profile stays readable by clients that predate clusters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_servers: Vec<String>,
    /// The server's box public key, b64.
    pub server_box_public: String,
    pub token: String,
    /// The HMAC secret, b64.
    pub secret: String,
    /// The client's box secret key, b64.
    pub box_secret: String,
    /// The client's RSA-4096 private key, PKCS#8 PEM (the VPN certificate's key).
    pub rsa_private_key: String,
    /// What the VPN connection needs besides the key, when the gate runs OpenVPN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn: Option<VpnProfile>,
}

/// The OpenVPN half of a profile: the gate's CA, the client's certificate (for its RSA key
/// above), and where the VPN server listens (on the host that approves).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpnProfile {
    pub ca_pem: String,
    pub cert_pem: String,
    /// `udp` or `tcp`.
    pub protocol: String,
    pub port: u16,
}

impl fmt::Debug for ProfileFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileFile")
            .field("name", &self.name)
            .field("gate", &self.gate)
            .field("server", &self.server)
            .field("fallback_servers", &self.fallback_servers)
            .finish_non_exhaustive()
    }
}

/// A profile with its keys decoded.
pub struct Profile {
    pub name: String,
    pub gate: String,
    pub server: String,
    /// The cluster's other hosts, in the order they are tried.
    pub fallback_servers: Vec<String>,
    pub server_box_public: PublicKey,
    pub keys: ClientKeys,
    pub vpn: Option<VpnProfile>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile").field("name", &self.name).field("gate", &self.gate).finish_non_exhaustive()
    }
}

impl Profile {
    /// The profile as written to disk (JSON, secrets zeroized when dropped).
    ///
    /// # Errors
    /// The RSA key cannot be encoded.
    pub fn to_json(&self) -> Result<Zeroizing<String>, ProtocolError> {
        let file = ProfileFile {
            version: PROFILE_VERSION,
            name: self.name.clone(),
            gate: self.gate.clone(),
            server: self.server.clone(),
            fallback_servers: self.fallback_servers.clone(),
            server_box_public: b64(self.server_box_public.as_bytes()),
            token: self.keys.token.to_string(),
            secret: b64(&self.keys.secret.0),
            box_secret: b64(&self.keys.box_secret.to_bytes()),
            rsa_private_key: rsa_private_pem(&self.keys.rsa)?.to_string(),
            vpn: self.vpn.clone(),
        };
        let json = serde_json::to_string_pretty(&file).map_err(|_| ProtocolError::Malformed("profile"))?;
        Ok(Zeroizing::new(json + "\n"))
    }

    /// Reads a profile.
    ///
    /// # Errors
    /// Not a profile of this version, or a key in it is malformed.
    pub fn from_json(text: &str) -> Result<Self, ProtocolError> {
        let file: ProfileFile = serde_json::from_str(text).map_err(|_| ProtocolError::Malformed("profile JSON"))?;
        if file.version != PROFILE_VERSION {
            return Err(ProtocolError::Malformed("profile version"));
        }
        let secret = Zeroizing::new(unb64(&file.secret, "profile secret")?);
        let box_secret_bytes = Zeroizing::new(unb64(&file.box_secret, "profile box secret")?);
        Ok(Self {
            keys: ClientKeys {
                token: Token::parse(&file.token)?,
                secret: HmacSecret::from_slice(&secret)?,
                box_secret: box_secret(&box_secret_bytes)?,
                rsa: rsa_private_from_pem(&file.rsa_private_key)?,
            },
            server_box_public: box_public(&unb64(&file.server_box_public, "profile server key")?)?,
            name: file.name,
            gate: file.gate,
            server: file.server,
            fallback_servers: file.fallback_servers,
            vpn: file.vpn,
        })
    }
}
