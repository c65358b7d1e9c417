//! Metrics in the Prometheus text format, for the daemon and the front alike: a page written
//! family by family ([`Page`]), a latency histogram kept in atomics ([`Histogram`]), and the
//! scrape endpoint ([`serve`]) on the address the operator chose (`metrics_listen`; off unless
//! set). The format is small and fixed (version 0.0.4), so it is written here rather than
//! through a client library: every value is read from where it already lives (the pinned maps,
//! the service's counters) at scrape time, which a registry of its own would only copy.
use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use anyhow::Context as _;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The one path served.
pub const PATH: &str = "/metrics";

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    const fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A scrape's page, written a family at a time: [`Page::family`], then its samples.
#[derive(Default)]
pub struct Page {
    text: String,
}

impl Page {
    /// Starts the family `name` (a counter's name ends in `_total`).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {}", kind.name());
        self
    }

    /// One sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        write_labels(&mut self.text, labels);
        let _ = writeln!(self.text, " {}", number(value));
        self
    }

    /// A family of one sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// The samples of a histogram family `name` (started with [`Kind::Histogram`]).
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &HistogramSnapshot) -> &mut Self {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
            cumulative += count;
            let le = number(*bound);
            let with_le: Vec<(&str, &str)> = labels.iter().copied().chain([("le", le.as_str())]).collect();
            self.sample(&bucket, &with_le, count_value(cumulative));
        }
        let with_inf: Vec<(&str, &str)> = labels.iter().copied().chain([("le", "+Inf")]).collect();
        self.sample(&bucket, &with_inf, count_value(histogram.count)).sample(
            &format!("{name}_sum"),
            labels,
            histogram.sum_seconds,
        );
        self.sample(&format!("{name}_count"), labels, count_value(histogram.count))
    }

    /// The page.
    #[must_use]
    pub fn finish(self) -> String {
        self.text
    }
}

/// A count as a sample's value (exact below 2^53, far above any count here).
#[expect(clippy::cast_precision_loss, reason = "counts far below 2^53")]
#[must_use]
pub const fn count_value(n: u64) -> f64 {
    n as f64
}

/// `{a="x",b="y"}`, values escaped as the format says; nothing for no labels.
fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let value = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = write!(out, "{name}=\"{value}\"");
    }
    out.push('}');
}

/// A sample value: integers without a fraction, the infinities as the format spells them.
fn number(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return format!("{value:.0}");
    }
    format!("{value}")
}

/// Durations counted into fixed buckets, lock-free: what a request's handler can afford.
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound (not cumulative), and one past the last.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

/// A copy of a [`Histogram`], for a page.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: Vec<f64>,
    /// Per bound, not cumulative.
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    /// A histogram with these upper bounds, in seconds, rising.
    #[must_use]
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_micros: AtomicU64::new(0) }
    }

    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let slot = self.bounds.iter().position(|&bound| seconds <= bound).unwrap_or(self.bounds.len());
        self.counts[slot].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    #[must_use]
    pub fn snapshot(&self) -> HistogramSnapshot {
        let all: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        #[expect(clippy::cast_precision_loss, reason = "microseconds far below 2^53")]
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            counts: all[..self.bounds.len()].to_vec(),
            count: all.iter().sum(),
            sum_seconds: self.sum_micros.load(Relaxed) as f64 / 1e6,
        }
    }
}

/// Binds the metrics address (before a service drops its privileges). A non-loopback address is
/// allowed, since the operator chose it, and said so in the log: the page names gates, servers
/// and counts, nothing secret, but nothing a stranger needs either.
///
/// # Errors
/// The address cannot be bound (in use, not this host's).
pub fn bind(address: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(address).with_context(|| format!("metrics_listen: bind {address} for metrics"))?;
    listener.set_nonblocking(true).context("metrics_listen: set the listener non-blocking")?;
    if !address.ip().is_loopback() {
        log::warn!(
            "metrics on {address}, not a loopback address: firewall it, or set metrics_listen to 127.0.0.1:PORT"
        );
    }
    Ok(listener)
}

/// Serves `GET /metrics` on `listener` with the page `render` writes (on a blocking thread: it
/// may read maps or files), until the returned task is aborted. Every other path is 404.
///
/// # Errors
/// The listener cannot be handed to the runtime.
pub fn serve(
    listener: std::net::TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let address = listener.local_addr().context("the metrics listener's address")?;
    let listener = tokio::net::TcpListener::from_std(listener).context("serve metrics")?;
    let page = move || {
        let render = Arc::clone(&render);
        async move {
            let text = tokio::task::spawn_blocking(move || render()).await.unwrap_or_default();
            ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], text)
        }
    };
    let router = axum::Router::new().route(PATH, axum::routing::get(page));
    log::info!("metrics on http://{address}{PATH}");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            log::error!("metrics on {address} stopped: {e}");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_has_help_type_and_escaped_labels() {
        let mut page = Page::default();
        page.family("gate_x_total", Kind::Counter, "Things.\nCounted.").sample(
            "gate_x_total",
            &[("gate", "a\"b\\c"), ("reason", "r")],
            3.0,
        );
        page.single("gate_up", Kind::Gauge, "Up.", 1.0);
        assert_eq!(
            page.finish(),
            "# HELP gate_x_total Things.\\nCounted.\n# TYPE gate_x_total counter\n\
             gate_x_total{gate=\"a\\\"b\\\\c\",reason=\"r\"} 3\n\
             # HELP gate_up Up.\n# TYPE gate_up gauge\ngate_up 1\n"
        );
    }

    #[test]
    fn a_histogram_is_cumulative_with_its_sum_and_count() {
        static BOUNDS: [f64; 2] = [0.001, 0.01];
        let histogram = Histogram::new(&BOUNDS);
        for micros in [500, 900, 5_000, 50_000] {
            histogram.observe(Duration::from_micros(micros));
        }
        let mut page = Page::default();
        page.family("gate_t_seconds", Kind::Histogram, "T.").histogram("gate_t_seconds", &[], &histogram.snapshot());
        let text = page.finish();
        for line in [
            "gate_t_seconds_bucket{le=\"0.001\"} 2",
            "gate_t_seconds_bucket{le=\"0.01\"} 3",
            "gate_t_seconds_bucket{le=\"+Inf\"} 4",
            "gate_t_seconds_sum 0.0564",
            "gate_t_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
