//! The front's TOML config. Unknown keys are refused; errors name the file and the key.
//!
//! ```toml
//! listen = ["0.0.0.0:443", "[::]:443"]
//! daemon_socket = "/run/gate/daemon.sock"
//! user = "gate-web"                  # dropped to after binding, when started as root
//! tls_cert = "/etc/gate/web.crt"     # both or neither; neither: a self-signed pair in state_dir
//! tls_key = "/etc/gate/web.key"
//! state_dir = "/var/lib/gate-web"
//! trusted_proxies = ["10.0.0.5"]     # only these may set X-Forwarded-For
//! shutdown_file = "/run/gate/shutdown.json"   # the daemon's shutdown states
//!
//! [limits]
//! max_connections = 1024
//! connections_per_source = 32        # open at once, per IPv4 address or IPv6 /64
//! handshakes_per_minute = 120        # new connections per source, burst of the same size
//! handshake_timeout = "10s"
//! header_timeout = "10s"             # the whole header, from its first byte
//! body_timeout = "10s"
//! daemon_timeout = "10s"
//! daemon_connections_kept = 64       # idle ones to the daemon kept for reuse (0: none; at most max_connections)
//! approvals_per_minute = 30          # per source address, burst of the same size
//! ```
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use gate_config::duration;
use serde::Deserialize;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/gate/gate-web.toml";

pub use gate_config::ConfigError;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_connections: usize,
    /// Connections one source (IPv4 address, IPv6 /64) may hold open at once (at most
    /// `max_connections`); trusted proxies are held only to `max_connections`.
    pub connections_per_source: usize,
    /// New connections (TLS handshakes) per source and minute.
    pub handshakes_per_minute: u32,
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub daemon_timeout: Duration,
    /// Idle connections to the daemon's socket kept open for the next requests (0: a new
    /// connection for every request); never more than `max_connections`.
    pub daemon_connections_kept: usize,
    pub approvals_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            connections_per_source: 32,
            handshakes_per_minute: 120,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            daemon_timeout: Duration::from_secs(10),
            daemon_connections_kept: 64,
            approvals_per_minute: 30,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    #[serde(default = "default_socket")]
    pub daemon_socket: PathBuf,
    #[serde(default = "default_user")]
    pub user: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
    /// The shutdown states the daemon publishes.
    #[serde(default = "default_shutdown_file")]
    pub shutdown_file: PathBuf,
    #[serde(default)]
    pub limits: Limits,
    /// Where the metrics page is served (`GET /metrics`); unset: nowhere.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/gate/daemon.sock")
}

fn default_user() -> String {
    "gate-web".to_owned()
}

fn default_shutdown_file() -> PathBuf {
    PathBuf::from("/run/gate/shutdown.json")
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/gate-web")
}

impl Config {
    /// # Errors
    /// Unreadable, not TOML, unknown key, wrong type or an invalid value.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        Self::checked(file, gate_config::load(file)?)
    }

    /// # Errors
    /// As [`Config::load`].
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::checked(file, gate_config::parse(file, text)?)
    }

    /// Checks the values of a parsed `config`.
    fn checked(file: &Path, config: Self) -> Result<Self, ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::invalid(file, key, reason);
        if config.listen.is_empty() {
            return Err(invalid("listen", "give at least one address:port"));
        }
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            return Err(invalid("tls_cert", "tls_cert and tls_key go together"));
        }
        if let Some(metrics) = config.metrics_listen
            && config.listen.iter().any(|public| public.port() == metrics.port())
        {
            return Err(invalid(
                "metrics_listen",
                &format!("port {} is a listen port: the metrics never share the public front's port", metrics.port()),
            ));
        }
        if config.user.is_empty() {
            return Err(invalid("user", "name the unprivileged user to run as"));
        }
        let limits = &config.limits;
        if limits.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if limits.connections_per_source == 0 {
            return Err(invalid("limits.connections_per_source", "must be at least 1"));
        }
        if limits.handshakes_per_minute == 0 {
            return Err(invalid("limits.handshakes_per_minute", "must be at least 1"));
        }
        if limits.approvals_per_minute == 0 {
            return Err(invalid("limits.approvals_per_minute", "must be at least 1"));
        }
        for (key, value) in [
            ("limits.handshake_timeout", limits.handshake_timeout),
            ("limits.header_timeout", limits.header_timeout),
            ("limits.body_timeout", limits.body_timeout),
            ("limits.daemon_timeout", limits.daemon_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/gate/gate-web.toml"), text)
    }

    #[test]
    fn defaults_fill_in() {
        let config = parse("listen = [\"[::]:443\"]\n").unwrap();
        assert_eq!(config.user, "gate-web");
        assert_eq!(config.limits.approvals_per_minute, 30);
    }

    #[test]
    fn bad_configs_name_their_key() {
        for (text, key) in [
            ("listen = []\n", "listen"),
            ("listen = [\"[::]:443\"]\ntls_cert = \"/a\"\n", "tls_cert"),
            ("listen = [\"[::]:443\"]\n[limits]\nmax_connections = 0\n", "limits.max_connections"),
            ("listen = [\"[::]:443\"]\n[limits]\nconnections_per_source = 0\n", "limits.connections_per_source"),
            ("listen = [\"[::]:443\"]\n[limits]\nhandshakes_per_minute = 0\n", "limits.handshakes_per_minute"),
            ("listen = [\"[::]:443\"]\n[limits]\nbody_timeout = \"0s\"\n", "limits.body_timeout"),
            ("listen = [\"[::]:443\"]\nmetrics_listen = \"127.0.0.1:443\"\n", "metrics_listen"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(&format!(": {key}: ")), "{key}: {e}");
        }
        assert!(parse("listen = [\"[::]:443\"]\nlisten_typo = 1\n").unwrap_err().to_string().contains("unknown field"));
        assert!(parse("listen = [\"nonsense\"]\n").is_err());
    }
}
