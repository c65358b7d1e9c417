//! A cgroup v2 directory of the test's own, for the delivery backstop: the daemon attaches the
//! backstop there and runs its OpenVPN servers there, and [`CgroupListeners`] listen from there.
//! Never the hierarchy's root, which every test running at the same time shares. On drop every
//! process still in it is killed (`cgroup.kill`: also a daemon's orphaned OpenVPN servers) and
//! the directory removed.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::{
    daemon::bin,
    netns::Netns,
    unique::{self, PREFIX},
};

pub struct TestCgroup(PathBuf);

impl TestCgroup {
    pub fn new() -> Self {
        let mount = gate_daemon::cgroup::mount_point().expect("cgroup2 is mounted");
        let path = mount.join(format!("{PREFIX}{}", unique::token()));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create cgroup {}: {e}", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The pids in the cgroup now.
    pub fn pids(&self) -> Vec<u32> {
        fs::read_to_string(self.0.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Default for TestCgroup {
    fn default() -> Self {
        Self::new()
    }
}

/// Kills everything in the cgroup at `path` and removes it; waits up to 5 s for the processes
/// to go (a cgroup with processes cannot be removed).
pub fn remove(path: &Path) {
    let _ = fs::write(path.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::remove_dir(path).is_err() && path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

/// UDP echo and TCP echo listeners (dual-stack, as [`crate::probe::Listeners`]) in a process of
/// their own, inside `ns` and inside `cgroup` from before their first socket: the backstop
/// judges the sockets of the cgroup it is attached to. Killed on drop.
pub struct CgroupListeners {
    child: Child,
}

impl CgroupListeners {
    pub fn start(ns: &Netns, cgroup: &TestCgroup, ports: &[u16]) -> Self {
        Self::spawn(ns, cgroup, ports, false)
    }

    /// UDP sockets on `ports` that are never read: each datagram meets the socket (and the
    /// backstop), then the full receive buffer drops it. For benchmarks of delivery.
    pub fn sink(ns: &Netns, cgroup: &TestCgroup, ports: &[u16]) -> Self {
        Self::spawn(ns, cgroup, ports, true)
    }

    fn spawn(ns: &Netns, cgroup: &TestCgroup, ports: &[u16], sink: bool) -> Self {
        let mut command = ns.command(bin("gate-test-listener"));
        if sink {
            command.arg("--sink");
        }
        command.arg(cgroup.path());
        command.args(ports.iter().map(u16::to_string)).stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = command.spawn().expect("spawn gate-test-listener");
        let stdout = child.stdout.take().expect("listener stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read listener readiness");
        assert_eq!(line.trim(), "ready", "gate-test-listener did not start");
        Self { child }
    }
}

impl Drop for CgroupListeners {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
