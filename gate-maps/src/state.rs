//! [`GateState`]: the gate's pinned maps, opened by path, read and written through typed calls.
//!
//! Writers that read before they write (sweeping, revoking, syncing gates) and lease grants hold
//! an exclusive `flock` on the pin directory, so a sweep in the daemon can never delete a lease
//! that `gatectl allow` wrote a moment after the sweep judged the old one dead.
//!
//! Every lease write also keeps the program's two fast paths true (docs/architecture.md, "Fast
//! paths"): a new lease counts in the filter (`filter.rs`: its counters, and the bits the programs
//! read) before it is inserted, a removed one after it is gone (so the filter may
//! over-count, never under-count), and an operation that removed or replaced a lease bumps
//! `CACHE_EPOCH` before it returns, so no CPU keeps passing a source on the strength of a lease
//! that is no longer there.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    fs::File,
    net::IpAddr,
    path::Path,
    str::FromStr,
};

use aya::{
    Pod,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues},
};
use gate_common::{
    FAMILY_V4, FAMILY_V6, GATE_NAME_MAX, GATE_TRANSIT, Gate, GateKey, IPPROTO_TCP, IPPROTO_UDP, LOCAL_EMPTY,
    LOCAL_MANY, LOCAL_ONE, LOCAL_SLOTS, LOCAL_TABLE_READY, Lease, LeaseKeyV4, LeaseKeyV6, LeaseState, LocalAddr,
    MAP_BACKSTOP_STATS, MAP_CACHE_EPOCH, MAP_GATE_OPTIONS, MAP_GATES, MAP_LEASES_V4, MAP_LEASES_V6, MAP_LOCAL_ADDRS,
    MAP_PORTS, MAP_STATS, MAX_GATED_PORTS, MAX_GATES, NUM_REASONS, Reason, lease_hash, local_slot, port_index,
    stats_index, v4_words, v6_words,
};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::{
    batch::{BatchMap, Reader},
    error::StateError,
    filter::{FilterLayout, LeaseFilter},
    pins::PinDir,
};

/// A transport a gate can guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }

    #[must_use]
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            IPPROTO_TCP => Some(Self::Tcp),
            IPPROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            other => Err(format!("unknown protocol {other:?} (expected tcp or udp)")),
        }
    }
}

/// A gate as configured: a name guarding one (protocol, port). Several specs may share a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateSpec {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// Also drop transit packets (not addressed to this host) without a lease; a gate guards
    /// transit if any of its specs says so.
    pub transit: bool,
}

/// A gated port as the kernel sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GateEntry {
    pub id: u32,
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// One lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseEntry {
    pub gate: u32,
    pub addr: IpAddr,
    pub lease: Lease,
}

/// Verdict counters summed over CPUs: gate id (0 = no gate) -> one count per [`Reason`].
pub type StatsTable = BTreeMap<u32, [u64; NUM_REASONS as usize]>;

/// The open pinned maps.
pub struct GateState {
    pins: PinDir,
    gates: HashMap<MapData, GateKey, Gate>,
    ports: Array<MapData, u32>,
    leases_v4: HashMap<MapData, LeaseKeyV4, Lease>,
    leases_v6: HashMap<MapData, LeaseKeyV6, Lease>,
    /// The same two maps, for reads and writes of thousands of leases a call.
    batch_v4: BatchMap<LeaseKeyV4, Lease>,
    batch_v6: BatchMap<LeaseKeyV6, Lease>,
    stats: PerCpuArray<MapData, u64>,
    /// `None` for state pinned before the backstop existed (until the daemon's next start).
    backstop_stats: Option<PerCpuArray<MapData, u64>>,
    filter: LeaseFilter,
    epoch: Array<MapData, u32>,
    /// `None` (both) for state pinned before XDP told transit apart (until the daemon's next start).
    local_addrs: Option<Array<MapData, LocalAddr>>,
    gate_options: Option<Array<MapData, u32>>,
    /// A lease was removed or replaced since the epoch was last bumped.
    cache_stale: bool,
    capacity_v4: u32,
    capacity_v6: u32,
}

/// The address a lease for `addr` is kept under: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
/// is the IPv4 host it names, which is how the program judges such a source too.
#[must_use]
pub fn lease_address(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// The program's [`lease_hash`] of a (gate, source).
fn slot_hash(gate: u32, addr: IpAddr) -> u64 {
    match addr {
        IpAddr::V4(v4) => lease_hash(gate, FAMILY_V4, &v4_words(v4.octets())),
        IpAddr::V6(v6) => lease_hash(gate, FAMILY_V6, &v6_words(v6.octets())),
    }
}

/// The kind of the system error at the root of `error`, if one is.
fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        current = e.source();
    }
    None
}

pub(crate) fn open_map(pins: &PinDir, name: &'static str) -> Result<(MapData, u32), StateError> {
    let path = pins.map(name);
    let data = MapData::from_pin(&path).map_err(|source| match io_kind(&source) {
        Some(std::io::ErrorKind::NotFound) => StateError::NotFound { path: path.clone() },
        Some(std::io::ErrorKind::PermissionDenied) => StateError::Denied { path: path.clone() },
        _ => StateError::Unreadable { path: path.clone(), source },
    })?;
    let capacity =
        data.info().map_err(|source| StateError::Map { map: name, operation: "info", source })?.max_entries();
    Ok((data, capacity))
}

