//! Putting the gate in place: load the program, take over (or create) the pinned maps, gate the
//! configured ports, then attach to each interface, or swap the new program into the link already
//! pinned there.
//!
//! The order keeps the gate closed throughout: ports are gated in the maps before any program
//! that reads them is attached, and an existing link is updated atomically, never detached and
//! re-attached. On failure, whatever this run attached or created is undone, and what was there
//! before (a running gate) is left as it was.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    maps::MapInfo,
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use gate_common::{
    CachedLease, Gate, GateKey, Lease, LeaseKeyV4, LeaseKeyV6, MAP_CACHE_EPOCH, MAP_GATES, MAP_LEASE_CACHE,
    MAP_LEASES_V4, MAP_LEASES_V6, MAP_PORTS,
};
use gate_maps::{AttachMode, Attachment, GateEntry, GateState, PinDir, StateError};
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

use crate::{
    config::{Config, InterfaceConfig, ModeSetting},
    program::{self, LoadError},
};

/// The standard bpffs mount point, which the daemon mounts if nothing is mounted there.
const BPFFS_MOUNT_POINT: &str = "/sys/fs/bpf";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("interface {name:?} does not exist")]
    NoSuchInterface { name: String },
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
    #[error("interface {interface}: pin the XDP link at {path}")]
    PinLink {
        interface: String,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// The gate in place.
pub struct Installed {
    pub state: GateState,
    pub gates: Vec<GateEntry>,
    pub attachments: Vec<Attachment>,
    /// Whether pinned maps from an earlier run were taken over (leases kept).
    pub took_over: bool,
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
            if let Err(e) = fs::remove_file(path) {
                log::warn!("rollback: remove {}: {e}", path.display());
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
    for interface in &config.interfaces {
        if nix::net::if_::if_nametoindex(interface.name.as_str()).is_err() {
            return Err(InstallError::NoSuchInterface { name: interface.name.clone() });
        }
    }
    let mut undo = Undo::default();
    match install_steps(config, &mut undo) {
        Ok(installed) => Ok(installed),
        Err(e) => {
            undo.run();
            Err(e)
        }
    }
}

fn install_steps(config: &Config, undo: &mut Undo) -> Result<Installed, InstallError> {
    let pins = PinDir::new(&config.pin_dir);
    prepare_pin_dir(&pins, undo)?;

    let took_over = pins.map(MAP_GATES).exists();
    for name in program::MAPS {
        let path = pins.map(name);
        if path.exists() {
            check_compatible(name, &path)?;
        } else {
            undo.maps.push(path);
        }
    }
    let mut loaded = program::load(&pins, config.leases.capacity)?;

    let mut state = GateState::open(pins.root())?;
    let (capacity_v4, _) = state.capacity();
    if took_over && capacity_v4 != config.leases.capacity {
        log::warn!(
            "lease maps keep their pinned capacity {capacity_v4} (config asks {}); it changes only after `gatectl teardown`",
            config.leases.capacity
        );
    }
    let gates = state.sync_gates(&config.gate_specs())?;
    // Before any program reads the filter: leases from before (kept across a restart, or from a
    // gate without a filter) must count in it, or their sources would be dropped.
    let counted = state.rebuild_filter()?;
    log::debug!("lease filter counts {counted} leases");

    let program = loaded.xdp();
    let mut attachments = Vec::new();
    for interface in &config.interfaces {
        attachments.push(attach(program, &pins, interface, undo)?);
    }
    // Dropping the loaded object now is safe: the pinned links hold the program, the pins hold
    // the maps.
    Ok(Installed { state, gates, attachments, took_over })
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
    for dir in [root.to_owned(), pins.links_dir()] {
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(|e| pin_err("create directory", e))?;
            undo.dirs.push(dir);
        }
    }
    Ok(())
}

/// Refuses to reuse a pinned map whose layout differs from this build's.
fn check_compatible(name: &'static str, path: &Path) -> Result<(), InstallError> {
    let (key, value) = match name {
        MAP_GATES => (size_of::<GateKey>(), size_of::<Gate>()),
        MAP_LEASES_V4 => (size_of::<LeaseKeyV4>(), size_of::<Lease>()),
        MAP_LEASES_V6 => (size_of::<LeaseKeyV6>(), size_of::<Lease>()),
        MAP_PORTS | MAP_CACHE_EPOCH => (size_of::<u32>(), size_of::<u32>()),
        MAP_LEASE_CACHE => (size_of::<u32>(), size_of::<CachedLease>()),
        _ => (size_of::<u32>(), size_of::<u64>()), // STATS, LEASE_FILTER
    };
    let info = MapInfo::from_pin(path).map_err(|e| StateError::NotFound { path: path.to_owned(), source: e })?;
    let found = (info.key_size() as usize, info.value_size() as usize);
    if found != (key, value) {
        return Err(InstallError::IncompatibleMap {
            path: path.to_owned(),
            found: format!("key {} / value {} bytes", found.0, found.1),
            wanted: format!("key {key} / value {value} bytes"),
        });
    }
    Ok(())
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
                    interface: name.to_owned(),
                    path: path.clone(),
                    source,
                };
                let link = program.take_link(id).map_err(|e| pin_err(e.into()))?;
                let fd_link = FdLink::try_from(link).map_err(|e| pin_err(e.into()))?;
                // Removing this pin detaches the link; leaving it keeps the gate up.
                fd_link.pin(&path).map_err(|e| pin_err(e.into()))?;
                undo.links.push(path.clone());
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
