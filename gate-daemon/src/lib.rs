//! The privileged gate daemon: puts the XDP gate in place, owns its pinned state and keeps the
//! lease maps clean.
//!
//! # Layout
//! - [`cli`]: the command line.
//! - [`config`]: the TOML config and its validation; [`config_reference`]: its keys for gate.toml(5).
//! - [`program`]: the embedded programs (XDP, the backstop), loaded against the pinned maps.
//! - [`install`]: take over or create pinned state, gate the ports, attach, roll back on failure.
//! - [`cgroup`]: cgroup v2 for the delivery backstop and the servers it guards.
//! - [`links`]: re-attaches to a listed interface that was deleted and re-created.
//! - [`sweeper`]: deletes leases long dead, so the maps do not fill.
//! - [`writers`]: the maps' handle for approvals and the other writers; the sweeper yields to it.
//! - [`approval`]: the approval service and its internal HTTP API.
//! - [`openvpn`]: OpenVPN servers behind the gate, supervised, with session-bound logins.
//! - [`reload`]: SIGHUP: the config read again, what changed applied, the rest untouched.
//! - [`metrics`]: the metrics page, read at each scrape from the maps and the service.
//! - [`shutdown`]: self-shutdown notifications and the operator's states, published to every part.
//! - [`daemon`]: the run loop: install, sweep, stop on a signal leaving the gate closed.
pub mod approval;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod config_reference;
pub mod daemon;
pub mod install;
pub mod links;
pub mod metrics;
pub mod openvpn;
pub mod program;
pub mod reload;
pub mod shutdown;
pub mod sweeper;
pub mod writers;
