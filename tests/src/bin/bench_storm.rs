//! `cargo xtask bench storm [--clients N] [--only socket|socket-flood|front|front-flood|socket-postgres] [--quick]`:
//! a reconnect storm. N enrolled clients
//! (100,000 by default) all ask for approval at once, as after a gateway restart or a cluster
//! host's failure: on the daemon's socket (kept-alive connections, as the front's pool uses) and
//! through the front (TLS, a new connection per client, as devices connect), each alone and
//! beside a bad-HMAC flood from other sources. Reports the time until every client is approved,
//! approvals per second, the latency per request, and the daemon's and the front's peak memory.
//!
//! The clients, their keys and the enrolled store are made once and cached in
//! `target/bench-cache/storm-N/`; the requests are signed before the clock starts (with OpenSSL:
//! the client's cost, not the gateway's) and re-used while younger than the daemon's window
//! allows. Every phase runs on a fresh copy of the cached store (no nonce seen yet), a fresh
//! daemon and a fresh gate. `--quick` (the tests): a few hundred clients, nothing cached.
//!
//! The last storm runs on the socket again with the store in PostgreSQL (a server of the
//! bench's own on the same machine, reached on its Unix socket, the cached store copied into
//! it with `Store::copy_into`; commits not waiting for the disk, as SQLite's `synchronous =
//! NORMAL` does not): the store a cluster's hosts share, against SQLite in the same run.
use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use gate_client::transport::Server;
use gate_protocol::{
    ProtocolError,
    crypto_box::SecretKey,
    encoding::{b64, unb64},
    keys::{ClientPublic, HmacSecret, Token, rsa_public_from_der},
    rand::{RngCore as _, rngs::OsRng},
    request::{self, Sender},
    wire::{BOX_NONCE_BYTES, Payload, REJECTED_STATUS, RequestHeaders, SealedBody},
};
use gate_store::{NewClient, Store, StoreAccess, StoreLocation};
use gate_tests::{
    approval::{KeptAlive, headers, keep_alive, raw},
    bed::{GATEWAY_V4, STRANGER_V4, TestBed},
    cluster::SharedStore,
    daemon::{Daemon, peak_rss_mib},
    front,
    measure::{ScratchDir, arg, percentile, quick},
};
use openssl::{
    hash::MessageDigest,
    pkey::{PKey, Private},
    rsa::{Padding, Rsa},
    sign::{RsaPssSaltlen, Signer},
};

/// RSA keys the clients share (a key is the client's; what matters to the gateway is that each
/// client's key is parsed and checked on its own, which sharing does not change).
const KEYS: usize = 16;
/// Requests are re-signed when older than this: the daemon accepts an hour's clock difference
/// at most (`approval.window`), and the bench sets that.
const MAX_REQUEST_AGE: Duration = Duration::from_secs(50 * 60);
const CACHE_FORMAT: u32 = 1;
const ON_POSTGRES: &str = "on the socket, store in PostgreSQL";

struct Settings {
    clients: usize,
    /// Kept-alive connections on the daemon's socket.
    socket_connections: usize,
    /// Concurrent clients through the front (each request a new TLS connection).
    front_connections: usize,
    /// Connections sending the bad-HMAC flood beside the storm.
    flood_connections: usize,
    cache: Option<PathBuf>,
    /// `--only NAME`: one storm of the table (to profile it).
    only: Option<&'static str>,
}

fn settings() -> anyhow::Result<Settings> {
    let quick = quick();
    let clients: usize = arg("--clients", if quick { 300 } else { 100_000 })?;
    anyhow::ensure!(clients > 0 && clients <= 131_072, "--clients: 1 to 131072 (the bench's address range)");
    let cache = (!quick).then(|| {
        let target = std::env::current_exe().ok().and_then(|e| e.parent()?.parent().map(Path::to_path_buf));
        target.unwrap_or_else(std::env::temp_dir).join(format!("bench-cache/storm-{clients}"))
    });
    let only = match arg("--only", String::new())?.as_str() {
        "" => None,
        "socket" => Some("on the socket"),
        "socket-flood" => Some("on the socket + bad-HMAC flood"),
        "front" => Some("through the front"),
        "front-flood" => Some("through the front + bad-HMAC flood"),
        "socket-postgres" => Some(ON_POSTGRES),
        other => anyhow::bail!("--only {other:?}: socket, socket-flood, front, front-flood or socket-postgres"),
    };
    Ok(if quick {
        Settings { clients, socket_connections: 4, front_connections: 4, flood_connections: 1, cache, only }
    } else {
        Settings { clients, socket_connections: 64, front_connections: 128, flood_connections: 4, cache, only }
    })
}

