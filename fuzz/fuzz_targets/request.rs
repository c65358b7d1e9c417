//! The approval request as the daemon receives it (four headers, one a line, then the body),
//! through every check up to the crypto: sizes, shapes, encodings, then the HMAC.
//!
//! Properties: no panic; a parsed request respects the size limits; and whatever passes the HMAC
//! of the client's secret also opens, verifies and carries the seed's payload: every byte the
//! daemon acts on is covered by the HMAC, so no change to a valid request survives it.
#![no_main]
use gate_fuzz::{fixture, seed_payload, split_request};
use gate_protocol::{
    ProtocolError,
    request::Request,
    wire::{MAX_BODY_BYTES, MAX_SEALED_BYTES},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let (headers, body) = split_request(input);
    let Ok(request) = Request::parse(headers, body) else { return };
    assert!(body.len() <= MAX_BODY_BYTES);
    assert!(request.body.data.len() <= MAX_SEALED_BYTES.div_ceil(3) * 4);
    let fixture = fixture();
    match request.verify_hmac(&fixture.client.secret) {
        // One refusal for every way the tag is wrong.
        Err(refused) => assert!(matches!(refused, ProtocolError::BadHmac), "{refused:?}"),
        Ok(()) => {
            let plaintext = request.open_with(&fixture.shared).expect("an HMAC-valid request opens");
            request.verify_rsa(&fixture.verifying).expect("an HMAC-valid request is signed");
            assert_eq!(request.payload(&plaintext).expect("its payload"), seed_payload());
        }
    }
});
