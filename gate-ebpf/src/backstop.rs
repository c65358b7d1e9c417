//! The guarantee: a `cgroup_skb/ingress` program, run where a packet meets a socket of a process
//! in the cgroups it is attached to. It judges by the socket's own protocol and local port, so
//! the port is the one after any NAT, and by the packet's source, so a packet that reached the
//! socket by a path XDP never saw (an unlisted or re-created interface, a decapsulated tunnel, a
//! redirect) still needs a live lease. It reads the lease maps and never the per-CPU cache,
//! which only XDP writes.
use aya_ebpf::{helpers::generated::bpf_sk_fullsock, macros::cgroup_skb, programs::SkBuffContext};
use gate_common::{IPPROTO_TCP, Reason, port_index};

use crate::{
    lease::{self, Address},
    maps::{BACKSTOP_STATS, count, gate_of},
};

const NO_GATE: u32 = 0;
/// `cgroup_skb` verdicts.
const DROP: i32 = 0;
const PASS: i32 = 1;

#[cgroup_skb(ingress)]
pub fn backstop(ctx: SkBuffContext) -> i32 {
    let (gate, reason) = classify(&ctx);
    count(&BACKSTOP_STATS, gate, reason);
    if reason.drops() { DROP } else { PASS }
}

#[inline(always)]
fn classify(ctx: &SkBuffContext) -> (u32, Reason) {
    // The socket's local port, host order (the kernel puts it there for this hook).
    let port = ctx.skb.local_port() as u16;
    let Some(index) = port_index(socket_protocol(ctx), port.to_be_bytes()) else {
        return (NO_GATE, Reason::NotGated);
    };
    let gate = gate_of(index);
    if gate == NO_GATE {
        return (NO_GATE, Reason::NotGated);
    }
    (gate, judge_packet_source(ctx, gate))
}

/// The IP protocol of the receiving socket. The kernel runs this hook only for full sockets;
/// were it ever handed another (a request or time-wait socket), that is TCP, the only protocol
/// that has them.
#[inline(always)]
fn socket_protocol(ctx: &SkBuffContext) -> u8 {
    // SAFETY: the context pointer is valid for this run; `sk` is a field the verifier lets this
    // program type read (it may be null, checked below).
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return IPPROTO_TCP;
    }
    // SAFETY: a non-null socket pointer from the context is what the helper takes.
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        return IPPROTO_TCP;
    }
    // SAFETY: a full socket returned by the helper, valid for this run.
    unsafe { (*full).protocol as u8 }
}

/// The verdict for the packet's source on `gate`: the packet data starts at its IP header here.
/// Written as straight-line branches, not an `Option<Address>`: the compiler packs such a value
/// in a way the verifier refuses.
#[inline(always)]
fn judge_packet_source(ctx: &SkBuffContext, gate: u32) -> Reason {
    let Ok(first) = ctx.load::<u8>(0) else { return Reason::DroppedUnparseable };
    match first >> 4 {
        4 => match ctx.load::<[u8; 4]>(12) {
            Ok(addr) => lease::judge_source(gate, &Address::v4(addr)),
            Err(_) => Reason::DroppedUnparseable,
        },
        6 => match ctx.load::<[u8; 16]>(8) {
            Ok(addr) => lease::judge_source(gate, &Address::from_v6(addr)),
            Err(_) => Reason::DroppedUnparseable,
        },
        _ => Reason::DroppedUnparseable,
    }
}
