//! The metrics pages (`metrics_listen`), scraped with curl from the gateway's namespace as
//! Prometheus would.
use std::{
    collections::BTreeMap,
    io::Write as _,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use crate::bed::TestBed;

/// Where a test's daemon and front serve their pages (loopback of the gateway's namespace).
pub const DAEMON_METRICS: &str = "127.0.0.1:9960";
pub const FRONT_METRICS: &str = "127.0.0.1:9961";

/// `config` (a daemon config) with its metrics on [`DAEMON_METRICS`].
///
/// # Panics
/// The file cannot be read or written.
#[must_use]
pub fn with_daemon_metrics(config: PathBuf) -> PathBuf {
    // A top-level key goes before the first table.
    let text = std::fs::read_to_string(&config).expect("the config");
    std::fs::write(&config, format!("metrics_listen = \"{DAEMON_METRICS}\"\n{text}")).expect("write the config");
    config
}

/// A scraped page: each sample line's `name{labels}` and its value.
pub struct Scrape {
    pub text: String,
    pub samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// The value of the sample written exactly as `series` (`name{a="x",b="y"}`); 0 if absent.
    #[must_use]
    pub fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    #[must_use]
    pub fn has(&self, series: &str) -> bool {
        self.samples.contains_key(series)
    }
}

/// GETs `http://address/metrics` from inside the gateway's namespace.
///
/// # Panics
/// The page cannot be fetched or is not the text format.
pub fn scrape(bed: &TestBed, address: &str) -> Scrape {
    let out = bed
        .gateway
        .command("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "10", &format!("http://{address}/metrics")])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "scrape {address}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8 page");
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("a value in {l:?}")))
        })
        .collect();
    Scrape { text, samples }
}

/// Scrapes `address` until `ready` holds or `within` passes; the last page.
pub fn scrape_until(bed: &TestBed, address: &str, within: Duration, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + within;
    loop {
        let page = scrape(bed, address);
        if ready(&page) || Instant::now() > deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `promtool check metrics` on a page: clean, or the test fails with what it found.
///
/// # Panics
/// promtool is missing, or finds a problem.
pub fn promtool_clean(page: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup installs prometheus)");
    child.stdin.take().expect("stdin").write_all(page.as_bytes()).expect("write the page");
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}\npage:\n{page}");
}
