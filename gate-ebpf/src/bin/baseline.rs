//! Control programs the gate's cost is measured against (`cargo xtask bench xdp`):
//! - `pass` only returns XDP_PASS: the cost of running any XDP program at all;
//! - `drop` only returns XDP_DROP: with live frames, the receive path's own cost for a frame
//!   dropped at XDP (`cargo xtask bench netfilter --nic`);
//! - `lookup` also does one hash-map lookup on an 8-byte key read from the packet, as the gate's
//!   IPv4 lease lookup does: the floor for any gate that matches exact addresses;
//! - `redirect` sends every frame out of the device in `TX[0]`: run with BPF_PROG_TEST_RUN's live
//!   frames, a traffic generator that hands the peer of a veth XDP frames, not socket buffers
//!   (`cargo xtask bench netfilter`);
//! - `redirect_thinned` sends one frame in `ONE_IN[0]` that way and drops the rest in the sender:
//!   the same generator, paced evenly below its full speed;
//! - `redirect_random` gives each frame a random source (see [`randomize_source`], drawn by
//!   [`random_u32`]) and sends it out as `redirect` does: a spoofed flood from millions of
//!   sources;
//! - `random_source` gives each frame a random source and tail-calls `NEXT[0]` (the gate's
//!   program, or `drop`), or passes it to the stack when `NEXT` is empty: with live frames on the
//!   gateway's own interface, a NIC-like receive path for a spoofed flood.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::ProgramArray,
    btf_maps::{Array, HashMap, PerCpuArray},
    helpers::bpf_get_prandom_u32,
    macros::{btf_map, map, xdp},
    maps::DevMap,
    programs::XdpContext,
};

#[btf_map]
static CONTROL: HashMap<[u8; 8], u64, 1024> = HashMap::new();

#[xdp]
pub fn pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Looks up bytes 26..34 of the frame (an IPv4 source and destination) and passes either way.
#[xdp]
pub fn lookup(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 34 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: bytes [26, 34) were just checked to lie inside the packet; [u8; 8] has alignment 1.
    let key = unsafe { *((start + 26) as *const [u8; 8]) };
    if CONTROL.get_ptr(&key).is_some() { xdp_action::XDP_PASS } else { xdp_action::XDP_PASS }
}

#[map]
static TX: DevMap = DevMap::with_max_entries(1, 0);

#[xdp]
pub fn redirect(_ctx: XdpContext) -> u32 {
    TX.redirect(0, 0).unwrap_or(xdp_action::XDP_ABORTED)
}

/// `redirect_thinned` sends one frame in this many (0 or 1: every frame).
#[btf_map]
static ONE_IN: Array<u32, 1> = Array::new();

/// Frames seen since the last one sent, per CPU.
#[btf_map]
static SKIPPED: PerCpuArray<u32, 1> = PerCpuArray::new();

#[xdp]
pub fn redirect_thinned(_ctx: XdpContext) -> u32 {
    let one_in = ONE_IN.get(0).copied().unwrap_or(1);
    let Some(skipped) = SKIPPED.get_ptr_mut(0) else { return xdp_action::XDP_DROP };
    // SAFETY: this CPU's own slot, valid for this run.
    let skipped = unsafe { &mut *skipped };
    *skipped += 1;
    if *skipped < one_in {
        return xdp_action::XDP_DROP;
    }
    *skipped = 0;
    TX.redirect(0, 0).unwrap_or(xdp_action::XDP_ABORTED)
}

