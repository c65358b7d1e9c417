//! `cargo xtask <task>`: the project's entry points. Every task that needs the toolchain runs
//! `scripts/setup` first (idempotent, quick when all is in place), so each works on a fresh
//! machine as its first command.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "gate project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every prerequisite (apt packages, rust-src, bpf-linker, bpffs).
    Setup,
    /// Set up, build, and run every test (needs root: namespaces, XDP, bpffs).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and demonstrate the real gate between two network namespaces.
    Demo,
    /// Set up, build, and run benchmarks; writes figures to stdout for docs/benchmarks.md.
    Bench {
        /// Which benchmark: xdp, approval, netfilter, layers (criterion).
        #[arg(default_value = "xdp")]
        which: String,
        /// Extra arguments for the benchmark binary.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.current_dir(root()).status().with_context(|| format!("spawn {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn setup() -> anyhow::Result<()> {
    run(Command::new("bash").arg(root().join("scripts/setup")))
}

fn build(release: bool) -> anyhow::Result<()> {
    let mut cmd = cargo();
    // Default members: gate-ebpf builds only for BPF, through gate-daemon's build.rs.
    cmd.args(["build", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

/// Runs `cargo test`, echoing its output, and closes with one line summing every test binary's
/// result (cargo's own last line is often an empty binary's "0 passed").
fn test(args: &[String]) -> anyhow::Result<()> {
    let mut child = cargo()
        .arg("test")
        .args(args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed, mut ignored) = (0_u64, 0_u64, 0_u64);
    for line in BufReader::new(stdout).lines() {
        let line = line.context("read cargo test output")?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            for part in result.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next().and_then(|n| n.parse::<u64>().ok()), words.next()) {
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait().context("wait for cargo test")?;
    println!("\ntests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed with {status}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup(),
        Task::Test { args } => {
            setup()?;
            build(false)?;
            test(&args)
        }
        Task::Demo => {
            setup()?;
            build(false)?;
            run(&mut Command::new(root().join("target/debug/gate-demo")))
        }
        Task::Bench { which, args } => {
            setup()?;
            build(true)?;
            match which.as_str() {
                "xdp" => run(Command::new(root().join("target/release/gate-bench-xdp")).args(args)),
                "approval" => run(Command::new(root().join("target/release/gate-bench-approval")).args(args)),
                "netfilter" => run(Command::new(root().join("target/release/gate-bench-netfilter")).args(args)),
                "layers" => run(Command::new("cargo").args(["bench", "-p", "gate-protocol", "--bench", "layers"])),
                other => bail!("unknown benchmark {other:?} (known: xdp, approval, netfilter, layers)"),
            }
        }
    }
}
