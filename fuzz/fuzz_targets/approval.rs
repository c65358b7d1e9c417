//! The sealed approval as the client opens it (the body of the daemon's answer, JSON).
//!
//! Properties: no panic; only the approval the server sealed opens (the HMAC covers every field
//! the client reads), and it names the request it answers.
#![no_main]
use gate_fuzz::{REQUEST_NONCE, fixture, valid_approval};
use gate_protocol::{approval, wire::SealedBody};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(body) = serde_json::from_slice::<SealedBody>(input) else { return };
    let fixture = fixture();
    if let Ok(opened) = approval::open(&body, &fixture.client, &fixture.server_public, REQUEST_NONCE) {
        assert_eq!(body, valid_approval(), "an approval the server did not seal opened");
        assert_eq!(opened.request_nonce, REQUEST_NONCE);
    }
});
