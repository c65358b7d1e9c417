//! Approval requests as a client (or an attacker) sends them: enrolled profiles from the real
//! `gatectl client add`, requests built with `gate-protocol` and bent as a test needs, sent as raw
//! HTTP/1.1 to the daemon's socket, and the daemon's counters.
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use gate_client::transport::{Response, Server};
use gate_daemon::approval::{http::COUNTERS_PATH, reasons::CountersSnapshot};
use gate_protocol::{
    crypto_box::SecretKey,
    keys::{ClientKeys, rsa_private_from_pem},
    profile::Profile,
    rand::{RngCore, rngs::OsRng},
    request::{self, Outgoing},
    wire::{
        APPROVE_PATH, BOX_NONCE_BYTES, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, HEADER_TOKEN,
        INTERNAL_HEADER_OBSERVED_SOURCE, INTERNAL_HEADER_VALIDATED, Payload,
    },
};

use crate::{bed::TestBed, daemon::gatectl};

/// Test-only RSA-4096 keys (gate-protocol/tests/vectors): making one takes seconds.
pub fn vector_key(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gate-protocol/tests/vectors").join(format!("{name}-rsa-4096.pem"))
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// Sleeps until just after the next second starts, so a request built now is checked within the
/// same second (for tests at the exact edge of the window).
pub fn align_to_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970");
    std::thread::sleep(Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()) + 5_000_000));
}

