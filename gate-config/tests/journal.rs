//! The service logger under systemd: with stderr being the journal's stream (`$JOURNAL_STREAM`
//! names its device and inode), records go to journald's native socket, each field its own
//! journal field. journald itself does not run here (PID 1 is not systemd): a datagram socket of
//! the test's own at journald's path stands in for it, and reads what the logger sends. Skipped
//! (said so) where a real journald listens there.
use std::{
    os::unix::{fs::MetadataExt as _, net::UnixDatagram},
    path::Path,
    time::Duration,
};

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Removes the stand-in socket, and the directories the test made for it, also when the test
/// fails.
struct StandIn {
    made: Vec<&'static str>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(JOURNAL_SOCKET);
        for dir in self.made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn under_systemd_each_log_field_is_a_journal_field() {
    if Path::new(JOURNAL_SOCKET).exists() {
        eprintln!("skipped: a journald listens at {JOURNAL_SOCKET} (this test stands in for one where none runs)");
        return;
    }
    let made: Vec<&'static str> =
        ["/run/systemd", "/run/systemd/journal"].into_iter().filter(|dir| !Path::new(dir).exists()).collect();
    std::fs::create_dir_all("/run/systemd/journal").expect("make journald's directory (root)");
    let _stand_in = StandIn { made };
    let journald = UnixDatagram::bind(JOURNAL_SOCKET).expect("bind the stand-in");
    journald.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // stderr as the journal's stream, as systemd sets it for a service.
    let stderr = std::fs::metadata("/proc/self/fd/2").expect("stderr");
    set_var("JOURNAL_STREAM", &format!("{}:{}", stderr.dev(), stderr.ino()));
    gate_config::logging::init("info");
    gate_config::logging::with_fields(
        log::Level::Warn,
        "gate_daemon::approval::service",
        &[("reason", "bad_hmac"), ("client", "alice"), ("address", "198.51.100.7")],
        format_args!("approval refused: bad_hmac (client \"alice\")"),
    );
    let mut buffer = vec![0; 64 * 1024];
    // The logger's first datagram is empty: its check that journald listens.
    let read = loop {
        match journald.recv(&mut buffer).expect("a datagram from the logger") {
            0 => {}
            read => break read,
        }
    };
    let entry = native_fields(&buffer[..read]);
    for (key, value) in [
        ("MESSAGE", "approval refused: bad_hmac (client \"alice\")"),
        ("PRIORITY", "4"),
        ("REASON", "bad_hmac"),
        ("CLIENT", "alice"),
        ("ADDRESS", "198.51.100.7"),
    ] {
        assert_eq!(entry.get(key).map(String::as_str), Some(value), "{key} in the journal entry {entry:?}");
    }
}

/// The fields of one datagram of journald's native protocol: `KEY=value\n`, or `KEY\n`, the
/// value's length (little-endian u64), the value and `\n`.
fn native_fields(mut bytes: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut fields = std::collections::BTreeMap::new();
    while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&bytes[..end]).into_owned();
        bytes = &bytes[end + 1..];
        if let Some((key, value)) = line.split_once('=') {
            fields.insert(key.to_owned(), value.to_owned());
        } else {
            let (length, rest) = bytes.split_at(8);
            let length = usize::try_from(u64::from_le_bytes(length.try_into().unwrap())).unwrap();
            fields.insert(line, String::from_utf8_lossy(&rest[..length]).into_owned());
            bytes = &rest[length + 1..];
        }
    }
    fields
}

/// Sets an environment variable in this test binary's only test.
fn set_var(key: &str, value: &str) {
    // The test harness runs this file's one test on a thread of its own; nothing else reads the
    // environment meanwhile.
    #[expect(unsafe_code, reason = "set_var is unsafe since edition 2024; no other thread reads it here")]
    // SAFETY: as above.
    unsafe {
        std::env::set_var(key, value);
    }
}
