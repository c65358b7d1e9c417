//! gate.toml(5): every key of the daemon's config with its default, for the man page. The tests
//! below hold it to [`Config`]'s parser (gate_config::reference), so it cannot drift.
use gate_config::reference::{ConfigKey, ConfigTable};

#[cfg(doc)]
use crate::config::Config;

/// What the page says before the keys.
pub const DESCRIPTION: &str = "The gate daemon's config, TOML. gate-daemon reads it at start \
and again on SIGHUP (systemctl reload gate-daemon): a config that does not load is refused with \
the file, the key and the reason on one line, and the daemon runs on with the one in force. \
Unknown keys are refused. Durations are written like \"90s\", \"5m\" or \"1h 30m\". \
gate-daemon --check checks a config, and what a start would find on this machine, without \
starting. The package installs an example as /etc/gate/gate.toml.example; the daemon's unit \
starts only once /etc/gate/gate.toml exists.";

/// The top-level keys every config needs: none (the smallest config is one `[[interface]]` and
/// one `[[gate]]`, their tables' minimal entries).
pub const TOP: &str = "";

pub const TABLES: &[ConfigTable] = &[
    ConfigTable {
        name: "interface",
        array: true,
        text: "An interface the gate is attached to (XDP). At least one. Packets arriving on an \
interface not listed pass XDP untouched; the delivery backstop still judges those for the \
sockets it guards.",
        minimal: "name = \"eth0\"",
        required: true,
    },
    ConfigTable {
        name: "gate",
        array: true,
        text: "A gated port: every packet to it is dropped unless its source holds a live lease \
on this gate. At least one; at most 64 gates and 256 ports.",
        minimal: "name = \"openvpn\"\nprotocol = \"udp\"\nport = 1194",
        required: true,
    },
    ConfigTable { name: "xdp", array: false, text: "The XDP program's choices.", minimal: "", required: false },
    ConfigTable {
        name: "backstop",
        array: false,
        text: "The delivery backstop: a cgroup_skb program where packets meet the sockets of the \
VPN servers, which judges what XDP did not see (an interface not listed, a packet XDP could not \
parse).",
        minimal: "",
        required: false,
    },
    ConfigTable {
        name: "leases",
        array: false,
        text: "How long an approval keeps a gate open for a client's addresses.",
        minimal: "",
        required: false,
    },
    ConfigTable {
        name: "audit",
        array: false,
        text: "The audit trail in the store (gatectl audit): every lease opened or closed and why, \
every enrollment, revocation, shutdown change and notification accepted, with the time, the host \
and who did it.",
        minimal: "",
        required: false,
    },
    ConfigTable {
        name: "approval",
        array: false,
        text: "The approval service: its socket, the store of enrolled clients, and what an \
approval tells the client.",
        minimal: "",
        required: false,
    },
    ConfigTable {
        name: "vpn",
        array: false,
        text: "Settings for every OpenVPN server the daemon runs.",
        minimal: "",
        required: false,
    },
    ConfigTable {
        name: "openvpn",
        array: true,
        text: "An OpenVPN server the daemon runs and supervises, behind one of its gates. It \
starts as its own unprivileged user; the daemon makes its tun device, keys and config.",
        minimal: "name = \"main\"\ngate = \"openvpn\"\nprotocol = \"udp\"\nport = 1194\nnetwork = \"10.8.0.0/24\"",
        required: false,
    },
    ConfigTable {
        name: "notifications",
        array: false,
        text: "Signed self-shutdown notifications (www, web, vpn), polled from a service of \
one's own.",
        minimal: "",
        required: false,
    },
];

