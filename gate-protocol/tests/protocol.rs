//! The protocol end to end in memory: a round trip, every layer's key wrong while the others are
//! right, tampering with each field, and the worked example of docs/protocol.md.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use gate_protocol::{
    ProtocolError, approval,
    approval::{Approval, Host, Opened},
    canonical,
    encoding::{b64, hex},
    keys::{ClientKeys, HmacSecret, RsaVerifyingKey, ServerKeys, Token, box_secret},
    request::{self, Request},
    wire::{Payload, RequestHeaders, SealedBody},
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rsa::{
    RsaPrivateKey,
    pkcs8::{DecodePrivateKey, EncodePublicKey},
};
use sha2::{Digest, Sha512};

fn vector_key(name: &str) -> RsaPrivateKey {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(name);
    RsaPrivateKey::read_pkcs8_pem_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(u8::try_from(i).unwrap()))
}

const TIMESTAMP: u64 = 1_767_225_600;
const NONCE: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn example_client() -> ClientKeys {
    ClientKeys {
        token: Token::parse("00112233445566778899aabbccddeeff").unwrap(),
        secret: HmacSecret(seq(0x00)),
        box_secret: box_secret(&seq::<32>(0x40)).unwrap(),
        rsa: vector_key("client-rsa-4096.pem"),
    }
}

fn example_server() -> ServerKeys {
    ServerKeys { box_secret: box_secret(&seq::<32>(0x60)).unwrap() }
}

fn example_payload() -> Payload {
    Payload {
        gate: "vpn".into(),
        timestamp: TIMESTAMP,
        nonce: NONCE.into(),
        client_version: "1.0.0".into(),
        ipv4: Some(Ipv4Addr::new(198, 51, 100, 7)),
        ipv6: Some("2001:db8::7".parse::<Ipv6Addr>().unwrap()),
    }
}

fn example_request(client: &ClientKeys, server: &ServerKeys) -> request::Outgoing {
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    request::build(client, &server.public(), &example_payload(), seq(0x80), &mut rng).unwrap()
}

fn example_approval() -> Approval {
    Approval {
        approved: true,
        request_nonce: NONCE.into(),
        gate: "vpn".into(),
        opened: vec![
            Opened { address: "198.51.100.7".parse().unwrap(), expires_at: TIMESTAMP + 86_400 },
            Opened { address: "2001:db8::7".parse().unwrap(), expires_at: TIMESTAMP + 86_400 },
        ],
        connect_by: TIMESTAMP + 60,
        idle_timeout_secs: 180,
        host: Host { ipv4: Some(Ipv4Addr::new(203, 0, 113, 1)), ipv6: None },
        session_token: "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf".into(),
        session_token_expires_at: TIMESTAMP + 180,
    }
}

/// What the server does with a request, layer by layer, given what it registered.
fn server_checks(
    outgoing: &request::Outgoing,
    secret: &HmacSecret,
    server: &ServerKeys,
    registered: &ClientKeys,
) -> Result<Payload, ProtocolError> {
    let request = Request::parse(outgoing.headers.clone(), outgoing.body_json().as_bytes())?;
    request.verify_hmac(secret)?;
    let plaintext = request.open(server, &registered.box_secret.public_key())?;
    request.verify_rsa(&RsaVerifyingKey::new(&registered.rsa.to_public_key())?)?;
    request.payload(&plaintext)
}

#[test]
fn a_request_round_trips_and_its_approval_opens() {
    let (client, server) = (example_client(), example_server());
    let outgoing = example_request(&client, &server);
    assert_eq!(server_checks(&outgoing, &client.secret, &server, &client).unwrap(), example_payload());
    let body = approval::seal(
        &example_approval(),
        client.token,
        &client.secret,
        &server,
        &client.box_secret.public_key(),
        seq(0x98),
    )
    .unwrap();
    assert_eq!(approval::open(&body, &client, &server.public(), NONCE).unwrap(), example_approval());
}

