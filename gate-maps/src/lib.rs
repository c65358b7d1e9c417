//! Typed access to the gate's pinned BPF state, shared by the daemon, `gatectl` and the tests, so
//! no map name, pin path or key layout is spelled twice.
//!
//! # Layout
//! - [`pins`]: where things live under the bpffs pin directory (maps, links).
//! - [`clock`]: the clock leases are measured in, the same one the XDP program reads.
//! - [`lease`]: building leases from a policy or a TTL.
//! - [`netlink`]: the kernel's view of interfaces (type, attached XDP program) and link changes.
//! - [`batch`]: the kernel's batched map reads and writes, which aya does not wrap.
//! - [`state`]: [`GateState`], the open pinned maps: gates, leases, counters.
//! - [`filter`]: the counting filter in front of the lease maps, as user space keeps it;
//!   `mapped`: the filter's arrays mapped into this process.
//! - [`trace`]: the trace switch and its events (`gatectl trace`).
//! - [`error`]: the errors, [`StateError`].
pub mod batch;
pub mod clock;
pub mod error;
pub mod filter;
pub mod lease;
mod mapped;
pub mod netlink;
pub mod pins;
pub mod state;
pub mod trace;

pub use error::StateError;
pub use filter::FilterLayout;
pub use gate_common as common;
pub use lease::LeasePolicy;
pub use pins::{AttachMode, Attachment, DaemonLock, LockError, PinDir};
pub use state::{
    GateEntry, GateSpec, GateState, LeaseChunks, LeaseCount, LeaseCounts, LeaseEntry, Protocol, StatsTable, Swept,
    SweptLease, lease_address,
};