fn typed_from<T: TryFrom<Map, Error = MapError>>(
    pins: &PinDir,
    name: &'static str,
    data: MapData,
) -> Result<T, StateError> {
    let incompatible = |reason: String| StateError::Incompatible { path: pins.map(name), map: name, reason };
    let map = Map::from_map_data(data).map_err(|e| incompatible(e.to_string()))?;
    T::try_from(map).map_err(|e| incompatible(e.to_string()))
}

pub(crate) fn typed<T: TryFrom<Map, Error = MapError>>(
    pins: &PinDir,
    name: &'static str,
) -> Result<(T, u32), StateError> {
    let (data, capacity) = open_map(pins, name)?;
    Ok((typed_from(pins, name, data)?, capacity))
}

/// The pinned map `name`, typed.
pub(crate) fn open_typed<T: TryFrom<Map, Error = MapError>>(
    pins: &PinDir,
    name: &'static str,
) -> Result<T, StateError> {
    typed(pins, name).map(|(map, _)| map)
}

/// A lease map, typed for single lookups and opened for batches.
type LeaseMaps<K> = (HashMap<MapData, K, Lease>, BatchMap<K, Lease>, u32);

fn lease_map<K: Pod>(pins: &PinDir, name: &'static str) -> Result<LeaseMaps<K>, StateError> {
    let (data, capacity) = open_map(pins, name)?;
    let batch = BatchMap::new(&data).map_err(|e| StateError::Incompatible {
        path: pins.map(name),
        map: name,
        reason: e.to_string(),
    })?;
    Ok((typed_from(pins, name, data)?, batch, capacity))
}

