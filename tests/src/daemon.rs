//! The real binaries: `gate-daemon` run inside the gateway namespace, and `gatectl`.
//!
//! They are looked up beside the test executable (`target/<profile>/`); `cargo xtask test`
//! builds them before the tests run.
use std::{
    fs,
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{bed::TestBed, unique};

/// How long a daemon may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of a workspace binary built beside this executable: tests run from
/// `target/<profile>/deps/`, the demo and benchmarks from `target/<profile>/`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own executable path");
    let mut dir = exe.parent().expect("executable has a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps has a parent");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`; `cargo xtask test` does)",
        path.display()
    );
    path
}

/// A running `gate-daemon` (or `gate-web`); killed with SIGKILL on drop if still running.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    notify: Notify,
}

/// The service manager's end of the notify protocol: a datagram socket the service is told of
/// by `$NOTIFY_SOCKET`, as systemd does for `Type=notify`.
struct Notify {
    socket: UnixDatagram,
    path: PathBuf,
    received: Vec<String>,
}

impl Notify {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("{}{}.notify", unique::PREFIX, unique::token()));
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        // The front sends after dropping root.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).expect("open the notify socket to all");
        socket.set_nonblocking(true).expect("non-blocking notify socket");
        Self { socket, path, received: Vec::new() }
    }

    /// Everything received so far, one message a string.
    fn drain(&mut self) -> &[String] {
        let mut buf = [0; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        &self.received
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Daemon {
    /// Starts the daemon in the bed's gateway namespace and waits until it is ready.
    ///
    /// # Panics
    /// If it exits or does not become ready, with its log.
    pub fn start(bed: &TestBed, config: &Path) -> Self {
        match Self::try_start(bed, config) {
            Ok(daemon) => daemon,
            Err(log) => panic!("gate-daemon did not start:\n{log}"),
        }
    }

    /// Starts the daemon; `Err` carries its log if it exits before it is ready.
    pub fn try_start(bed: &TestBed, config: &Path) -> Result<Self, String> {
        Self::try_start_program(bed, "gate-daemon", config)
    }

    /// Starts the front (`gate-web`) in the gateway namespace and waits until it is ready.
    ///
    /// # Panics
    /// If it exits or does not become ready, with its log.
    pub fn start_front(bed: &TestBed, config: &Path) -> Self {
        Self::try_start_program(bed, "gate-web", config).unwrap_or_else(|log| panic!("gate-web did not start:\n{log}"))
    }

    /// Starts `program --config <config>` in the gateway namespace; `Err` carries its log if it
    /// exits before it says it is ready (`READY=1` on its notify socket).
    pub fn try_start_program(bed: &TestBed, program: &str, config: &Path) -> Result<Self, String> {
        Self::try_start_with_env(bed, program, config, &[])
    }

    /// As [`Self::try_start_program`], with `env` added to the environment.
    pub fn try_start_with_env(
        bed: &TestBed,
        program: &str,
        config: &Path,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        Self::try_start_binary(bed, &bin(program), config, env)
    }

    /// As [`Self::try_start_with_env`] for the binary at `binary` (an installed one, say).
    pub fn try_start_binary(bed: &TestBed, binary: &Path, config: &Path, env: &[(&str, &str)]) -> Result<Self, String> {
        let program = binary.display();
        let notify = Notify::new();
        let log = std::env::temp_dir().join(format!("{}{}.log", unique::PREFIX, unique::token()));
        let log_file = fs::File::create(&log).expect("create daemon log");
        let mut command = bed.gateway.command("sh");
        // As systemd does, WATCHDOG_PID names the service's own pid: `exec` keeps the shell's.
        command.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""]).arg(binary);
        let child = command
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", &notify.path)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let mut daemon = Self { child: Some(child), log, notify };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if daemon.notifications().iter().any(|m| m.lines().any(|l| l == "READY=1")) {
                return Ok(daemon);
            }
            if let Some(status) = daemon.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                daemon.child = None;
                return Err(format!("exited with {status}\n{}", daemon.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {READY_TIMEOUT:?}\n{}", daemon.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every notify message the service sent so far (`READY=1`, `WATCHDOG=1`, ...).
    pub fn notifications(&mut self) -> Vec<String> {
        self.notify.drain().to_vec()
    }

    /// Sends SIGHUP and waits until the log says `outcome` once more than before (the service
    /// logs "reloaded" or "reload refused"); returns the log.
    ///
    /// # Panics
    /// If it does not within 20 s.
    pub fn reload(&self, outcome: &str) -> String {
        let before = self.log().matches(outcome).count();
        kill(self.pid(), Signal::SIGHUP).expect("SIGHUP");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log().matches(outcome).count() == before {
            assert!(Instant::now() < deadline, "no {outcome:?} after SIGHUP:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log()
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("daemon still running");
        Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"))
    }

    /// Waits up to `within` for the process to exit by itself; its exit status, if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL: the daemon dies with no chance to clean anything up.
    pub fn kill9(mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the log.
    ///
    /// # Panics
    /// If the daemon does not exit successfully.
    pub fn stop(mut self) -> String {
        let _ = kill(self.pid(), Signal::SIGTERM);
        let status = self.child.take().expect("daemon still running").wait().expect("wait for gate-daemon");
        let log = self.log();
        assert!(status.success(), "gate-daemon stopped with {status}:\n{log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// Runs `gatectl --pin-dir <pin_dir> args...` and returns its output, whatever the status.
pub fn gatectl(pin_dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("gatectl")).arg("--pin-dir").arg(pin_dir).args(args).output().expect("run gatectl")
}

/// Runs `gatectl --pin-dir <pin_dir> args...` inside `ns` (where `status` looks interfaces up),
/// whatever the status.
pub fn gatectl_in(ns: &crate::netns::Netns, pin_dir: &Path, args: &[&str]) -> Output {
    ns.command(bin("gatectl")).arg("--pin-dir").arg(pin_dir).args(args).output().expect("run gatectl")
}

/// As [`gatectl`], panicking with stderr unless it succeeds; returns stdout.
pub fn gatectl_ok(pin_dir: &Path, args: &[&str]) -> String {
    succeeded(gatectl(pin_dir, args), args)
}

/// As [`gatectl_in`], panicking with stderr unless it succeeds; returns stdout.
pub fn gatectl_in_ok(ns: &crate::netns::Netns, pin_dir: &Path, args: &[&str]) -> String {
    succeeded(gatectl_in(ns, pin_dir, args), args)
}

fn succeeded(out: Output, args: &[&str]) -> String {
    assert!(out.status.success(), "gatectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// CPU time (user + system) the process `pid` has used so far.
#[must_use]
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and
    // 13th of them, in clock ticks (100 a second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

/// The peak resident memory of the process `pid` so far (VmHWM), in MiB.
#[must_use]
pub fn peak_rss_mib(pid: i32) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "KiB of a process's memory fit in an f64's 52 bits")]
    let kib = crate::measure::status_kib(&pid.to_string(), "VmHWM").unwrap_or(0) as f64;
    kib / 1024.0
}
