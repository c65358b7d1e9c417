//! The Debian packages `cargo xtask package` builds (target/debian/), installed on this machine
//! and used as an operator would: `dpkg -i`; the binaries, units, pages, completions and example
//! configs where they belong; the units checked by `systemd-analyze verify` and enabled (PID 1
//! here is not systemd, so the daemon is started directly, from the installed binary);
//! `gate-daemon --check` on the example config; the installed daemon gating a namespace's
//! interface with the installed gatectl reading and opening it; an upgrade in place under it;
//! `dpkg -r` refused while the daemon runs, then, once it is stopped, tearing the gate down;
//! and `dpkg -P`, which keeps the store and says so. The guard purges both packages
//! and removes what the test wrote, also when it fails.
use std::{
    fs,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use gate_tests::{
    bed::{CLIENT_V4, GATEWAY_V4, STRANGER_V4, TestBed},
    daemon::Daemon,
    netns::Netns,
    probe::{self, Listeners, Outcome},
};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const PACKAGES: [&str; 2] = ["gate", "gate-client"];
const CONFIG: &str = "/etc/gate/gate.toml";
const STORE_DIR: &str = "/var/lib/gate";

fn deb(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/debian/{name}_{VERSION}-1_amd64.deb"));
    assert!(
        path.exists(),
        "{} is missing: build the packages first (`cargo xtask package`; `cargo xtask test` does)",
        path.display()
    );
    path
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

/// Runs `command`, panicking with its output unless it succeeds; returns stdout and stderr.
fn ok(command: &mut Command) -> String {
    let out = run(command);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{command:?} failed with {}:\n{text}", out.status);
    text
}

/// Whether `package` is installed (its state, whatever was asked of it: a refused removal
/// leaves it installed and marked for removal).
fn installed(package: &str) -> bool {
    run(Command::new("dpkg-query").args(["-W", "-f", "${db:Status-Status}", package])).stdout == b"installed"
}

/// The packages, installed for the test; on drop both are purged and what the test wrote
/// (the operator's config, a store directory that was not there before) is removed.
struct Installed {
    store_was_there: bool,
}

impl Installed {
    fn new() -> Self {
        let debs = PACKAGES.map(deb);
        for package in PACKAGES {
            assert!(
                !installed(package),
                "{package} is installed on this machine: the test installs and purges its own"
            );
        }
        assert!(!Path::new(CONFIG).exists(), "{CONFIG} exists: the test writes its own");
        let guard = Self { store_was_there: Path::new(STORE_DIR).exists() };
        ok(Command::new("dpkg").arg("-i").args(debs));
        guard
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = fs::remove_file(CONFIG);
        let _ = Command::new("dpkg").arg("--purge").args(PACKAGES).output();
        let _ = fs::remove_dir("/etc/gate");
        if !self.store_was_there {
            let _ = fs::remove_dir_all(STORE_DIR);
        }
    }
}

/// A namespace with an interface named as in the example config (`eth0`), for `--check`.
fn namespace_with_eth0() -> Netns {
    let ns = Netns::new("pk");
    // A veth pair (no dummy driver on this kernel), both ends inside.
    ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
    ns
}

#[test]
fn the_packages_install_run_and_purge_cleanly() {
    let _installed = Installed::new();
    for package in PACKAGES {
        assert!(installed(package), "{package} is not installed after dpkg -i");
    }

    // The files, where the package says they are.
    let listed = ok(Command::new("dpkg").args(["-L", "gate", "gate-client"]));
    for path in [
        "/usr/bin/gate-daemon",
        "/usr/bin/gate-web",
        "/usr/bin/gatectl",
        "/usr/bin/gate-client",
        "/etc/gate/gate.toml.example",
        "/etc/gate/gate-web.toml.example",
        "/usr/share/bash-completion/completions/gatectl",
        "/usr/share/zsh/vendor-completions/_gatectl",
        "/usr/share/fish/vendor_completions.d/gate-client.fish",
    ] {
        assert!(Path::new(path).exists(), "{path} is not installed");
        assert!(listed.lines().any(|l| l == path), "{path} is not the package's:\n{listed}");
    }
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f", "${Conffiles}", "gate"]));
    for example in ["/etc/gate/gate.toml.example", "/etc/gate/gate-web.toml.example"] {
        assert!(conffiles.contains(example), "{example} is not a conffile: {conffiles}");
    }
    let version = ok(Command::new("/usr/bin/gatectl").arg("--version"));
    assert_eq!(version.trim(), format!("gatectl {VERSION}"));

    // The units: valid, pointing at the installed binaries, enabled, and waiting for a config.
    for unit in ["gate-daemon.service", "gate-web.service"] {
        let path = listed
            .lines()
            .find(|l| l.ends_with(&format!("/systemd/system/{unit}")))
            .unwrap_or_else(|| panic!("{unit} is not installed:\n{listed}"));
        ok(Command::new("systemd-analyze").arg("verify").arg(path));
        let text = fs::read_to_string(path).expect("the unit");
        assert!(text.contains("ExecStart=/usr/bin/"), "{unit} does not run the installed binary");
        assert!(text.contains("ConditionPathExists=/etc/gate/"), "{unit} would start without a config");
        let wanted = format!("/etc/systemd/system/multi-user.target.wants/{unit}");
        assert!(Path::new(&wanted).exists(), "{unit} is not enabled ({wanted} missing)");
    }

    // The pages: each command's, a subcommand's, the configs' with their keys and defaults.
    let page = |name: &str| ok(Command::new("man").args(["-P", "cat", name]).env("MANWIDTH", "100"));
    assert!(page("gatectl").contains("teardown"), "gatectl(1) does not list its subcommands");
    assert!(page("gatectl-allow").contains("--ttl"), "gatectl-allow(1) does not describe --ttl");
    assert!(page("gate-daemon").contains("--check"));
    assert!(page("gate-client").contains("connect"));
    let gate_toml = page("gate.toml");
    for text in ["idle_timeout", "default: \"3m\"", "[[openvpn]]", "store_key_file"] {
        assert!(gate_toml.contains(text), "gate.toml(5) lacks {text:?}:\n{gate_toml}");
    }
    assert!(page("gate-web.toml").contains("approvals_per_minute"));
    // A completion that bash takes and binds to the command.
    let completion =
        ok(Command::new("bash")
            .args(["-c", ". /usr/share/bash-completion/completions/gatectl && complete -p gatectl"]));
    assert!(completion.contains("gatectl"), "{completion}");

    // The example config, as installed, passes the daemon's own check where its interface exists.
    let ns = namespace_with_eth0();
    let check = ok(ns.command("/usr/bin/gate-daemon").args(["--config", "/etc/gate/gate.toml.example", "--check"]));
    assert!(check.contains("is valid"), "{check}");

    // The operator's config, then the installed daemon gating a namespace's interface.
    let mut bed = TestBed::new();
    let written = bed.config(&[("openvpn", "udp", 1194)], "");
    fs::copy(&written, CONFIG).expect("write the operator's config");
    let daemon = Daemon::try_start_binary(&bed, Path::new("/usr/bin/gate-daemon"), Path::new(CONFIG), &[])
        .unwrap_or_else(|log| panic!("the installed gate-daemon did not start:\n{log}"));
    let _listeners = Listeners::start(&bed.gateway, &[1194]);
    let port = SocketAddr::new(IpAddr::V4(GATEWAY_V4), 1194);
    assert_eq!(probe::udp(&bed.client, STRANGER_V4.into(), port), Outcome::Silence, "a stranger passed the gate");
    // The installed gatectl finds the gate through the config alone.
    let status = ok(bed.gateway.command("/usr/bin/gatectl").arg("status"));
    assert!(status.contains(&bed.gateway_if) && status.contains("openvpn"), "{status}");
    ok(Command::new("/usr/bin/gatectl").args(["allow", &CLIENT_V4.to_string(), "--gate", "openvpn", "--ttl", "5m"]));
    assert_eq!(probe::udp(&bed.client, CLIENT_V4.into(), port), Outcome::Reply, "the lease did not open the gate");
    let leases = ok(Command::new("/usr/bin/gatectl").arg("leases"));
    assert!(leases.contains(&CLIENT_V4.to_string()), "{leases}");

    // An upgrade under the running daemon (a reinstall runs the same scripts: prerm upgrade,
    // postinst configure): the gate and the lease stay. Then what systemd's restart after it
    // does: the old daemon stops, leaving the gate closed, and the new binary takes it over.
    ok(Command::new("dpkg").arg("-i").args(PACKAGES.map(deb)));
    assert!(bed.pin_dir.0.exists(), "the upgrade took the gate down");
    assert_eq!(probe::udp(&bed.client, CLIENT_V4.into(), port), Outcome::Reply, "the upgrade closed the lease");
    daemon.stop();
    assert_eq!(probe::udp(&bed.client, STRANGER_V4.into(), port), Outcome::Silence, "a stopped daemon opened the gate");
    assert_eq!(probe::udp(&bed.client, CLIENT_V4.into(), port), Outcome::Reply, "the lease died with the daemon");
    let daemon = Daemon::try_start_binary(&bed, Path::new("/usr/bin/gate-daemon"), Path::new(CONFIG), &[])
        .unwrap_or_else(|log| panic!("the upgraded gate-daemon did not start:\n{log}"));
    assert_eq!(probe::udp(&bed.client, CLIENT_V4.into(), port), Outcome::Reply, "the takeover lost the lease");
    assert_eq!(probe::udp(&bed.client, STRANGER_V4.into(), port), Outcome::Silence, "the takeover opened the gate");

    // A removal while a daemon runs outside systemd (nothing stops it first) is refused, and
    // says what to do; the package and the gate stay.
    let refused = run(Command::new("dpkg").args(["-r", "gate"]));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("stop gate-daemon"), "a removal under the daemon: {said}");
    assert!(installed("gate") && bed.pin_dir.0.exists(), "a refused removal took something: {said}");
    daemon.stop();

    // Removing the package removes the gate (the ports are open again), keeps the config files.
    let removed = ok(Command::new("dpkg").args(["-r", "gate"]));
    assert!(removed.contains("gated ports are now open to everyone"), "{removed}");
    assert!(!bed.pin_dir.0.exists(), "the gate's pins outlived the package");
    assert_eq!(probe::udp(&bed.client, STRANGER_V4.into(), port), Outcome::Reply, "the removed gate still drops");
    assert!(!Path::new("/usr/bin/gate-daemon").exists());
    assert!(Path::new("/etc/gate/gate.toml.example").exists(), "remove took a conffile (only purge does)");

    // Purging takes what the package made but the store, and says it keeps it.
    let purged = ok(Command::new("dpkg").args(["-P", "gate", "gate-client"]));
    assert!(purged.contains("/var/lib/gate") && purged.contains("kept"), "{purged}");
    for package in PACKAGES {
        assert!(!installed(package), "{package} is still installed after purge");
    }
    for gone in [
        "/etc/gate/gate.toml.example",
        "/etc/gate/gate-web.toml.example",
        "/usr/bin/gate-client",
        "/usr/share/bash-completion/completions/gatectl",
        "/etc/systemd/system/multi-user.target.wants/gate-daemon.service",
        "/run/gate",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} outlived the purge");
    }
    assert!(Path::new(STORE_DIR).is_dir(), "the purge took the store");
    assert!(Path::new(CONFIG).exists(), "the purge took the operator's own config");
}
