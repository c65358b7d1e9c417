//! The front's half of a connection after TLS (`gate_web::server::serve_http`): the raw head
//! check, hyper's parse within the front's limits, the route table, the typed parse and the
//! request the front rebuilds for the daemon. The daemon is a recorder on a Unix socket that
//! answers every request 200 with a body of the right shape; TLS is left out (it is rustls's,
//! and it hands `serve_http` the same bytes).
//!
//! Input: the first byte picks the peer (even: a stranger; odd: a trusted proxy, which may name
//! the client in `X-Forwarded-For`); the rest is what the peer sends, after which it waits for
//! the answer (on a paused clock, so the front's deadlines pass at once).
//!
//! Properties: no panic (a handler's panic is answered 500, which fails here) and an end within
//! seconds; the answer, if any, is one well-formed HTTP/1.1 response with a status of the front's
//! list, its body exactly its `Content-Length`; at most one request reaches the daemon, and that
//! one is well-formed (read by `httparse`, not by hyper): a route of the table, only the headers
//! the front writes, each once, `Content-Length` the body's length, a body the daemon's parse
//! accepts; the source it names is a stranger's own address (a stranger cannot name another);
//! it was sent only for a head with at most one `Content-Length` and no `Transfer-Encoding`, and
//! the client got the daemon's 200.
#![no_main]
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use gate_protocol::{
    request::Request,
    wire::{
        APPROVE_PATH, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, HEADER_TOKEN, INTERNAL_HEADER_OBSERVED_SOURCE,
        INTERNAL_HEADER_VALIDATED, RequestHeaders, SOURCE_PATH,
    },
};
use gate_web::{config::Config, ratelimit::RateLimit, routes::Front, tally::Tally};
use libfuzzer_sys::fuzz_target;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
    runtime::Runtime,
};

const STRANGER: &str = "198.51.100.1:40000";
const PROXY: &str = "10.0.0.5:40000";
/// Every status the front answers with (hyper's own among them: 400, 408, 431, 505).
const STATUSES: [u16; 13] = [200, 400, 403, 404, 405, 408, 411, 413, 415, 429, 431, 503, 505];

struct Harness {
    runtime: Runtime,
    front: Arc<Front>,
    /// The requests the daemon received, raw.
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // An abstract socket (a leading NUL): nothing on disk to clean up after the run.
        let socket = PathBuf::from(format!("\0gate-fuzz-front-{}", std::process::id()));
        let text = "listen = [\"127.0.0.1:443\"]\ntrusted_proxies = [\"10.0.0.5\"]\n[limits]\n\
                    approvals_per_minute = 4000000000\nheader_timeout = \"2s\"\nbody_timeout = \"2s\"\n\
                    daemon_timeout = \"30s\"\n";
        let mut config = Config::parse(&PathBuf::from("fuzz.toml"), text).expect("the harness's config");
        config.daemon_socket = socket.clone();
        // Its clock paused: when every task waits, time jumps to the next timer, so a head that
        // never ends meets the header deadline at once (the client does not close its writing
        // side: hyper drops a connection whose reading side ends before it answers).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a tokio runtime");
        let received = Arc::new(Mutex::new(Vec::new()));
        let listener = {
            let _entered = runtime.enter();
            UnixListener::bind(&socket).expect("bind the daemon's socket")
        };
        runtime.spawn(recorder(listener, Arc::clone(&received)));
        let rate = Arc::new(RateLimit::new(config.limits.approvals_per_minute));
        let front = Arc::new(Front::new(&config, rate, Arc::default(), Arc::new(Tally::default())));
        Harness { runtime, front, received }
    })
}

/// The daemon: records each request whole and answers it 200 with a body of the route's shape.
async fn recorder(listener: UnixListener, received: Arc<Mutex<Vec<Vec<u8>>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(record(stream, Arc::clone(&received)));
    }
}

async fn record(mut stream: UnixStream, received: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut buffer = Vec::new();
    loop {
        match whole_request(&buffer) {
            Some(Ok(length)) => {
                let request: Vec<u8> = buffer.drain(..length).collect();
                let body: &[u8] = if request.starts_with(b"GET") {
                    br#"{"address":"198.51.100.1"}"#
                } else {
                    br#"{"data":"AAAA","nonce":"AAAA","signature":"AAAA"}"#
                };
                received.lock().unwrap_or_else(PoisonError::into_inner).push(request);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if stream.write_all(&[head.as_bytes(), body].concat()).await.is_err() {
                    return;
                }
            }
            Some(Err(())) => {
                // Not HTTP: recorded as it is, for the check to show.
                received.lock().unwrap_or_else(PoisonError::into_inner).push(buffer);
                return;
            }
            None => match stream.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => {
                    if !buffer.is_empty() {
                        received.lock().unwrap_or_else(PoisonError::into_inner).push(buffer);
                    }
                    return;
                }
                Ok(_) => {}
            },
        }
    }
}

/// The length of the whole request at the start of `bytes` (head and `Content-Length` body),
/// `None` while it is not all there, `Err` if it is not HTTP.
fn whole_request(bytes: &[u8]) -> Option<Result<usize, ()>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(head)) => {
            let length = header(request.headers, "content-length").map_or(Some(0), |v| v.parse::<usize>().ok());
            match length {
                Some(length) => (bytes.len() >= head + length).then_some(Ok(head + length)),
                None => Some(Err(())),
            }
        }
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(Err(())),
    }
}

