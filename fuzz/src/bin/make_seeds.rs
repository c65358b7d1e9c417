//! Writes the seed corpus of each target into `fuzz/corpus/<target>/`: the valid input of each
//! kind made with the targets' own keys (`gate_fuzz`), and the example configs. Run again when
//! the protocol or the fixtures change: `cargo run --manifest-path fuzz/Cargo.toml --bin make-seeds`.
use std::{fs, path::Path};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    fs::create_dir_all(&dir).expect("make the corpus directory");
    fs::write(dir.join(name), bytes).expect("write a seed");
}

/// Each seed must take its target's accepting path, or the fuzzer starts from nothing.
fn check_seeds() {
    use gate_fuzz::{REQUEST_NONCE, VERSION, fixture, split_request};
    let fixture = fixture();
    let (headers, body, _) = gate_fuzz::valid_request();
    let input = gate_fuzz::request_input(&headers, &body);
    let (headers, body) = split_request(&input);
    let request = gate_protocol::request::Request::parse(headers, body).expect("the request seed parses");
    request.verify_hmac(&fixture.client.secret).expect("the request seed passes the HMAC");
    let approval = gate_fuzz::valid_approval();
    gate_protocol::approval::open(&approval, &fixture.client, &fixture.server.public(), REQUEST_NONCE)
        .expect("the approval seed opens");
    gate_protocol::profile::Profile::from_json(&gate_fuzz::valid_profile()).expect("the profile seed reads");
    gate_notify::verify(&gate_fuzz::valid_notification(), &fixture.notify_key.verifying_key(), VERSION, 3)
        .expect("the notification seed is accepted");
}

fn main() {
    check_seeds();
    let (headers, body, _) = gate_fuzz::valid_request();
    write("request", "valid", &gate_fuzz::request_input(&headers, &body));
    write("approval", "valid", serde_json::to_string(&gate_fuzz::valid_approval()).expect("JSON").as_bytes());
    write("notification", "valid", &gate_fuzz::valid_notification());
    write("profile", "valid", gate_fuzz::valid_profile().as_bytes());
    // Configs with every section an operator writes (no example files are installed yet).
    let daemon = "pin_dir = \"/sys/fs/bpf/gate\"\n[[interface]]\nname = \"eth0\"\n\
        [[gate]]\nname = \"vpn\"\nprotocol = \"udp\"\nport = 1194\ntransit = false\n\
        [[gate]]\nname = \"vpn\"\nprotocol = \"tcp\"\nport = 443\n\
        [leases]\nidle_timeout = \"2m\"\n[xdp]\nunparseable = \"drop\"\n";
    write("config", "daemon", &[b"\x00", daemon.as_bytes()].concat());
    let front = "listen = [\"[::]:443\"]\ntls_cert = \"/etc/gate/cert.pem\"\ntls_key = \"/etc/gate/key.pem\"\n\
        [limits]\nmax_connections = 1024\nconnections_per_source = 32\nhandshakes_per_minute = 120\n\
        body_timeout = \"10s\"\n";
    write("config", "front", &[b"\x01", front.as_bytes()].concat());
    let file = Path::new("/etc/gate/gate.toml");
    gate_daemon::config::Config::parse(file, daemon).expect("the daemon's config seed is valid");
    gate_web::config::Config::parse(file, front).expect("the front's config seed is valid");
}
