//! The daemon's TOML config. Unknown keys are refused; every error names the file, the key and
//! what was expected, on one line.
//!
//! ```toml
//! pin_dir = "/sys/fs/bpf/gate"     # on a bpffs
//!
//! [[interface]]
//! name = "eth0"
//! mode = "auto"                    # auto (native, else generic) | native | generic
//!
//! [[gate]]
//! name = "openvpn"
//! protocol = "udp"
//! port = 1194
//! cgroup = "/sys/fs/cgroup/system.slice/openvpn-server@x.service"  # optional: a server the
//!                                  # daemon does not run; the backstop guards its sockets too
//! transit = false                  # also gate packets forwarded to other hosts' port 1194
//!
//! [xdp]
//! unparseable = "drop"             # or "pass": on to the stack and the backstop
//!
//! [backstop]                       # the delivery backstop (cgroup_skb/ingress)
//! enabled = true
//! cgroup = ""                      # where the OpenVPN servers run and the backstop guards
//!                                  # (default: "gate-vpn" beside the daemon's own cgroup)
//!
//! [leases]
//! connect_window = "60s"
//! idle_timeout = "3m"
//! max_lifetime = "24h"
//! capacity = 65536                 # per address family
//! sweep_interval = "10s"
//!
//! [approval]
//! socket = "/run/gate/daemon.sock" # the internal approval API (the front's way in)
//! store = "/var/lib/gate/gate.db"  # clients, keys, nonces (0600); or a cluster's shared
//!                                  # "postgres://gate@db.example.net/gate"
//! store_password_file = "/etc/gate/store-password"  # PostgreSQL: the password, mode 0600
//! store_ca_file = "/etc/gate/store-ca.pem"  # PostgreSQL over TLS (sslmode=require in the URL):
//!                                  # the CA of the database's certificate (default: system roots)
//! store_key_file = "/etc/gate/store.key"  # seals the store's secrets (required for PostgreSQL:
//!                                  # the cluster's one key; `gatectl store new-key FILE`)
//! store_previous_key_file = "/etc/gate/store.key.old"  # while rotating: still opens
//! window = "120s"                  # accepted clock difference, either way
//! host = "gate-1"                  # this host's name in shared state (default: hostname)
//! public_ipv4 = "203.0.113.10"     # told to approved clients: connect here
//! public_ipv6 = "2001:db8::10"
//! front_user = "gate-web"          # the front's user, the only one (with root) let in
//!
//! [vpn]
//! run_dir = "/run/gate/openvpn"      # generated configs, keys, status
//! user = "gate-vpn"                  # default user/group the servers drop to (a user of
//! group = "gate-vpn"                 # their own; "" keeps them root, logged as a warning)
//!
//! [[openvpn]]
//! name = "main"
//! gate = "openvpn"                   # must guard protocol/port below
//! protocol = "udp"
//! port = 1194
//! network = "10.8.0.0/24"
//! push_routes = ["10.0.0.0/8"]
//! ```
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use gate_common::{DEFAULT_LEASE_CAPACITY, GATE_NAME_MAX, MAX_GATED_PORTS, MAX_GATES, MAX_LEASE_CAPACITY};
use gate_config::duration;
use gate_maps::{GateSpec, LeasePolicy, Protocol, pins::DEFAULT_PIN_DIR};
use gate_store::StoreLocation;
use serde::Deserialize;

/// Where the daemon looks for its config by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/gate/gate.toml";

pub use gate_config::ConfigError;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeSetting {
    /// Native if the driver supports it, else generic.
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    pub name: String,
    #[serde(default)]
    pub mode: ModeSetting,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// A cgroup v2 directory whose sockets the backstop also guards (a VPN server the daemon
    /// does not run, or the hierarchy's root for every socket on the host).
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// Also gate transit: packets forwarded through this host to another one's port (a router
    /// in front of VPN servers). Off: only packets addressed to this host are gated.
    #[serde(default)]
    pub transit: bool,
}

/// What XDP does with a packet it cannot parse where a port might be (more than 2 VLAN tags, an
/// IPv6 extension chain longer than 6 headers or deeper than 512 bytes, a first fragment too
/// short for the ports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unparseable {
    /// Drop it at XDP (it might be for a gated port), whatever its port and source.
    #[default]
    Drop,
    /// Pass it on: the kernel parses it, and the backstop judges it at the socket. Only with
    /// the backstop on, and only where every gated socket is in a guarded cgroup.
    Pass,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdpConfig {
    pub unparseable: Unparseable,
}