/// A map that older pinned state lacks: `None` if it is not there.
pub(crate) fn optional<T>(opened: Result<(T, u32), StateError>) -> Result<Option<T>, StateError> {
    match opened {
        Ok((map, _)) => Ok(Some(map)),
        Err(StateError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) const fn map_err(map: &'static str, operation: &'static str) -> impl Fn(MapError) -> StateError {
    move |source| StateError::Map { map, operation, source }
}

fn is_errno(error: &MapError, errno: i32) -> bool {
    matches!(error, MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(errno))
}

/// The gate name stored NUL-padded in a [`Gate`].
fn decode_name(raw: &[u8; GATE_NAME_MAX]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn encode_name(name: &str) -> Result<[u8; GATE_NAME_MAX], StateError> {
    let bytes = name.as_bytes();
    if bytes.len() > GATE_NAME_MAX {
        return Err(StateError::NameTooLong { name: name.to_owned(), max: GATE_NAME_MAX });
    }
    let mut raw = [0; GATE_NAME_MAX];
    raw[..bytes.len()].copy_from_slice(bytes);
    Ok(raw)
}

impl GateState {
    /// Opens the maps pinned under `root`.
    ///
    /// # Errors
    /// A map is missing ([`StateError::NotFound`]) or does not have gate's layout.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, StateError> {
        let pins = PinDir::new(root.as_ref());
        let (gates, _) = typed(&pins, MAP_GATES)?;
        let (ports, _) = typed(&pins, MAP_PORTS)?;
        let (leases_v4, batch_v4, capacity_v4) = lease_map(&pins, MAP_LEASES_V4)?;
        let (leases_v6, batch_v6, capacity_v6) = lease_map(&pins, MAP_LEASES_V6)?;
        let (stats, _) = typed(&pins, MAP_STATS)?;
        let backstop_stats = optional(typed(&pins, MAP_BACKSTOP_STATS))?;
        let local_addrs = optional(typed(&pins, MAP_LOCAL_ADDRS))?;
        let gate_options = optional(typed(&pins, MAP_GATE_OPTIONS))?;
        let filter = LeaseFilter::open(&pins)?;
        let (epoch, _) = typed(&pins, MAP_CACHE_EPOCH)?;
        Ok(Self {
            pins,
            gates,
            ports,
            leases_v4,
            leases_v6,
            batch_v4,
            batch_v6,
            stats,
            backstop_stats,
            filter,
            epoch,
            local_addrs,
            gate_options,
            cache_stale: false,
            capacity_v4,
            capacity_v6,
        })
    }

    #[must_use]
    pub const fn pins(&self) -> &PinDir {
        &self.pins
    }

    /// Capacity of the IPv4 and IPv6 lease maps.
    #[must_use]
    pub const fn capacity(&self) -> (u32, u32) {
        (self.capacity_v4, self.capacity_v6)
    }

    /// Holds the pin directory's exclusive lock until the guard drops.
    fn lock(&self) -> Result<Flock<File>, StateError> {
        let root = self.pins.root();
        let lock_err = |source| StateError::Lock { path: root.to_owned(), source };
        let dir = File::open(root).map_err(lock_err)?;
        Flock::lock(dir, FlockArg::LockExclusive).map_err(|(_, errno)| lock_err(errno.into()))
    }

    /// Every gated port, sorted by gate name, protocol and port.
    ///
    /// # Errors
    /// The kernel refuses to iterate the map.
    pub fn gates(&self) -> Result<Vec<GateEntry>, StateError> {
        let mut entries = Vec::new();
        for item in self.gates.iter() {
            let (key, gate) = item.map_err(map_err(MAP_GATES, "iterate"))?;
            let Some(protocol) = Protocol::from_number(key.protocol) else { continue };
            entries.push(GateEntry { id: gate.id, name: decode_name(&gate.name), protocol, port: key.port() });
        }
        entries.sort_by(|a, b| (&a.name, a.protocol, a.port).cmp(&(&b.name, b.protocol, b.port)));
        Ok(entries)
    }

    /// The id of the gate called `name`.
    ///
    /// # Errors
    /// [`StateError::NoSuchGate`] naming the gates that exist.
    pub fn gate_id(&self, name: &str) -> Result<u32, StateError> {
        let gates = self.gates()?;
        if let Some(gate) = gates.iter().find(|g| g.name == name) {
            return Ok(gate.id);
        }
        let known: BTreeSet<_> = gates.iter().map(|g| g.name.as_str()).collect();
        let known = if known.is_empty() { "none".to_owned() } else { known.into_iter().collect::<Vec<_>>().join(", ") };
        Err(StateError::NoSuchGate { name: name.to_owned(), known })
    }

    /// Makes the gated ports exactly `specs`. Gates keep their ids across calls (so their leases
    /// and counters stay theirs); a gate that disappears takes its leases with it, so an id that
    /// is later reused opens nothing by accident. New ports are gated before old ones are freed.
    ///
    /// `GATES` (the catalogue) and `PORTS` (what the program reads) change together: a port
    /// enters the catalogue before the program sees it, and leaves the program's view first.
    ///
    /// # Errors
    /// Too many gates or ports, a name too long, or a map write refused.
    pub fn sync_gates(&mut self, specs: &[GateSpec]) -> Result<Vec<GateEntry>, StateError> {
        let _lock = self.lock()?;
        let result = self.sync_gates_locked(specs);
        self.settle(result)
    }

    fn sync_gates_locked(&mut self, specs: &[GateSpec]) -> Result<Vec<GateEntry>, StateError> {
        let existing = self.gates()?;
        let mut ids: BTreeMap<&str, u32> = BTreeMap::new();
        for gate in &existing {
            if specs.iter().any(|s| s.name == gate.name) {
                ids.insert(&gate.name, gate.id);
            }
        }
        let wanted: BTreeSet<(Protocol, u16)> = specs.iter().map(|s| (s.protocol, s.port)).collect();
        let names: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        if names.len() > MAX_GATES as usize || wanted.len() > MAX_GATED_PORTS as usize {
            return Err(StateError::TooManyGates { max: MAX_GATES, max_ports: MAX_GATED_PORTS });
        }
        let mut fresh_ids = Vec::new();
        for name in &names {
            if !ids.contains_key(name) {
                let free = (1..=MAX_GATES).find(|id| !ids.values().any(|used| used == id));
                let id = free.ok_or(StateError::TooManyGates { max: MAX_GATES, max_ports: MAX_GATED_PORTS })?;
                ids.insert(name, id);
                fresh_ids.push(id);
            }
        }
        // A fresh id may have been some removed gate's: clear what it left behind first.
        for &id in &fresh_ids {
            self.remove_leases_where(|e| e.gate == id)?;
            self.reset_stats(id)?;
        }
        if let Some(options) = &mut self.gate_options {
            for name in &names {
                let transit = specs.iter().any(|s| s.name == *name && s.transit);
                let flags = if transit { GATE_TRANSIT } else { 0 };
                options.set(ids[name], flags, 0).map_err(map_err(MAP_GATE_OPTIONS, "set"))?;
            }
        }
        for spec in specs {
            let key = GateKey::new(spec.protocol.number(), spec.port);
            let gate = Gate { id: ids[spec.name.as_str()], name: encode_name(&spec.name)? };
            self.gates.insert(key, gate, 0).map_err(map_err(MAP_GATES, "insert"))?;
            self.ports.set(Self::port_slot(key), gate.id, 0).map_err(map_err(MAP_PORTS, "set"))?;
        }
        for old in &existing {
            if !wanted.contains(&(old.protocol, old.port)) {
                let key = GateKey::new(old.protocol.number(), old.port);
                self.ports.set(Self::port_slot(key), 0, 0).map_err(map_err(MAP_PORTS, "clear"))?;
                self.gates.remove(&key).map_err(map_err(MAP_GATES, "remove"))?;
            }
        }
        let live: BTreeSet<u32> = ids.values().copied().collect();
        self.remove_leases_where(|e| !live.contains(&e.gate))?;
        self.gates()
    }

    fn port_slot(key: GateKey) -> u32 {
        port_index(key.protocol, key.port_be).expect("gate keys are built from Protocol, so TCP or UDP")
    }

    fn reset_stats(&mut self, gate: u32) -> Result<(), StateError> {
        reset_row(&mut self.stats, MAP_STATS, gate)?;
        if let Some(backstop) = &mut self.backstop_stats {
            reset_row(backstop, MAP_BACKSTOP_STATS, gate)?;
        }
        Ok(())
    }

    /// Opens `gate` for `addr` with `lease`, replacing any lease it had. When the map is full,
    /// dead leases are swept once before giving up.
    ///
    /// # Errors
    /// [`StateError::Full`] when the map stays full; any other refusal of the kernel.
    pub fn grant(&mut self, gate: u32, addr: IpAddr, lease: Lease) -> Result<(), StateError> {
        self.grant_all(gate, &[addr], lease).map(|_| ())
    }

    /// Opens `gate` for every address in `addrs` with `lease`, or for none: if one write fails,
    /// the ones already made are undone (a replaced lease is put back), so an approval never
    /// leaves a gate half open. One hold of the lock and batched writes, whatever the count (an
    /// approval's two addresses or an imported allow list). Returns how many of the (distinct)
    /// addresses had a lease that was replaced.
    ///
    /// # Errors
    /// As [`Self::grant`], after the undo.
    pub fn grant_all(&mut self, gate: u32, addrs: &[IpAddr], lease: Lease) -> Result<usize, StateError> {
        let mut seen = std::collections::HashSet::with_capacity(addrs.len());
        let canonical: Vec<IpAddr> = addrs.iter().map(|&a| lease_address(a)).filter(|&a| seen.insert(a)).collect();
        let _lock = self.lock()?;
        let result = self.grant_all_locked(gate, &canonical, lease);
        self.settle(result)
    }

    fn grant_all_locked(&mut self, gate: u32, addrs: &[IpAddr], lease: Lease) -> Result<usize, StateError> {
        let previous = addrs.iter().map(|&addr| self.lease(gate, addr)).collect::<Result<Vec<_>, _>>()?;
        let fresh: Vec<IpAddr> = addrs.iter().zip(&previous).filter(|(_, p)| p.is_none()).map(|(&a, _)| a).collect();
        if fresh.len() < addrs.len() {
            // A replaced lease may have been longer-lived: cached copies of it go stale.
            self.cache_stale = true;
        }
        // New keys count in the filter before they are written (over-count, never under-count).
        self.count_in_filter(gate, &fresh, true)?;
        let mut written = vec![false; addrs.len()];
        let Err(error) = self.write_leases(gate, addrs, lease, &mut written) else {
            return Ok(addrs.len() - fresh.len());
        };
        for ((&addr, previous), done) in addrs.iter().zip(&previous).zip(written) {
            // Best effort: the error already reported is the one that matters.
            let _ = match (previous, done) {
                (Some(previous), true) => self.insert_lease(gate, addr, *previous).map_err(|e| self.full_or(e, addr)),
                (None, true) => self.remove_lease(gate, addr).map(|_| ()),
                (None, false) => self.count_in_filter(gate, &[addr], false),
                (Some(_), false) => Ok(()),
            };
        }
        Err(error)
    }

    /// Writes `lease` for every address, IPv4 ones then IPv6 ones, in batches, marking in
    /// `written` what was; a full map is swept of the dead once before giving up. Caller holds
    /// the lock and has counted new keys in the filter.
    fn write_leases(
        &mut self,
        gate: u32,
        addrs: &[IpAddr],
        lease: Lease,
        written: &mut [bool],
    ) -> Result<(), StateError> {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (i, addr) in addrs.iter().enumerate() {
            match addr {
                IpAddr::V4(a) => v4.push((i, LeaseKeyV4 { gate, addr: a.octets() })),
                IpAddr::V6(a) => v6.push((i, LeaseKeyV6 { gate, addr: a.octets() })),
            }
        }
        let mut swept = false;
        for family in [FAMILY_V4, FAMILY_V6] {
            let mut start = 0;
            loop {
                let result = if family == FAMILY_V4 {
                    write_batches(&self.batch_v4, &v4[start..], lease, written)
                } else {
                    write_batches(&self.batch_v6, &v6[start..], lease, written)
                };
                let Err((done, error)) = result else { break };
                start += done;
                let index = if family == FAMILY_V4 { v4[start].0 } else { v6[start].0 };
                if error.raw_os_error() == Some(libc_e2big()) && !swept {
                    swept = true;
                    self.sweep_locked(crate::clock::now_ns(), 0)?;
                    continue;
                }
                return Err(self.full_or(MapError::SyscallError(batch_error("update", error)), addrs[index]));
            }
        }
        Ok(())
    }

    /// Moves the filter counters of (`gate`, each of `addrs`) up or down by one (see
    /// [`LeaseFilter::count`]). Caller holds the lock.
    fn count_in_filter(&mut self, gate: u32, addrs: &[IpAddr], up: bool) -> Result<(), StateError> {
        let hashes: Vec<u64> = addrs.iter().map(|&addr| slot_hash(gate, addr)).collect();
        self.filter.count(&hashes, up)
    }

    /// The filter counters (word, byte shift) (`gate`, `addr`) counts in, in ascending order. For
    /// tests and benchmarks that need sources sharing a counter, or a stranger the filter cannot
    /// turn away.
    #[must_use]
    pub fn filter_counters(&self, gate: u32, addr: IpAddr) -> Vec<(u32, u32)> {
        self.filter.counters_of(slot_hash(gate, lease_address(addr))).collect()
    }

    /// The size the programs read the filter's bits at, and the leases it counts; `None` in an
    /// older build's layout.
    ///
    /// # Errors
    /// The kernel refuses the lookup.
    pub fn filter_bits_size(&self) -> Result<Option<gate_common::BitsSize>, StateError> {
        self.filter.bits_size()
    }

    /// Which layout the pinned filter has: this build's, or an older build's whose program is
    /// still attached (until the daemon's next start replaces both).
    #[must_use]
    pub fn filter_layout(&self) -> FilterLayout {
        self.filter.layout()
    }

    /// Ends a locked write: if it removed or replaced a lease, bumps the cache epoch, whatever
    /// `result` is (a half-done removal must not stay cached either). Caller holds the lock.
    fn settle<T>(&mut self, result: Result<T, StateError>) -> Result<T, StateError> {
        if self.cache_stale {
            let epoch = self.epoch.get(&0, 0).map_err(map_err(MAP_CACHE_EPOCH, "lookup"))?;
            self.epoch.set(0, epoch.wrapping_add(1), 0).map_err(map_err(MAP_CACHE_EPOCH, "update"))?;
            self.cache_stale = false;
        }
        result
    }

    /// Makes `LOCAL_ADDRS` hold exactly `addrs` (this host's addresses), then marks the table
    /// filled, from which on XDP passes packets to other hosts as transit. Each changed slot is
    /// rewritten in steps that change either its state or its address, never both: first to
    /// "many" (counts as local), then the address, then the final state. A program reading a
    /// slot half-way sees the old meaning, the new one, or "local": it never passes a packet
    /// to this host as transit because of the rewrite. Returns how many slots changed.
    ///
    /// # Errors
    /// The maps are missing (state pinned by an older daemon), or the kernel refuses a write.
    pub fn set_local_addresses(&mut self, addrs: &[IpAddr]) -> Result<usize, StateError> {
        let (Some(table), Some(options)) = (&mut self.local_addrs, &mut self.gate_options) else {
            return Err(StateError::NotFound { path: self.pins.map(MAP_LOCAL_ADDRS) });
        };
        let mut wanted = vec![LocalAddr::default(); LOCAL_SLOTS as usize];
        for &addr in addrs {
            let (family, words) = match lease_address(addr) {
                IpAddr::V4(v4) => (FAMILY_V4, v4_words(v4.octets())),
                IpAddr::V6(v6) => (FAMILY_V6, v6_words(v6.octets())),
            };
            let slot = &mut wanted[local_slot(family, &words) as usize];
            *slot = match slot.state {
                LOCAL_EMPTY => LocalAddr { words, family, state: LOCAL_ONE },
                _ if slot.words == words && slot.family == family => *slot,
                _ => LocalAddr { state: LOCAL_MANY, ..*slot },
            };
        }
        let mut changed = 0;
        for (index, want) in (0..LOCAL_SLOTS).zip(wanted) {
            let mut current = table.get(&index, 0).map_err(map_err(MAP_LOCAL_ADDRS, "lookup"))?;
            if current == want {
                continue;
            }
            changed += 1;
            let mut write = |value: LocalAddr| table.set(index, value, 0).map_err(map_err(MAP_LOCAL_ADDRS, "update"));
            if (current.words, current.family) != (want.words, want.family) {
                if current.state != LOCAL_MANY {
                    current.state = LOCAL_MANY;
                    write(current)?;
                }
                current = LocalAddr { state: LOCAL_MANY, ..want };
                write(current)?;
            }
            if current.state != want.state {
                write(want)?;
            }
        }
        let flags = options.get(&0, 0).map_err(map_err(MAP_GATE_OPTIONS, "lookup"))?;
        options.set(0, flags | LOCAL_TABLE_READY, 0).map_err(map_err(MAP_GATE_OPTIONS, "set"))?;
        Ok(changed)
    }

    /// Closes `gate` for exactly `addr`. Returns whether a lease was there.
    ///
    /// # Errors
    /// The kernel refuses the delete.
    pub fn revoke_one(&mut self, gate: u32, addr: IpAddr) -> Result<bool, StateError> {
        let addr = lease_address(addr);
        let _lock = self.lock()?;
        let result = self.remove_lease(gate, addr);
        self.settle(result)
    }

    /// Recounts the filter from the leases, under the lock: every slot a lease counts in gets its
    /// exact count, and its bit follows. Run by the installer before the program is attached, so
    /// leases from before (a new filter, or an older build's gate, whose filter had another
    /// layout) pass from the first packet. Returns the leases counted.
    ///
    /// # Errors
    /// The kernel refuses to iterate the leases or to write the filter.
    pub fn rebuild_filter(&mut self) -> Result<usize, StateError> {
        let _lock = self.lock()?;
        let mut tally = self.filter.tally();
        for chunk in self.lease_chunks()? {
            for entry in chunk? {
                tally.add(self.filter.counters_of(slot_hash(entry.gate, entry.addr)));
            }
        }
        self.filter.recount(&tally)?;
        Ok(tally.leases())
    }

    fn insert_lease(&mut self, gate: u32, addr: IpAddr, lease: Lease) -> Result<(), MapError> {
        match addr {
            IpAddr::V4(v4) => self.leases_v4.insert(LeaseKeyV4 { gate, addr: v4.octets() }, lease, 0),
            IpAddr::V6(v6) => self.leases_v6.insert(LeaseKeyV6 { gate, addr: v6.octets() }, lease, 0),
        }
    }

    fn full_or(&self, error: MapError, addr: IpAddr) -> StateError {
        let (map, capacity) = match addr {
            IpAddr::V4(_) => (MAP_LEASES_V4, self.capacity_v4),
            IpAddr::V6(_) => (MAP_LEASES_V6, self.capacity_v6),
        };
        if is_errno(&error, libc_e2big()) {
            StateError::Full { map, capacity, addr }
        } else {
            StateError::Map { map, operation: "insert", source: error }
        }
    }

    /// Closes `addr`'s leases on `gate`, or on every gate: one delete per gate id, never a scan.
    /// Returns how many were removed.
    ///
    /// # Errors
    /// The kernel refuses a delete.
    pub fn revoke(&mut self, addr: IpAddr, gate: Option<u32>) -> Result<usize, StateError> {
        let addr = lease_address(addr);
        let keys: Vec<(u32, IpAddr)> = gate.map_or(1..=MAX_GATES, |id| id..=id).map(|id| (id, addr)).collect();
        let _lock = self.lock()?;
        let result = self.remove_many(&keys);
        self.settle(result)
    }

    /// Closes every lease of `gate`. Returns the addresses whose leases it removed.
    ///
    /// # Errors
    /// The kernel refuses to iterate or delete.
    pub fn revoke_gate(&mut self, gate: u32) -> Result<Vec<IpAddr>, StateError> {
        let _lock = self.lock()?;
        let result = self.remove_leases_where(|e| e.gate == gate);
        Ok(self.settle(result)?.into_iter().map(|(_, addr)| addr).collect())
    }

    /// Removes every lease `doomed` picks, a chunk at a time; the caller holds the lock. Returns
    /// the (gate, address) of each.
    fn remove_leases_where(&mut self, doomed: impl Fn(&LeaseEntry) -> bool) -> Result<Vec<(u32, IpAddr)>, StateError> {
        let mut removed = Vec::new();
        for chunk in self.lease_chunks()? {
            let picked: Vec<(u32, IpAddr)> = chunk?.iter().filter(|e| doomed(e)).map(|e| (e.gate, e.addr)).collect();
            removed.extend(self.remove_listed(&picked)?);
        }
        Ok(removed)
    }

    /// Removes one lease (uncounting it from the filter once it is gone); `false` if it was
    /// already gone. Caller holds the lock and settles.
    fn remove_lease(&mut self, gate: u32, addr: IpAddr) -> Result<bool, StateError> {
        Ok(self.remove_many(&[(gate, addr)])? == 1)
    }

    /// Removes the leases of `entries` (gate, address) in batches, uncounting from the filter
    /// those that were there. Returns how many were. Caller holds the lock and settles.
    fn remove_many(&mut self, entries: &[(u32, IpAddr)]) -> Result<usize, StateError> {
        Ok(self.remove_listed(entries)?.len())
    }

    /// As [`Self::remove_many`]; the (gate, address) of each lease it removed.
    fn remove_listed(&mut self, entries: &[(u32, IpAddr)]) -> Result<Vec<(u32, IpAddr)>, StateError> {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for &(gate, addr) in entries {
            match addr {
                IpAddr::V4(a) => v4.push(LeaseKeyV4 { gate, addr: a.octets() }),
                IpAddr::V6(a) => v6.push(LeaseKeyV6 { gate, addr: a.octets() }),
            }
        }
        let gone4 = self.batch_v4.delete(&v4).map_err(batch_err(MAP_LEASES_V4, "delete"))?;
        let gone6 = self.batch_v6.delete(&v6).map_err(batch_err(MAP_LEASES_V6, "delete"))?;
        let mut gone: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
        for (key, _) in v4.iter().zip(gone4).filter(|(_, g)| *g) {
            gone.entry(key.gate).or_default().push(IpAddr::from(key.addr));
        }
        for (key, _) in v6.iter().zip(gone6).filter(|(_, g)| *g) {
            gone.entry(key.gate).or_default().push(IpAddr::from(key.addr));
        }
        let mut removed = Vec::new();
        for (gate, addrs) in gone {
            self.cache_stale = true;
            self.count_in_filter(gate, &addrs, false)?;
            removed.extend(addrs.into_iter().map(|addr| (gate, addr)));
        }
        Ok(removed)
    }

    /// The lease `gate` has for `addr` (kept as [`lease_address`] says), if any: one lookup.
    ///
    /// # Errors
    /// The kernel refuses the lookup.
    pub fn lease(&self, gate: u32, addr: IpAddr) -> Result<Option<Lease>, StateError> {
        let (map, result) = match lease_address(addr) {
            IpAddr::V4(v4) => (MAP_LEASES_V4, self.leases_v4.get(&LeaseKeyV4 { gate, addr: v4.octets() }, 0)),
            IpAddr::V6(v6) => (MAP_LEASES_V6, self.leases_v6.get(&LeaseKeyV6 { gate, addr: v6.octets() }, 0)),
        };
        match result {
            Ok(lease) => Ok(Some(lease)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(StateError::Map { map, operation: "lookup", source }),
        }
    }

    /// Every lease, IPv4 first, in memory at once: for small maps and tests. At scale, read
    /// [`Self::lease_chunks`].
    ///
    /// # Errors
    /// The kernel refuses to iterate.
    pub fn leases(&self) -> Result<Vec<LeaseEntry>, StateError> {
        let mut entries = Vec::new();
        for chunk in self.lease_chunks()? {
            entries.extend(chunk?);
        }
        Ok(entries)
    }

    /// Whether any IPv6 lease exists: one call.
    #[must_use]
    pub fn has_v6_leases(&self) -> bool {
        self.leases_v6.keys().next().is_some()
    }

    /// Every lease, IPv4 first, a few thousand at a time: memory stays the same at any count.
    /// The chunks own their descriptors, so the state can be written between them.
    ///
    /// # Errors
    /// A descriptor cannot be duplicated; each chunk: the kernel refuses to read.
    pub fn lease_chunks(&self) -> Result<LeaseChunks, StateError> {
        let v4 = self.batch_v4.reader().map_err(batch_err(MAP_LEASES_V4, "read"))?;
        let v6 = self.batch_v6.reader().map_err(batch_err(MAP_LEASES_V6, "read"))?;
        Ok(LeaseChunks { v4, v6 })
    }

    /// How many leases each gate and each family has, live and closed, at `now_ns`: a scan in
    /// constant memory.
    ///
    /// # Errors
    /// The kernel refuses to read.
    pub fn lease_counts(&self, now_ns: u64) -> Result<LeaseCounts, StateError> {
        let mut counts = LeaseCounts::default();
        for chunk in self.lease_chunks()? {
            for entry in chunk? {
                if entry.addr.is_ipv4() {
                    counts.v4 += 1;
                } else {
                    counts.v6 += 1;
                }
                let live = entry.lease.state(now_ns) == LeaseState::Live;
                let count = counts.gates.entry(entry.gate).or_default();
                if live {
                    count.live += 1;
                } else {
                    count.closed += 1;
                }
                if live && entry.addr.is_ipv6() {
                    count.live_v6 += 1;
                }
            }
        }
        Ok(counts)
    }

    /// Deletes leases closed for at least `grace_ns` at `now_ns`, so the maps do not fill with
    /// the dead. Candidates are found without the lock, then re-read and deleted under it in
    /// batches of [`SWEEP_BATCH`], so a grant waits for one batch (well under a millisecond),
    /// never a whole sweep. Returns how many were deleted.
    ///
    /// # Errors
    /// The kernel refuses to iterate or delete.
    pub fn sweep(&mut self, now_ns: u64, grace_ns: u64) -> Result<usize, StateError> {
        Ok(self.sweep_yielding(now_ns, grace_ns, || {}, |_| {})?.removed)
    }

    /// As [`Self::sweep`], calling `between` after each batch, once the lock is released: a
    /// caller that knows of writers waiting for the maps lets them go first there. `flock` is
    /// not fair, so the sweep also pauses briefly after each batch for writers it cannot see
    /// (another process's `gatectl`). Also counts the live leases it reads on the way, so a
    /// caller learns the count without a second pass over maps of a million. `removed` hears
    /// each batch's deleted leases, after the lock is released (for the audit trail).
    ///
    /// # Errors
    /// As [`Self::sweep`].
    pub fn sweep_yielding(
        &mut self,
        now_ns: u64,
        grace_ns: u64,
        mut between: impl FnMut(),
        mut removed_now: impl FnMut(&[SweptLease]),
    ) -> Result<Swept, StateError> {
        let dead = |lease: &Lease| lease.closes_at_ns().saturating_add(grace_ns) <= now_ns;
        let (mut removed, mut live) = (0, 0);
        for chunk in self.lease_chunks()? {
            let chunk = chunk?;
            live += chunk.iter().filter(|e| e.lease.state(now_ns) == LeaseState::Live).count();
            let candidates: Vec<(u32, IpAddr)> =
                chunk.iter().filter(|e| dead(&e.lease)).map(|e| (e.gate, e.addr)).collect();
            for batch in candidates.chunks(SWEEP_BATCH) {
                let lock = self.lock()?;
                let result = self.sweep_batch(batch, dead, now_ns);
                let gone = self.settle(result)?;
                drop(lock);
                removed += gone.len();
                removed_now(&gone);
                std::thread::sleep(SWEEP_PAUSE);
                between();
            }
        }
        Ok(Swept { removed, live })
    }

    fn sweep_batch(
        &mut self,
        batch: &[(u32, IpAddr)],
        dead: impl Fn(&Lease) -> bool,
        now_ns: u64,
    ) -> Result<Vec<SweptLease>, StateError> {
        // Re-read: a grant may have replaced the lease since it was judged dead.
        let mut still_dead = Vec::with_capacity(batch.len());
        let mut expired = std::collections::BTreeSet::new();
        for &(gate, addr) in batch {
            if let Some(lease) = self.lease(gate, addr)?.filter(|l| dead(l)) {
                still_dead.push((gate, addr));
                if lease.state(now_ns) == LeaseState::Expired {
                    expired.insert((gate, addr));
                }
            }
        }
        let removed = self.remove_listed(&still_dead)?;
        Ok(removed
            .into_iter()
            .map(|(gate, addr)| SweptLease { gate, addr, expired: expired.contains(&(gate, addr)) })
            .collect())
    }

    /// As [`Self::sweep`], for a caller already holding the lock.
    fn sweep_locked(&mut self, now_ns: u64, grace_ns: u64) -> Result<usize, StateError> {
        Ok(self.remove_leases_where(|e| e.lease.closes_at_ns().saturating_add(grace_ns) <= now_ns)?.len())
    }

    /// XDP's verdict counters summed over CPUs, for gate 0 (no gate) and every gate id in use.
    ///
    /// # Errors
    /// The kernel refuses a lookup.
    pub fn stats(&self) -> Result<StatsTable, StateError> {
        self.stats_of(&self.stats, MAP_STATS)
    }

    /// The delivery backstop's verdict counters, as [`Self::stats`]; `None` if this pinned state
    /// predates the backstop.
    ///
    /// # Errors
    /// The kernel refuses a lookup.
    pub fn backstop_stats(&self) -> Result<Option<StatsTable>, StateError> {
        self.backstop_stats.as_ref().map(|map| self.stats_of(map, MAP_BACKSTOP_STATS)).transpose()
    }

    fn stats_of(&self, map: &PerCpuArray<MapData, u64>, name: &'static str) -> Result<StatsTable, StateError> {
        let mut ids: BTreeSet<u32> = self.gates()?.iter().map(|g| g.id).collect();
        ids.insert(0);
        let mut table = StatsTable::new();
        for id in ids {
            let mut row = [0_u64; NUM_REASONS as usize];
            for reason in Reason::ALL {
                let per_cpu = map.get(&stats_index(id, reason), 0).map_err(map_err(name, "lookup"))?;
                row[reason as usize] = per_cpu.iter().sum();
            }
            table.insert(id, row);
        }
        Ok(table)
    }
}

/// Leases a sweep deletes under one hold of the lock: ~250 system calls, ~0.1 ms. Smaller than
/// the 128 it was: a batch now and then takes milliseconds in the kernel, and a waiting grant
/// waited up to 7-12 ms behind one of 128, 4 ms behind one of 32 (docs/benchmarks.md).
pub const SWEEP_BATCH: usize = 32;
/// The sweep's pause between batches, for a waiting grant to take the lock.
const SWEEP_PAUSE: std::time::Duration = std::time::Duration::from_micros(200);

/// Leases one gate has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseCount {
    pub live: usize,
    pub closed: usize,
    /// Of the live ones, IPv6 leases (the rest are IPv4).
    pub live_v6: usize,
}

/// What a sweep did and saw: [`GateState::sweep_yielding`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Closed leases deleted.
    pub removed: usize,
    /// Live leases read on the way (a lease opened during the sweep may be missed).
    pub live: usize,
}

/// A closed lease a sweep deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweptLease {
    pub gate: u32,
    pub addr: IpAddr,
    /// Closed at its hard expiry (else: idle too long).
    pub expired: bool,
}

