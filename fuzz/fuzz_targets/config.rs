//! The daemon's and the front's TOML configs (the first input byte picks which).
//!
//! Properties: no panic; every refusal names the file, so an operator knows where to look.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&which, rest)) = input.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let refusal = if which % 2 == 0 {
        let file = Path::new("/etc/gate/gate.toml");
        gate_daemon::config::Config::parse(file, text).err().map(|e| e.to_string())
    } else {
        let file = Path::new("/etc/gate/gate-web.toml");
        gate_web::config::Config::parse(file, text).err().map(|e| e.to_string())
    };
    if let Some(refusal) = refusal {
        assert!(refusal.contains("/etc/gate/gate"), "a refusal that does not name the file: {refusal}");
    }
});
