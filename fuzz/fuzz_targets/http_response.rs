//! The answer `gate-client` reads from a server it has not authenticated yet (its HTTP/1.1
//! response parser, hand-written: `gate_client::transport`).
//!
//! Properties: no panic; a parsed status is three digits; a body framed by `Content-Length` is
//! exactly that long; an answer complete by its `Content-Length` parses to that body.
#![no_main]
use gate_client::transport::{is_complete, parse_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|answer: &[u8]| {
    let complete = is_complete(answer);
    let Some(response) = parse_response(answer) else { return };
    assert!((100..=999).contains(&response.status), "status {}", response.status);
    let length = response.headers.iter().find(|(name, _)| name == "content-length").map(|(_, v)| v);
    if let Some(length) = length {
        assert_eq!(Some(response.body.len()), length.parse().ok());
    }
    if complete && length.is_some() {
        let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete answer has a head");
        assert!(answer[head_end + 4..].starts_with(&response.body));
    }
});
