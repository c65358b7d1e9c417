//! `gate-web`: the public front. Terminates TLS, answers only the routes in its static table,
//! parses each request into typed values and sends the daemon a new request built from them,
//! adding the client's observed address and the mark that it did so. Runs as its own
//! unprivileged user with no BPF capability and no client secrets.
//!
//! - [`cli`]: the command line.
//! - [`config`]: the TOML config; [`config_reference`]: its keys for gate-web.toml(5).
//! - [`tls`]: the TLS identity (configured, or self-signed on first run).
//! - [`privileges`]: dropping root.
//! - [`routes`]: the route table and the rebuilding of requests.
//! - [`forward`]: the daemon's internal socket.
//! - [`ratelimit`]: approvals per source.
//! - [`admission`]: who may open a connection: caps per source and in all, a handshake rate.
//! - [`tally`]: refusals counted, and logged at a bounded rate.
//! - [`metrics`]: the metrics page, from the tally and the admission.
//! - [`server`]: connections, timeouts, the raw head check.
//! - [`shutdown`]: the daemon's shutdown states (www, web).
//! - [`reload`]: SIGHUP: the certificate, the limits and the trusted proxies read again.
pub mod admission;
pub mod cli;
pub mod config;
pub mod config_reference;
pub mod forward;
pub mod metrics;
pub mod privileges;
pub mod ratelimit;
pub mod reload;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod tally;
pub mod tls;