#[test]
fn each_layer_refuses_a_foreign_key_while_the_others_are_right() {
    let (client, server) = (example_client(), example_server());
    let outgoing = example_request(&client, &server);
    let foreign_secret = HmacSecret(seq(0x01));
    assert_eq!(server_checks(&outgoing, &foreign_secret, &server, &client), Err(ProtocolError::BadHmac));

    // Valid HMAC, sealed with a box key other than the registered one.
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let foreign_box = ClientKeys { box_secret: box_secret(&seq::<32>(0x41)).unwrap(), ..example_client() };
    let sealed_wrong = request::build(&foreign_box, &server.public(), &example_payload(), seq(0x80), &mut rng).unwrap();
    assert_eq!(server_checks(&sealed_wrong, &client.secret, &server, &client), Err(ProtocolError::BadBox));

    // Valid HMAC and box, signed by another RSA key.
    let foreign_rsa = ClientKeys { rsa: vector_key("foreign-rsa-4096.pem"), ..example_client() };
    let signed_wrong = request::build(&foreign_rsa, &server.public(), &example_payload(), seq(0x80), &mut rng).unwrap();
    assert_eq!(server_checks(&signed_wrong, &client.secret, &server, &client), Err(ProtocolError::BadSignature));

    // Sealed to another server.
    let other_server = ServerKeys { box_secret: box_secret(&seq::<32>(0x61)).unwrap() };
    assert_eq!(server_checks(&outgoing, &client.secret, &other_server, &client), Err(ProtocolError::BadBox));
}

/// The example request's body with its RSA signature made by `sign` (over the same string).
fn resigned(client: &ClientKeys, server: &ServerKeys, mut sign: impl FnMut(&[u8]) -> Vec<u8>) -> Request {
    let outgoing = example_request(client, server);
    let message = canonical::rsa_input(&outgoing.body.data, &outgoing.body.nonce);
    let body = SealedBody { signature: b64(&sign(message.as_bytes())), ..outgoing.body.clone() };
    Request::parse(outgoing.headers.clone(), serde_json::to_string(&body).unwrap().as_bytes()).unwrap()
}

#[test]
fn only_pss_with_sha512_and_a_64_byte_salt_verifies() {
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    let (client, server) = (example_client(), example_server());
    let public = RsaVerifyingKey::new(&client.rsa.to_public_key()).unwrap();
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let mut sign_with = |salt: usize| {
        let key = rsa::pss::BlindedSigningKey::<Sha512>::new_with_salt_len(client.rsa.clone(), salt);
        resigned(&client, &server, |m| key.sign_with_rng(&mut rng, m).to_vec())
    };
    assert_eq!(sign_with(64).verify_rsa(&public), Ok(()), "the protocol's own parameters");
    for salt in [0, 32, 63, 65, 128] {
        assert_eq!(sign_with(salt).verify_rsa(&public), Err(ProtocolError::BadSignature), "a {salt}-byte salt");
    }
    let mut rng = ChaCha20Rng::from_seed([6; 32]);
    let sha256_pss = rsa::pss::BlindedSigningKey::<sha2::Sha256>::new(client.rsa.clone());
    let request = resigned(&client, &server, |m| sha256_pss.sign_with_rng(&mut rng, m).to_vec());
    assert_eq!(request.verify_rsa(&public), Err(ProtocolError::BadSignature), "PSS with SHA-256");
    let pkcs1 = rsa::pkcs1v15::SigningKey::<Sha512>::new(client.rsa.clone());
    let request = resigned(&client, &server, |m| rsa::signature::Signer::sign(&pkcs1, m).to_vec());
    assert_eq!(request.verify_rsa(&public), Err(ProtocolError::BadSignature), "PKCS#1 v1.5 with SHA-512");
}