/// Leases per gate and per family: [`GateState::lease_counts`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseCounts {
    pub gates: BTreeMap<u32, LeaseCount>,
    pub v4: usize,
    pub v6: usize,
}

impl LeaseCounts {
    #[must_use]
    pub fn total(&self) -> usize {
        self.v4 + self.v6
    }
}

/// Every lease, a chunk at a time: [`GateState::lease_chunks`].
pub struct LeaseChunks {
    v4: Reader<LeaseKeyV4, Lease>,
    v6: Reader<LeaseKeyV6, Lease>,
}

impl Iterator for LeaseChunks {
    type Item = Result<Vec<LeaseEntry>, StateError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.v4.next() {
            Some(chunk) => Some(entries(chunk, MAP_LEASES_V4, |k: &LeaseKeyV4| (k.gate, IpAddr::from(k.addr)))),
            None => Some(entries(self.v6.next()?, MAP_LEASES_V6, |k: &LeaseKeyV6| (k.gate, IpAddr::from(k.addr)))),
        }
    }
}

/// A chunk of `map` as leases, each key read by `key` as (gate, address).
fn entries<K>(
    chunk: std::io::Result<Vec<(K, Lease)>>,
    map: &'static str,
    key: impl Fn(&K) -> (u32, IpAddr),
) -> Result<Vec<LeaseEntry>, StateError> {
    let chunk = chunk.map_err(batch_err(map, "read"))?;
    Ok(chunk
        .iter()
        .map(|(k, lease)| {
            let (gate, addr) = key(k);
            LeaseEntry { gate, addr, lease: *lease }
        })
        .collect())
}