/// The value of the one header `name`; panics if there are two.
fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a str> {
    let mut values = headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    let value = values.next()?;
    assert!(values.next().is_none(), "{name} twice");
    Some(std::str::from_utf8(value.value).expect("a header the front wrote is text"))
}

/// Checks a request the daemon received: well-formed, the front's headers only, the source.
fn check_forwarded(raw: &[u8], peer: SocketAddr) {
    let shown = String::from_utf8_lossy(raw);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = request.parse(raw) else { panic!("not one HTTP request: {shown:?}") };
    assert_eq!(request.version, Some(1), "{shown:?}");
    let route = (request.method.expect("a method"), request.path.expect("a path"));
    let allowed: &[&str] = match route {
        ("POST", APPROVE_PATH) => &[
            "host",
            "content-type",
            "content-length",
            HEADER_TOKEN,
            HEADER_TIMESTAMP,
            HEADER_NONCE,
            HEADER_SIGNATURE,
            INTERNAL_HEADER_OBSERVED_SOURCE,
            INTERNAL_HEADER_VALIDATED,
        ],
        ("GET", SOURCE_PATH) => &["host", "content-length", INTERNAL_HEADER_OBSERVED_SOURCE, INTERNAL_HEADER_VALIDATED],
        other => panic!("a route not in the table: {other:?}"),
    };
    for h in request.headers.iter() {
        assert!(allowed.iter().any(|a| h.name.eq_ignore_ascii_case(a)), "header {} in {shown:?}", h.name);
        header(request.headers, h.name);
    }
    assert_eq!(header(request.headers, INTERNAL_HEADER_VALIDATED), Some("1"));
    let source: IpAddr = header(request.headers, INTERNAL_HEADER_OBSERVED_SOURCE)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no source named: {shown:?}"));
    if peer.to_string() == STRANGER {
        assert_eq!(source, peer.ip(), "a stranger named its source: {shown:?}");
    }
    let body = &raw[head..];
    let length = header(request.headers, "content-length").map_or(0, |v| v.parse().expect("a length"));
    assert_eq!(body.len(), length, "{shown:?}");
    if route.0 == "POST" {
        let field = |name| header(request.headers, name).expect("the field").to_owned();
        let fields = RequestHeaders {
            token: field(HEADER_TOKEN),
            timestamp: field(HEADER_TIMESTAMP),
            nonce: field(HEADER_NONCE),
            signature: field(HEADER_SIGNATURE),
        };
        Request::parse(fields, body).unwrap_or_else(|e| panic!("the daemon's parse refuses it ({e}): {shown:?}"));
    } else {
        assert!(body.is_empty());
    }
}

/// What the client sent, read by `httparse`: a request that reached the daemon had a whole head
/// with at most one `Content-Length` and no `Transfer-Encoding`.
fn check_sent(sent: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let parsed = request.parse(sent);
    assert!(matches!(parsed, Ok(httparse::Status::Complete(_))), "forwarded from an incomplete head: {parsed:?}");
    let count = |name: &str| request.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).count();
    assert!(count("content-length") <= 1, "forwarded with two lengths");
    assert_eq!(count("transfer-encoding"), 0, "forwarded with a transfer encoding");
}

/// Checks the answer: nothing, or one response of a known status whose body is its length.
/// Returns the status.
fn check_answer(answer: &[u8]) -> Option<u16> {
    if answer.is_empty() {
        return None;
    }
    let shown = String::from_utf8_lossy(answer);
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = response.parse(answer) else { panic!("not a response: {shown:?}") };
    let status = response.code.expect("a status");
    assert!(STATUSES.contains(&status), "status {status}: {shown:?}");
    let length: usize = header(response.headers, "content-length").map_or(0, |v| v.parse().expect("a length"));
    assert_eq!(answer.len() - head, length, "one response, its body as long as it says: {shown:?}");
    Some(status)
}

fuzz_target!(|input: &[u8]| {
    let Some((&pick, sent)) = input.split_first() else { return };
    let peer: SocketAddr = if pick % 2 == 0 { STRANGER } else { PROXY }.parse().expect("an address");
    let harness = harness();
    let answer = harness.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let exchange = async {
            // The front may answer and close before it has read everything: not an error here.
            let _ = client.write_all(sent).await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            answer
        };
        let served = gate_web::server::serve_http(server, peer, Arc::clone(&harness.front));
        // On the paused clock: the front's deadlines, not time spent here.
        let ((), answer) = tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(served, exchange) })
            .await
            .expect("the front ends every connection by its deadlines");
        answer
    });
    let received = std::mem::take(&mut *harness.received.lock().unwrap_or_else(PoisonError::into_inner));
    assert!(received.len() <= 1, "one request a connection, {} reached the daemon", received.len());
    let status = check_answer(&answer);
    if let Some(forwarded) = received.first() {
        check_forwarded(forwarded, peer);
        check_sent(sent);
        assert_eq!(status, Some(200), "the daemon's 200 reaches the client");
    }
});
