//! The gate client: asks a gate host for approval with an enrolled profile and trusts the
//! answer only after checking its HMAC, its box and that it answers this very request.
//!
//! - [`cli`]: the command line.
//! - [`transport`]: HTTP/1.1 to the server named in the profile.
//! - [`connect`]: one approval round trip.
//! - [`vpn`]: OpenVPN up with the approval's session token, and down.
//! - [`update`]: a profile update (after a key or CA rotation) folded into the profile.
pub mod cli;
pub mod connect;
pub mod transport;
pub mod update;
pub mod vpn;
