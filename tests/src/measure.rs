//! What the benchmark binaries share: the machine line they open with, their numeric arguments,
//! medians and percentiles, a process's memory, and a scratch directory removed when it is
//! dropped.
use std::{path::PathBuf, str::FromStr};

use crate::unique;

/// The machine a benchmark ran on, for its first line: the CPU model, the cores and the kernel.
/// Machines of one kind differ (AMD and Intel hosts), so every figure names its CPU.
#[must_use]
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown kernel".into(), |k| format!("Linux {}", k.trim()));
    format!("{model}, {cores} cores; {kernel}")
}

/// The middle value (the upper one of an even count).
///
/// # Panics
/// `values` is empty, or holds values that do not compare (NaN).
#[must_use]
pub fn median<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    values[values.len() / 2]
}

/// The value at fraction `p` (0 to 1) of `values` in order, nearest rank.
///
/// # Panics
/// As [`median`].
#[must_use]
pub fn percentile<T: Copy + PartialOrd>(values: &[T], p: f64) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// The value after `flag` on this process's command line, or `default` without the flag.
///
/// # Errors
/// The value does not parse.
pub fn arg<N: FromStr>(flag: &str, default: N) -> anyhow::Result<N>
where
    N::Err: std::error::Error + Send + Sync + 'static,
{
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == flag) {
        None => Ok(default),
        Some(i) => {
            let value = args.get(i + 1).ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
            value.parse().map_err(|e| anyhow::anyhow!("{flag} {value:?}: {e}"))
        }
    }
}

/// A memory field of `/proc/{process}/status` (`VmRSS`, `VmHWM`, ...; `process` a pid or
/// `self`), in KiB; `None` if the process or the field is not there.
#[must_use]
pub fn status_kib(process: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Checks this process's command line against what a benchmark takes: `flags` alone and
/// `valued` each followed by a value. Anything else (a typo, `--help`) prints what it takes and
/// exits with status 2 before anything runs: a mistyped flag would otherwise start the whole
/// benchmark, an hour for some.
pub fn accept_args(flags: &[&str], valued: &[&str]) {
    let mut args = std::env::args();
    let program = args.next().unwrap_or_default();
    while let Some(arg) = args.next() {
        let problem = if flags.contains(&arg.as_str()) {
            continue;
        } else if valued.contains(&arg.as_str()) {
            if args.next().is_some() {
                continue;
            }
            format!("{arg} needs a value")
        } else {
            format!("unexpected argument {arg:?}")
        };
        let takes: Vec<String> =
            flags.iter().map(|f| (*f).to_owned()).chain(valued.iter().map(|f| format!("{f} VALUE"))).collect();
        eprintln!("{program}: {problem}; it takes {}", takes.join(", "));
        std::process::exit(2);
    }
}

/// Whether this process was started with `--quick`.
#[must_use]
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// A fresh directory under the system's temporary one, named so leftovers are swept, removed
/// on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    /// # Panics
    /// The directory cannot be made.
    #[must_use]
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("{}{}", unique::PREFIX, unique::token()));
        std::fs::create_dir_all(&path).expect("make a scratch directory");
        Self(path)
    }
}

impl Default for ScratchDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
