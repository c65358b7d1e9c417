//! One approval round trip: build the three-layer request, send it, verify the answer.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{SystemTime, UNIX_EPOCH},
};

use gate_protocol::{
    ProtocolError,
    approval::{self, Approval},
    profile::Profile,
    rand::{RngCore, rngs::OsRng},
    request,
    wire::{
        APPROVE_METHOD, APPROVE_PATH, BOX_NONCE_BYTES, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, HEADER_TOKEN,
        Payload, REJECTED_STATUS, SOURCE_PATH, SealedBody, SourceAnswer,
    },
};

use crate::transport::{Server, TransportError};

pub const CLIENT_VERSION: &str = concat!("gate-client/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(
        "the server refused the request (it never says why: see its log, or check the profile, its updates and the clock)"
    )]
    Refused,
    #[error("the server answered {status}, not an approval")]
    Unexpected { status: u16 },
    #[error("the answer failed verification ({0}); not trusting it")]
    Untrusted(ProtocolError),
    #[error("could not build the request: {0}")]
    Build(ProtocolError),
}

/// What to ask for.
#[derive(Clone, Debug, Default)]
pub struct Ask {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Overrides the profile's servers.
    pub server: Option<String>,
    /// Where to learn this client's public addresses (`GET /v1/source` on every address each
    /// resolves to); empty: the server itself.
    pub discover_via: Vec<String>,
    /// Do not ask; use only the given addresses (the gate adds the observed source anyway).
    pub no_discover: bool,
}

/// This client's public addresses as HTTPS servers see them: asks `GET /v1/source` on every
/// address of every server, so a dual-stack host answers once over IPv4 and once over IPv6.
/// Unreachable ones are skipped (reported in the second value).
#[must_use]
pub fn discover(servers: &[Server]) -> ((Option<Ipv4Addr>, Option<Ipv6Addr>), Vec<String>) {
    let (mut found, mut problems) = ((None, None), Vec::new());
    for server in servers {
        let each = match server.each_address() {
            Ok(each) => each,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        for at in each {
            let answer = at.request("GET", SOURCE_PATH, &[], b"").map_err(|e| e.to_string()).and_then(|r| {
                if r.status == 200 {
                    serde_json::from_slice::<SourceAnswer>(&r.body).map_err(|e| e.to_string())
                } else {
                    Err(format!("answered {}", r.status))
                }
            });
            match answer.map(|a| a.address.to_canonical()) {
                Ok(IpAddr::V4(v4)) => found.0 = found.0.or(Some(v4)),
                Ok(IpAddr::V6(v6)) => found.1 = found.1.or(Some(v6)),
                Err(e) => problems.push(format!("source from {at}: {e}")),
            }
        }
    }
    (found, problems)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A verified approval, and the server that gave it.
#[derive(Debug)]
pub struct Approved {
    pub approval: Approval,
    /// As the profile (or `--server`) writes it.
    pub server: String,
}

/// Asks for approval and returns the verified answer: the profile's server first, then a
/// cluster's other hosts in the profile's order, each with a request of its own (a fresh nonce),
/// until one approves. Each failure but the last is reported on stderr as the next is tried.
///
/// # Errors
/// The last server's: unreachable, refused, or an answer that fails verification.
pub fn connect(profile: &Profile, ask: &Ask) -> Result<Approved, ConnectError> {
    let servers: Vec<&str> = match &ask.server {
        Some(server) => vec![server.as_str()],
        None => std::iter::once(profile.server.as_str())
            .chain(profile.fallback_servers.iter().map(String::as_str))
            .collect(),
    };
    let mut failed = Err(ConnectError::Refused);
    for (i, server) in servers.iter().enumerate() {
        match connect_to(profile, ask, server) {
            Ok(approval) => return Ok(Approved { approval, server: (*server).to_owned() }),
            Err(e) => {
                if let Some(next) = servers.get(i + 1) {
                    eprintln!("gate-client: {server}: {e}; trying {next}");
                }
                failed = Err(e);
            }
        }
    }
    failed
}

/// One server's round trip.
fn connect_to(profile: &Profile, ask: &Ask, server: &str) -> Result<Approval, ConnectError> {
    let server = Server::parse(server)?;
    let (mut ipv4, mut ipv6) = (ask.ipv4, ask.ipv6);
    let https = matches!(server, Server::Https { .. });
    if !ask.no_discover && (ipv4.is_none() || ipv6.is_none()) && (https || !ask.discover_via.is_empty()) {
        let via = if ask.discover_via.is_empty() {
            vec![server.clone()]
        } else {
            ask.discover_via.iter().map(|s| Server::parse(s)).collect::<Result<_, _>>()?
        };
        let ((v4, v6), problems) = discover(&via);
        for problem in problems {
            eprintln!("gate-client: address discovery: {problem}");
        }
        ipv4 = ipv4.or(v4);
        ipv6 = ipv6.or(v6);
    }
    let payload = Payload {
        gate: profile.gate.clone(),
        timestamp: unix_now(),
        nonce: request::random_nonce(&mut OsRng),
        client_version: CLIENT_VERSION.to_owned(),
        ipv4,
        ipv6,
    };
    let mut box_nonce = [0; BOX_NONCE_BYTES];
    OsRng.fill_bytes(&mut box_nonce);
    let outgoing = request::build(&profile.keys, &profile.server_box_public, &payload, box_nonce, &mut OsRng)
        .map_err(ConnectError::Build)?;
    let headers = &outgoing.headers;
    let response = server.request(
        APPROVE_METHOD,
        APPROVE_PATH,
        &[
            (HEADER_TOKEN, &headers.token),
            (HEADER_TIMESTAMP, &headers.timestamp),
            (HEADER_NONCE, &headers.nonce),
            (HEADER_SIGNATURE, &headers.signature),
        ],
        outgoing.body_json().as_bytes(),
    )?;
    match response.status {
        200 => {}
        REJECTED_STATUS => return Err(ConnectError::Refused),
        status => return Err(ConnectError::Unexpected { status }),
    }
    let body: SealedBody = serde_json::from_slice(&response.body)
        .map_err(|_| ConnectError::Untrusted(ProtocolError::Malformed("approval body")))?;
    approval::open(&body, &profile.keys, &profile.server_box_public, &payload.nonce).map_err(ConnectError::Untrusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_discovery_names_the_server_as_written() {
        // Nothing listens on port 1 of the loopback address: refused at once.
        let (found, problems) = discover(&[Server::parse("https://127.0.0.1:1").unwrap()]);
        assert_eq!(found, (None, None));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("source from https://127.0.0.1:1 at 127.0.0.1:1: "), "{}", problems[0]);
        assert!(!problems[0].contains('{'), "no Rust structure in what a person reads: {}", problems[0]);
    }
}