fn flip(text: &str, index: usize) -> String {
    let mut bytes = text.as_bytes().to_vec();
    // Swap for another character of the same alphabet, so encodings stay well-formed.
    bytes[index] = match bytes[index] {
        b'A' => b'B',
        b'0' => b'1',
        b'a' => b'b',
        _ => b'A',
    };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn a_change_anywhere_in_the_request_is_refused() {
    let (client, server) = (example_client(), example_server());
    let outgoing = example_request(&client, &server);
    let check = |headers: RequestHeaders, body: SealedBody| {
        server_checks(&request::Outgoing { headers, body }, &client.secret, &server, &client)
    };
    let (h, b) = (outgoing.headers.clone(), outgoing.body.clone());
    for i in [0, 7, 31] {
        assert!(check(RequestHeaders { token: flip(&h.token, i), ..h.clone() }, b.clone()).is_err(), "token {i}");
        assert!(check(RequestHeaders { nonce: flip(&h.nonce, i), ..h.clone() }, b.clone()).is_err(), "nonce {i}");
    }
    for i in [0, 40, 86] {
        assert!(
            check(RequestHeaders { signature: flip(&h.signature, i), ..h.clone() }, b.clone()).is_err(),
            "hmac {i}"
        );
    }
    assert!(check(RequestHeaders { timestamp: (TIMESTAMP + 1).to_string(), ..h.clone() }, b.clone()).is_err());
    for i in [0, b.data.len() / 2, b.data.len() - 5] {
        assert!(check(h.clone(), SealedBody { data: flip(&b.data, i), ..b.clone() }).is_err(), "data {i}");
    }
    for i in [0, 20] {
        assert!(check(h.clone(), SealedBody { nonce: flip(&b.nonce, i), ..b.clone() }).is_err(), "box nonce {i}");
    }
    for i in [0, 300, 680] {
        assert!(check(h.clone(), SealedBody { signature: flip(&b.signature, i), ..b.clone() }).is_err(), "rsa {i}");
    }
}

#[test]
fn a_payload_written_as_an_array_is_refused() {
    let (client, server) = (example_client(), example_server());
    let outgoing = example_request(&client, &server);
    let request = Request::parse(outgoing.headers.clone(), outgoing.body_json().as_bytes()).unwrap();
    let p = example_payload();
    let object = serde_json::to_value(&p).unwrap();
    // The fields in declaration order, as serde's derive would match an array.
    let as_array = serde_json::json!([p.gate, p.timestamp, p.nonce, p.client_version, p.ipv4, p.ipv6]);
    assert!(request.payload(object.to_string().as_bytes()).is_ok(), "the object is the payload");
    let e = request.payload(as_array.to_string().as_bytes()).unwrap_err();
    assert!(matches!(e, ProtocolError::Malformed("payload")), "{e:?}");
}

#[test]
fn malformed_bodies_are_refused_before_any_key_is_used() {
    let (client, server) = (example_client(), example_server());
    let outgoing = example_request(&client, &server);
    let json = outgoing.body_json();
    let parse = |body: &str| Request::parse(outgoing.headers.clone(), body.as_bytes()).map(|_| ());
    assert!(parse(&json).is_ok());
    for bad in [
        format!("{json} "),
        format!("x{json}"),
        json.replace("\"data\"", "\"dta\""),
        json.replacen('}', ",\"extra\":1}", 1),
        json.replace(&outgoing.body.nonce, "not base64!"),
        json.replace(&format!("\"{}\"", outgoing.body.nonce), "24"),
        json[..json.len() - 1].to_owned(),
        String::new(),
        "[]".to_owned(),
        // The same fields as an array, matched by position: "a JSON object" only.
        format!("[\"{}\",\"{}\",\"{}\"]", outgoing.body.data, outgoing.body.nonce, outgoing.body.signature),
        format!("{{\"data\":\"{}\",\"nonce\":\"\",\"signature\":\"\"}}", "A".repeat(9000)),
    ] {
        let trailing_ws_ok = bad == format!("{json} "); // JSON allows trailing whitespace
        assert_eq!(parse(&bad).is_ok(), trailing_ws_ok, "{}", &bad[..bad.len().min(80)]);
    }
}

#[test]
fn an_approval_is_refused_if_tampered_or_for_another_request() {
    let (client, server) = (example_client(), example_server());
    let body = approval::seal(
        &example_approval(),
        client.token,
        &client.secret,
        &server,
        &client.box_secret.public_key(),
        seq(0x98),
    )
    .unwrap();
    assert_eq!(
        approval::open(&body, &client, &server.public(), "ffffffffffffffffffffffffffffffff"),
        Err(ProtocolError::BadHmac)
    );
    let flipped = SealedBody { data: flip(&body.data, 10), ..body.clone() };
    assert_eq!(approval::open(&flipped, &client, &server.public(), NONCE), Err(ProtocolError::BadHmac));
    let impostor = ServerKeys { box_secret: box_secret(&seq::<32>(0x61)).unwrap() };
    let forged = approval::seal(
        &example_approval(),
        client.token,
        &client.secret,
        &impostor,
        &client.box_secret.public_key(),
        seq(0x98),
    )
    .unwrap();
    assert_eq!(
        approval::open(&forged, &client, &server.public(), NONCE),
        Err(ProtocolError::BadBox),
        "a forger with the secret but not the server's key"
    );
}

/// The worked example, exactly as docs/protocol.md shows it (between its markers).
fn worked_example() -> String {
    let (client, server) = (example_client(), example_server());
    let outgoing = example_request(&client, &server);
    let payload = serde_json::to_string(&example_payload()).unwrap();
    let spki = client.rsa.to_public_key().to_public_key_der().unwrap();
    let spki_sha512 = hex(&Sha512::digest(spki.as_bytes()));
    let h = &outgoing.headers;
    let b = &outgoing.body;
    let hmac_input = canonical::request_hmac_input(&h.token, &h.timestamp, &h.nonce, b);
    let approval_json = serde_json::to_string(&example_approval()).unwrap();
    let answer = approval::seal(
        &example_approval(),
        client.token,
        &client.secret,
        &server,
        &client.box_secret.public_key(),
        seq(0x98),
    )
    .unwrap();
    let approval_input = canonical::approval_hmac_input(&h.token, NONCE, &answer);
    format!(
        r#"### Inputs

```text
token                 {token}
HMAC secret (hex)     {secret}
client box secret     {cbs}
client box public     {cbp}
server box secret     {sbs}
server box public     {sbp}
timestamp             {ts}
nonce                 {nonce}
box nonce             {bn}
RSA key               gate-protocol/tests/vectors/client-rsa-4096.pem
RSA public key        SHA-512 of its SubjectPublicKeyInfo DER: {spki_sha512}
```

(Keys and nonces in hex.)

### 1. Payload (UTF-8 bytes)

```json
{payload}
```

### 2. Box: `data` and `nonce`

```text
{data}
{box_nonce}
```

### 3. RSA: the signed string, then `signature`

The PSS salt is random, so a compatible client makes a different, equally valid signature; this
one was made with the salt from a ChaCha20 generator seeded with 32 bytes of 0x07, and verifies
under the key above.

```text
{rsa_input}
{signature}
```

### 4. HMAC: the signed string, then `Gate-Signature`

```text
{hmac_input}
{hmac}
```

### The request

```http
POST /v1/approve HTTP/1.1
Content-Type: application/json
Gate-Token: {token}
Gate-Timestamp: {ts}
Gate-Nonce: {nonce}
Gate-Signature: {hmac}

{body}
```

### The approval

Its JSON, sealed with box nonce `{abn}` from the server's key to the client's:

```json
{approval_json}
```

The HMAC's signed string, then the approval's body:

```text
{approval_input}
```

```json
{answer_json}
```
"#,
        token = client.token,
        secret = hex(&client.secret.0),
        cbs = hex(&seq::<32>(0x40)),
        cbp = hex(client.box_secret.public_key().as_bytes()),
        sbs = hex(&seq::<32>(0x60)),
        sbp = hex(server.public().as_bytes()),
        ts = h.timestamp,
        nonce = h.nonce,
        bn = hex(&seq::<24>(0x80)),
        data = b.data,
        box_nonce = b.nonce,
        rsa_input = canonical::rsa_input(&b.data, &b.nonce),
        signature = b.signature,
        hmac = h.signature,
        body = outgoing.body_json(),
        abn = hex(&seq::<24>(0x98)),
        answer_json = serde_json::to_string(&answer).unwrap(),
    )
}

const BEGIN: &str = "<!-- worked example: generated by gate-protocol/tests/protocol.rs, begin -->\n";
const END: &str = "<!-- worked example: end -->";

#[test]
fn worked_example_matches_the_doc() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let expected = worked_example();
    let (Some(start), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("docs/protocol.md lacks the worked example markers; the section should be:\n{BEGIN}{expected}{END}");
    };
    let shown = &doc[start + BEGIN.len()..end];
    if shown != expected {
        if std::env::var_os("GATE_UPDATE_DOC").is_some() {
            std::fs::write(&path, format!("{}{BEGIN}{expected}{END}{}", &doc[..start], &doc[end + END.len()..]))
                .unwrap();
            return;
        }
        panic!(
            "docs/protocol.md's worked example differs from what the code computes (GATE_UPDATE_DOC=1 rewrites it):\n{expected}"
        );
    }
    // And the documented values verify on their own, as an independent client would check them.
    let (client, server) = (example_client(), example_server());
    let outgoing = example_request(&client, &server);
    assert_eq!(server_checks(&outgoing, &client.secret, &server, &client).unwrap(), example_payload());
    assert_eq!(b64(&[0]), "AA==");
}

