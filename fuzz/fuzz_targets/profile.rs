//! A client profile file, as `gate-client` reads it.
//!
//! Properties: no panic; a profile that reads writes back to a file that reads as the same
//! profile (names, servers, VPN part, token, server key).
#![no_main]
use gate_protocol::profile::Profile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let Ok(profile) = Profile::from_json(text) else { return };
    let written = profile.to_json().expect("a profile that was read is written");
    let again = Profile::from_json(&written).expect("a written profile reads");
    assert_eq!((&again.name, &again.gate, &again.server), (&profile.name, &profile.gate, &profile.server));
    assert_eq!((&again.fallback_servers, &again.vpn), (&profile.fallback_servers, &profile.vpn));
    assert_eq!(again.keys.token, profile.keys.token);
    assert_eq!(again.server_box_public, profile.server_box_public);
});
