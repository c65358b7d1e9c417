//! The approval service: checks a three-layer request (docs/protocol.md) in the documented
//! order, cheap before expensive, opens the gate for the client's addresses and seals the
//! answer. Every refusal looks the same from outside; the reason goes to the log and a counter.
//!
//! - [`reasons`]: why a request was refused, and the counters.
//! - [`clients`]: the in-memory view of enrolled clients, reloaded when the store changes.
//! - [`policy`]: which addresses may be opened.
//! - [`service`]: the checks in order, then leases, then the sealed approval.
//! - [`group_commit`]: the store writes of concurrent approvals, committed together.
//! - [`in_flight`]: the nonces of the approvals being checked.
//! - [`loglimit`]: refusals logged at a bounded rate.
//! - [`http`]: the internal HTTP API on a Unix socket (the front's way in).
//! - [`upkeep`]: ends revoked clients' leases and forgets old nonces and grants.
//! - [`heartbeat`]: this host's heartbeat in the store (`gatectl cluster status`).
//! - [`store_trouble`]: store failures logged as a state.
pub mod clients;
pub mod group_commit;
pub mod heartbeat;
pub mod http;
pub mod in_flight;
pub mod loglimit;
pub mod policy;
pub mod reasons;
pub mod service;
pub mod store_trouble;
pub mod upkeep;

pub use reasons::{Counters, Rejection};
pub use service::{ApprovalService, Incoming};
