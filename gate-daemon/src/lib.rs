//! The privileged gate daemon: puts the XDP gate in place, owns its pinned state and keeps the
//! lease maps clean.
//!
//! # Layout
//! - [`config`]: the TOML config and its validation.
//! - [`install`]: load, take over or create pinned state, attach, roll back on failure.
//! - [`sweeper`]: deletes leases long dead, so the maps do not fill.
//! - [`daemon`]: the run loop: install, sweep, stop on a signal leaving the gate closed.
pub mod config;
pub mod daemon;
pub mod install;
pub mod sweeper;

/// The XDP program, built by build.rs from `gate-ebpf`.
pub const PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gate"));
