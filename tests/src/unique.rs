//! Unique, short names (interface names are at most 15 bytes) that carry the test process's pid,
//! so leftovers of a killed run can be recognised and swept.
use std::{
    fs,
    path::Path,
    process::Command,
    sync::{
        Once,
        atomic::{AtomicU32, Ordering},
    },
};

/// Every name this crate makes starts with this.
pub const PREFIX: &str = "gt";
/// Pin directories of test runs live under here.
pub const PIN_ROOT: &str = "/sys/fs/bpf";

/// A fresh token: the pid and a counter, in hex ("3fa2c1x7").
pub fn token() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    sweep_leftovers();
    format!("{:x}x{:x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn pid_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let (pid, _) = rest.split_once('x')?;
    u32::from_str_radix(pid, 16).ok()
}

fn is_dead(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces, cgroups (killing what still runs there), pin directories and temporary files left by test processes that no longer exist.
fn sweep_leftovers() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or_default();
                if pid_of(name).is_some_and(is_dead) {
                    let _ = Command::new("ip").args(["netns", "del", name]).status();
                }
            }
        }
        if let Ok(mount) = gate_daemon::cgroup::mount_point()
            && let Ok(entries) = fs::read_dir(&mount)
        {
            for entry in entries.flatten() {
                if pid_of(&entry.file_name().to_string_lossy()).is_some_and(is_dead) {
                    crate::cgroup::remove(&entry.path());
                }
            }
        }
        for root in [Path::new(PIN_ROOT), &std::env::temp_dir()] {
            let Ok(entries) = fs::read_dir(root) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if pid_of(&name).is_some_and(is_dead) {
                    let path = entry.path();
                    let _ = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_pid_and_differ() {
        let (a, b) = (token(), token());
        assert_ne!(a, b);
        assert_eq!(pid_of(&format!("{PREFIX}{a}")), Some(std::process::id()));
        assert_eq!(pid_of(&format!("{PREFIX}-{b}")), Some(std::process::id()));
        assert!(format!("{PREFIX}{a}b").len() <= 15, "fits an interface name");
    }
}
