//! Where gatectl finds the gate: the daemon's own config is the one source of truth for the pin
//! dir, the store, the OpenVPN run dir and the host name; a flag overrides one value. An SQLite
//! store is opened, never made, except by `client add` on the path the config names, so a
//! mistyped path fails instead of starting a second store with its own server key. (A
//! PostgreSQL store's tables are made where they are missing, as the daemon does; its database
//! must exist, so a mistyped name fails too.)
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use gate_daemon::config::{Config, DEFAULT_CONFIG_PATH};
use gate_store::{Store, StoreAccess, StoreLocation};

/// What the command line says (each `None` defers to the config).
pub struct Flags {
    pub config: Option<PathBuf>,
    pub pin_dir: Option<PathBuf>,
    pub store: Option<StoreLocation>,
    pub store_password_file: Option<PathBuf>,
    pub store_ca_file: Option<PathBuf>,
    pub store_key_file: Option<PathBuf>,
    pub store_previous_key_file: Option<PathBuf>,
    pub vpn_run_dir: Option<PathBuf>,
    pub host: Option<String>,
}

/// The paths in force, and where each came from.
pub struct Paths {
    pub pin_dir: PathBuf,
    /// The daemon's internal socket (its counters).
    pub socket: PathBuf,
    pub store: StorePath,
    pub vpn_run_dir: PathBuf,
    pub host: String,
    /// The daemon's config, if one was read.
    pub config: Option<Config>,
}

/// The store's location, and why this one.
pub struct StorePath {
    pub location: StoreLocation,
    pub access: StoreAccess,
    origin: Origin,
}

enum Origin {
    Flag,
    Config(PathBuf),
    /// The daemon's default, no config file being there.
    Default(PathBuf),
}

impl Paths {
    /// Reads the config (`--config`, else the default one if it exists) and applies the flags.
    ///
    /// # Errors
    /// A config named by `--config` is missing, or any config read is invalid.
    pub fn resolve(flags: Flags) -> anyhow::Result<Self> {
        let (file, explicit) = match flags.config {
            Some(file) => (file, true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let config = if explicit || file.exists() {
            Some(Config::load(&file).map_err(|e| {
                anyhow::anyhow!("{e}\n(gatectl reads the daemon's config for its paths; --config chooses another)")
            })?)
        } else {
            None
        };
        let defaults = config.clone().unwrap_or_else(Config::defaults);
        let origin = match (&flags.store, &config) {
            (Some(_), _) => Origin::Flag,
            (None, Some(_)) => Origin::Config(file.clone()),
            (None, None) => Origin::Default(file.clone()),
        };
        let host = flags.host.unwrap_or_else(|| defaults.host_name());
        Ok(Self {
            pin_dir: flags.pin_dir.unwrap_or(defaults.pin_dir),
            socket: defaults.approval.socket.clone(),
            store: StorePath {
                location: flags.store.unwrap_or(defaults.approval.store),
                access: StoreAccess {
                    password_file: flags.store_password_file.or(defaults.approval.store_password_file),
                    ca_file: flags.store_ca_file.or(defaults.approval.store_ca_file),
                    key_file: flags.store_key_file.or(defaults.approval.store_key_file),
                    previous_key_file: flags.store_previous_key_file.or(defaults.approval.store_previous_key_file),
                },
                origin,
            },
            vpn_run_dir: flags.vpn_run_dir.unwrap_or(defaults.vpn.run_dir),
            host,
            config,
        })
    }
}

impl StorePath {
    fn source(&self) -> String {
        match &self.origin {
            Origin::Flag => "given by --store".to_owned(),
            Origin::Config(file) => format!("approval.store in {}", file.display()),
            Origin::Default(file) => format!("the default: {} does not exist", file.display()),
        }
    }

    /// Opens the existing store.
    ///
    /// # Errors
    /// There is none, it is damaged, or SQLite failed; the message says where the path came from.
    pub fn open(&self) -> anyhow::Result<Store> {
        self.location
            .open(&self.access)
            .with_context(|| format!("open the store {} ({})", self.location, self.source()))
    }

    /// Opens the store, making it if none exists and the daemon's config names this path.
    ///
    /// # Errors
    /// As [`Self::open`]; or no store exists and the path is not the config's.
    pub fn open_or_create(&self, config: Option<&Config>) -> anyhow::Result<Store> {
        let StoreLocation::File(path) = &self.location else { return self.open() };
        if path.exists() {
            return self.open();
        }
        let named =
            config.is_some_and(|c| matches!(&c.approval.store, StoreLocation::File(named) if same_path(named, path)));
        if !named {
            bail!(
                "no store at {} ({}); a new store is made only where the daemon's config names it \
                 (check the path, or give --config)",
                path.display(),
                self.source()
            );
        }
        let (store, created) = self
            .location
            .open_or_create(&self.access)
            .with_context(|| format!("make the store {} ({})", path.display(), self.source()))?;
        if created {
            eprintln!("gatectl: made a new store at {} ({})", path.display(), self.source());
        }
        Ok(store)
    }
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((std::path::absolute(a), std::path::absolute(b)), (Ok(a), Ok(b)) if a == b)
}
