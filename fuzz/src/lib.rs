//! What the fuzz targets share: fixed keys (the test vectors' RSA key, the rest from a seeded
//! generator) and the one valid input of each kind they start from. `make-seeds` writes those
//! inputs into `corpus/`, so the committed seeds and the targets always agree on the keys.
use std::sync::OnceLock;

use gate_protocol::{
    approval::{self, Approval, Host, Opened},
    crypto_box::{PublicKey, SecretKey},
    keys::{ClientKeys, HmacSecret, RsaVerifyingKey, ServerKeys, Token, rsa_private_from_pem},
    profile::{Profile, VpnProfile},
    request,
    shared_box::SharedBox,
    wire::{Payload, RequestHeaders, SealedBody},
};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

const PEM: &str = include_str!("../../gate-protocol/tests/vectors/client-rsa-4096.pem");

/// The request nonce the sealed approval answers.
pub const REQUEST_NONCE: &str = "00112233445566778899aabbccddeeff";
/// The version the notification is for.
pub const VERSION: &str = "0.1.0";

pub struct Fixture {
    pub client: ClientKeys,
    pub server: ServerKeys,
    /// The server's box public key (computed from its secret: once, not at every input).
    pub server_public: PublicKey,
    /// The client's box and the server's, agreed once.
    pub shared: SharedBox,
    pub verifying: RsaVerifyingKey,
    pub notify_key: ed25519_dalek::SigningKey,
}

/// The keys, made once per process (the RSA key's parse takes milliseconds).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (client, server) = keys();
        let public = client.public();
        let shared = SharedBox::new(&public.box_public, &server.box_secret).expect("a box");
        let verifying = RsaVerifyingKey::new(&public.rsa_public).expect("a verifying key");
        let notify_key = ed25519_dalek::SigningKey::from_bytes(&[18; 32]);
        let server_public = server.public();
        Fixture { client, server, server_public, shared, verifying, notify_key }
    })
}

/// The client's and the server's keys, the same at every call.
#[must_use]
pub fn keys() -> (ClientKeys, ServerKeys) {
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    let client = ClientKeys {
        token: Token::random(&mut rng),
        secret: HmacSecret::random(&mut rng),
        box_secret: SecretKey::generate(&mut rng),
        rsa: rsa_private_from_pem(PEM).expect("the vector key"),
    };
    (client, ServerKeys::generate(&mut rng))
}

/// A profile for the fixture's client, as `gatectl enroll` writes one.
#[must_use]
pub fn valid_profile() -> String {
    fixture_profile().to_json().expect("a profile").to_string()
}

/// The profile of [`valid_profile`], made anew (its RSA key parsed again: milliseconds).
#[must_use]
pub fn fixture_profile() -> Profile {
    let (keys, server) = keys();
    Profile {
        name: "alice".into(),
        gate: "vpn".into(),
        server: "https://gate.example.net:443".into(),
        fallback_servers: vec!["https://gate2.example.net:443".into()],
        server_box_public: server.public(),
        keys,
        vpn: Some(VpnProfile {
            ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            cert_pem: "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n".into(),
            protocol: "udp".into(),
            port: 1194,
        }),
    }
}

/// A profile update for [`valid_profile`], as `gatectl client update` writes one: a new server
/// key, the CAs of a rotation and a new certificate, signed with the client's secret.
#[must_use]
pub fn valid_profile_update() -> String {
    let fixture = fixture();
    let body = gate_protocol::profile_update::UpdateBody {
        name: "alice".into(),
        token: fixture.client.token.to_string(),
        issued_at: 1_796_000_000,
        server_box_public: gate_protocol::encoding::b64(&[9; 32]),
        vpn: Some(gate_protocol::profile_update::VpnTrust {
            ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n\
                     -----BEGIN CERTIFICATE-----\nMIID\n-----END CERTIFICATE-----\n"
                .into(),
            cert_pem: "-----BEGIN CERTIFICATE-----\nMIIE\n-----END CERTIFICATE-----\n".into(),
        }),
    };
    gate_protocol::profile_update::sign(&body, &fixture.client.secret).expect("an update")
}

