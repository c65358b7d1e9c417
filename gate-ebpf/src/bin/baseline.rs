//! Control programs the gate's cost is measured against (`cargo xtask bench xdp`):
//! - `pass` only returns XDP_PASS: the cost of running any XDP program at all;
//! - `lookup` also does one hash-map lookup on an 8-byte key read from the packet, as the gate's
//!   IPv4 lease lookup does: the floor for any gate that matches exact addresses;
//! - `redirect` sends every frame out of the device in `TX[0]`: run with BPF_PROG_TEST_RUN's live
//!   frames, a traffic generator that hands the peer of a veth XDP frames, not socket buffers
//!   (`cargo xtask bench netfilter`);
//! - `redirect_thinned` sends one frame in `ONE_IN[0]` that way and drops the rest in the sender:
//!   the same generator, paced evenly below its full speed.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, HashMap, PerCpuArray},
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects programs that could reach a panic, so this never runs.
    unsafe { core::hint::unreachable_unchecked() }
}
