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
    /// Set up, build, package, and run every test (needs root: namespaces, XDP, bpffs; the
    /// packages' test installs and purges them on this machine).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and demonstrate the real gate between two network namespaces.
    Demo,
    /// Set up, build (release) and make the Debian packages `gate` and `gate-client` in
    /// target/debian/, with their man pages, completions and example configs (gate-docs), then
    /// check them with lintian (no error allowed).
    Package,
    /// Set up, build, and run benchmarks; writes figures to stdout for docs/benchmarks.md.
    Bench {
        /// Which benchmark: xdp, approval, netfilter, layers (criterion), clients, leases, storm, cluster.
        #[arg(default_value = "xdp")]
        which: String,
        /// Extra arguments for the benchmark binary.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and fuzz: the differential tests of the XDP program and of the backstop for
    /// longer than the suite does (300,000 frames and 4,000 datagrams from fixed seeds), then every fuzz target in
    /// `fuzz/` (libFuzzer, coverage-guided) from its committed corpus. Stops at the first
    /// disagreement or crash, and says where its input was saved.
    Fuzz {
        /// Only build the fuzz targets and run each briefly (what `cargo xtask test` does).
        #[arg(long)]
        quick: bool,
        /// Frames the differential test generates (their cut-short copies come on top).
        #[arg(long, default_value_t = 50_000_000)]
        frames: u64,
        /// Datagrams the backstop's differential test sends for real (~2 ms each).
        #[arg(long, default_value_t = 100_000)]
        datagrams: u64,
        /// The differential tests' seed (a new one each run by default; printed, to replay a run).
        #[arg(long)]
        seed: Option<u64>,
        /// Seconds each fuzz target runs (10 with --quick).
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Run only these fuzz targets (default: all).
        #[arg(long = "target")]
        targets: Vec<String>,
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

/// The packages `package` makes: (Cargo package with the deb metadata, Debian package).
const PACKAGES: [(&str, &str); 2] = [("gate-daemon", "gate"), ("gate-client", "gate-client")];

/// Builds the packaged binaries in release, writes the generated files (gate-docs) into
/// target/release/gate-package/, makes each package with cargo-deb (from those binaries: no
/// second build) and runs lintian on it; any lintian error fails.
fn package() -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "--release", "--bins"]);
    for crate_name in ["gate-daemon", "gate-web", "gatectl", "gate-client", "gate-docs"] {
        build.args(["-p", crate_name]);
    }
    run(&mut build)?;
    // Under the release dir: cargo-deb takes `target/release/...` assets as build products.
    let generated = root().join("target/release/gate-package");
    if generated.exists() {
        std::fs::remove_dir_all(&generated).with_context(|| format!("clear {}", generated.display()))?;
    }
    run(Command::new(root().join("target/release/gate-docs")).arg(&generated))?;
    // Debian's man pages are gzipped, reproducibly (-n: no name or time in the header); cargo-deb
    // leaves build products as they are.
    let pages: Vec<PathBuf> = std::fs::read_dir(generated.join("man"))
        .context("the generated man pages")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .context("list the generated man pages")?;
    run(Command::new("gzip").args(["-9", "-n", "-f"]).args(&pages))?;
    let version = env!("CARGO_PKG_VERSION");
    for (crate_name, package) in PACKAGES {
        let deb = root().join(format!("target/debian/{package}_{version}-1_amd64.deb"));
        run(cargo().args(["deb", "--no-build", "-p", crate_name, "--output"]).arg(&deb))?;
        // Errors fail; warnings are shown.
        run(Command::new("lintian").args(["--fail-on", "error", "--tag-display-limit", "0"]).arg(&deb))?;
    }
    Ok(())
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

/// The daemon's RSA-4096 PSS-SHA512 verification (the layers bench's median) beside `openssl
/// speed rsa4096`'s verify time, measured right after it on the same machine, and their ratio.
fn rsa_beside_openssl(started: std::time::SystemTime) -> anyhow::Result<()> {
    let estimates = root().join("target/criterion/server/rsa_pss_verify/new/estimates.json");
    let fresh = std::fs::metadata(&estimates).and_then(|m| m.modified()).is_ok_and(|t| t >= started);
    if !fresh {
        println!("\n(rsa_pss_verify did not run this time: no comparison with openssl)");
        return Ok(());
    }
    let text = std::fs::read_to_string(&estimates).with_context(|| format!("read {}", estimates.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).context("criterion's estimates")?;
    let ours_us = json["median"]["point_estimate"].as_f64().context("no median in the estimates")? / 1000.0;
    let out =
        Command::new("openssl").args(["speed", "-seconds", "5", "rsa4096"]).output().context("run openssl speed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "rsa 4096 bits 0.003621s 0.000058s    276.2  17198.3": sign and verify time (to the
    // microsecond only), then per second: the verifications per second are the precise figure.
    let verify_per_s: f64 = text
        .lines()
        .find(|l| l.starts_with("rsa 4096 bits"))
        .and_then(|l| l.split_whitespace().nth(6))
        .and_then(|v| v.parse().ok())
        .context("no 'rsa 4096 bits' line in openssl speed's output")?;
    let openssl_us = 1e6 / verify_per_s;
    println!("\nRSA-4096 PSS-SHA512 verify, same machine, same run:");
    println!("  gate (median)           {ours_us:8.1} us");
    println!("  openssl speed rsa4096   {openssl_us:8.1} us");
    println!("  ratio                   {:8.2}x  (goal: at most 1.30x)", ours_us / openssl_us);
    Ok(())
}

/// The XDP program against its model for `frames` generated frames, and the backstop against
/// its model for `datagrams` sent for real (see docs/testing.md).
fn differential(frames: u64, datagrams: u64, seed: Option<u64>) -> anyhow::Result<()> {
    let seed = seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        u64::from(now.subsec_nanos()) ^ now.as_secs()
    });
    println!("differential test of the XDP program: {frames} frames, seed {seed} (--seed {seed} replays it)");
    run(cargo()
        .args(["test", "--release", "-p", "gate-tests", "--test", "differential", "--", "--nocapture"])
        .env("GATE_DIFF_FRAMES", frames.to_string())
        .env("GATE_DIFF_SEED", seed.to_string()))?;
    println!("differential test of the backstop: {datagrams} datagrams, seed {seed} (--seed {seed} replays it)");
    // A debug build: the daemon it starts is the one `build(false)` made, and the kernel's
    // delivery, not the test, takes the time.
    run(cargo()
        .args(["test", "-p", "gate-tests", "--test", "backstop_differential", "--", "--nocapture"])
        .env("GATE_BACKSTOP_DIFF_DATAGRAMS", datagrams.to_string())
        .env("GATE_BACKSTOP_DIFF_SEED", seed.to_string()))
}