/// Runs `gatectl --store <bed's store> args...`, panicking with stderr unless it succeeds.
pub fn gatectl_store(bed: &TestBed, args: &[&str]) -> String {
    let out = gatectl_store_output(bed, args);
    assert!(out.status.success(), "gatectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// As [`gatectl_store`], whatever the outcome (for what it refuses).
pub fn gatectl_store_output(bed: &TestBed, args: &[&str]) -> std::process::Output {
    let flags = bed.store_flags();
    let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    gatectl(&bed.pin_dir.0, &all)
}

/// A client enrolled through the real `gatectl client add`, with its profile read back.
pub struct Enrolled {
    pub path: PathBuf,
    pub profile: Profile,
}

impl Enrolled {
    /// Enrolls `name` for `gates` with the test key `key` ("client" or "foreign").
    pub fn new(bed: &TestBed, name: &str, gates: &[&str], key: &str) -> Self {
        let path = bed.state_dir.join(format!("{name}.profile"));
        let server = format!("unix:{}", bed.socket().display());
        let key_path = vector_key(key);
        let mut args = vec!["client", "add", name, "--out", path.to_str().unwrap(), "--server", &server, "--rsa-key"];
        args.push(key_path.to_str().unwrap());
        for gate in gates {
            args.extend(["--gate", gate]);
        }
        gatectl_store(bed, &args);
        Self::read(path)
    }

    /// The profile at `path`, as a client holds it.
    pub fn read(path: PathBuf) -> Self {
        let profile = Profile::from_json(&fs::read_to_string(&path).expect("read profile")).expect("profile parses");
        Self { path, profile }
    }

    /// This client's profile as it is on disk now (after an update, say).
    #[must_use]
    pub fn reread(&self) -> Self {
        Self::read(self.path.clone())
    }

    /// `gate-client update --profile <this profile> UPDATE` in the client's namespace, whatever
    /// the outcome.
    pub fn apply_update(&self, bed: &TestBed, update: &Path) -> std::process::Output {
        bed.client
            .command(crate::daemon::bin("gate-client"))
            .args(["update", "--profile", self.path.to_str().unwrap(), update.to_str().unwrap()])
            .output()
            .expect("run gate-client update")
    }

    /// A copy of the keys, optionally with another box key or RSA key (a layer's key wrong).
    pub fn keys(&self, foreign_box: bool, foreign_rsa: bool) -> ClientKeys {
        let own = &self.profile.keys;
        ClientKeys {
            token: own.token,
            secret: own.secret.clone(),
            box_secret: if foreign_box { SecretKey::generate(&mut OsRng) } else { own.box_secret.clone() },
            rsa: if foreign_rsa {
                rsa_private_from_pem(&fs::read_to_string(vector_key("foreign")).unwrap()).unwrap()
            } else {
                own.rsa.clone()
            },
        }
    }

    /// A payload for this client's gate at `now + skew` seconds.
    pub fn payload(&self, skew: i64, ipv4: Option<Ipv4Addr>, ipv6: Option<Ipv6Addr>) -> Payload {
        Payload {
            gate: self.profile.gate.clone(),
            timestamp: unix_now().checked_add_signed(skew).expect("sane time"),
            nonce: request::random_nonce(&mut OsRng),
            client_version: "gate-tests".into(),
            ipv4,
            ipv6,
        }
    }

    /// A valid request for `payload`, signed with `keys`.
    pub fn build(&self, keys: &ClientKeys, payload: &Payload) -> Outgoing {
        let mut box_nonce = [0; BOX_NONCE_BYTES];
        OsRng.fill_bytes(&mut box_nonce);
        request::build(keys, &self.profile.server_box_public, payload, box_nonce, &mut OsRng).expect("build request")
    }

    /// A valid request from this client's own keys.
    pub fn request(&self, ipv4: Option<Ipv4Addr>, ipv6: Option<Ipv6Addr>) -> Outgoing {
        self.build(&self.keys(false, false), &self.payload(0, ipv4, ipv6))
    }
}

/// The request as bytes on the wire: header lines (name, value) in order, then the body.
pub fn raw(headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut text = format!("POST {APPROVE_PATH} HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()));
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The four protocol headers of `outgoing`, then the front's marker and the observed source, as
/// the front adds them (these tests stand where the front stands).
pub fn headers(outgoing: &Outgoing, observed: Option<IpAddr>) -> Vec<(String, String)> {
    let h = &outgoing.headers;
    let mut list = vec![
        (HEADER_TOKEN.to_owned(), h.token.clone()),
        (HEADER_TIMESTAMP.to_owned(), h.timestamp.clone()),
        (HEADER_NONCE.to_owned(), h.nonce.clone()),
        (HEADER_SIGNATURE.to_owned(), h.signature.clone()),
        (INTERNAL_HEADER_VALIDATED.to_owned(), "1".to_owned()),
    ];
    if let Some(observed) = observed {
        list.push((INTERNAL_HEADER_OBSERVED_SOURCE.to_owned(), observed.to_string()));
    }
    list
}

/// The daemon's socket as a server.
pub fn server(bed: &TestBed) -> Server {
    Server::Unix(bed.socket())
}

/// Sends `outgoing` as the front would (with an observed source, if any).
pub fn send(bed: &TestBed, outgoing: &Outgoing, observed: Option<IpAddr>) -> Response {
    send_raw(bed, &raw(&headers(outgoing, observed), outgoing.body_json().as_bytes()))
}

pub fn send_raw(bed: &TestBed, bytes: &[u8]) -> Response {
    server(bed).exchange(bytes).expect("the daemon answers")
}

/// The daemon's approval counters.
pub fn counters(bed: &TestBed) -> CountersSnapshot {
    let response = server(bed).request("GET", COUNTERS_PATH, &[], b"").expect("counters");
    assert_eq!(response.status, 200, "counters: {response:?}");
    serde_json::from_slice(&response.body).expect("counters JSON")
}

/// Total refusals in a snapshot.
pub fn rejected_total(c: &CountersSnapshot) -> u64 {
    c.rejected.values().sum()
}

/// The addresses with a lease on any gate, from `gatectl leases --json`.
pub fn leased(bed: &TestBed) -> Vec<IpAddr> {
    let out = gatectl(&bed.pin_dir.0, &["leases", "--json"]);
    assert!(out.status.success(), "gatectl leases: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("leases JSON");
    let mut addrs: Vec<IpAddr> = json
        .as_array()
        .expect("a list")
        .iter()
        .map(|l| l["address"].as_str().expect("address").parse().expect("an address"))
        .collect();
    addrs.sort();
    addrs
}

/// A kept-alive connection to the daemon's socket: requests in turn, each answer read whole (by
/// its Content-Length) before the next is sent, as the front's pooled connections do.
pub struct KeptAlive {
    writer: std::os::unix::net::UnixStream,
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
}

impl KeptAlive {
    pub fn connect(socket: &std::path::Path) -> Self {
        let stream = std::os::unix::net::UnixStream::connect(socket).expect("connect to the daemon");
        let writer = stream.try_clone().expect("a second handle");
        Self { writer, reader: std::io::BufReader::new(stream) }
    }

    /// Sends `request` (made with [`keep_alive`]); the answer's status.
    pub fn send(&mut self, request: &[u8]) -> u16 {
        use std::io::{BufRead as _, Read as _, Write as _};
        self.writer.write_all(request).expect("send");
        let (mut status, mut length, mut line) = (0, 0, String::new());
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("read the answer's head");
            let lower = line.to_ascii_lowercase();
            if let Some(code) = lower.strip_prefix("http/1.1 ") {
                status = code.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            } else if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            } else if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("read the answer's body");
        status
    }
}

/// `raw` (from [`raw`]) asking to keep the connection open.
#[must_use]
pub fn keep_alive(raw: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(raw).replacen("Connection: close", "Connection: keep-alive", 1).into_bytes()
}