/// The delivery backstop: a program where packets meet sockets (docs/architecture.md).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackstopConfig {
    pub enabled: bool,
    /// The cgroup the supervised OpenVPN servers run in, made if missing; empty: `gate-vpn`
    /// beside the daemon's own cgroup.
    pub cgroup: Option<PathBuf>,
}

impl Default for BackstopConfig {
    fn default() -> Self {
        Self { enabled: true, cgroup: None }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    #[serde(deserialize_with = "duration")]
    pub connect_window: Duration,
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_lifetime: Duration,
    pub capacity: u32,
    #[serde(deserialize_with = "duration")]
    pub sweep_interval: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            connect_window: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(180),
            max_lifetime: Duration::from_secs(24 * 3600),
            capacity: DEFAULT_LEASE_CAPACITY,
            sweep_interval: Duration::from_secs(10),
        }
    }
}

impl LeaseConfig {
    #[must_use]
    pub const fn policy(&self) -> LeasePolicy {
        LeasePolicy {
            connect_window: self.connect_window,
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    pub socket: PathBuf,
    #[serde(deserialize_with = "store_location")]
    pub store: StoreLocation,
    /// The PostgreSQL store's password (never in the URL).
    pub store_password_file: Option<PathBuf>,
    /// The CA that signed the PostgreSQL server's certificate.
    pub store_ca_file: Option<PathBuf>,
    /// The store key the secrets in the store are sealed with.
    pub store_key_file: Option<PathBuf>,
    /// A store key being rotated out.
    pub store_previous_key_file: Option<PathBuf>,
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Tags this host's rows in a shared store; the hostname when empty.
    pub host: String,
    pub public_ipv4: Option<Ipv4Addr>,
    pub public_ipv6: Option<Ipv6Addr>,
    /// The front's user: the internal socket is given to it. Empty: only root may call.
    pub front_user: String,
}

impl ApprovalConfig {
    /// What reaching a PostgreSQL store takes besides its URL.
    #[must_use]
    pub fn store_access(&self) -> gate_store::StoreAccess {
        gate_store::StoreAccess {
            password_file: self.store_password_file.clone(),
            ca_file: self.store_ca_file.clone(),
            key_file: self.store_key_file.clone(),
            previous_key_file: self.store_previous_key_file.clone(),
        }
    }
}

pub const DEFAULT_SOCKET_PATH: &str = "/run/gate/daemon.sock";

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET_PATH),
            store: StoreLocation::File(PathBuf::from(gate_store::DEFAULT_STORE_PATH)),
            store_password_file: None,
            store_ca_file: None,
            store_key_file: None,
            store_previous_key_file: None,
            window: Duration::from_secs(120),
            host: String::new(),
            public_ipv4: None,
            public_ipv6: None,
            front_user: String::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    #[serde(default, rename = "interface")]
    pub interfaces: Vec<InterfaceConfig>,
    #[serde(default, rename = "gate")]
    pub gates: Vec<GateConfig>,
    #[serde(default)]
    pub xdp: XdpConfig,
    #[serde(default)]
    pub backstop: BackstopConfig,
    #[serde(default)]
    pub leases: LeaseConfig,
    #[serde(default)]
    pub approval: ApprovalConfig,
    #[serde(default)]
    pub vpn: VpnConfig,
    #[serde(default, rename = "openvpn")]
    pub openvpn: Vec<OpenVpnConfig>,
    #[serde(default)]
    pub notifications: NotificationsConfig,
    /// Where the metrics page is served (`GET /metrics`); unset: nowhere.
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub audit: AuditConfig,
}

/// The audit trail in the store (`gatectl audit`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Rows older than this are purged (once a minute).
    #[serde(deserialize_with = "duration")]
    pub keep: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { keep: Duration::from_secs(90 * 24 * 3600) }
    }
}

/// Self-shutdown notifications (docs/notifications.md).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Polled with `?version=<this version>`; empty: no polling (operator states still apply).
    pub url: String,
    /// How often; "0s" turns polling off.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// The Ed25519 public key (b64) that must have signed a notification.
    pub public_key: String,
    /// Where the states in force are published for the front.
    pub publish: PathBuf,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            interval: Duration::from_secs(3600),
            public_key: String::new(),
            publish: PathBuf::from("/run/gate/shutdown.json"),
        }
    }
}

