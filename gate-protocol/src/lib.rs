//! The gate approval protocol (docs/protocol.md), shared by the client and the daemon so both
//! speak from one definition: wire types, canonical strings, and each layer's seal, sign and
//! verify. The daemon decides the order of the checks (cheap before expensive); this crate
//! offers each check on its own.
//!
//! # Layout
//! - [`encoding`]: strict base64 and hex.
//! - [`keys`]: client and server key material, with secrets zeroized on drop.
//! - [`wire`]: header names, limits, the request body and the sealed payload.
//! - [`canonical`]: the exact strings the HMACs and the RSA signature cover.
//! - [`request`]: building a request (client) and checking each of its layers (server).
//! - [`shared_box`]: the NaCl box between two keys, its key agreement done once.
//! - [`approval`]: sealing the answer (server) and opening it (client).
//! - [`profile`]: the file a client holds.
//! - [`profile_update`]: what changes in it after a key or CA rotation, signed for it.
//! - [`error`]: the one error type, [`ProtocolError`].
pub mod approval;
pub mod canonical;
pub mod encoding;
pub mod error;
pub mod keys;
pub mod profile;
pub mod profile_update;
pub mod request;
pub mod shared_box;
pub mod wire;

pub use error::ProtocolError;
// Re-exported so every crate speaks the same key types.
pub use {crypto_box, rand, rsa};
