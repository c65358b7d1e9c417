//! `gatectl store`: the store's own upkeep. A store key is made once for a cluster (or a host)
//! and copied to every host; `reseal` seals every secret in the store with the current key
//! (after a key is first set, and to finish a rotation).
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use gate_store::{StoreAccess, StoreKey, StoreLocation};

use crate::paths::Paths;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Make a new store key in FILE (64 hex digits, mode 0600; never over an existing file).
    NewKey { file: PathBuf },
    /// Seal every secret in the store with the current store key (`approval.store_key_file`,
    /// or --store-key-file): those written before the store had a key, and those sealed with
    /// the previous key (`approval.store_previous_key_file`) of a rotation.
    Reseal,
    /// Back the store up into FILE, a new SQLite file (mode 0600; never over an existing file):
    /// everything in it, read from one snapshot, so it is consistent while daemons run. Its
    /// secrets stay sealed with the current store key: keep the key with the backup. Restore
    /// by pointing `approval.store` at it, or with `gatectl --store FILE store copy --to ...`.
    Backup { file: PathBuf },
    /// Copy the whole store (clients, keys, nonces, grants, PKI, states) into an empty one:
    /// a host's SQLite store into a cluster's PostgreSQL database, say. Its secrets are sealed
    /// there with --to-key-file (required for PostgreSQL).
    Copy {
        /// The store to fill: a file path or a `postgres://` URL.
        #[arg(long, value_parser = crate::parse_store)]
        to: StoreLocation,
        /// Its password (PostgreSQL), in a file only its owner may read.
        #[arg(long)]
        to_password_file: Option<PathBuf>,
        /// The CA of its certificate (PostgreSQL over TLS).
        #[arg(long)]
        to_ca_file: Option<PathBuf>,
        /// The store key to seal the secrets with there.
        #[arg(long)]
        to_key_file: Option<PathBuf>,
    },
}

/// # Errors
/// The key file exists or cannot be written; the store cannot be opened or resealed.
pub fn run(command: StoreCommand, paths: &Paths) -> anyhow::Result<()> {
    match command {
        StoreCommand::NewKey { file } => {
            let key = StoreKey::generate()?;
            key.write_new(&file).with_context(|| format!("write the store key {}", file.display()))?;
            println!(
                "made store key {} in {} (mode 0600): copy it to every host that opens the store",
                key.id(),
                file.display()
            );
        }
        StoreCommand::Copy { to, to_password_file, to_ca_file, to_key_file } => {
            let from = paths.store.open()?;
            // The secrets copied open with this store's key, and are sealed anew with the target's.
            let access = StoreAccess {
                password_file: to_password_file,
                ca_file: to_ca_file,
                previous_key_file: to_key_file.as_ref().and(paths.store.access.key_file.clone()),
                key_file: to_key_file,
            };
            let (mut into, _) = to.open_or_create(&access).with_context(|| format!("open the store {to}"))?;
            let rows = from.copy_into(&mut into).with_context(|| format!("copy into {to}"))?;
            println!("copied {rows} row(s) into {to}; point every host's approval.store at it");
        }
        StoreCommand::Backup { file } => {
            if file.exists() {
                anyhow::bail!("{} exists: a backup is written only into a new file", file.display());
            }
            let from = paths.store.open()?;
            let to = StoreLocation::File(file.clone());
            // Sealed as the store is: with its current key (a PostgreSQL store's password and
            // CA do not apply to a file).
            let access = StoreAccess {
                password_file: None,
                ca_file: None,
                key_file: paths.store.access.key_file.clone(),
                previous_key_file: paths.store.access.previous_key_file.clone(),
            };
            let (mut into, _) = to.open_or_create(&access).with_context(|| format!("make {}", file.display()))?;
            match from.copy_into(&mut into) {
                Ok(rows) => println!("backed up {rows} row(s) from {} into {}", paths.store.location, file.display()),
                Err(e) => {
                    drop(into);
                    let _ = std::fs::remove_file(&file);
                    return Err(anyhow::Error::new(e).context(format!("back up into {}", file.display())));
                }
            }
        }
        StoreCommand::Reseal => {
            let mut store = paths.store.open()?;
            let resealed = store.reseal().context("reseal the store's secrets")?;
            println!("sealed {resealed} secret(s) anew with the current store key");
        }
    }
    Ok(())
}