pub const KEYS: &[ConfigKey] = &[
    ConfigKey {
        table: "",
        name: "pin_dir",
        default: Some("\"/sys/fs/bpf/gate\""),
        text: "The directory on a bpffs where the gate's programs and maps are pinned. They \
outlive the daemon: a stopped daemon leaves the gate attached and closed, and the next one takes \
it over with its leases. gatectl reads and writes them here. An absolute path.",
    },
    ConfigKey {
        table: "",
        name: "metrics_listen",
        default: None,
        text: "An address and port to serve metrics on, in the Prometheus text format \
(GET /metrics), e.g. \"127.0.0.1:9960\". Unset: no metrics are served. Give a loopback address \
unless a firewall keeps the port to the scraper: the page names gates, servers and counts. \
docs/operations.md, \"Watching it\", lists the metrics. Needs a restart to change.",
    },
    ConfigKey {
        table: "interface",
        name: "name",
        default: None,
        text: "The interface, as ip link names it (1 to 15 characters). Each interface once.",
    },
    ConfigKey {
        table: "interface",
        name: "mode",
        default: Some("\"auto\""),
        text: "How XDP is attached: \"native\" (in the driver), \"generic\" (after the \
driver, slower) or \"auto\" (native if the driver supports it, else generic).",
    },
    ConfigKey {
        table: "gate",
        name: "name",
        default: None,
        text: "The gate's name, used by clients' profiles and gatectl: 1 to 28 characters of \
a-z, A-Z, 0-9, '-', '_', '.'.",
    },
    ConfigKey { table: "gate", name: "protocol", default: None, text: "\"udp\" or \"tcp\"." },
    ConfigKey {
        table: "gate",
        name: "port",
        default: None,
        text: "The port (1 to 65535); one gate per protocol and port.",
    },
    ConfigKey {
        table: "gate",
        name: "cgroup",
        default: None,
        text: "A cgroup v2 directory whose sockets the backstop also guards: a VPN server the \
daemon does not run (its systemd unit's cgroup), or the hierarchy's root for every socket on the \
host. An absolute path. Not set: only the daemon's own servers' cgroup.",
    },
    ConfigKey {
        table: "gate",
        name: "transit",
        default: Some("false"),
        text: "Also gate packets forwarded through this host to another host's port (a router \
in front of VPN servers). Off: only packets addressed to this host are gated.",
    },
    ConfigKey {
        table: "xdp",
        name: "unparseable",
        default: Some("\"drop\""),
        text: "What XDP does with a packet it cannot parse where a port might be (more than 2 \
VLAN tags, an IPv6 extension chain longer than 6 headers or deeper than 512 bytes, a first \
fragment too short for the ports): \"drop\" it, whatever its port and source, or \"pass\" it \
on to the stack, where the backstop judges it at the socket (only with the backstop on).",
    },
    ConfigKey { table: "backstop", name: "enabled", default: Some("true"), text: "Attach the delivery backstop." },
    ConfigKey {
        table: "backstop",
        name: "cgroup",
        default: None,
        text: "The cgroup v2 directory the daemon's OpenVPN servers run in and the backstop \
guards, made if missing. An absolute path. Not set: \"gate-vpn\" beside the daemon's own cgroup.",
    },
    ConfigKey {
        table: "leases",
        name: "connect_window",
        default: Some("\"60s\""),
        text: "How long a new lease waits for the client's first packet. Longer than zero, at \
most max_lifetime.",
    },
    ConfigKey {
        table: "leases",
        name: "idle_timeout",
        default: Some("\"3m\""),
        text: "A lease closes when no packet from its address has passed for this long; \
traffic keeps it open.",
    },
    ConfigKey {
        table: "leases",
        name: "max_lifetime",
        default: Some("\"24h\""),
        text: "A lease closes this long after its approval, traffic or not: the client asks \
again.",
    },
    ConfigKey {
        table: "leases",
        name: "capacity",
        default: Some("65536"),
        text: "Leases the maps hold, per address family (1 to 134217728). Fixed when the maps \
are made: a daemon taking over pinned maps keeps their capacity and logs the difference; a new \
capacity takes gatectl teardown and a start, which drops every lease.",
    },
    ConfigKey {
        table: "leases",
        name: "sweep_interval",
        default: Some("\"10s\""),
        text: "How often closed leases are removed from the maps (an expired lease passes \
nothing before that either).",
    },
    ConfigKey {
        table: "audit",
        name: "keep",
        default: Some("\"90days\""),
        text: "How long the audit trail keeps a row; older ones are purged once a minute (by \
each host of a cluster, for the whole trail). Longer than zero.",
    },
    ConfigKey {
        table: "approval",
        name: "socket",
        default: Some("\"/run/gate/daemon.sock\""),
        text: "The internal approval API, a Unix socket: the front's way in. An absolute path.",
    },
    ConfigKey {
        table: "approval",
        name: "store",
        default: Some("\"/var/lib/gate/gate.db\""),
        text: "The store of enrolled clients, keys and nonces: an SQLite file (mode 0600, \
made by gatectl client add), or a cluster's PostgreSQL database \
\"postgres://USER@HOST/DB\" (the password never in the URL; see store_password_file).",
    },
    ConfigKey {
        table: "approval",
        name: "store_password_file",
        default: None,
        text: "PostgreSQL: a file holding the password, readable by its owner only.",
    },
    ConfigKey {
        table: "approval",
        name: "store_ca_file",
        default: None,
        text: "PostgreSQL over TLS (sslmode=require in the URL): the CA of the database \
server's certificate. Not set: the system's roots.",
    },
    ConfigKey {
        table: "approval",
        name: "store_key_file",
        default: None,
        text: "The store key the secrets in the store are sealed with (gatectl store new-key \
FILE). Required for PostgreSQL: the cluster's one key.",
    },
    ConfigKey {
        table: "approval",
        name: "store_previous_key_file",
        default: None,
        text: "While rotating the store key: the key being rotated out, which still opens \
what it sealed until gatectl store reseal has run.",
    },
    ConfigKey {
        table: "approval",
        name: "window",
        default: Some("\"120s\""),
        text: "The clock difference accepted between a client and this host, either way \
(1s to 1h).",
    },
    ConfigKey {
        table: "approval",
        name: "host",
        default: Some("\"\""),
        text: "This host's name in shared state and in the approvals it signs. Empty: the \
hostname.",
    },
    ConfigKey {
        table: "approval",
        name: "public_ipv4",
        default: None,
        text: "Told to approved clients: connect to this IPv4 address.",
    },
    ConfigKey {
        table: "approval",
        name: "public_ipv6",
        default: None,
        text: "Told to approved clients: connect to this IPv6 address.",
    },
    ConfigKey {
        table: "approval",
        name: "front_user",
        default: Some("\"\""),
        text: "The front's user (gate-web): the internal socket is given to it, and only it \
and root may call. Empty: only root may call.",
    },
    ConfigKey {
        table: "vpn",
        name: "run_dir",
        default: Some("\"/run/gate/openvpn\""),
        text: "Where each OpenVPN server's generated config, keys and status live. An \
absolute path.",
    },
    ConfigKey { table: "vpn", name: "openvpn", default: Some("\"/usr/sbin/openvpn\""), text: "The OpenVPN binary." },
    ConfigKey {
        table: "vpn",
        name: "user",
        default: Some("\"gate-vpn\""),
        text: "The user the servers drop to (each server may name its own): a user of their \
own, so their keys and management sockets are nobody else's. Empty: the servers stay root \
(logged as a warning).",
    },
    ConfigKey { table: "vpn", name: "group", default: Some("\"gate-vpn\""), text: "The group the servers drop to." },
    ConfigKey {
        table: "openvpn",
        name: "name",
        default: None,
        text: "The server's name: 1 to 32 characters of a-z, A-Z, 0-9, '-', '_'; each once.",
    },
    ConfigKey {
        table: "openvpn",
        name: "gate",
        default: None,
        text: "The gate in front of it, which must guard protocol/port below: approvals for \
this gate open this server's port.",
    },
    ConfigKey { table: "openvpn", name: "protocol", default: None, text: "\"udp\" or \"tcp\"." },
    ConfigKey { table: "openvpn", name: "port", default: None, text: "The port it listens on." },
    ConfigKey {
        table: "openvpn",
        name: "network",
        default: None,
        text: "The tunnel's IPv4 network, e.g. \"10.8.0.0/24\" (checked when the server \
starts, so a bad one stops only this server).",
    },
    ConfigKey {
        table: "openvpn",
        name: "device",
        default: None,
        text: "The tun device. Not set: \"gvpn-NAME\" cut to 15 characters.",
    },
    ConfigKey {
        table: "openvpn",
        name: "push_routes",
        default: Some("[]"),
        text: "Networks pushed to clients as routes, e.g. [\"10.0.0.0/8\"].",
    },
    ConfigKey { table: "openvpn", name: "user", default: None, text: "This server's user. Not set: vpn.user." },
    ConfigKey { table: "openvpn", name: "group", default: None, text: "This server's group. Not set: vpn.group." },
    ConfigKey {
        table: "notifications",
        name: "url",
        default: Some("\"\""),
        text: "Polled with ?version=VERSION for signed notifications. Empty: no polling \
(states set with gatectl shutdown still apply).",
    },
    ConfigKey {
        table: "notifications",
        name: "interval",
        default: Some("\"1h\""),
        text: "How often to poll; \"0s\" turns polling off.",
    },
    ConfigKey {
        table: "notifications",
        name: "public_key",
        default: Some("\"\""),
        text: "The Ed25519 public key (base64) that must have signed a notification (gatectl \
notify keygen prints it). Required with a url.",
    },
    ConfigKey {
        table: "notifications",
        name: "publish",
        default: Some("\"/run/gate/shutdown.json\""),
        text: "Where the states in force are published for the front. An absolute path.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_reference_documents_every_key_and_its_default() {
        let found = gate_config::reference::disagreements::<Config>(TOP, TABLES, KEYS);
        assert!(found.is_empty(), "gate.toml(5) and the parser disagree:\n{}", found.join("\n"));
    }

    #[test]
    fn the_smallest_config_is_one_the_daemon_takes() {
        let text = gate_config::reference::smallest_config(TOP, TABLES);
        Config::parse(std::path::Path::new("gate.toml"), &text).unwrap();
    }
}
