//! cgroup v2 for the delivery backstop: where the unified hierarchy is mounted, which cgroup
//! this process runs in, and putting a child process into a cgroup before it runs, so every
//! socket it ever opens belongs to that cgroup (a socket keeps the cgroup it was created in).
use std::{
    ffi::CString,
    fs, io,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};

/// Name of the cgroup the daemon makes beside itself for its OpenVPN servers, by default.
pub const SERVERS_CGROUP: &str = "gate-vpn";

/// Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup on systemd hosts,
/// /sys/fs/cgroup/unified on hybrid ones).
///
/// # Errors
/// /proc/self/mountinfo cannot be read, or no cgroup2 is mounted.
pub fn mount_point() -> io::Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    for line in mounts.lines() {
        // "<id> <parent> <dev> <root> <mount point> <options> [optional...] - <fstype> ..."
        let Some((left, right)) = line.split_once(" - ") else { continue };
        if right.split_whitespace().next() == Some("cgroup2")
            && let Some(point) = left.split_whitespace().nth(4)
        {
            return Ok(PathBuf::from(point.replace("\\040", " ")));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "no cgroup2 filesystem is mounted (mount -t cgroup2 none /sys/fs/cgroup)",
    ))
}

/// The cgroup v2 directory this process runs in.
///
/// # Errors
/// As [`mount_point`], or /proc/self/cgroup has no v2 entry.
pub fn own() -> io::Result<PathBuf> {
    let mount = mount_point()?;
    let cgroups = fs::read_to_string("/proc/self/cgroup")?;
    let path = cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "/proc/self/cgroup has no cgroup v2 entry"))?;
    Ok(mount.join(path.trim_start_matches('/')))
}

/// The cgroup's id (what the kernel reports in a cgroup link's info): its inode number.
///
/// # Errors
/// `path` is not a directory on a cgroup v2 filesystem.
pub fn id(path: &Path) -> io::Result<u64> {
    let fs_type = statfs(path)?.filesystem_type();
    if fs_type != CGROUP2_SUPER_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a cgroup v2 directory (the unified hierarchy is at {})",
                path.display(),
                mount_point().map_or_else(|e| e.to_string(), |p| p.display().to_string())
            ),
        ));
    }
    Ok(fs::metadata(path)?.ino())
}

/// Makes the cgroup `path` if it does not exist yet.
///
/// # Errors
/// Its parent is not a cgroup v2 directory, or it cannot be made.
pub fn ensure(path: &Path) -> io::Result<()> {
    if !path.exists() {
        let parent = path.parent().unwrap_or(Path::new("/"));
        id(parent)?;
        fs::create_dir(path)?;
    }
    id(path).map(|_| ())
}

/// The path of `cgroup.procs` in `cgroup`, ready for [`join_in_child`].
///
/// # Errors
/// The path holds a NUL byte.
pub fn procs_file(cgroup: &Path) -> io::Result<CString> {
    CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`. Meant for a child
/// between fork and exec, so it uses only async-signal-safe calls and allocates nothing.
///
/// # Errors
/// The file cannot be opened or written.
#[expect(unsafe_code, reason = "open/write/close on a raw fd: std allocates, which a forked child must not")]
pub fn join_in_child(procs: &CString) -> io::Result<()> {
    // SAFETY: a valid NUL-terminated path; the returned fd is checked and closed below.
    let fd = unsafe { nix::libc::open(procs.as_ptr(), nix::libc::O_WRONLY | nix::libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // "0" names the writing process itself.
    // SAFETY: fd is open; the buffer is a static byte string of the given length.
    let written = unsafe { nix::libc::write(fd, b"0".as_ptr().cast(), 1) };
    let error = io::Error::last_os_error();
    // SAFETY: fd is open and owned here.
    unsafe { nix::libc::close(fd) };
    if written == 1 { Ok(()) } else { Err(error) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hierarchy_and_our_own_cgroup_are_found() {
        let mount = mount_point().expect("cgroup2 is mounted on this machine kind");
        assert!(id(&mount).is_ok(), "{} is cgroup2", mount.display());
        let own = own().expect("own cgroup");
        assert!(own.starts_with(&mount) && own.exists(), "{}", own.display());
    }

    #[test]
    fn a_plain_directory_is_not_a_cgroup() {
        let e = id(Path::new("/tmp")).expect_err("tmp is no cgroup");
        assert!(e.to_string().contains("not a cgroup v2 directory"), "{e}");
    }
}
