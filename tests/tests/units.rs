//! The systemd units in packaging/systemd: valid for systemd (`systemd-analyze verify`, with the
//! binaries pointed at this build), and hardened as `systemd-analyze security` scores them. CI
//! has no systemd running, so the units' sandbox is checked offline, not exercised.
use std::{path::Path, process::Command};

use gate_tests::daemon::bin;

fn unit(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The unit with its binaries pointed at this build, written to a fresh directory.
fn staged(name: &str) -> (tempdir::Dir, std::path::PathBuf) {
    let dir = tempdir::Dir::new();
    let bin_dir = bin("gate-daemon").parent().expect("a bin dir").to_owned();
    let text = unit(name).replace("/usr/bin/", &format!("{}/", bin_dir.display()));
    let path = dir.0.join(name);
    std::fs::write(&path, text).expect("stage the unit");
    (dir, path)
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let path =
                std::env::temp_dir().join(format!("{}{}", gate_tests::unique::PREFIX, gate_tests::unique::token()));
            std::fs::create_dir_all(&path).expect("create a temp dir");
            Self(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn exposure(path: &Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(path)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let line =
        text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("no score:\n{text}"));
    let score = line.split(':').nth(1).and_then(|rest| rest.split_whitespace().next()).expect("a score");
    score.parse().unwrap_or_else(|_| panic!("not a number in {line}"))
}

#[test]
fn units_are_valid_and_hardened() {
    for (name, max_exposure) in [("gate-web.service", 2.0), ("gate-daemon.service", 4.0)] {
        let (_dir, path) = staged(name);
        let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !stderr.contains(name), "{name}: {stderr}");
        let score = exposure(&path);
        assert!(score <= max_exposure, "{name}: exposure {score} > {max_exposure}");
    }
    let web = unit("gate-web.service");
    assert!(web.contains("\nUser=gate-web\n"), "the front runs as its own user");
    assert!(
        web.contains("\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"),
        "the front may bind a low port, nothing else"
    );
    assert!(!web.contains("CAP_BPF"));
    let daemon = unit("gate-daemon.service");
    assert!(!daemon.contains("CAP_SYS_ADMIN"), "the daemon does without CAP_SYS_ADMIN");
}
