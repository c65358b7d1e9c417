//! [`TestBed`]: a gateway namespace (where the gate runs) and a client namespace, joined by veth,
//! with documentation-range addresses (192.0.2.0/24, 2001:db8::/64), two source addresses per
//! family on the client, and a bpffs pin directory of its own.
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use crate::{
    cgroup::TestCgroup,
    netns::{Netns, veth},
    unique::{self, PIN_ROOT, PREFIX},
};

pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// A second address on the client: a source the tests never give a lease.
pub const STRANGER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const STRANGER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 3);

pub struct TestBed {
    // Field order is drop order: the pin dir (links, maps) goes before the namespaces, and the
    // cgroup (with whatever still runs in it) before both.
    /// The backstop's cgroup: the daemon attaches there and runs its OpenVPN servers there.
    pub cgroup: TestCgroup,
    pub pin_dir: PinDirGuard,
    pub gateway: Netns,
    pub client: Netns,
    /// The gateway's end of the veth, where the gate attaches.
    pub gateway_if: String,
    /// The client's end.
    pub client_if: String,
    /// The daemon's internal socket and store live here (removed with the bed).
    pub state_dir: PathBuf,
    config_files: Vec<PathBuf>,
    /// A store elsewhere than the bed's file (a shared PostgreSQL database), and its store key.
    shared_store: Option<(String, PathBuf)>,
}

/// Removes a pin directory (detaching its links) on drop.
pub struct PinDirGuard(pub PathBuf);

impl PinDirGuard {
    /// A fresh, not yet created, pin directory path.
    pub fn new() -> Self {
        Self(PathBuf::from(PIN_ROOT).join(format!("{PREFIX}{}", unique::token())))
    }
}

impl Default for PinDirGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDirGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl TestBed {
    pub fn new() -> Self {
        let gateway = Netns::new("gw");
        let client = Netns::new("cl");
        let token = unique::token();
        let gateway_if = format!("{PREFIX}{token}g");
        let client_if = format!("{PREFIX}{token}c");
        wire(&gateway, &gateway_if, &client, &client_if);
        let state_dir = std::env::temp_dir().join(format!("{PREFIX}{token}.d"));
        fs::create_dir_all(&state_dir).expect("create the bed's state dir");
        Self {
            cgroup: TestCgroup::new(),
            pin_dir: PinDirGuard::new(),
            gateway,
            client,
            gateway_if,
            client_if,
            state_dir,
            config_files: Vec::new(),
            shared_store: None,
        }
    }

    /// The daemon's internal socket.
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("daemon.sock")
    }

    /// Where the daemon publishes its shutdown states (and the front reads them).
    pub fn shutdown_file(&self) -> PathBuf {
        self.state_dir.join("shutdown.json")
    }

    /// The daemon's store file.
    pub fn store(&self) -> PathBuf {
        self.state_dir.join("gate.db")
    }

    /// Where the bed's daemon and gatectl find the store: the bed's file, or the shared one.
    pub fn store_location(&self) -> String {
        self.shared_store.as_ref().map_or_else(|| self.store().display().to_string(), |(location, _)| location.clone())
    }

    /// The flags that give gatectl the bed's store.
    pub fn store_flags(&self) -> Vec<String> {
        let mut flags = vec!["--store".to_owned(), self.store_location()];
        if let Some((_, key)) = &self.shared_store {
            flags.extend(["--store-key-file".to_owned(), key.display().to_string()]);
        }
        flags
    }

    /// Uses the store at `location` (a `postgres://` URL), its secrets sealed with the store
    /// key in `key_file`, in configs and gatectl from now on.
    pub fn share_store(&mut self, location: &str, key_file: &std::path::Path) {
        self.shared_store = Some((location.to_owned(), key_file.to_owned()));
    }

    /// A daemon config for this bed gating `gates` (name, protocol, port), plus `extra` TOML
    /// appended verbatim (e.g. a `[leases]` table). The `[approval]` table always names the
    /// bed's socket and store; `extra` may add keys to it.
    pub fn config(&mut self, gates: &[(&str, &str, u16)], extra: &str) -> PathBuf {
        let mut text =
            format!("pin_dir = \"{}\"\n[[interface]]\nname = \"{}\"\n", self.pin_dir.0.display(), self.gateway_if);
        for (name, protocol, port) in gates {
            text.push_str(&format!("[[gate]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nport = {port}\n"));
        }
        // The bed's own paths go into their tables, merged with what `extra` puts there.
        let mine = [
            (
                "[approval]\n",
                format!(
                    "socket = \"{}\"\nstore = \"{}\"\n{}",
                    self.socket().display(),
                    self.store_location(),
                    self.shared_store
                        .as_ref()
                        .map(|(_, key)| format!("store_key_file = \"{}\"\n", key.display()))
                        .unwrap_or_default()
                ),
            ),
            ("[notifications]\n", format!("publish = \"{}\"\n", self.shutdown_file().display())),
            ("[backstop]\n", format!("cgroup = \"{}\"\n", self.cgroup.path().display())),
        ];
        let mut extra = extra.to_owned();
        let mut appended = String::new();
        for (table, keys) in mine {
            if extra.contains(table) {
                extra = extra.replacen(table, &format!("{table}{keys}"), 1);
            } else {
                appended.push_str(&format!("{table}{keys}"));
            }
        }
        text.push('\n');
        text.push_str(&extra);
        text.push('\n');
        text.push_str(&appended);
        self.write_config(&text)
    }

    /// Writes `text` as a config file that is removed with the bed.
    pub fn write_config(&mut self, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("{PREFIX}{}.toml", unique::token()));
        fs::write(&path, text).expect("write test config");
        self.config_files.push(path.clone());
        path
    }

    /// The gateway's address in the family of `source`.
    pub fn gateway_addr(source: IpAddr) -> IpAddr {
        match source {
            IpAddr::V4(_) => GATEWAY_V4.into(),
            IpAddr::V6(_) => GATEWAY_V6.into(),
        }
    }
}

/// The veth between gateway and client, with every address.
fn wire(gateway: &Netns, gateway_if: &str, client: &Netns, client_if: &str) {
    veth(gateway, gateway_if, client, client_if);
    gateway.ip(&["addr", "add", &format!("{GATEWAY_V4}/24"), "dev", gateway_if]);
    gateway.ip(&["addr", "add", &format!("{GATEWAY_V6}/64"), "dev", gateway_if, "nodad"]);
    for addr in [CLIENT_V4, STRANGER_V4] {
        client.ip(&["addr", "add", &format!("{addr}/24"), "dev", client_if]);
    }
    client.ip(&["addr", "add", &format!("{CLIENT_V6}/64"), "dev", client_if, "nodad"]);
    // Deprecated (preferred_lft 0): usable when bound to, never picked as a source, so the
    // client's own connections come from CLIENT_V6 as they come from CLIENT_V4.
    client.ip(&["addr", "add", &format!("{STRANGER_V6}/64"), "dev", client_if, "nodad", "preferred_lft", "0"]);
}

impl TestBed {
    /// Deletes the veth (both ends go) and makes it again with the same names and addresses: what
    /// a driver reload, a NIC reset or a network manager re-making a device does.
    pub fn recreate_veth(&self) {
        self.gateway.ip(&["link", "del", &self.gateway_if]);
        wire(&self.gateway, &self.gateway_if, &self.client, &self.client_if);
    }
}

impl Default for TestBed {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        for file in &self.config_files {
            let _ = fs::remove_file(file);
        }
        let _ = fs::remove_dir_all(&self.state_dir);
    }
}
