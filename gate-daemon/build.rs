//! Builds the XDP program (`gate-ebpf`) for the BPF target, so that a plain `cargo build`
//! produces a daemon with its program embedded.
//!
//! The program is built with the stable toolchain, whose LLVM matches the one bpf-linker is built
//! against (scripts/setup reads it off this same toolchain). Rebuilding `core` for the BPF target
//! needs `-Z build-std`, so the child build alone is allowed unstable flags.
use std::env;

const EBPF_TOOLCHAIN: &str = "stable";

fn main() -> aya_build::Result<()> {
    // SAFETY: a build script is single-threaded here; the variable reaches only the child cargo.
    #[expect(unsafe_code, reason = "env::set_var is unsafe in edition 2024")]
    unsafe {
        env::set_var("RUSTC_BOOTSTRAP", "1");
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../gate-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "gate-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