/// The `i`th client's address: 198.18.0.0/15, the benchmarking range.
fn client_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0xc612_0000 | u32::try_from(i).expect("at most 131072 clients"))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What is cached: the store with every client enrolled, each client's secrets, the RSA keys.
struct Clients {
    store: PathBuf,
    keys: Vec<PKey<Private>>,
    /// Per client: (token, HMAC secret, box secret, key index).
    secrets: Vec<(Token, HmacSecret, SecretKey, usize)>,
}

fn enroll(dir: &Path, count: usize) -> anyhow::Result<Clients> {
    let done = dir.join("complete");
    if fs::read_to_string(&done).is_ok_and(|v| v.trim() == format!("{CACHE_FORMAT} {count}")) {
        return load(dir);
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    eprintln!("making {KEYS} RSA-4096 keys and enrolling {count} clients (once; cached in {})...", dir.display());
    let keys: Vec<PKey<Private>> =
        (0..KEYS).map(|_| Ok(PKey::from_rsa(Rsa::generate(4096)?)?)).collect::<anyhow::Result<_>>()?;
    for (k, key) in keys.iter().enumerate() {
        fs::write(dir.join(format!("key-{k}.pem")), key.private_key_to_pem_pkcs8()?)?;
    }
    let publics: Vec<_> =
        keys.iter().map(|k| Ok(rsa_public_from_der(&k.public_key_to_der()?)?)).collect::<anyhow::Result<Vec<_>>>()?;
    let (mut store, _) = Store::open_or_create(dir.join("gate.db"))?;
    let gates = ["vpn".to_owned()];
    let mut secrets = Vec::with_capacity(count);
    let mut lines = String::new();
    for i in 0..count {
        let (token, secret, box_secret) =
            (Token::random(&mut OsRng), HmacSecret::random(&mut OsRng), SecretKey::generate(&mut OsRng));
        let public = ClientPublic { token, box_public: box_secret.public_key(), rsa_public: publics[i % KEYS].clone() };
        let name = format!("storm-{i}");
        store.add_client(&NewClient { name: &name, gates: &gates, public: &public, secret: &secret, now: 1 })?;
        let _ = writeln!(lines, "{token}\t{}\t{}\t{}", b64(&secret.0), b64(&box_secret.to_bytes()), i % KEYS);
        secrets.push((token, secret, box_secret, i % KEYS));
    }
    drop(store);
    fs::write(dir.join("clients.tsv"), lines)?;
    fs::write(&done, format!("{CACHE_FORMAT} {count}"))?;
    Ok(Clients { store: dir.join("gate.db"), keys, secrets })
}

fn load(dir: &Path) -> anyhow::Result<Clients> {
    let keys = (0..KEYS)
        .map(|k| Ok(PKey::private_key_from_pem(&fs::read(dir.join(format!("key-{k}.pem")))?)?))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut secrets = Vec::new();
    for line in BufReader::new(fs::File::open(dir.join("clients.tsv"))?).lines() {
        let line = line?;
        let fields: Vec<&str> = line.split('\t').collect();
        anyhow::ensure!(fields.len() == 4, "clients.tsv: a line of {} fields", fields.len());
        let box_bytes: [u8; 32] =
            unb64(fields[2], "box secret").ok().and_then(|b| b.try_into().ok()).context("clients.tsv: a box secret")?;
        secrets.push((
            Token::parse(fields[0])?,
            HmacSecret::from_slice(&unb64(fields[1], "secret")?)?,
            SecretKey::from(box_bytes),
            fields[3].parse()?,
        ));
    }
    Ok(Clients { store: dir.join("gate.db"), keys, secrets })
}

/// RSA-4096 PSS-SHA512 with a 64-byte salt, as the protocol signs, made by OpenSSL.
fn openssl_sign(key: &PKey<Private>, message: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let failed = |_| ProtocolError::BadKey("OpenSSL signing failed");
    let mut signer = Signer::new(MessageDigest::sha512(), key).map_err(failed)?;
    signer.set_rsa_padding(Padding::PKCS1_PSS).map_err(failed)?;
    signer.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).map_err(failed)?;
    signer.set_rsa_mgf1_md(MessageDigest::sha512()).map_err(failed)?;
    signer.update(message).map_err(failed)?;
    signer.sign_to_vec().map_err(failed)
}

