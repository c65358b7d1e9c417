//! `gatectl store`: the store's own upkeep. A store key is made once for a cluster (or a host)
//! and copied to every host; `reseal` seals every secret in the store with the current key
//! (after a key is first set, and to finish a rotation).
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use gate_store::StoreKey;

use crate::paths::Paths;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Make a new store key in FILE (64 hex digits, mode 0600; never over an existing file).
    NewKey { file: PathBuf },
    /// Seal every secret in the store with the current store key (`approval.store_key_file`,
    /// or --store-key-file): those written before the store had a key, and those sealed with
    /// the previous key (`approval.store_previous_key_file`) of a rotation.
    Reseal,
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
        StoreCommand::Reseal => {
            let mut store = paths.store.open()?;
            let resealed = store.reseal().context("reseal the store's secrets")?;
            println!("sealed {resealed} secret(s) anew with the current store key");
        }
    }
    Ok(())
}