/// The fuzz targets in `fuzz/fuzz_targets/`.
const FUZZ_TARGETS: [&str; 9] = [
    "request",
    "approval",
    "profile",
    "profile_update",
    "notification",
    "config",
    "management",
    "http_response",
    "front",
];

/// Builds the fuzz targets with libFuzzer's coverage instrumentation (the flags cargo-fuzz
/// passes, all of them stable; no sanitizer, so no nightly toolchain), then runs each for
/// `seconds` from its committed seeds (`fuzz/corpus/<target>`) and what earlier runs found
/// (`target/fuzz/corpus/<target>`). A crash stops the run; libFuzzer saves the input under
/// `target/fuzz/artifacts/<target>/`.
fn fuzz_targets(only: &[String], seconds: u64) -> anyhow::Result<()> {
    let targets: Vec<&str> =
        FUZZ_TARGETS.into_iter().filter(|t| only.is_empty() || only.iter().any(|o| o == t)).collect();
    if let Some(unknown) = only.iter().find(|o| !FUZZ_TARGETS.contains(&o.as_str())) {
        bail!("unknown fuzz target {unknown:?} (known: {})", FUZZ_TARGETS.join(", "));
    }
    let host = host_triple()?;
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg=fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
    .join("\x1f");
    let mut build = cargo();
    // An explicit --target keeps the flags off build scripts and proc macros.
    build.args([
        "build",
        "--release",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--target",
        &host,
        "--target-dir",
        "target/fuzz",
    ]);
    for target in &targets {
        build.args(["--bin", target]);
    }
    run(build.env("CARGO_ENCODED_RUSTFLAGS", flags))?;
    for target in targets {
        let found = root().join("target/fuzz/corpus").join(target);
        let artifacts = root().join("target/fuzz/artifacts").join(target);
        std::fs::create_dir_all(&found)?;
        std::fs::create_dir_all(&artifacts)?;
        println!("fuzz target {target}: {seconds} s");
        run(Command::new(root().join("target/fuzz").join(&host).join("release").join(target))
            .arg(&found)
            .arg(root().join("fuzz/corpus").join(target))
            .arg(format!("-max_total_time={seconds}"))
            .args(["-max_len=20000", "-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1"])
            .arg(format!("-artifact_prefix={}/", artifacts.display())))?;
    }
    Ok(())
}

/// The triple rustc builds for by default.
fn host_triple() -> anyhow::Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("run rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup(),
        Task::Test { args } => {
            setup()?;
            build(false)?;
            package()?;
            test(&args)?;
            // The whole suite also keeps the fuzz targets building and replays their corpora.
            if args.is_empty() { fuzz_targets(&[], 10) } else { Ok(()) }
        }
        Task::Package => {
            setup()?;
            package()
        }
        Task::Demo => {
            setup()?;
            build(false)?;
            run(&mut Command::new(root().join("target/debug/gate-demo")))
        }
        Task::Fuzz { quick, frames, datagrams, seed, seconds, targets } => {
            setup()?;
            if quick {
                return fuzz_targets(&targets, 10);
            }
            build(false)?;
            differential(frames, datagrams, seed)?;
            fuzz_targets(&targets, seconds)
        }
        Task::Bench { which, args } => {
            setup()?;
            build(true)?;
            match which.as_str() {
                "xdp" => run(Command::new(root().join("target/release/gate-bench-xdp")).args(args)),
                "approval" => run(Command::new(root().join("target/release/gate-bench-approval")).args(args)),
                "netfilter" => run(Command::new(root().join("target/release/gate-bench-netfilter")).args(args)),
                "clients" => run(Command::new(root().join("target/release/gate-bench-clients")).args(args)),
                "leases" => run(Command::new(root().join("target/release/gate-bench-leases")).args(args)),
                "storm" => run(Command::new(root().join("target/release/gate-bench-storm")).args(args)),
                "cluster" => run(Command::new(root().join("target/release/gate-bench-cluster")).args(args)),
                "layers" => {
                    let started = std::time::SystemTime::now();
                    let mut bench = Command::new("cargo");
                    bench.args(["bench", "-p", "gate-protocol", "--bench", "layers"]);
                    if !args.is_empty() {
                        bench.arg("--").args(&args);
                    }
                    run(&mut bench)?;
                    rsa_beside_openssl(started)
                }
                other => {
                    bail!(
                        "unknown benchmark {other:?} (known: xdp, approval, netfilter, layers, clients, leases, storm, cluster)"
                    )
                }
            }
        }
    }
}