#[xdp]
pub fn redirect_random(ctx: XdpContext) -> u32 {
    if !randomize_source(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    TX.redirect(0, 0).unwrap_or(xdp_action::XDP_ABORTED)
}

/// The program `random_source` hands each frame to: the gate's, or none (the stack's turn).
#[btf_map]
static NEXT: ProgramArray<1> = ProgramArray::new();

#[xdp]
pub fn random_source(ctx: XdpContext) -> u32 {
    if !randomize_source(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: a tail call only replaces this program with the one in NEXT[0]; when the slot is
    // empty it returns here and the frame goes to the stack.
    unsafe { NEXT.tail_call(&ctx, 0) };
    xdp_action::XDP_PASS
}

/// This CPU's xorshift64 state for [`random_u32`]; 0 until its first draw.
#[btf_map]
static RANDOM_STATE: PerCpuArray<u64, 1> = PerCpuArray::new();

/// 32 random bits from this CPU's xorshift64 state: a few inlined instructions a frame, where
/// `bpf_get_prandom_u32` is a helper call, whose call and return some hosts' speculation
/// mitigations make dear. Making the flood is the harness's work, not a receive path's (a NIC
/// hands over a spoofed frame at no cost to its core), so it should cost the rows as little as
/// it can. The helper seeds each CPU's state once.
#[inline(always)]
fn random_u32() -> u32 {
    let Some(state) = RANDOM_STATE.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's own slot, valid for this run; XDP runs do not interleave on a CPU.
    let mut x = unsafe { *state };
    if x == 0 {
        // SAFETY: the helper has no preconditions.
        x = u64::from(unsafe { bpf_get_prandom_u32() }) << 32 | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    // SAFETY: as above.
    unsafe { *state = x };
    (x >> 32) as u32
}

/// Random bits of the source: 2^22 = 4,194,304 addresses per family.
const RANDOM_SOURCE_BITS: u32 = 0x003f_ffff;

/// Replaces the source address of an untagged IPv4 or IPv6 frame with a random one and fixes the
/// checksums it is in: an IPv4 source's low 22 bits (a source in 100.64.0.0/10 stays in it),
/// an IPv6 source's last 32 bits (to one of 2^22), and the IPv4 header's or the IPv6 UDP
/// checksum (an IPv4 flood frame carries no UDP checksum).
/// False for any other frame.
#[inline(always)]
fn randomize_source(ctx: &XdpContext) -> bool {
    let start = ctx.data();
    // Ethernet, an IPv6 header and UDP's first 8 bytes: the longest reach below.
    if start + 62 > ctx.data_end() {
        return false;
    }
    let random = random_u32() & RANDOM_SOURCE_BITS;
    // SAFETY: all offsets below lie inside the 62 bytes just checked; u8 has alignment 1.
    unsafe {
        let byte = |offset: usize| *((start + offset) as *const u8);
        let ethertype = u16::from_be_bytes([byte(12), byte(13)]);
        let (source_low, checksum) = match ethertype {
            0x0800 => (14 + 12, 14 + 10),
            0x86dd => (14 + 8 + 12, 14 + 40 + 6),
            _ => return false,
        };
        let old = [
            u16::from_be_bytes([byte(source_low), byte(source_low + 1)]),
            u16::from_be_bytes([byte(source_low + 2), byte(source_low + 3)]),
        ];
        let new = if ethertype == 0x0800 {
            let high = u32::from_be_bytes([0, 0, byte(source_low), byte(source_low + 1)]) & 0xffc0;
            [(high | (random >> 16)) as u16, random as u16]
        } else {
            [(random >> 16) as u16, random as u16]
        };
        let put = |offset: usize, value: u16| {
            let [high, low] = value.to_be_bytes();
            *((start + offset) as *mut u8) = high;
            *((start + offset + 1) as *mut u8) = low;
        };
        put(source_low, new[0]);
        put(source_low + 2, new[1]);
        // RFC 1624: HC' = ~(~HC + ~m + m') over each changed 16-bit word.
        let sum = u32::from(!u16::from_be_bytes([byte(checksum), byte(checksum + 1)]))
            + u32::from(!old[0])
            + u32::from(!old[1])
            + u32::from(new[0])
            + u32::from(new[1]);
        let folded = (sum & 0xffff) + (sum >> 16);
        let mut updated = !(((folded & 0xffff) + (folded >> 16)) as u16);
        // A UDP checksum of 0 means "none" (not allowed over IPv6): its one's complement twin.
        if ethertype == 0x86dd && updated == 0 {
            updated = 0xffff;
        }
        put(checksum, updated);
    }
    true
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects programs that could reach a panic, so this never runs.
    unsafe { core::hint::unreachable_unchecked() }
}
