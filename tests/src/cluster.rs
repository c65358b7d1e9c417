//! A cluster for tests and benchmarks: [`SharedStore`], a PostgreSQL server of its own with the
//! database `gate` and the store key every host opens it with (made by the real `gatectl store
//! new-key`), and [`Host`], a gate host (a bed and its daemon) on it.
use std::path::PathBuf;

use temp_postgres::TempPostgres;

use crate::{
    bed::TestBed,
    daemon::{Daemon, bin},
};

/// The gate the hosts of these clusters guard.
pub const GATED: u16 = 1194;

pub struct SharedStore {
    /// `postgres://` URL of the database `gate`.
    pub url: String,
    /// The store key, in the server's directory (removed with it).
    pub key: PathBuf,
    pub database: TempPostgres,
}

impl SharedStore {
    /// # Errors
    /// PostgreSQL or `gatectl` failed.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(TempPostgres::start()?)
    }

    /// As [`Self::start`], on `database` (one started durable, for a benchmark, say).
    ///
    /// # Errors
    /// As [`Self::start`].
    pub fn start_on(database: TempPostgres) -> anyhow::Result<Self> {
        database.create_database("gate")?;
        let key = database.dir().join("store.key");
        let made = std::process::Command::new(bin("gatectl")).args(["store", "new-key"]).arg(&key).output()?;
        anyhow::ensure!(made.status.success(), "gatectl store new-key: {}", String::from_utf8_lossy(&made.stderr));
        Ok(Self { url: database.url("gate"), key, database })
    }
}

/// A gate host: its namespaces and pin dir, and its daemon on the shared store.
pub struct Host {
    // The daemon goes before its bed.
    pub daemon: Daemon,
    pub bed: TestBed,
}

impl Host {
    /// Host `name` gating udp/[`GATED`] as `vpn`, with `approval` (TOML lines) added to its
    /// `[approval]` table.
    #[must_use]
    pub fn start(store: &SharedStore, name: &str, approval: &str) -> Self {
        Self::start_with(store, name, "", approval)
    }

    /// As [`Self::start`], with `tables` (whole TOML tables, `[leases]` say) in the config too.
    #[must_use]
    pub fn start_with(store: &SharedStore, name: &str, tables: &str, approval: &str) -> Self {
        let mut bed = TestBed::new();
        bed.share_store(&store.url, &store.key);
        let extra = format!("{tables}[approval]\nhost = \"{name}\"\n{approval}");
        let config = bed.config(&[("vpn", "udp", GATED)], &extra);
        let daemon = Daemon::start(&bed, &config);
        Self { daemon, bed }
    }
}

/// A host's way to the database that the test can cut, as a network partition would: a proxy
/// on a Unix socket of its own in front of the server's. Cut, it ends every connection through
/// it and ends each new one at once (the database unreachable from this host alone); healed,
/// it passes them again. (A silent partition, where packets vanish instead, fails the same way
/// over TCP after the store's timeouts: 3 s to connect, 5 s unacknowledged.)
pub struct DatabaseLink {
    dir: PathBuf,
    shared: std::sync::Arc<LinkState>,
}

#[derive(Default)]
struct LinkState {
    cut: std::sync::atomic::AtomicBool,
    closing: std::sync::atomic::AtomicBool,
    /// Both ends of every connection passed, to end them when cut.
    open: std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>,
}

impl DatabaseLink {
    /// # Errors
    /// The socket cannot be made.
    pub fn start(database: &TempPostgres) -> anyhow::Result<Self> {
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = std::env::temp_dir().join(format!("{}{}", crate::unique::PREFIX, crate::unique::token()));
        std::fs::create_dir_all(&dir)?;
        let socket = ".s.PGSQL.5432";
        let listener = UnixListener::bind(dir.join(socket))?;
        let upstream = database.dir().join(socket);
        let shared = std::sync::Arc::new(LinkState::default());
        let state = std::sync::Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if state.closing.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if state.cut.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = UnixStream::connect(&upstream) else { continue };
                let pipe = |from: &UnixStream, to: &UnixStream| -> std::io::Result<()> {
                    let (mut from, mut to) = (from.try_clone()?, to.try_clone()?);
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                    Ok(())
                };
                if pipe(&client, &server).and_then(|()| pipe(&server, &client)).is_ok() {
                    state.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend([client, server]);
                }
            }
        });
        Ok(Self { dir, shared })
    }

    /// The URL of `database` through this link.
    #[must_use]
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}@{}:5432/{database}",
            temp_postgres::USER,
            self.dir.display().to_string().replace('/', "%2F")
        )
    }

    /// Ends every connection through the link, and every new one until [`Self::heal`].
    pub fn cut(&self) {
        self.shared.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.shared.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.shared.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for DatabaseLink {
    fn drop(&mut self) {
        self.cut();
        self.shared.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accepting thread, which then returns.
        let _ = std::os::unix::net::UnixStream::connect(self.dir.join(".s.PGSQL.5432"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
