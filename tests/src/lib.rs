//! Helpers that build the world a gate test needs, each in one line: network namespaces joined by
//! veth, a pin directory of its own, the real daemon and gatectl binaries, crafted frames and
//! probes that tell a reply from silence from a refusal.
//!
//! Everything here is named uniquely per test process and removed on drop, also when a test
//! panics; leftovers of killed runs are swept when the next run starts.
//!
//! # Layout
//! - [`unique`]: names no two runs share, and the sweep of leftovers.
//! - [`netns`]: network namespaces, veth links, running code or commands inside a namespace.
//! - [`bed`]: [`bed::TestBed`], a gateway and a client namespace with addresses and a pin dir.
//! - [`cgroup`]: a cgroup v2 directory of the test's own, and listeners running inside it.
//! - [`daemon`]: the real `gate-daemon` and `gatectl` binaries.
//! - [`front`]: the front (`gate-web`), curl against it, raw bytes over TLS.
//! - [`frames`]: crafted Ethernet frames for `BPF_PROG_TEST_RUN`.
//! - [`loaded`]: the daemon's program loaded against a private pin dir, for `BPF_PROG_TEST_RUN`.
//! - [`reference`], [`differential`]: an independent model of the program's verdict (on
//!   `etherparse`), and generated frames run through both.
//! - [`probe`]: UDP and TCP probes and the listeners they talk to.
//! - [`tun`]: a tun device held by the test, to send and receive bare IP packets.
//! - [`approval`]: enrolled clients and approval requests, valid or bent, sent to the daemon.
//! - [`cluster`]: a PostgreSQL store shared by gate hosts, and the hosts on it.
//! - [`metrics`]: the daemon's and the front's metrics pages, scraped.
//! - [`measure`]: what the benchmark binaries share (arguments, medians, a scratch directory).
pub mod approval;
pub mod bed;
pub mod cgroup;
pub mod cluster;
pub mod daemon;
pub mod differential;
pub mod frames;
pub mod front;
pub mod loaded;
pub mod measure;
pub mod metrics;
pub mod netns;
pub mod probe;
pub mod reference;
pub mod tun;
pub mod unique;