/// The user (and group) the OpenVPN servers drop to unless the config names another.
pub const DEFAULT_VPN_USER: &str = "gate-vpn";

/// Settings for every OpenVPN server.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VpnConfig {
    /// Where each server's generated config, keys and status live.
    pub run_dir: PathBuf,
    /// The OpenVPN binary.
    pub openvpn: PathBuf,
    /// Default user and group the servers drop to (each server may name its own): `gate-vpn`,
    /// a user of their own (setup and the package make it), so their keys and management
    /// sockets are nobody else's. Empty: the servers stay root (logged as a warning).
    pub user: String,
    pub group: String,
}

impl Default for VpnConfig {
    fn default() -> Self {
        Self {
            run_dir: PathBuf::from("/run/gate/openvpn"),
            openvpn: PathBuf::from("/usr/sbin/openvpn"),
            user: DEFAULT_VPN_USER.to_owned(),
            group: DEFAULT_VPN_USER.to_owned(),
        }
    }
}

/// One OpenVPN server, behind a gate: its port must be one the gate guards.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenVpnConfig {
    pub name: String,
    /// The gate in front of it: approvals for this gate open this server's port.
    pub gate: String,
    pub protocol: Protocol,
    pub port: u16,
    /// The tunnel's IPv4 network, e.g. "10.8.0.0/24" (checked when the server starts, so a bad
    /// one stops only this server).
    pub network: String,
    /// The tun device; default "gvpn-<name>" cut to 15 characters.
    #[serde(default)]
    pub device: Option<String>,
    /// Networks pushed to clients as routes, e.g. "10.0.0.0/8".
    #[serde(default)]
    pub push_routes: Vec<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

fn store_location<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<StoreLocation, D::Error> {
    let text = String::deserialize(deserializer)?;
    StoreLocation::parse(&text).map_err(serde::de::Error::custom)
}

fn default_pin_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PIN_DIR)
}

impl Config {
    /// What a config file leaves out, everywhere: for tools that need the daemon's paths where no
    /// config exists. Not a config a daemon can run (it lists no interface).
    #[must_use]
    pub fn defaults() -> Self {
        Self {
            pin_dir: default_pin_dir(),
            interfaces: Vec::new(),
            gates: Vec::new(),
            xdp: XdpConfig::default(),
            backstop: BackstopConfig::default(),
            leases: LeaseConfig::default(),
            approval: ApprovalConfig::default(),
            vpn: VpnConfig::default(),
            openvpn: Vec::new(),
            notifications: NotificationsConfig::default(),
            metrics_listen: None,
            audit: AuditConfig::default(),
        }
    }

    /// This host's name in shared state: `approval.host`, else the hostname.
    #[must_use]
    pub fn host_name(&self) -> String {
        Some(self.approval.host.clone()).filter(|h| !h.is_empty()).unwrap_or_else(gate_store::default_host_name)
    }