/// The request target's input: the four headers, one a line, then the body.
#[must_use]
pub fn request_input(headers: &RequestHeaders, body: &[u8]) -> Vec<u8> {
    let mut input = Vec::new();
    for field in [&headers.token, &headers.timestamp, &headers.nonce, &headers.signature] {
        input.extend(field.as_bytes());
        input.push(b'\n');
    }
    input.extend(body);
    input
}

/// The approval request as a client sends it to the front over HTTP/1.1, with `extra` header
/// lines (each ending in CRLF) after the others.
#[must_use]
pub fn http_request(headers: &RequestHeaders, body: &[u8], extra: &str) -> Vec<u8> {
    let head = format!(
        "POST /v1/approve HTTP/1.1\r\nhost: gate.example.net\r\ncontent-type: application/json\r\n\
         content-length: {}\r\ngate-token: {}\r\ngate-timestamp: {}\r\ngate-nonce: {}\r\ngate-signature: {}\r\n{extra}\r\n",
        body.len(),
        headers.token,
        headers.timestamp,
        headers.nonce,
        headers.signature
    );
    [head.as_bytes(), body].concat()
}

/// Splits a request target's input back into headers and body.
#[must_use]
pub fn split_request(input: &[u8]) -> (RequestHeaders, &[u8]) {
    let mut rest = input;
    let mut field = || {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        rest = rest.get(end + 1..).unwrap_or_default();
        text
    };
    let headers = RequestHeaders { token: field(), timestamp: field(), nonce: field(), signature: field() };
    (headers, rest)
}

/// What the valid request carries (made without signing, for the targets to compare with).
#[must_use]
pub fn seed_payload() -> Payload {
    Payload {
        gate: "vpn".into(),
        timestamp: 1_764_000_000,
        nonce: REQUEST_NONCE.into(),
        client_version: "fuzz".into(),
        ipv4: Some("198.51.100.7".parse().expect("an address")),
        ipv6: Some("2001:db8::7".parse().expect("an address")),
    }
}

/// A valid request from the fixture's client, carrying [`seed_payload`].
#[must_use]
pub fn valid_request() -> (RequestHeaders, Vec<u8>) {
    let fixture = fixture();
    let mut rng = ChaCha20Rng::seed_from_u64(180);
    let outgoing =
        request::build(&fixture.client, &fixture.server_public, &seed_payload(), [9; 24], &mut rng).expect("a request");
    (outgoing.headers.clone(), outgoing.body_json().into_bytes())
}

/// A valid approval from the fixture's server, answering [`REQUEST_NONCE`].
#[must_use]
pub fn valid_approval() -> SealedBody {
    let fixture = fixture();
    let answer = Approval {
        approved: true,
        request_nonce: REQUEST_NONCE.into(),
        gate: "vpn".into(),
        opened: vec![Opened { address: "198.51.100.7".parse().expect("an address"), expires_at: 1_764_086_400 }],
        connect_by: 1_764_000_060,
        idle_timeout_secs: 180,
        host: Host::default(),
        session_token: "0".repeat(32),
        session_token_expires_at: 1_764_000_060,
    };
    approval::seal_with(&answer, fixture.client.token, &fixture.client.secret, &fixture.shared, [3; 24])
        .expect("a sealed approval")
}

/// A valid notification document signed with the fixture's key.
#[must_use]
pub fn valid_notification() -> Vec<u8> {
    let notification = gate_notify::Notification {
        product: "gate".into(),
        version: VERSION.into(),
        serial: 7,
        issued_at: 1_764_000_000,
        message: "maintenance".into(),
        www: gate_notify::State::Disabled,
        web: gate_notify::State::Ok,
        vpn: gate_notify::State::Ok,
    };
    serde_json::to_vec(&gate_notify::sign(&notification, &fixture().notify_key)).expect("JSON")
}
