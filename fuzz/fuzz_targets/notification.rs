//! A signed self-shutdown notification, as the daemon checks what it fetched.
//!
//! Properties: no panic; only the document the key signed is accepted, and only with a serial
//! above the last one seen.
#![no_main]
use gate_fuzz::{VERSION, fixture, valid_notification};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let key = fixture().notify_key.verifying_key();
    if let Ok(notification) = gate_notify::verify(input, &key, VERSION, 3) {
        let seed: gate_notify::Signed = serde_json::from_slice(&valid_notification()).expect("the seed");
        let got: gate_notify::Signed = serde_json::from_slice(input).expect("what was accepted");
        assert_eq!(got.payload, seed.payload, "a payload the key did not sign was accepted");
        assert!(notification.serial > 3);
    }
});
