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
        let database = TempPostgres::start()?;
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
