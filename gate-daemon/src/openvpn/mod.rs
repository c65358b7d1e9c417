//! OpenVPN servers behind the gate: the daemon writes each server's config and PKI files,
//! starts it, restarts it with backoff when it dies, stops it on shutdown, and answers its
//! client authentications over the management interface: a client gets in only with the
//! one-time session token of its own approval.
//!
//! - [`server_conf`]: the generated server config and the checks that come before it.
//! - [`process`]: a server's process, started here or adopted from a dead daemon.
//! - [`management`]: the management-interface protocol and the authorization of clients.
//! - [`supervisor`]: one task per server: files, process, restarts, status.
//! - [`tun`]: each server's tun device, made for its user, so the server never runs as root.
pub mod management;
pub mod process;
pub mod server_conf;
pub mod supervisor;
pub mod tun;

pub use supervisor::{Supervisors, start_all};
