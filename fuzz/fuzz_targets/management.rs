//! OpenVPN's management interface, as the daemon reads it (lines of text; OpenVPN relays what
//! clients send in their environment: names, passwords, peer info).
//!
//! Properties: no panic; an event is kept to at most `MAX_ENV_LINES` entries; a client event
//! completes only at `>CLIENT:ENV,END`, and a listed session only from a `CLIENT_LIST` row that
//! carries its name; byte counts only from a `load-stats` answer.
#![no_main]
use gate_daemon::openvpn::management::{Event, MAX_ENV_LINES, Reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let mut reader = Reader::default();
    for line in text.split('\n') {
        match reader.read(line) {
            None => {}
            Some(Event::Client(event)) => {
                assert_eq!(line, ">CLIENT:ENV,END");
                assert!(event.env.len() <= MAX_ENV_LINES);
            }
            Some(Event::Traffic { .. }) => assert!(line.starts_with("SUCCESS: nclients=")),
            Some(Event::Listed(_, name)) => {
                assert!(line.starts_with("CLIENT_LIST\t"));
                assert!(line.split('\t').any(|field| field == name));
            }
        }
    }
});
