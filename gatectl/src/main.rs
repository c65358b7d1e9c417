//! `gatectl`: see the library.
fn main() -> std::process::ExitCode {
    gatectl::main()
}
