//! The front's metrics page (`metrics_listen`, never on a `listen` port): its answers by
//! status, the connections it refused by limit and those open now, read from the tally and the
//! admission at each scrape.
use gate_config::metrics::{Kind, Page, count_value};

use crate::{admission::Admission, tally::Refusal};

/// The front's version.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Writes the page.
#[must_use]
pub fn render(admission: &Admission) -> String {
    let tally = &admission.tally;
    let mut page = Page::default();
    page.family("gate_web_build_info", Kind::Gauge, "The running gate-web's version.").sample(
        "gate_web_build_info",
        &[("version", VERSION)],
        1.0,
    );
    page.family(
        "gate_web_responses_total",
        Kind::Counter,
        "HTTP answers since the front started, by status (403: refused by the daemon; 429: over a limit).",
    );
    for (status, count) in tally.answers() {
        page.sample("gate_web_responses_total", &[("status", &status.to_string())], count_value(count));
    }
    page.family(
        "gate_web_refused_connections_total",
        Kind::Counter,
        "Connections closed before TLS since the front started, by the limit that refused them.",
    );
    let refusals = tally.refusals();
    for refusal in Refusal::ALL {
        page.sample(
            "gate_web_refused_connections_total",
            &[("limit", refusal.name())],
            count_value(refusals[refusal as usize]),
        );
    }
    page.single(
        "gate_web_accept_errors_total",
        Kind::Counter,
        "Failed accepts since the front started (out of descriptors, say).",
        count_value(tally.accept_errors()),
    );
    let (open, sources) = admission.open();
    page.single("gate_web_open_connections", Kind::Gauge, "Connections open now.", count_value(open as u64));
    page.single(
        "gate_web_open_connection_sources",
        Kind::Gauge,
        "Sources (IPv4 addresses, IPv6 /64s; trusted proxies aside) holding the open connections.",
        count_value(sources as u64),
    );
    page.finish()
}