/// A signed request as cached: the four protocol headers, then the body.
type Stored = (String, String, String, String, SealedBody);

/// One approval request per client, signed now (on every CPU), or read back if signed within
/// [`MAX_REQUEST_AGE`]: the four protocol headers and the body, one client a line.
fn requests(clients: &Clients, dir: &Path) -> anyhow::Result<Vec<(RequestHeaders, SealedBody)>> {
    let file = dir.join("requests.jsonl");
    let fresh = fs::metadata(&file)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < MAX_REQUEST_AGE));
    if fresh {
        let text = fs::read_to_string(&file)?;
        let read: Vec<(RequestHeaders, SealedBody)> = text
            .lines()
            .map(|line| {
                let (token, timestamp, nonce, signature, body): Stored = serde_json::from_str(line)?;
                Ok((RequestHeaders { token, timestamp, nonce, signature }, body))
            })
            .collect::<anyhow::Result<_>>()?;
        if read.len() == clients.secrets.len() {
            return Ok(read);
        }
    }
    eprintln!("signing {} requests with OpenSSL...", clients.secrets.len());
    let server = Store::open(&clients.store)?.server_keys(unix_now())?.public();
    let now = unix_now();
    let next = AtomicUsize::new(0);
    let signed: Mutex<Vec<Option<(RequestHeaders, SealedBody)>>> = Mutex::new(vec![None; clients.secrets.len()]);
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| -> anyhow::Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((token, secret, box_secret, key)) = clients.secrets.get(i) else { return Ok(()) };
                    let payload = Payload {
                        gate: "vpn".into(),
                        timestamp: now,
                        nonce: request::random_nonce(&mut OsRng),
                        client_version: "gate-bench-storm".into(),
                        ipv4: Some(client_addr(i)),
                        ipv6: None,
                    };
                    let mut box_nonce = [0; BOX_NONCE_BYTES];
                    OsRng.fill_bytes(&mut box_nonce);
                    let sender = Sender { token: *token, secret, box_secret };
                    let outgoing = request::build_signed_by(&sender, &server, &payload, box_nonce, |m| {
                        openssl_sign(&clients.keys[*key], m)
                    })?;
                    signed.lock().expect("requests")[i] = Some((outgoing.headers, outgoing.body));
                }
            });
        }
    });
    let signed: Vec<(RequestHeaders, SealedBody)> =
        signed.into_inner().expect("requests").into_iter().collect::<Option<_>>().context("a request unsigned")?;
    let mut out = String::new();
    for (h, body) in &signed {
        let stored: Stored = (h.token.clone(), h.timestamp.clone(), h.nonce.clone(), h.signature.clone(), body.clone());
        out.push_str(&serde_json::to_string(&stored)?);
        out.push('\n');
    }
    fs::write(&file, out)?;
    Ok(signed)
}

/// The request as the front receives it (the four protocol headers) or, `internal`, as the
/// front forwards it on a kept connection, with `observed` as the source it saw.
fn wire((h, body): &(RequestHeaders, SealedBody), internal: bool, observed: Option<IpAddr>) -> Vec<u8> {
    let outgoing = request::Outgoing { headers: h.clone(), body: body.clone() };
    let all = headers(&outgoing, observed);
    let bytes = raw(&all[..if internal { all.len() } else { 4 }], outgoing.body_json().as_bytes());
    if internal { keep_alive(&bytes) } else { bytes }
}

/// A bad-HMAC request (a client's token, a forged tag), from a stranger's address.
fn flood_request(good: &(RequestHeaders, SealedBody), internal: bool) -> Vec<u8> {
    let (mut h, body) = good.clone();
    h.signature = b64(&[0x42; 64]);
    wire(&(h, body), internal, Some(STRANGER_V4.into()))
}

struct Outcome {
    wall: Duration,
    latencies: Vec<Duration>,
    approved: usize,
    flood_refused: usize,
    daemon_mib: f64,
    front_mib: Option<f64>,
}

