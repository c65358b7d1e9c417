//! gate-web.toml(5): every key of the front's config with its default, for the man page. The
//! tests below hold it to [`Config`]'s parser (gate_config::reference), so it cannot drift.
use gate_config::reference::{ConfigKey, ConfigTable};

#[cfg(doc)]
use crate::config::Config;

/// What the page says before the keys.
pub const DESCRIPTION: &str = "The config of gate-web, the gate's public front: TLS on the web \
port, a static route table, and every accepted request rebuilt for the daemon's internal socket. \
gate-web reads it at start and again on SIGHUP (a renewed certificate, limits, trusted proxies): \
a config that does not load is refused and the front runs on with the one in force. Unknown \
keys are refused. Durations are written like \"10s\" or \"1m\". gate-web --check checks a \
config without starting. The package installs an example as /etc/gate/gate-web.toml.example.";

/// The top-level key every config needs: the smallest config.
pub const TOP: &str = "listen = [\"0.0.0.0:443\", \"[::]:443\"]";

pub const TABLES: &[ConfigTable] = &[ConfigTable {
    name: "limits",
    array: false,
    text: "What one source, and everyone together, may take of the front. A request over a \
limit gets one uniform answer (429, or the connection closed) and costs the daemon nothing.",
    minimal: "",
    required: false,
}];

pub const KEYS: &[ConfigKey] = &[
    ConfigKey {
        table: "",
        name: "listen",
        default: None,
        text: "The addresses and ports to serve HTTPS on, e.g. [\"0.0.0.0:443\", \"[::]:443\"]. \
At least one. Bound before the front drops to its user.",
    },
    ConfigKey {
        table: "",
        name: "metrics_listen",
        default: None,
        text: "An address and port to serve the front's metrics on, in the Prometheus text \
format (GET /metrics), e.g. \"127.0.0.1:9961\". Unset: none are served. Never a listen port: \
the metrics are not part of the public front. Give a loopback address unless a firewall keeps \
the port to the scraper. Needs a restart to change.",
    },
    ConfigKey {
        table: "",
        name: "daemon_socket",
        default: Some("\"/run/gate/daemon.sock\""),
        text: "The daemon's internal approval socket (its approval.socket).",
    },
    ConfigKey {
        table: "",
        name: "user",
        default: Some("\"gate-web\""),
        text: "The unprivileged user the front drops to after binding and reading its key, \
when started as root. Not empty.",
    },
    ConfigKey {
        table: "",
        name: "tls_cert",
        default: None,
        text: "The certificate chain (PEM). tls_cert and tls_key go together; neither: a \
self-signed pair made once in state_dir.",
    },
    ConfigKey {
        table: "",
        name: "tls_key",
        default: None,
        text: "The certificate's private key (PEM), read before the front drops its privileges.",
    },
    ConfigKey {
        table: "",
        name: "state_dir",
        default: Some("\"/var/lib/gate-web\""),
        text: "Where the self-signed pair is kept when no certificate is given.",
    },
    ConfigKey {
        table: "",
        name: "trusted_proxies",
        default: Some("[]"),
        text: "The only peers whose X-Forwarded-For names a request's source (a load balancer \
in front). Anyone else's request names its own address.",
    },
    ConfigKey {
        table: "",
        name: "shutdown_file",
        default: Some("\"/run/gate/shutdown.json\""),
        text: "The shutdown states the daemon publishes (its notifications.publish).",
    },
    ConfigKey {
        table: "limits",
        name: "max_connections",
        default: Some("1024"),
        text: "Connections open at once, from everyone (at least 1).",
    },
    ConfigKey {
        table: "limits",
        name: "connections_per_source",
        default: Some("32"),
        text: "Connections one source (an IPv4 address, an IPv6 /64) may hold open at once, at \
least 1; trusted proxies are held only to max_connections.",
    },
    ConfigKey {
        table: "limits",
        name: "handshakes_per_minute",
        default: Some("120"),
        text: "New connections (TLS handshakes) per source and minute, in a burst of the same \
size (at least 1).",
    },
    ConfigKey {
        table: "limits",
        name: "handshake_timeout",
        default: Some("\"10s\""),
        text: "A TLS handshake must end within this.",
    },
    ConfigKey {
        table: "limits",
        name: "header_timeout",
        default: Some("\"10s\""),
        text: "A request's whole header must arrive within this, from its first byte.",
    },
    ConfigKey {
        table: "limits",
        name: "body_timeout",
        default: Some("\"10s\""),
        text: "A request's body must arrive within this.",
    },
    ConfigKey {
        table: "limits",
        name: "daemon_timeout",
        default: Some("\"10s\""),
        text: "The daemon must answer a forwarded request within this.",
    },
    ConfigKey {
        table: "limits",
        name: "daemon_connections_kept",
        default: Some("64"),
        text: "Idle connections to the daemon's socket kept open for the next requests (0: a \
new connection for every request; never more than max_connections).",
    },
    ConfigKey {
        table: "limits",
        name: "approvals_per_minute",
        default: Some("30"),
        text: "Approval requests per source address and minute, in a burst of the same size \
(at least 1).",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_reference_documents_every_key_and_its_default() {
        let found = gate_config::reference::disagreements::<Config>(TOP, TABLES, KEYS);
        assert!(found.is_empty(), "gate-web.toml(5) and the parser disagree:\n{}", found.join("\n"));
    }

    #[test]
    fn the_smallest_config_is_one_the_front_takes() {
        let text = gate_config::reference::smallest_config(TOP, TABLES);
        Config::parse(std::path::Path::new("gate-web.toml"), &text).unwrap();
    }
}
