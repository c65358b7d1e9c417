//! Where the gate's state lives on bpffs:
//!
//! ```text
//! <pin dir>/GATES, LEASES_V4, LEASES_V6, STATS, ...   the maps
//! <pin dir>/links/<interface>:<mode>                   one pinned XDP link per interface
//! <pin dir>/backstop/<cgroup id>                       one pinned backstop link per cgroup
//! ```
//!
//! ':' cannot appear in an interface name, so it separates the name from the attach mode.
use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

/// Default pin directory.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/gate";

const LINKS_DIR: &str = "links";
const BACKSTOP_DIR: &str = "backstop";

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// In the generic network stack path (`XDP_FLAGS_SKB_MODE`).
    Generic,
}

impl AttachMode {
    /// Stable lowercase name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" => Ok(Self::Native),
            "generic" => Ok(Self::Generic),
            other => Err(format!("unknown attach mode {other:?} (expected native or generic)")),
        }
    }
}

/// A pinned link found under the pin directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub interface: String,
    pub mode: AttachMode,
    pub path: PathBuf,
}

/// The pin directory and the names inside it.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the map called `name` is pinned.
    #[must_use]
    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    #[must_use]
    pub fn links_dir(&self) -> PathBuf {
        self.root.join(LINKS_DIR)
    }

    /// Where the link attaching the gate to `interface` in `mode` is pinned.
    #[must_use]
    pub fn link(&self, interface: &str, mode: AttachMode) -> PathBuf {
        self.links_dir().join(format!("{interface}:{mode}"))
    }

    #[must_use]
    pub fn backstop_dir(&self) -> PathBuf {
        self.root.join(BACKSTOP_DIR)
    }

    /// Where the backstop link of the cgroup with id (inode number) `cgroup_id` is pinned.
    #[must_use]
    pub fn backstop_link(&self, cgroup_id: u64) -> PathBuf {
        self.backstop_dir().join(cgroup_id.to_string())
    }

    /// Every pinned backstop link: (cgroup id, path), sorted by id.
    ///
    /// # Errors
    /// The backstop directory exists but cannot be read.
    pub fn backstops(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let mut found: Vec<(u64, PathBuf)> = pinned_names(&self.backstop_dir())?
            .into_iter()
            .filter_map(|(name, path)| Some((name.parse().ok()?, path)))
            .collect();
        found.sort();
        Ok(found)
    }

    /// Every pinned link, sorted by interface. No links directory means no links.
    ///
    /// # Errors
    /// The links directory exists but cannot be read.
    pub fn attachments(&self) -> io::Result<Vec<Attachment>> {
        let mut found = Vec::new();
        for (name, path) in pinned_names(&self.links_dir())? {
            let Some((interface, mode)) = name.rsplit_once(':') else { continue };
            let Ok(mode) = mode.parse() else { continue };
            found.push(Attachment { interface: interface.to_owned(), mode, path });
        }
        found.sort_by(|a, b| a.interface.cmp(&b.interface));
        Ok(found)
    }

    /// The pinned link for `interface`, in whichever mode.
    ///
    /// # Errors
    /// The links directory cannot be read.
    pub fn attachment(&self, interface: &str) -> io::Result<Option<Attachment>> {
        Ok(self.attachments()?.into_iter().find(|a| a.interface == interface))
    }
}

/// Held by the one daemon that runs on a pin directory, for as long as it runs: an exclusive
/// `flock` on the pin directory's `links` directory (not the directory itself, whose lock every
/// writer takes for a moment). Dropping it releases the lock.
pub struct DaemonLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

/// Why [`PinDir::lock_for_daemon`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another gate-daemon (pid {}) runs on the pin dir {path}; it is left as it is", pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()))]
    Held { path: PathBuf, pid: Option<u32> },
    #[error("lock the pin dir {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl PinDir {
    /// Takes the daemon's lock without waiting; the links directory must exist.
    ///
    /// # Errors
    /// [`LockError::Held`], naming the holder's pid (from /proc/locks), if a daemon holds it.
    pub fn lock_for_daemon(&self) -> Result<DaemonLock, LockError> {
        use std::os::unix::fs::MetadataExt as _;
        let dir = self.links_dir();
        let io_err = |source| LockError::Io { path: self.root.clone(), source };
        let file = fs::File::open(&dir).map_err(io_err)?;
        let inode = file.metadata().map_err(io_err)?.ino();
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(DaemonLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                Err(LockError::Held { path: self.root.clone(), pid: flock_holder(inode) })
            }
            Err((_, errno)) => Err(io_err(errno.into())),
        }
    }
}

/// The pid holding a `flock` on the file with inode `inode`, from /proc/locks.
fn flock_holder(inode: u64) -> Option<u32> {
    let locks = fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let file = fields.get(5)?;
        let held_inode: u64 = file.rsplit(':').next()?.parse().ok()?;
        (fields.get(1) == Some(&"FLOCK") && held_inode == inode).then(|| fields.get(4)?.parse().ok()).flatten()
    })
}

/// The id of the program behind the link pinned at `path`, as the kernel reports it; `None` if
/// nothing usable is pinned there.
#[must_use]
pub fn pinned_program(path: &Path) -> Option<u32> {
    let link = aya::programs::links::PinnedLink::from_pin(path).ok()?;
    aya::programs::links::FdLink::from(link).info().ok().map(|info| info.program_id())
}

/// The (UTF-8) names and paths in `dir`; none if it does not exist.
fn pinned_names(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Ok(name) = entry.file_name().into_string() {
            found.push((name, entry.path()));
        }
    }
    Ok(found)
}
