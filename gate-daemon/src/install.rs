//! Putting the gate in place: load the programs, take over (or create) the pinned maps, gate the
//! configured ports, attach the delivery backstop to its cgroups, then attach XDP to each
//! interface (the program that fits its framing), or swap the new program into the link already
//! pinned there. Links of interfaces and cgroups no longer configured are removed last.
//!
//! The order keeps the gate closed throughout: ports are gated in the maps before any program
//! that reads them is attached, and an existing link is updated atomically, never detached and
//! re-attached. A new link replaces a pinned one by an atomic rename, so a defunct pin (its
//! interface deleted and re-created) never stops a start. On failure, whatever this run attached
//! or created is undone, and what was there before (a running gate) is left as it was.
//!
//! [`reconcile`] is the same attach, run again for one interface whenever rtnetlink says links
//! changed: an interface that comes back is gated again at once.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    maps::MapInfo,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use gate_common::{
    BitsSize, CACHE_SLOTS, CachedLease, Gate, GateKey, LOCAL_SLOTS, Lease, LeaseKeyV4, LeaseKeyV6, LocalAddr,
    MAP_BACKSTOP_STATS, MAP_CACHE_EPOCH, MAP_GATE_OPTIONS, MAP_GATES, MAP_LEASE_BITS, MAP_LEASE_BITS_SIZE,
    MAP_LEASE_BITS_V1, MAP_LEASE_BITS_V2, MAP_LEASE_CACHE, MAP_LEASE_FILTER, MAP_LEASE_FILTER_V1, MAP_LEASE_FILTER_V2,
    MAP_LEASES_V4, MAP_LEASES_V6, MAP_LOCAL_ADDRS, MAP_PORTS, MAP_STATS, MAP_TRACE, MAP_TRACE_EVENTS, MAX_GATED_PORTS,
    MAX_GATES, PORT_SLOTS, STATS_SLOTS, TRACE_EVENTS_BYTES, TraceFilter,
};
use gate_maps::{
    AttachMode, Attachment, GateEntry, GateState, PinDir, StateError,
    netlink::{self, Framing},
};
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

use crate::{
    cgroup,
    config::{Config, InterfaceConfig, ModeSetting},
    program::{self, LoadError, Loaded},
};

