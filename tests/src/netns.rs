//! Network namespaces: made with `ip netns add`, deleted on drop (which also deletes the veth ends
//! inside). Code runs inside one on a thread of its own ([`Netns::run`]); programs through
//! `nsenter --net` ([`Netns::command`]), which, unlike `ip netns exec`, leaves /sys (and so the
//! bpffs pins) as it is.
use std::{
    fs::File,
    path::PathBuf,
    process::{Command, Output},
};

use nix::sched::{CloneFlags, setns};

use crate::unique::{self, PREFIX};

/// Runs `cmd`, panicking with its stderr if it fails.
pub fn must(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub struct Netns {
    name: String,
    /// Whether dropping this value deletes the namespace.
    owned: bool,
}

impl Netns {
    /// A new namespace named after `role`, with loopback up.
    pub fn new(role: &str) -> Self {
        let name = format!("{PREFIX}{}-{role}", unique::token());
        must(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name, owned: true };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A second handle to this namespace that does not delete it on drop (for other threads).
    pub fn handle(&self) -> Self {
        Self { name: self.name.clone(), owned: false }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> args...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        must(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display())).arg(program);
        cmd
    }

    /// Runs `f` on a thread inside this namespace. Sockets it creates stay in the namespace
    /// wherever they are used afterwards.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let ns = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                    setns(ns, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Joins `a` and `b` with a veth pair named `a_if` / `b_if`, both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    must(Command::new("ip").args([
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]));
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}
