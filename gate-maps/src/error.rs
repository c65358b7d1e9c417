//! Errors of the pinned state, each naming the map or path and what the kernel said.
use std::{io, net::IpAddr, path::PathBuf};

use aya::maps::MapError;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "no gate at {path}: nothing is pinned there (is gate-daemon running? --config or --pin-dir names its pin dir)"
    )]
    NotFound { path: PathBuf },
    #[error("{path}: permission denied: the gate's maps are root's (run this as root)")]
    Denied { path: PathBuf },
    #[error("pinned map {path}: {source}")]
    Unreadable { path: PathBuf, source: MapError },
    #[error("pinned map {path} does not look like gate's {map}: {reason}")]
    Incompatible { path: PathBuf, map: &'static str, reason: String },
    #[error("map {map}: {operation}: {source}")]
    Map { map: &'static str, operation: &'static str, source: MapError },
    #[error("no gate named {name:?} (known: {known})")]
    NoSuchGate { name: String, known: String },
    #[error("lease map {map} is full ({capacity} leases); cannot open the gate for {addr}")]
    Full { map: &'static str, capacity: u32, addr: IpAddr },
    #[error("lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("gate table full: at most {max} gates and {max_ports} gated ports")]
    TooManyGates { max: u32, max_ports: u32 },
    #[error("gate name {name:?} is longer than {max} bytes")]
    NameTooLong { name: String, max: usize },
}
