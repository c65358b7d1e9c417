//! The gate's kernel side: one object, three entry points over one set of maps and one lease
//! decision.
//!
//! - [`xdp::gate`] and [`xdp::gate_l3`]: the fast path. XDP on each listed interface (Ethernet
//!   frames, or packets that start with their IP header on layer-3 devices) drops every packet
//!   to a gated (protocol, port) unless its source holds a live lease.
//! - [`backstop::backstop`]: the guarantee. A `cgroup_skb/ingress` program that judges each
//!   packet where it meets a socket, by the socket's own port, whatever path the packet took
//!   (decapsulated, NATed after XDP, through an interface without XDP).
//!
//! The maps live in [`maps`], the lease decision both hooks share in [`lease`]; only XDP writes
//! the per-CPU cache (docs/architecture.md, "Fast paths"), since XDP runs never interleave on a
//! CPU while a socket-level hook can be interrupted by one.
#![no_std]
#![no_main]

mod backstop;
mod lease;
mod maps;
mod parse;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects programs that could reach a panic, so this never runs.
    unsafe { core::hint::unreachable_unchecked() }
}
