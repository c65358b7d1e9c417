//! Builds the XDP program (`gate-ebpf`) for the BPF target, so that a plain `cargo build`
//! produces a daemon with its program embedded.
//!
//! Once, quietly: the program is always built in release mode into one directory of its own
//! (`target/ebpf` beside this workspace's `target/`), whatever profile or target directory builds
//! the daemon, so a debug build, a release build and the fuzz targets' build share it (aya-build
//! built it into each `OUT_DIR`, ~65 s each on a fresh machine), and its output is shown only
//! when it fails (aya-build forwarded every line as a `warning:`).
//!
//! The program is built with the stable toolchain, whose LLVM matches the one bpf-linker is built
//! against (scripts/setup reads it off this same toolchain). Rebuilding `core` for the BPF target
//! needs `-Z build-std`, so the child build alone is allowed unstable flags (`RUSTC_BOOTSTRAP`).
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const EBPF_TOOLCHAIN: &str = "stable";
const PACKAGE: &str = "gate-ebpf";

fn main() {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // What the program is built from: its crate, the one it shares with the daemon, and the
    // lock file that pins the rest (aya-ebpf and its kin).
    for watched in ["../gate-ebpf", "../gate-common", "../Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", manifest_dir.join(watched).display());
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("little") => "bpfel-unknown-none",
        Ok("big") => "bpfeb-unknown-none",
        other => panic!("unsupported target endianness {other:?}"),
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    // Shared by every build of the daemon from this source tree; cargo's own lock on it makes
    // two builds at once take turns.
    let target_dir = manifest_dir.join("../target/ebpf");

    let mut cargo = Command::new("rustup");
    cargo
        .args(["run", EBPF_TOOLCHAIN, "cargo", "build", "--package", PACKAGE, "--bins", "--release"])
        .args(["--target", target, "-Z", "build-std=core", "--message-format=json"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        // The outer build's compiler and wrappers are for the host, not for this toolchain.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    let out = cargo.output().unwrap_or_else(|e| panic!("run {cargo:?}: {e} (is rustup installed? scripts/setup)"));
    let messages = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "building the XDP program failed ({cargo:?}):\n{}{}",
        diagnostics(&messages, "error").join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    // The program's own warnings are worth seeing; cargo's progress lines are not.
    for line in diagnostics(&messages, "warning") {
        println!("cargo:warning={line}");
    }
    let executables = executables(&messages);
    assert!(
        !executables.is_empty(),
        "building the XDP program made no binary:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for executable in executables {
        let name = executable.file_name().expect("a file name");
        std::fs::copy(&executable, out_dir.join(name))
            .unwrap_or_else(|e| panic!("copy {} into {}: {e}", executable.display(), out_dir.display()));
    }
}

fn json(messages: &str) -> impl Iterator<Item = serde_json::Value> + '_ {
    messages.lines().filter_map(|line| serde_json::from_str(line).ok())
}

/// The lines of the compiler's diagnostics of `level` in cargo's JSON messages.
fn diagnostics(messages: &str, level: &str) -> Vec<String> {
    json(messages)
        .filter(|m| m["reason"] == "compiler-message" && m["message"]["level"] == level)
        .filter_map(|m| m["message"]["rendered"].as_str().map(str::to_owned))
        .flat_map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// The binaries cargo's JSON messages name (`compiler-artifact` with an `executable`).
fn executables(messages: &str) -> Vec<PathBuf> {
    json(messages)
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter_map(|message| message["executable"].as_str().map(|p| Path::new(p).to_owned()))
        .collect()
}
