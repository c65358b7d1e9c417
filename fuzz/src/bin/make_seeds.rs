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
    let (headers, body) = gate_fuzz::valid_request();
    let input = gate_fuzz::request_input(&headers, &body);
    let (headers, body) = split_request(&input);
    let request = gate_protocol::request::Request::parse(headers, body).expect("the request seed parses");
    request.verify_hmac(&fixture.client.secret).expect("the request seed passes the HMAC");
    let approval = gate_fuzz::valid_approval();
    gate_protocol::approval::open(&approval, &fixture.client, &fixture.server_public, REQUEST_NONCE)
        .expect("the approval seed opens");
    let profile =
        gate_protocol::profile::Profile::from_json(&gate_fuzz::valid_profile()).expect("the profile seed reads");
    gate_protocol::profile_update::verify(&gate_fuzz::valid_profile_update(), &profile)
        .expect("the profile update seed verifies for the profile");
    gate_notify::verify(&gate_fuzz::valid_notification(), &fixture.notify_key.verifying_key(), VERSION, 3)
        .expect("the notification seed is accepted");
}

fn main() {
    check_seeds();
    let (headers, body) = gate_fuzz::valid_request();
    write("request", "valid", &gate_fuzz::request_input(&headers, &body));
    // The front's input: the peer's pick (0: a stranger, 1: a trusted proxy), then what it sends.
    let approve = gate_fuzz::http_request(&headers, &body, "");
    write("front", "approve", &[b"\x00", &approve[..]].concat());
    let proxied = gate_fuzz::http_request(&headers, &body, "x-forwarded-for: 203.0.113.9, 192.0.2.7\r\n");
    write("front", "approve-proxied", &[b"\x01", &proxied[..]].concat());
    write("front", "source", b"\x00GET /v1/source HTTP/1.1\r\nhost: gate.example.net\r\n\r\n");
    write("front", "source-bare-lf", b"\x01GET /v1/source HTTP/1.1\nhost: a\nx-forwarded-for: 192.0.2.7\n\n");
    let twice = gate_fuzz::http_request(&headers, &body, &format!("content-length: {}\r\n", body.len()));
    write("front", "length-twice", &[b"\x00", &twice[..]].concat());
    let chunked = String::from_utf8(approve.clone()).expect("text").replacen(
        "content-length",
        "transfer-encoding: chunked\r\nx-length",
        1,
    );
    write("front", "chunked", &[b"\x00", chunked.as_bytes()].concat());
    write("approval", "valid", serde_json::to_string(&gate_fuzz::valid_approval()).expect("JSON").as_bytes());
    write("notification", "valid", &gate_fuzz::valid_notification());
    write("profile", "valid", gate_fuzz::valid_profile().as_bytes());
    write("profile_update", "valid", gate_fuzz::valid_profile_update().as_bytes());
    // What OpenVPN 2.6 writes: a connection's events, and a `status 3` answer.
    let management = ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\n\
        >CLIENT:CONNECT,7,1\n>CLIENT:ENV,untrusted_ip=192.0.2.2\n>CLIENT:ENV,common_name=alice\n\
        >CLIENT:ENV,username=alice\n>CLIENT:ENV,password=0123456789abcdef0123456789abcdef\n\
        >CLIENT:ENV,IV_VER=2.6.3\n>CLIENT:ENV,END\n>CLIENT:ESTABLISHED,7\n>CLIENT:ENV,common_name=alice\n\
        >CLIENT:ENV,END\n>CLIENT:REAUTH,7,2\n>CLIENT:ENV,common_name=alice\n>CLIENT:ENV,END\n\
        TITLE\tOpenVPN 2.6.3\nHEADER\tCLIENT_LIST\tCommon Name\tReal Address\tVirtual Address\t\
        Virtual IPv6 Address\tBytes Received\tBytes Sent\tConnected Since\tConnected Since (time_t)\t\
        Username\tClient ID\tPeer ID\tData Channel Cipher\n\
        CLIENT_LIST\talice\t192.0.2.2:50000\t10.8.0.2\t\t100\t200\t2026-11-30 21:00:00\t1796072400\t\
        alice\t7\t0\tAES-256-GCM\nEND\n>CLIENT:DISCONNECT,7\n>CLIENT:ENV,common_name=alice\n>CLIENT:ENV,END\n";
    write("management", "openvpn-2.6", management.as_bytes());
    // Answers as the front and the daemon send them, framed both ways.
    let approval = serde_json::to_string(&gate_fuzz::valid_approval()).expect("JSON");
    let framed = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{approval}",
        approval.len()
    );
    write("http_response", "approval", framed.as_bytes());
    let chunked = "HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n9\r\n{\"error\":\r\n\
        c\r\n\"forbidden\"}\r\n0\r\n\r\n";
    write("http_response", "chunked", chunked.as_bytes());
    let read = |answer: &str| gate_client::transport::parse_response(answer.as_bytes()).expect("an answer seed parses");
    assert_eq!(read(&framed).body, approval.as_bytes());
    assert_eq!(read(chunked).body, br#"{"error":"forbidden"}"#);
    let mut reader = gate_daemon::openvpn::management::Reader::default();
    let events = management.lines().filter_map(|line| reader.read(line)).count();
    assert_eq!(events, 5, "the management seed's four client events and one listed session");
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