/// The standard bpffs mount point, which the daemon mounts if nothing is mounted there.
const BPFFS_MOUNT_POINT: &str = "/sys/fs/bpf";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("interface {name:?} does not exist")]
    NoSuchInterface { name: String },
    #[error("interface {name:?}: ask rtnetlink: {source}")]
    Netlink { name: String, source: io::Error },
    #[error("list this host's addresses over rtnetlink: {0}")]
    Addresses(#[source] io::Error),
    #[error(
        "interface {name:?} has device type {device_type}, whose frames gate cannot parse (it gates Ethernet and layer-3 devices: tun, WireGuard, PPP, ipip, sit, GRE)"
    )]
    UnsupportedDevice { name: String, device_type: u16 },
    #[error("backstop cgroup {path}: {source}")]
    Cgroup { path: PathBuf, source: io::Error },
    #[error("backstop cgroup {path}: attach")]
    AttachBackstop {
        path: PathBuf,
        #[source]
        source: ProgramError,
    },
    #[error(
        "pin_dir {path}: {ancestor} is not on a BPF filesystem (type {fs_type:#x}); mount one with `mount -t bpf bpf {ancestor}` or choose a pin_dir under {BPFFS_MOUNT_POINT}"
    )]
    NotBpffs { path: PathBuf, ancestor: PathBuf, fs_type: i64 },
    #[error("pin_dir {path}: {operation}: {source}")]
    PinDir { path: PathBuf, operation: &'static str, source: io::Error },
    #[error("pinned map {path} has {found}, this gate needs {wanted}; remove the old gate first (`gatectl teardown`)")]
    IncompatibleMap { path: PathBuf, found: String, wanted: String },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("interface {interface}: attach XDP in {mode} mode")]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("{what}: pin the link at {path}")]
    PinLink {
        what: String,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Locked(#[from] gate_maps::LockError),
}

/// The gate in place.
pub struct Installed {
    pub state: GateState,
    pub gates: Vec<GateEntry>,
    pub attachments: Vec<Attachment>,
    /// The cgroups the backstop guards.
    pub backstops: Vec<PathBuf>,
    /// Links removed because their interface or cgroup left the config.
    pub removed: Vec<PathBuf>,
    /// Whether pinned maps from an earlier run were taken over (leases kept).
    pub took_over: bool,
    /// The loaded programs, kept to attach again when an interface comes back.
    pub loaded: Loaded,
    /// This daemon's hold on the pin dir, taken at start (a reload runs under the one held):
    /// keep it for as long as the daemon runs.
    pub lock: Option<gate_maps::DaemonLock>,
}

/// Why the gate is put in place.
#[derive(Clone, Copy)]
pub enum Purpose<'a> {
    /// The daemon's start: takes the pin dir's lock first.
    Start,
    /// A reload (SIGHUP) by the daemon that holds the lock. `keep`: ports of the config in force
    /// that the new one drops; they stay gated here, and the caller un-gates them only once the
    /// rest is in place, so a reload that fails half-way opens nothing.
    Reload { keep: &'a [gate_maps::GateSpec] },
}

/// What this run created, to undo if a later step fails.
#[derive(Default)]
struct Undo {
    links: Vec<PathBuf>,
    maps: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Undo {
    fn run(self) {
        // Links first: detaching before the maps go keeps the gate consistent until the end.
        for path in self.links.iter().chain(&self.maps) {
            match fs::remove_file(path) {
                // Never made: the step that would have made it failed first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("rollback: remove {}: {e}", path.display()),
                Ok(()) => {}
            }
        }
        for dir in self.dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Installs or takes over the gate described by `config`.
///
/// # Errors
/// Anything that keeps the gate from being in place on every configured interface; nothing this
/// call created is left behind.
pub fn install(config: &Config) -> Result<Installed, InstallError> {
    install_for(config, Purpose::Start)
}

/// Installs the gate described by `config` for `purpose`; as [`install`].
///
/// # Errors
/// As [`install`].
pub fn install_for(config: &Config, purpose: Purpose<'_>) -> Result<Installed, InstallError> {
    let framings = config
        .interfaces
        .iter()
        .map(|i| framing_of(&i.name)?.ok_or_else(|| InstallError::NoSuchInterface { name: i.name.clone() }))
        .collect::<Result<Vec<_>, _>>()?;
    let mut undo = Undo::default();
    match install_steps(config, &framings, purpose, &mut undo) {
        Ok(installed) => Ok(installed),
        Err(e) => {
            undo.run();
            Err(e)
        }
    }
}

/// The pin directory of `config`.
#[must_use]
pub fn pins_of(config: &Config) -> PinDir {
    PinDir::new(&config.pin_dir)
}

/// The install after the checks; `framings` are the interfaces', in config order.
fn install_steps(
    config: &Config,
    framings: &[Framing],
    purpose: Purpose<'_>,
    undo: &mut Undo,
) -> Result<Installed, InstallError> {
    let pins = pins_of(config);
    prepare_pin_dir(&pins, undo)?;
    // Before anything is touched: one daemon per pin dir.
    let (lock, keep) = match purpose {
        Purpose::Start => (Some(pins.lock_for_daemon()?), &[][..]),
        Purpose::Reload { keep } => (None, keep),
    };

    let took_over = pins.map(MAP_GATES).exists();
    for name in program::MAPS {
        let path = pins.map(name);
        if path.exists() && !check_compatible(name, &path)? {
            // Counters only: a new layout (a reason added) starts them again from zero. The
            // program still attached keeps its own copy until the new one is swapped in.
            log::warn!("{}: counters of an older layout; starting them again", path.display());
            fs::remove_file(&path).map_err(|source| InstallError::PinDir {
                path: path.clone(),
                operation: "unpin",
                source,
            })?;
        }
        if !path.exists() {
            undo.maps.push(path);
        }
    }
    let options = program::Options {
        unparseable_passes: config.xdp.unparseable == crate::config::Unparseable::Pass,
        ..program::Options::default()
    };
    let mut loaded = program::load_with(&pins, config.leases.capacity, options)?;

    let mut state = GateState::open(pins.root())?;
    let (capacity_v4, _) = state.capacity();
    if took_over && capacity_v4 != config.leases.capacity {
        log::warn!(
            "lease maps keep their pinned capacity {capacity_v4} (config asks {}); it changes only after `gatectl teardown`",
            config.leases.capacity
        );
    }
    let specs: Vec<gate_maps::GateSpec> = config.gate_specs().into_iter().chain(keep.iter().cloned()).collect();
    let gates = state.sync_gates(&specs)?;
    // Before any program reads the filter: leases from before (kept across a restart, or from a
    // gate without a filter) must count in it, or their sources would be dropped.
    let counted = state.rebuild_filter()?;
    log::debug!("lease filter counts {counted} leases");
    // Before XDP tells transit from this host's packets: the table of this host's addresses.
    let local = netlink::addresses().map_err(InstallError::Addresses)?;
    state.set_local_addresses(&local)?;

    // The guarantee first, then the fast path.
    let mut backstops = Vec::new();
    let mut backstop_ids = Vec::new();
    if config.backstop.enabled {
        let servers =
            config.servers_cgroup().map_err(|source| InstallError::Cgroup { path: "(servers)".into(), source })?;
        cgroup::ensure(&servers).map_err(|source| InstallError::Cgroup { path: servers.clone(), source })?;
        for path in config.backstop_cgroups().map_err(|source| InstallError::Cgroup { path: servers, source })? {
            backstop_ids.push(attach_backstop(loaded.backstop(), &pins, &path, undo)?);
            backstops.push(path);
        }
    }
    let mut attachments = Vec::new();
    for (interface, &framing) in config.interfaces.iter().zip(framings) {
        attachments.push(attach(loaded.xdp_for(framing), &pins, interface, undo)?);
    }
    let removed = remove_unlisted(&pins, config, &backstop_ids)?;
    unpin_older_filter(&pins);
    // The pinned links hold the programs and the pins hold the maps; `loaded` is kept only to
    // attach again when an interface comes back.
    Ok(Installed { state, gates, attachments, backstops, removed, took_over, loaded, lock })
}

/// Unpins an older build's filter (another layout, other names), which no attached program reads
/// once this build's are in place: a `gatectl` of that build then refuses the gate (its filter is
/// missing) rather than count leases where no program looks. A failure leaves it pinned, unread.
fn unpin_older_filter(pins: &PinDir) {
    for name in [MAP_LEASE_FILTER_V1, MAP_LEASE_BITS_V1, MAP_LEASE_FILTER_V2, MAP_LEASE_BITS_V2] {
        let path = pins.map(name);
        match fs::remove_file(&path) {
            Ok(()) => log::info!("{}: an older build's filter, read by no program now: unpinned", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("{}: an older build's filter: unpin: {e}", path.display()),
        }
    }
}

/// The framing of the interface called `name` (in this network namespace), `None` if it does
/// not exist.
fn framing_of(name: &str) -> Result<Option<Framing>, InstallError> {
    let link = netlink::link(name).map_err(|source| InstallError::Netlink { name: name.to_owned(), source })?;
    link.map(|link| framing(name, &link)).transpose()
}

/// The framing of the interface `name` the kernel describes as `link`.
fn framing(name: &str, link: &netlink::LinkState) -> Result<Framing, InstallError> {
    Framing::of(link.device_type)
        .ok_or(InstallError::UnsupportedDevice { name: name.to_owned(), device_type: link.device_type })
}

/// How an interface stands after [`reconcile`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reconciled {
    /// Gated by the pinned link, as before.
    Gated,
    /// Was not gated (re-created, or its program replaced) and now is again.
    Reattached(Attachment),
    /// Does not exist now; it is gated again when it comes back.
    Absent,
    /// Has no pinned link: a reload has just detached it (the new config drops it), or the
    /// gate was torn down. Not attached again.
    Unpinned,
}

/// Makes sure `interface` is gated by this gate's program, from the kernel's view: the XDP
/// program attached to it must be the one of its pinned link. Attaches again if not.
///
/// # Errors
/// The kernel cannot be asked, or the attach fails (the interface then stays as it was).
pub fn reconcile(loaded: &mut Loaded, pins: &PinDir, interface: &InterfaceConfig) -> Result<Reconciled, InstallError> {
    let name = interface.name.as_str();
    let pinned = pins.attachment(name).map_err(|e| InstallError::PinDir {
        path: pins.links_dir(),
        operation: "read",
        source: e,
    })?;
    // Every listed interface is pinned by the install; no pin means it was unpinned on purpose.
    let Some(pinned) = pinned else { return Ok(Reconciled::Unpinned) };
    let state = netlink::xdp_state(name, gate_maps::pins::pinned_program(&pinned.path))
        .map_err(|source| InstallError::Netlink { name: name.to_owned(), source })?;
    match state {
        netlink::XdpState::Gated(_) => Ok(Reconciled::Gated),
        netlink::XdpState::Absent => Ok(Reconciled::Absent),
        netlink::XdpState::NotGated(link) => {
            let program = loaded.xdp_for(framing(name, &link)?);
            Ok(Reconciled::Reattached(attach(program, pins, interface, &mut Undo::default())?))
        }
    }
}

/// Removes the pinned links of interfaces and of cgroups other than `kept` (ids) that the config
/// no longer names (detaching them). Returns the paths removed.
fn remove_unlisted(pins: &PinDir, config: &Config, kept: &[u64]) -> Result<Vec<PathBuf>, InstallError> {
    let read_err = |path: PathBuf| move |source| InstallError::PinDir { path, operation: "read", source };
    let mut doomed = Vec::new();
    for attachment in pins.attachments().map_err(read_err(pins.links_dir()))? {
        if !config.interfaces.iter().any(|i| i.name == attachment.interface) {
            log::warn!("{}: no longer in the config; detaching the gate from it", attachment.interface);
            doomed.push(attachment.path);
        }
    }
    for (id, path) in pins.backstops().map_err(read_err(pins.backstop_dir()))? {
        if !kept.contains(&id) {
            log::warn!("backstop on cgroup id {id}: no longer in the config; detaching it");
            doomed.push(path);
        }
    }
    for path in &doomed {
        fs::remove_file(path).map_err(|source| InstallError::PinDir {
            path: path.clone(),
            operation: "unpin",
            source,
        })?;
    }
    Ok(doomed)
}

/// Attaches the backstop to the cgroup at `path` and pins the link under its cgroup id,
/// replacing (and so detaching) a link pinned there by an earlier run. Both run side by side for
/// that instant, judging alike: there is no moment without one. Returns the cgroup's id.
fn attach_backstop(program: &mut CgroupSkb, pins: &PinDir, path: &Path, undo: &mut Undo) -> Result<u64, InstallError> {
    let cgroup_err = |source| InstallError::Cgroup { path: path.to_owned(), source };
    let id = cgroup::id(path).map_err(cgroup_err)?;
    let dir = fs::File::open(path).map_err(cgroup_err)?;
    let attach_err = |source| InstallError::AttachBackstop { path: path.to_owned(), source };
    // A bpf_link: the kernel runs it beside any other program on the cgroup (systemd's own, an
    // earlier run's), whatever this mode says; the mode's flag would be refused with a link.
    let link_id = program.attach(&dir, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single).map_err(attach_err)?;
    let link = program.take_link(link_id).map_err(attach_err)?;
    let pin_path = pins.backstop_link(id);
    let pin_err = |source: Box<dyn std::error::Error + Send + Sync>| InstallError::PinLink {
        what: format!("backstop on cgroup {}", path.display()),
        path: pin_path.clone(),
        source,
    };
    let fd_link = FdLink::try_from(link).map_err(|e| pin_err(e.into()))?;
    let existed = pin_path.exists();
    pin_replacing(fd_link, &pin_path).map_err(pin_err)?;
    if !existed {
        undo.links.push(pin_path);
    }
    log::info!("backstop on cgroup {} (id {id})", path.display());
    Ok(id)
}

/// Pins `link` at `path`, atomically replacing whatever is pinned there (a defunct link of a
/// deleted interface, or an earlier run's backstop, which the replacement detaches).
fn pin_replacing(link: FdLink, path: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut temp = path.as_os_str().to_owned();
    temp.push("-new"); // bpffs refuses names with a dot
    let temp = PathBuf::from(temp);
    let _ = fs::remove_file(&temp); // a leftover of a run that died between pin and rename
    link.pin(&temp)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(e.into());
    }
    Ok(())
}

/// Creates the pin directory on a bpffs (mounting the standard one if it is missing).
fn prepare_pin_dir(pins: &PinDir, undo: &mut Undo) -> Result<(), InstallError> {
    let root = pins.root();
    let ancestor = root.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let pin_err = |operation, source| InstallError::PinDir { path: root.to_owned(), operation, source };
    let mut fs_type = statfs(ancestor).map_err(|e| pin_err("statfs", e.into()))?.filesystem_type();
    if fs_type != BPF_FS_MAGIC && ancestor == Path::new(BPFFS_MOUNT_POINT) {
        log::info!("mounting bpffs at {BPFFS_MOUNT_POINT}");
        nix::mount::mount(Some("bpf"), BPFFS_MOUNT_POINT, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(|e| pin_err("mount bpffs", e.into()))?;
        fs_type = statfs(ancestor).map_err(|e| pin_err("statfs", e.into()))?.filesystem_type();
    }
    if fs_type != BPF_FS_MAGIC {
        return Err(InstallError::NotBpffs {
            path: root.to_owned(),
            ancestor: ancestor.to_owned(),
            fs_type: fs_type.0,
        });
    }
    for dir in [root.to_owned(), pins.links_dir(), pins.backstop_dir()] {
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(|e| pin_err("create directory", e))?;
            undo.dirs.push(dir);
        }
    }
    Ok(())
}

/// Checks a pinned map against this build's layout: key and value sizes, and the entries of a
/// map whose size is fixed. `Ok(false)` for counters of another size (the caller replaces
/// them); any other difference is refused.
fn check_compatible(name: &'static str, path: &Path) -> Result<bool, InstallError> {
    let (key, value, entries) = match name {
        MAP_GATES => (size_of::<GateKey>(), size_of::<Gate>(), Some(MAX_GATED_PORTS)),
        MAP_LEASES_V4 => (size_of::<LeaseKeyV4>(), size_of::<Lease>(), None),
        MAP_LEASES_V6 => (size_of::<LeaseKeyV6>(), size_of::<Lease>(), None),
        MAP_PORTS => (size_of::<u32>(), size_of::<u32>(), Some(PORT_SLOTS)),
        MAP_CACHE_EPOCH => (size_of::<u32>(), size_of::<u32>(), Some(1)),
        MAP_GATE_OPTIONS => (size_of::<u32>(), size_of::<u32>(), Some(MAX_GATES + 1)),
        MAP_LOCAL_ADDRS => (size_of::<u32>(), size_of::<LocalAddr>(), Some(LOCAL_SLOTS)),
        MAP_LEASE_CACHE => (size_of::<u32>(), size_of::<CachedLease>(), Some(CACHE_SLOTS)),
        MAP_STATS | MAP_BACKSTOP_STATS => (size_of::<u32>(), size_of::<u64>(), Some(STATS_SLOTS)),
        MAP_LEASE_FILTER | MAP_LEASE_BITS => (size_of::<u32>(), size_of::<u64>(), None),
        MAP_LEASE_BITS_SIZE => (size_of::<u32>(), size_of::<BitsSize>(), Some(1)),
        MAP_TRACE => (size_of::<u32>(), size_of::<TraceFilter>(), Some(1)),
        // A ring buffer has no keys or values; its entries are its size in bytes.
        MAP_TRACE_EVENTS => (0, 0, Some(TRACE_EVENTS_BYTES)),
        other => unreachable!("program::MAPS lists {other}, which has no layout here"),
    };
    let info = MapInfo::from_pin(path).map_err(|e| StateError::Unreadable { path: path.to_owned(), source: e })?;
    let found = (info.key_size() as usize, info.value_size() as usize);
    let found_entries = info.max_entries();
    let counters = matches!(name, MAP_STATS | MAP_BACKSTOP_STATS);
    if found == (key, value) && entries.is_none_or(|e| e == found_entries) {
        return Ok(true);
    }
    if counters && found == (key, value) {
        return Ok(false);
    }
    Err(InstallError::IncompatibleMap {
        path: path.to_owned(),
        found: format!("key {} / value {} bytes, {found_entries} entries", found.0, found.1),
        wanted: format!(
            "key {key} / value {value} bytes{}",
            entries.map_or(String::new(), |e| format!(", {e} entries"))
        ),
    })
}

/// Puts `program` on `interface`: into the link pinned there if the mode still fits, else a new
/// link, pinned. A pinned link in another mode is removed only once the new one is in place.
fn attach(
    program: &mut Xdp,
    pins: &PinDir,
    interface: &InterfaceConfig,
    undo: &mut Undo,
) -> Result<Attachment, InstallError> {
    let name = interface.name.as_str();
    let existing = pins.attachment(name).map_err(|e| InstallError::PinDir {
        path: pins.links_dir(),
        operation: "read",
        source: e,
    })?;
    if let Some(old) = &existing
        && mode_fits(interface.mode, old.mode)
    {
        match swap_into(program, &old.path) {
            Ok(()) => {
                log::info!("{name}: new program swapped into the pinned {} link", old.mode);
                return Ok(old.clone());
            }
            // The interface went away and came back: the old link is defunct.
            Err(e) => log::warn!("{name}: pinned link {} unusable ({e}); attaching anew", old.path.display()),
        }
    }
    let attachment = attach_new(program, pins, interface, undo)?;
    if let Some(old) = existing
        && old.path != attachment.path
    {
        let _ = fs::remove_file(&old.path);
    }
    Ok(attachment)
}

const fn mode_fits(wanted: ModeSetting, pinned: AttachMode) -> bool {
    matches!(
        (wanted, pinned),
        (ModeSetting::Auto, _)
            | (ModeSetting::Native, AttachMode::Native)
            | (ModeSetting::Generic, AttachMode::Generic)
    )
}

/// Atomically replaces the program behind the link pinned at `path`.
fn swap_into(program: &mut Xdp, path: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let pinned = PinnedLink::from_pin(path)?;
    let link = XdpLink::try_from(FdLink::from(pinned))?;
    let id = program.attach_to_link(link)?;
    // The pin keeps the link; this handle may close.
    drop(program.take_link(id)?);
    Ok(())
}

fn attach_new(
    program: &mut Xdp,
    pins: &PinDir,
    interface: &InterfaceConfig,
    undo: &mut Undo,
) -> Result<Attachment, InstallError> {
    let name = interface.name.as_str();
    let candidates: &[AttachMode] = match interface.mode {
        ModeSetting::Auto => &[AttachMode::Native, AttachMode::Generic],
        ModeSetting::Native => &[AttachMode::Native],
        ModeSetting::Generic => &[AttachMode::Generic],
    };
    let mut last_error = None;
    for &mode in candidates {
        let xdp_mode = match mode {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        };
        match program.attach(name, xdp_mode) {
            Ok(id) => {
                let path = pins.link(name, mode);
                let pin_err = |source: Box<dyn std::error::Error + Send + Sync>| InstallError::PinLink {
                    what: format!("interface {name}"),
                    path: path.clone(),
                    source,
                };
                let link = program.take_link(id).map_err(|e| pin_err(e.into()))?;
                let fd_link = FdLink::try_from(link).map_err(|e| pin_err(e.into()))?;
                // Removing this pin detaches the link; leaving it keeps the gate up. A defunct
                // link pinned here (its interface deleted and re-created) is replaced.
                let existed = path.exists();
                pin_replacing(fd_link, &path).map_err(pin_err)?;
                if !existed {
                    undo.links.push(path.clone());
                }
                log::info!("{name}: attached in {mode} mode");
                return Ok(Attachment { interface: name.to_owned(), mode, path });
            }
            Err(e) => {
                log::debug!("{name}: {mode} attach failed: {e}");
                last_error = Some((mode, e));
            }
        }
    }
    let (mode, source) = last_error.expect("at least one attach mode is always tried");
    Err(InstallError::Attach { interface: name.to_owned(), mode: mode.as_str(), source })
}
