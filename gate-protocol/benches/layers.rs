//! Each layer's cost alone (`cargo xtask bench layers`): what the server pays per request for
//! the HMAC, the box and the RSA signature, and for sealing its answer; and what the client pays
//! to build a request. Keys are the test vectors; nothing touches the network or disk.
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use gate_protocol::{
    approval::{self, Approval, Host, Opened},
    crypto_box::{SalsaBox, SecretKey},
    keys::{ClientKeys, HmacSecret, RsaVerifyingKey, ServerKeys, Token, rsa_private_from_pem},
    request::{self, Request},
    shared_box::{BoxSecret, SharedBox},
    wire::Payload,
};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

const PEM: &str = include_str!("../tests/vectors/client-rsa-4096.pem");

fn layers(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let keys = ClientKeys {
        token: Token::random(&mut rng),
        secret: HmacSecret::random(&mut rng),
        box_secret: SecretKey::generate(&mut rng),
        rsa: rsa_private_from_pem(PEM).expect("vector key"),
    };
    let server = ServerKeys::generate(&mut rng);
    let public = keys.public();
    let payload = Payload {
        gate: "vpn".into(),
        timestamp: 1_764_000_000,
        nonce: request::random_nonce(&mut rng),
        client_version: "bench".into(),
        ipv4: Some("198.51.100.7".parse().unwrap()),
        ipv6: Some("2001:db8::7".parse().unwrap()),
    };
    let outgoing = request::build(&keys, &server.public(), &payload, [9; 24], &mut rng).expect("build");
    let body = outgoing.body_json();
    let parsed = Request::parse(outgoing.headers.clone(), body.as_bytes()).expect("parse");
    let shared = SharedBox::new(&public.box_public, &server.box_secret).unwrap();

    let mut server_side = c.benchmark_group("server");
    server_side.bench_function("parse", |b| {
        b.iter(|| Request::parse(black_box(outgoing.headers.clone()), black_box(body.as_bytes())).unwrap());
    });
    server_side.bench_function("hmac_check", |b| b.iter(|| parsed.verify_hmac(black_box(&keys.secret)).unwrap()));
    server_side.bench_function("x25519_agreement_once_per_client", |b| {
        let ours = BoxSecret::new(&server.box_secret).unwrap();
        b.iter(|| SharedBox::agreed(black_box(&public.box_public), &ours).unwrap());
    });
    // The reference it replaced: crypto_box's own agreement (curve25519-dalek).
    server_side.bench_function("x25519_agreement_crypto_box_reference", |b| {
        b.iter(|| SalsaBox::new(black_box(&public.box_public), &server.box_secret));
    });
    server_side.bench_function("box_open", |b| b.iter(|| parsed.open_with(black_box(&shared)).unwrap()));
    // The key is parsed once per client and kept, as the daemon does.
    let verifying = RsaVerifyingKey::new(&public.rsa_public).expect("a verifying key");
    server_side.bench_function("rsa_pss_verify", |b| b.iter(|| parsed.verify_rsa(black_box(&verifying)).unwrap()));
    // A client's first approval (every client in a reconnect storm): its key made ready for
    // OpenSSL, then the verification that also sets up the key's Montgomery form.
    server_side.bench_function("rsa_pss_verify_first_use_of_a_key", |b| {
        b.iter(|| parsed.verify_rsa(&RsaVerifyingKey::new(black_box(&public.rsa_public)).unwrap()).unwrap());
    });
    // The reference it replaced: the `rsa` crate's verifier, same key, same signature.
    let rsa_crate = rsa::pss::VerifyingKey::<sha2::Sha512>::new(public.rsa_public.clone());
    let message = gate_protocol::canonical::rsa_input(&outgoing.body.data, &outgoing.body.nonce);
    let signature = rsa::pss::Signature::try_from(
        gate_protocol::encoding::unb64(&outgoing.body.signature, "signature").expect("b64").as_slice(),
    )
    .expect("a signature");
    server_side.bench_function("rsa_pss_verify_rsa_crate_reference", |b| {
        b.iter(|| rsa::signature::Verifier::verify(&rsa_crate, black_box(message.as_bytes()), &signature).unwrap());
    });
    let answer = Approval {
        approved: true,
        request_nonce: payload.nonce.clone(),
        gate: "vpn".into(),
        opened: vec![Opened { address: "198.51.100.7".parse().unwrap(), expires_at: 1_764_086_400 }],
        connect_by: 1_764_000_060,
        idle_timeout_secs: 180,
        host: Host::default(),
        session_token: "0".repeat(32),
        session_token_expires_at: 1_764_000_060,
    };
    server_side.bench_function("approval_seal", |b| {
        b.iter(|| approval::seal_with(black_box(&answer), keys.token, &keys.secret, &shared, [3; 24]).unwrap());
    });
    server_side.finish();

    let mut client_side = c.benchmark_group("client");
    client_side.sample_size(10);
    client_side.bench_function("build_request_rsa_sign", |b| {
        b.iter(|| request::build(&keys, &server.public(), black_box(&payload), [9; 24], &mut rng).unwrap());
    });
    client_side.finish();
}

criterion_group!(benches, layers);
criterion_main!(benches);
