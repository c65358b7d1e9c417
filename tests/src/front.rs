//! The front (`gate-web`) in the gateway namespace, and ways to talk to it from the client's:
//! curl as an operator would, and raw bytes over real TLS for shapes curl will not send.
use std::{net::IpAddr, path::PathBuf, process::Command};

use gate_client::transport::{Response, Server, TransportError};

use crate::{
    bed::{GATEWAY_V4, GATEWAY_V6, TestBed},
    daemon::Daemon,
};

pub const FRONT_PORT: u16 = 8443;

/// The daemon's `[approval]` addition that admits the front.
pub const ADMIT_FRONT: &str = "[approval]\nfront_user = \"gate-web\"\n";

/// The front's URL over IPv4 and over IPv6.
pub fn url_v4() -> String {
    format!("https://{GATEWAY_V4}:{FRONT_PORT}")
}

pub fn url_v6() -> String {
    format!("https://[{GATEWAY_V6}]:{FRONT_PORT}")
}

/// A front config for `bed`: dual-stack on [`FRONT_PORT`], the bed's daemon socket, a
/// self-signed certificate in the bed's state dir, plus `extra` (e.g. a `[limits]` table).
pub fn config(bed: &mut TestBed, extra: &str) -> PathBuf {
    let text = format!(
        "listen = [\"[::]:{FRONT_PORT}\"]\ndaemon_socket = \"{}\"\nstate_dir = \"{}\"\nuser = \"gate-web\"\nshutdown_file = \"{}\"\n{extra}",
        bed.socket().display(),
        bed.state_dir.join("web").display(),
        bed.shutdown_file().display()
    );
    bed.write_config(&text)
}

/// Starts the front for `bed`.
pub fn start(bed: &mut TestBed, extra: &str) -> Daemon {
    let config = config(bed, extra);
    Daemon::start_front(bed, &config)
}

/// How many requests reached the daemon's socket, from its counters.
pub fn daemon_requests(bed: &TestBed) -> u64 {
    crate::approval::counters(bed).requests
}

/// Runs curl in the client namespace against the front (`--insecure`: a self-signed
/// certificate); returns the status code (0 when no answer) and the body.
pub fn curl(bed: &TestBed, args: &[&str]) -> (u16, String) {
    let out = bed
        .client
        .command("curl")
        .args(["--silent", "--insecure", "--max-time", "10", "--output", "-", "--write-out", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Sends `raw` bytes over TLS to the front at `gateway` from the client namespace.
pub fn raw_tls(bed: &TestBed, gateway: IpAddr, raw: &[u8]) -> Result<Response, TransportError> {
    let server = Server::Https { host: gateway.to_string(), port: FRONT_PORT, at: None };
    let raw = raw.to_vec();
    bed.client.run(move || server.exchange(&raw))
}

/// The real and effective uid of `pid`, from /proc.
pub fn uids(pid: i32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let line = status.lines().find(|l| l.starts_with("Uid:")).expect("a Uid line");
    let ids: Vec<u32> = line.split_whitespace().skip(1).map(|v| v.parse().expect("a uid")).collect();
    (ids[0], ids[1])
}

/// The uid of a user, from `id -u`.
pub fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().expect("run id");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("no user {user}"))
}
