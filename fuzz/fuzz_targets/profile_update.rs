//! A profile update as `gate-client update` reads it, for the fixture's profile: a file that may
//! have come over any channel (it holds no secret), changed on the way.
//!
//! Properties: no panic; an update verifies only if it names the profile's token and name (its
//! signature is the profile's secret's); one that verifies applies, and the profile it makes is
//! written and read back the same.
#![no_main]
use std::sync::OnceLock;

use gate_protocol::{profile::Profile, profile_update};
use libfuzzer_sys::fuzz_target;

fn profile() -> &'static Profile {
    static PROFILE: OnceLock<Profile> = OnceLock::new();
    PROFILE.get_or_init(gate_fuzz::fixture_profile)
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let Ok(body) = profile_update::verify(text, profile()) else { return };
    assert_eq!(body.token, profile().keys.token.to_string());
    assert_eq!(body.name, profile().name);
    let mut updated = gate_fuzz::fixture_profile();
    if profile_update::apply(&body, &mut updated).is_ok() {
        let again = Profile::from_json(&updated.to_json().expect("an updated profile is written"))
            .expect("an updated profile reads");
        assert_eq!((again.server_box_public, &again.vpn), (updated.server_box_public, &updated.vpn));
    }
});
