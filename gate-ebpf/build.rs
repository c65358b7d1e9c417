//! Rebuild the program when `bpf-linker` changes: cargo cannot see that dependency by itself.
fn main() {
    let bpf_linker = which::which("bpf-linker").expect("bpf-linker not found: run scripts/setup");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