/// One storm: every request in `requests` sent by `connections` workers (`send` makes one
/// exchange and returns the status), beside `flood` workers repeating `flood_send` until the
/// storm is over.
fn storm(
    requests: Vec<Vec<u8>>,
    connections: usize,
    send: &(dyn Fn(&mut Option<KeptAlive>, &[u8]) -> u16 + Sync),
    flood: usize,
    flood_send: &(dyn Fn(&mut Option<KeptAlive>) -> bool + Sync),
) -> (Duration, Vec<Duration>, usize, usize) {
    let queue = Mutex::new(requests);
    let latencies = Mutex::new(Vec::new());
    let (approved, refused, over) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicBool::new(false));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..flood {
            scope.spawn(|| {
                let mut connection = None;
                while !over.load(Ordering::Relaxed) {
                    if flood_send(&mut connection) {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                scope.spawn(|| {
                    let mut connection = None;
                    let mut mine = Vec::new();
                    loop {
                        let Some(request) = queue.lock().expect("queue").pop() else { break };
                        let sent = Instant::now();
                        let status = send(&mut connection, &request);
                        mine.push(sent.elapsed());
                        if status == 200 {
                            approved.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    latencies.lock().expect("latencies").extend(mine);
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("a storm worker");
        }
        over.store(true, Ordering::Relaxed);
    });
    let wall = started.elapsed();
    (wall, latencies.into_inner().expect("latencies"), approved.into_inner(), refused.into_inner())
}

/// A fresh bed, daemon (on a copy of the cached store) and, `through_front`, a front; the storm
/// on them, with `flood` flooding connections.
fn phase(
    settings: &Settings,
    clients: &Clients,
    signed: &[(RequestHeaders, SealedBody)],
    through_front: bool,
    flood: usize,
    postgres: bool,
) -> anyhow::Result<Outcome> {
    let mut bed = TestBed::new();
    // Kept until the daemon has stopped (dropped after it).
    let mut database = None;
    if postgres {
        // fsync on (a command-line setting, which ALTER SYSTEM cannot override); commits do
        // not wait for the disk, as SQLite's in WAL mode with synchronous = NORMAL do not.
        let shared = SharedStore::start_on(temp_postgres::TempPostgres::start_durable()?)?;
        let server = &shared.database;
        server.psql("postgres", "ALTER SYSTEM SET synchronous_commit = off")?;
        server.psql("postgres", "SELECT pg_reload_conf()")?;
        anyhow::ensure!(server.psql("postgres", "SHOW fsync")?.trim() == "on", "the bench's database must fsync");
        let access = StoreAccess { key_file: Some(shared.key.clone()), ..StoreAccess::default() };
        let (mut into, _) = StoreLocation::parse(&shared.url)?.open_or_create(&access)?;
        let started = Instant::now();
        let rows = Store::open(&clients.store)?.copy_into(&mut into)?;
        eprintln!("copied {rows} rows into PostgreSQL in {:.1} s", started.elapsed().as_secs_f64());
        bed.share_store(&shared.url, &shared.key);
        database = Some(shared);
    } else {
        fs::copy(&clients.store, bed.store())?;
    }
    let config = bed.config(
        &[("vpn", "udp", 1194)],
        &format!(
            "[leases]\ncapacity = {}\n[approval]\nwindow = \"1h\"\nfront_user = \"gate-web\"\n",
            settings.clients + 1_000
        ),
    );
    let daemon = Daemon::start(&bed, &config);
    let socket = bed.socket();
    let (wall, latencies, approved, flood_refused, front_mib);
    if through_front {
        let web = front::start(
            &mut bed,
            "[limits]\napprovals_per_minute = 100000000\nhandshakes_per_minute = 100000000\n\
             connections_per_source = 4096\nmax_connections = 4096\n",
        );
        let server = Server::Https { host: GATEWAY_V4.to_string(), port: front::FRONT_PORT, at: None };
        let requests: Vec<Vec<u8>> = signed.iter().map(|r| wire(r, false, None)).collect();
        let bad = flood_request(&signed[0], false);
        let client = &bed.client;
        let send =
            |_: &mut Option<KeptAlive>, request: &[u8]| client.run(|| server.exchange(request).map_or(0, |r| r.status));
        let flood_send =
            |_: &mut Option<KeptAlive>| client.run(|| server.exchange(&bad).is_ok_and(|r| r.status == REJECTED_STATUS));
        (wall, latencies, approved, flood_refused) =
            storm(requests, settings.front_connections, &send, flood, &flood_send);
        front_mib = Some(peak_rss_mib(web.pid().as_raw()));
    } else {
        let requests: Vec<Vec<u8>> = signed.iter().map(|r| wire(r, true, None)).collect();
        let bad = flood_request(&signed[0], true);
        let send = |connection: &mut Option<KeptAlive>, request: &[u8]| {
            connection.get_or_insert_with(|| KeptAlive::connect(&socket)).send(request)
        };
        let flood_send = |connection: &mut Option<KeptAlive>| {
            connection.get_or_insert_with(|| KeptAlive::connect(&socket)).send(&bad) == REJECTED_STATUS
        };
        (wall, latencies, approved, flood_refused) =
            storm(requests, settings.socket_connections, &send, flood, &flood_send);
        front_mib = None;
    }
    let daemon_mib = peak_rss_mib(daemon.pid().as_raw());
    daemon.stop();
    drop(database);
    Ok(Outcome { wall, latencies, approved, flood_refused, daemon_mib, front_mib })
}

fn main() -> anyhow::Result<()> {
    gate_tests::measure::accept_args(&["--quick"], &["--clients", "--only"]);
    let settings = settings()?;
    println!("machine: {}\n", gate_tests::measure::machine());
    let scratch = settings.cache.is_none().then(ScratchDir::new);
    let dir = settings.cache.clone().or_else(|| scratch.as_ref().map(|s| s.0.clone())).expect("a directory");
    run(&settings, &dir)
}

fn run(settings: &Settings, dir: &Path) -> anyhow::Result<()> {
    let clients = enroll(dir, settings.clients)?;
    let signed = requests(&clients, dir)?;
    let n = settings.clients;
    println!(
        "reconnect storm: {n} enrolled clients, each asking once; {} CPUs; the load runs on the same machine\n",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    );
    println!(
        "| storm | connections | all approved in | approvals/s | p50 / p99 / max | daemon peak | front peak | flood refused/s |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let storms = [
        ("on the socket", false, 0),
        ("on the socket + bad-HMAC flood", false, settings.flood_connections),
        ("through the front", true, 0),
        ("through the front + bad-HMAC flood", true, settings.flood_connections),
        (ON_POSTGRES, false, 0),
    ];
    for (name, through_front, flood) in storms.into_iter().filter(|(name, ..)| settings.only.is_none_or(|o| o == *name))
    {
        eprintln!("storm {name}...");
        let outcome = phase(settings, &clients, &signed, through_front, flood, name == ON_POSTGRES)?;
        anyhow::ensure!(outcome.approved == n, "{name}: {} of {n} approved", outcome.approved);
        let max = outcome.latencies.iter().max().copied().unwrap_or_default();
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
        let connections = if through_front { settings.front_connections } else { settings.socket_connections };
        let flood_rate = if flood == 0 {
            "-".to_owned()
        } else {
            format!("{:.0} ({flood} conn.)", outcome.flood_refused as f64 / outcome.wall.as_secs_f64())
        };
        println!(
            "| {name} | {connections} | {:.2} s | {:.0} | {} / {} / {} ms | {:.0} MiB | {} | {flood_rate} |",
            outcome.wall.as_secs_f64(),
            n as f64 / outcome.wall.as_secs_f64(),
            ms(percentile(&outcome.latencies, 0.5)),
            ms(percentile(&outcome.latencies, 0.99)),
            ms(max),
            outcome.daemon_mib,
            outcome.front_mib.map_or_else(|| "-".to_owned(), |m| format!("{m:.0} MiB")),
        );
        std::io::stdout().flush()?;
    }
    if !quick() {
        // This VM kind's speed drifts over hours (its host's load): the reference verify rate,
        // right after the storms, tells runs apart that the drift alone would separate.
        let speed = std::process::Command::new("openssl").args(["speed", "-seconds", "3", "rsa4096"]).output()?;
        let text = String::from_utf8_lossy(&speed.stdout);
        if let Some(line) = text.lines().find(|l| l.starts_with("rsa 4096 bits")) {
            println!("\nthe host's speed after the storms (`openssl speed rsa4096`: sign/s, verify/s last): {line}");
        }
    }
    Ok(())
}