    /// Reads and validates the config at `file`.
    ///
    /// # Errors
    /// Unreadable file, bad TOML, unknown key, wrong type or an invalid value.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let config: Self = gate_config::load(file)?;
        config.validate(file)?;
        Ok(config)
    }

    /// Parses and validates `text`, reporting errors against `file`.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Self = gate_config::parse(file, text)?;
        config.validate(file)?;
        Ok(config)
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid { file: file.to_owned(), key, reason };
        if !self.pin_dir.is_absolute() {
            return Err(invalid("pin_dir".into(), format!("{} is not an absolute path", self.pin_dir.display())));
        }
        if self.interfaces.is_empty() {
            return Err(invalid("interface".into(), "at least one [[interface]] is required".into()));
        }
        let mut seen_interfaces = BTreeSet::new();
        for (i, interface) in self.interfaces.iter().enumerate() {
            let key = format!("interface[{i}].name");
            if interface.name.is_empty()
                || interface.name.len() > 15
                || interface.name.contains(['/', ':'])
                || interface.name.contains(char::is_whitespace)
            {
                return Err(invalid(key, format!("{:?} is not a valid interface name", interface.name)));
            }
            if !seen_interfaces.insert(&interface.name) {
                return Err(invalid(key, format!("interface {:?} is listed twice", interface.name)));
            }
        }
        if self.gates.is_empty() {
            return Err(invalid("gate".into(), "at least one [[gate]] is required".into()));
        }
        let mut ports = BTreeMap::new();
        for (i, gate) in self.gates.iter().enumerate() {
            if gate.name.is_empty()
                || gate.name.len() > GATE_NAME_MAX
                || !gate.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(
                    format!("gate[{i}].name"),
                    format!("{:?} must be 1 to {GATE_NAME_MAX} characters of a-z, A-Z, 0-9, '-', '_', '.'", gate.name),
                ));
            }
            if gate.port == 0 {
                return Err(invalid(format!("gate[{i}].port"), "port 0 cannot be gated".into()));
            }
            if let Some(cgroup) = &gate.cgroup
                && !cgroup.is_absolute()
            {
                return Err(invalid(
                    format!("gate[{i}].cgroup"),
                    format!("{} is not an absolute path", cgroup.display()),
                ));
            }
            if let Some(other) = ports.insert((gate.protocol, gate.port), &gate.name) {
                return Err(invalid(
                    format!("gate[{i}]"),
                    format!("{}/{} is already gated by {other:?}", gate.protocol, gate.port),
                ));
            }
        }
        let names: BTreeSet<_> = self.gates.iter().map(|g| &g.name).collect();
        if names.len() > MAX_GATES as usize || ports.len() > MAX_GATED_PORTS as usize {
            return Err(invalid("gate".into(), format!("at most {MAX_GATES} gates and {MAX_GATED_PORTS} ports")));
        }
        if self.xdp.unparseable == Unparseable::Pass && !self.backstop.enabled {
            return Err(invalid(
                "xdp.unparseable".into(),
                "\"pass\" hands such packets to the backstop, which is off (backstop.enabled = false)".into(),
            ));
        }
        if let Some(cgroup) = &self.backstop.cgroup
            && !cgroup.is_absolute()
        {
            return Err(invalid("backstop.cgroup".into(), format!("{} is not an absolute path", cgroup.display())));
        }
        let leases = &self.leases;
        for (key, value) in [
            ("connect_window", leases.connect_window),
            ("max_lifetime", leases.max_lifetime),
            ("sweep_interval", leases.sweep_interval),
        ] {
            if value.is_zero() {
                return Err(invalid(format!("leases.{key}"), "must be longer than zero".into()));
            }
        }
        if self.audit.keep.is_zero() {
            return Err(invalid("audit.keep".into(), "must be longer than zero".into()));
        }
        if leases.connect_window > leases.max_lifetime {
            return Err(invalid("leases.connect_window".into(), "is longer than leases.max_lifetime".into()));
        }
        if leases.capacity == 0 || leases.capacity > MAX_LEASE_CAPACITY {
            return Err(invalid(
                "leases.capacity".into(),
                format!("must be 1 to {MAX_LEASE_CAPACITY} (per address family)"),
            ));
        }
        let approval = &self.approval;
        let store_file = match &approval.store {
            StoreLocation::File(path) => Some(path),
            StoreLocation::Postgres(_) => None,
        };
        let paths = [
            ("approval.socket", Some(&approval.socket)),
            ("approval.store", store_file),
            ("approval.store_password_file", approval.store_password_file.as_ref()),
            ("approval.store_ca_file", approval.store_ca_file.as_ref()),
            ("approval.store_key_file", approval.store_key_file.as_ref()),
            ("approval.store_previous_key_file", approval.store_previous_key_file.as_ref()),
        ];
        for (key, path) in paths.into_iter().filter_map(|(key, path)| Some((key, path?))) {
            if !path.is_absolute() {
                return Err(invalid(key.into(), format!("{} is not an absolute path", path.display())));
            }
        }
        if approval.window.is_zero() || approval.window > Duration::from_secs(3600) {
            return Err(invalid("approval.window".into(), "must be between 1s and 1h".into()));
        }
        if approval.host.len() > 255
            || approval.host.contains(char::is_whitespace)
            || approval.host == gate_store::ALL_HOSTS
        {
            return Err(invalid("approval.host".into(), format!("{:?} is not a host name", approval.host)));
        }
        let notifications = &self.notifications;
        if !notifications.url.is_empty() {
            if !(notifications.url.starts_with("https://") || notifications.url.starts_with("http://")) {
                return Err(invalid(
                    "notifications.url".into(),
                    format!("{:?} is not an http(s) URL", notifications.url),
                ));
            }
            if let Err(e) = gate_notify::decode_verifying_key(&notifications.public_key) {
                return Err(invalid(
                    "notifications.public_key".into(),
                    format!("{e}: a notification URL needs the signing service's Ed25519 public key (b64)"),
                ));
            }
        }
        if !notifications.publish.is_absolute() {
            return Err(invalid("notifications.publish".into(), "must be an absolute path".into()));
        }
        if !self.vpn.run_dir.is_absolute() {
            return Err(invalid("vpn.run_dir".into(), "must be an absolute path".into()));
        }
        let mut vpn_names = BTreeSet::new();
        for (i, server) in self.openvpn.iter().enumerate() {
            let key = |field: &str| format!("openvpn[{i}].{field}");
            if server.name.is_empty()
                || server.name.len() > 32
                || !server.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                return Err(invalid(key("name"), format!("{:?}: 1 to 32 of a-z, A-Z, 0-9, '-', '_'", server.name)));
            }
            if !vpn_names.insert(&server.name) {
                return Err(invalid(key("name"), format!("{:?} is used twice", server.name)));
            }
            if !self
                .gates
                .iter()
                .any(|g| g.name == server.gate && g.protocol == server.protocol && g.port == server.port)
            {
                return Err(invalid(
                    key("gate"),
                    format!(
                        "gate {:?} does not guard {}/{}: an OpenVPN server must sit behind its gate",
                        server.gate, server.protocol, server.port
                    ),
                ));
            }
            if let Some(device) = &server.device
                && (device.is_empty() || device.len() > 15 || device.contains(['/', ':', ' ']))
            {
                return Err(invalid(key("device"), format!("{device:?} is not an interface name")));
            }
        }
        Ok(())
    }

    /// What a start would find wrong on this machine, short of attaching anything: each listed
    /// interface exists (in this network namespace) and has a device type the gate parses, the
    /// front's user exists, the OpenVPN binary is there, every server's user and group exist and
    /// may open the tun node, each gate's own cgroup exists. For `--check` and a reload.
    ///
    /// # Errors
    /// The first problem, naming its key.
    pub fn check_system(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid { file: file.to_owned(), key, reason };
        for (i, interface) in self.interfaces.iter().enumerate() {
            let key = format!("interface[{i}].name");
            match gate_maps::netlink::link(&interface.name) {
                Err(e) => return Err(invalid(key, format!("ask rtnetlink about {:?}: {e}", interface.name))),
                Ok(None) => return Err(invalid(key, format!("interface {:?} does not exist", interface.name))),
                Ok(Some(link)) if gate_maps::netlink::Framing::of(link.device_type).is_none() => {
                    return Err(invalid(
                        key,
                        format!(
                            "interface {:?} has device type {}, whose frames gate cannot parse",
                            interface.name, link.device_type
                        ),
                    ));
                }
                Ok(Some(_)) => {}
            }
        }
        let front_user = &self.approval.front_user;
        if !front_user.is_empty() && nix::unistd::User::from_name(front_user).ok().flatten().is_none() {
            return Err(invalid("approval.front_user".into(), format!("user {front_user:?} does not exist")));
        }
        if !self.openvpn.is_empty() {
            use std::os::unix::fs::PermissionsExt as _;
            let binary = &self.vpn.openvpn;
            match std::fs::metadata(binary) {
                Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {}
                Ok(_) => {
                    return Err(invalid(
                        "vpn.openvpn".into(),
                        format!("{} is not an executable file", binary.display()),
                    ));
                }
                Err(e) => return Err(invalid("vpn.openvpn".into(), format!("{}: {e}", binary.display()))),
            }
        }
        for (i, server) in self.openvpn.iter().enumerate() {
            let drop = crate::openvpn::server_conf::privileges(server, &self.vpn)
                .map_err(|reason| invalid(format!("openvpn[{i}]"), reason))?;
            let (uid, gid) = drop.map_or((0, 0), |d| (d.uid, d.gid));
            crate::openvpn::tun::openable_by(uid, gid).map_err(|reason| invalid(format!("openvpn[{i}]"), reason))?;
        }
        if self.backstop.enabled {
            for (i, gate) in self.gates.iter().enumerate() {
                if let Some(cgroup) = gate.cgroup.as_ref().filter(|c| !c.is_dir()) {
                    return Err(invalid(
                        format!("gate[{i}].cgroup"),
                        format!("{} is not a directory", cgroup.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// That the store, if one exists, opens whole (a start makes one only where none exists),
    /// and that the files reaching it takes are in order.
    /// For `--check` only, never inside a running daemon: opening the file apart from SQLite
    /// would drop that process's own SQLite locks on it.
    ///
    /// # Errors
    /// The store is damaged or cannot be opened.
    pub fn check_store(&self, file: &Path) -> Result<(), ConfigError> {
        // A database is not asked: `--check` says whether the config holds, offline. What
        // reaching it takes (keys, password file, TLS settings) is checked.
        self.approval.store.check_offline(&self.approval.store_access()).map_err(|e| ConfigError::Invalid {
            file: file.to_owned(),
            key: "approval.store".into(),
            reason: e.to_string(),
        })?;
        if let StoreLocation::File(path) = &self.approval.store
            && path.exists()
        {
            gate_store::Store::open(path).map_err(|e| ConfigError::Invalid {
                file: file.to_owned(),
                key: "approval.store".into(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// The cgroup the supervised OpenVPN servers run in (configured, or `gate-vpn` beside the
    /// daemon's own cgroup).
    ///
    /// # Errors
    /// No cgroup v2 hierarchy is mounted.
    pub fn servers_cgroup(&self) -> std::io::Result<PathBuf> {
        match &self.backstop.cgroup {
            Some(cgroup) => Ok(cgroup.clone()),
            None => Ok(crate::cgroup::own()?.join(crate::cgroup::SERVERS_CGROUP)),
        }
    }

    /// Every cgroup the backstop guards: the servers' and each gate's own, without repeats.
    ///
    /// # Errors
    /// As [`Self::servers_cgroup`].
    pub fn backstop_cgroups(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut cgroups = vec![self.servers_cgroup()?];
        for gate in &self.gates {
            if let Some(cgroup) = &gate.cgroup
                && !cgroups.contains(cgroup)
            {
                cgroups.push(cgroup.clone());
            }
        }
        Ok(cgroups)
    }

    /// The gates as the pinned state wants them.
    #[must_use]
    pub fn gate_specs(&self) -> Vec<GateSpec> {
        self.gates
            .iter()
            .map(|g| GateSpec { name: g.name.clone(), protocol: g.protocol, port: g.port, transit: g.transit })
            .collect()
    }
}

/// toml's messages span several lines (a snippet of the file); keep the gist on one, with the
/// line number and the line itself, which names the key.
#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
pin_dir = "/sys/fs/bpf/gate-test"
[[interface]]
name = "eth0"
[[gate]]
name = "vpn"
protocol = "udp"
port = 1194
[[gate]]
name = "vpn"
protocol = "tcp"
port = 443
[leases]
idle_timeout = "2m"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/gate/gate.toml"), text)
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("config should be refused").to_string()
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let config = parse(GOOD).expect("valid config");
        assert_eq!(config.interfaces[0].mode, ModeSetting::Auto);
        assert_eq!(config.gates.len(), 2);
        assert_eq!(config.leases.idle_timeout, Duration::from_secs(120));
        assert_eq!(config.leases.connect_window, Duration::from_secs(60));
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let e = error(&GOOD.replace("port = 1194", "port = 1194\nprot = 5"));
        assert!(e.starts_with("config /etc/gate/gate.toml: "), "{e}");
        assert!(e.contains("line 9: `prot = 5`: unknown field `prot`"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn wrong_type_is_refused() {
        let e = error(&GOOD.replace("port = 1194", "port = \"1194\""));
        assert!(e.contains("line 8: `port = \"1194\"`: invalid type"), "{e}");
    }

    #[test]
    fn bad_protocol_is_refused() {
        let e = error(&GOOD.replace("\"udp\"", "\"sctp\""));
        assert!(e.contains("sctp"), "{e}");
    }

    #[test]
    fn bad_duration_names_the_value() {
        let e = error(&GOOD.replace("\"2m\"", "\"two minutes\""));
        assert!(e.contains("\"two minutes\" is not a duration"), "{e}");
    }

    #[test]
    fn port_gated_twice_is_refused() {
        let e = error(&GOOD.replace("port = 443", "port = 1194").replace("\"tcp\"", "\"udp\""));
        assert!(e.contains("gate[1]: udp/1194 is already gated by \"vpn\""), "{e}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        for (from, to, key) in [
            ("port = 443", "port = 0", "gate[1].port"),
            ("name = \"eth0\"", "name = \"eth0:1\"", "interface[0].name"),
            ("name = \"vpn\"\nprotocol = \"udp\"", "name = \"v p n\"\nprotocol = \"udp\"", "gate[0].name"),
            ("idle_timeout = \"2m\"", "connect_window = \"0s\"", "leases.connect_window"),
            ("idle_timeout = \"2m\"", "max_lifetime = \"10s\"", "leases.connect_window"),
            ("idle_timeout = \"2m\"", "capacity = 0", "leases.capacity"),
            ("idle_timeout = \"2m\"", "capacity = 134217729", "leases.capacity"),
            ("pin_dir = \"/sys/fs/bpf/gate-test\"", "pin_dir = \"relative\"", "pin_dir"),
            ("port = 443", "port = 443\ncgroup = \"vpn\"", "gate[1].cgroup"),
            ("idle_timeout = \"2m\"", "idle_timeout = \"2m\"\n[backstop]\ncgroup = \"x\"", "backstop.cgroup"),
            (
                "idle_timeout = \"2m\"",
                "idle_timeout = \"2m\"\n[xdp]\nunparseable = \"pass\"\n[backstop]\nenabled = false",
                "xdp.unparseable",
            ),
            ("idle_timeout = \"2m\"", "idle_timeout = \"2m\"\n[approval]\nwindow = \"0s\"", "approval.window"),
            ("idle_timeout = \"2m\"", "idle_timeout = \"2m\"\n[approval]\nstore = \"gate.db\"", "approval.store"),
            (
                "idle_timeout = \"2m\"",
                "idle_timeout = \"2m\"\n[approval]\nstore = \"postgres://db/gate\"\nstore_ca_file = \"ca.pem\"",
                "approval.store_ca_file",
            ),
        ] {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "replacement {from:?} did not apply");
            let e = error(&text);
            assert!(e.contains(&format!(": {key}: ")), "expected key {key} in {e}");
        }
    }

    #[test]
    fn a_shared_store_is_a_url_with_its_password_and_ca_in_files() {
        let text = GOOD.replace(
            "idle_timeout = \"2m\"",
            "idle_timeout = \"2m\"\n[approval]\nstore = \"postgres://gate@db.example.net/gate?sslmode=require\"\n\
             store_password_file = \"/etc/gate/store-password\"\nstore_ca_file = \"/etc/gate/store-ca.pem\"",
        );
        let config = parse(&text).expect("valid config");
        assert!(matches!(config.approval.store, StoreLocation::Postgres(_)));
        let access = config.approval.store_access();
        assert_eq!(access.password_file.as_deref(), Some(Path::new("/etc/gate/store-password")));
        assert_eq!(access.ca_file.as_deref(), Some(Path::new("/etc/gate/store-ca.pem")));
        let e = error(&text.replace("gate@db", "gate:hunter2@db"));
        assert!(e.contains("password") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_system_check_names_a_missing_interface_and_a_missing_user() {
        let config = parse(&GOOD.replace("\"eth0\"", "\"gt-nosuch0\"")).expect("valid config");
        let e = config.check_system(Path::new("/etc/gate/gate.toml")).expect_err("no such interface").to_string();
        assert!(e.contains("interface[0].name: interface \"gt-nosuch0\" does not exist"), "{e}");
        let text = GOOD
            .replace("\"eth0\"", "\"lo\"")
            .replace("idle_timeout = \"2m\"", "idle_timeout = \"2m\"\n[approval]\nfront_user = \"gt-no-such-user\"");
        let e = parse(&text).expect("valid config").check_system(Path::new("/x")).expect_err("no user").to_string();
        assert!(e.contains("approval.front_user: user \"gt-no-such-user\" does not exist"), "{e}");
        assert!(parse(&GOOD.replace("\"eth0\"", "\"lo\"")).unwrap().check_system(Path::new("/x")).is_ok());
    }

    #[test]
    fn missing_interfaces_and_gates_are_refused() {
        assert!(error("[[gate]]\nname = \"a\"\nprotocol = \"tcp\"\nport = 1\n").contains("interface"));
        assert!(error("[[interface]]\nname = \"eth0\"\n").contains("gate"));
    }
}