/// Leases written per batch call.
const WRITE_BATCH: usize = 4096;

/// Writes `lease` under each key of `keys` (index into the caller's addresses, key), marking each
/// written one. On failure, how many of `keys` were written, and why the next was not.
fn write_batches<K: Pod>(
    map: &BatchMap<K, Lease>,
    keys: &[(usize, K)],
    lease: Lease,
    written: &mut [bool],
) -> Result<(), (usize, std::io::Error)> {
    let values = vec![lease; WRITE_BATCH.min(keys.len())];
    let mut done = 0;
    for chunk in keys.chunks(WRITE_BATCH) {
        let batch: Vec<K> = chunk.iter().map(|(_, k)| *k).collect();
        let outcome = map.update(&batch, &values[..batch.len()], 0);
        let count = match &outcome {
            Ok(()) => batch.len(),
            Err((count, _)) => *count,
        };
        for (index, _) in &chunk[..count] {
            written[*index] = true;
        }
        done += count;
        if let Err((_, error)) = outcome {
            return Err((done, error));
        }
    }
    Ok(())
}

/// A batch operation's system error as aya reports one.
fn batch_error(call: &'static str, io_error: std::io::Error) -> aya::sys::SyscallError {
    aya::sys::SyscallError { call, io_error }
}

fn batch_err(map: &'static str, operation: &'static str) -> impl Fn(std::io::Error) -> StateError {
    move |e| StateError::Map { map, operation, source: MapError::SyscallError(batch_error("bpf_map_batch", e)) }
}

/// Zeroes `gate`'s row of counters in `map` on every CPU.
fn reset_row(map: &mut PerCpuArray<MapData, u64>, name: &'static str, gate: u32) -> Result<(), StateError> {
    for reason in Reason::ALL {
        let index = stats_index(gate, reason);
        let cpus = map.get(&index, 0).map_err(map_err(name, "lookup"))?.len();
        let zeros = PerCpuValues::try_from(vec![0_u64; cpus]).map_err(|e| StateError::Map {
            map: name,
            operation: "reset",
            source: MapError::from(e),
        })?;
        map.set(index, zeros, 0).map_err(map_err(name, "reset"))?;
    }
    Ok(())
}

const fn libc_e2big() -> i32 {
    nix::errno::Errno::E2BIG as i32
}