#[test]
fn a_profile_lists_a_clusters_hosts_and_a_one_host_profile_stays_as_it_was() {
    use gate_protocol::profile::Profile;
    let profile = |fallback_servers: Vec<String>| Profile {
        name: "alice".into(),
        gate: "vpn".into(),
        server: "https://gate-1.example.net".into(),
        fallback_servers,
        server_box_public: example_server().public(),
        keys: example_client(),
        vpn: None,
    };
    let one_host = profile(vec![]).to_json().unwrap();
    assert!(!one_host.contains("fallback_servers"), "readable by clients from before clusters: {}", *one_host);
    let cluster = profile(vec!["https://gate-2.example.net".into(), "https://gate-3.example.net".into()]);
    let read = Profile::from_json(&cluster.to_json().unwrap()).unwrap();
    assert_eq!(read.server, "https://gate-1.example.net");
    assert_eq!(read.fallback_servers, ["https://gate-2.example.net", "https://gate-3.example.net"]);
    assert!(Profile::from_json(&one_host).unwrap().fallback_servers.is_empty());
}

#[test]
fn a_profile_update_applies_only_to_the_profile_it_was_signed_for() {
    use gate_protocol::{
        profile::{Profile, VpnProfile},
        profile_update::{self, UpdateBody, VpnTrust},
    };
    let profile = |keys: ClientKeys| Profile {
        name: "alice".into(),
        gate: "vpn".into(),
        server: "https://gate-1.example.net".into(),
        fallback_servers: vec![],
        server_box_public: example_server().public(),
        keys,
        vpn: Some(VpnProfile {
            ca_pem: "old CA".into(),
            cert_pem: "old cert".into(),
            protocol: "udp".into(),
            port: 1194,
        }),
    };
    let mut alice = profile(example_client());
    let new_server = ServerKeys { box_secret: box_secret(&seq::<32>(0x80)).unwrap() };
    let body = UpdateBody {
        name: "alice".into(),
        token: alice.keys.token.to_string(),
        issued_at: TIMESTAMP,
        server_box_public: b64(new_server.public().as_bytes()),
        vpn: Some(VpnTrust { ca_pem: "old CA\nnext CA".into(), cert_pem: "new cert".into() }),
    };
    let signed = profile_update::sign(&body, &alice.keys.secret).unwrap();

    // Another client's profile (its own token and secret), and the same one under another name.
    let mut other_keys = example_client();
    other_keys.token = Token::parse("ffeeddccbbaa99887766554433221100").unwrap();
    other_keys.secret = HmacSecret(seq(0x01));
    assert!(matches!(profile_update::verify(&signed, &profile(other_keys)), Err(ProtocolError::BadHmac)));
    let mut renamed = profile(example_client());
    renamed.name = "mallory".into();
    assert!(matches!(profile_update::verify(&signed, &renamed), Err(ProtocolError::PayloadMismatch)));
    // Its body changed after signing; another version; a body too large to read.
    let mut file: serde_json::Value = serde_json::from_str(&signed).unwrap();
    let mut changed = body.clone();
    changed.vpn = Some(VpnTrust { ca_pem: "mallory's CA".into(), cert_pem: "new cert".into() });
    file["body"] = serde_json::json!(b64(&serde_json::to_vec(&changed).unwrap()));
    assert!(matches!(profile_update::verify(&file.to_string(), &alice), Err(ProtocolError::BadHmac)));
    let mut versioned: serde_json::Value = serde_json::from_str(&signed).unwrap();
    versioned["version"] = serde_json::json!(2);
    assert!(profile_update::verify(&versioned.to_string(), &alice).is_err());
    let mut huge: serde_json::Value = serde_json::from_str(&signed).unwrap();
    huge["body"] = serde_json::json!("A".repeat(100_000));
    assert!(matches!(profile_update::verify(&huge.to_string(), &alice), Err(ProtocolError::TooLarge(_))));

    let verified = profile_update::verify(&signed, &alice).unwrap();
    assert_eq!(verified, body);
    let changed = profile_update::apply(&verified, &mut alice).unwrap();
    assert_eq!(changed, ["the server's box key", "the VPN's CAs", "the VPN certificate"]);
    assert_eq!(alice.server_box_public, new_server.public());
    let vpn = alice.vpn.as_ref().unwrap();
    assert_eq!((vpn.ca_pem.as_str(), vpn.cert_pem.as_str(), vpn.port), ("old CA\nnext CA", "new cert", 1194));
    assert!(profile_update::apply(&verified, &mut alice).unwrap().is_empty(), "applied twice: nothing changes");
    // A profile without a VPN takes the box key and nothing else.
    let mut no_vpn = profile(example_client());
    no_vpn.vpn = None;
    assert_eq!(profile_update::apply(&verified, &mut no_vpn).unwrap(), ["the server's box key"]);
    assert!(no_vpn.vpn.is_none());
}
