//! Each server's tun device, made by the daemon before the server starts: persistent, owned by
//! the server's user and group, its address set and up. OpenVPN then opens it as that user and
//! configures nothing (`ifconfig-noexec`), so it is never root and keeps no capability at all
//! (OpenVPN 2.6 started as root keeps CAP_NET_ADMIN after dropping to its user).
use std::{fs::OpenOptions, io, os::fd::AsRawFd as _, process::Command};

use crate::openvpn::server_conf::Network;

const TUN_NODE: &str = "/dev/net/tun";

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

fn ioctl(fd: i32, request: nix::libc::Ioctl, argument: nix::libc::c_ulong) -> io::Result<()> {
    // SAFETY: the four tun requests used here take an integer argument, passed by value; the fd
    // is open for the whole call.
    #[expect(unsafe_code, reason = "the tun driver's settings have no safe wrapper; the kernel interface needs ioctl")]
    let result = unsafe { nix::libc::ioctl(fd, request, argument) };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Makes (or takes over) the persistent tun device `name` for a server running as `uid`/`gid`,
/// with the server's address in `network`, and brings it up.
///
/// # Errors
/// The device cannot be made or set (another process holds it: an earlier server still runs),
/// or `ip` fails to address it.
pub fn ensure(name: &str, uid: u32, gid: u32, network: Network) -> io::Result<()> {
    if name.is_empty() || name.len() > 15 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("device name {name:?}: 1 to 15 bytes")));
    }
    let file = OpenOptions::new().read(true).write(true).open(TUN_NODE)?;
    let fd = file.as_raw_fd();
    let mut request = IfReq { name: [0; 16], flags: (nix::libc::IFF_TUN | nix::libc::IFF_NO_PI) as i16, _pad: [0; 22] };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a 40-byte struct ifreq, which `request` is (repr(C));
    // the fd is open for the whole call.
    #[expect(unsafe_code, reason = "TUNSETIFF has no safe wrapper; the kernel interface needs ioctl")]
    let result = unsafe { nix::libc::ioctl(fd, nix::libc::TUNSETIFF, std::ptr::from_mut(&mut request)) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    ioctl(fd, nix::libc::TUNSETOWNER, uid.into())?;
    ioctl(fd, nix::libc::TUNSETGROUP, gid.into())?;
    ioctl(fd, nix::libc::TUNSETPERSIST, 1)?;
    drop(file);
    let address = format!("{}/{}", network.server_address(), network.prefix);
    ip(&["addr", "replace", &address, "dev", name])?;
    ip(&["link", "set", "dev", name, "up"])
}

/// Whether a process running as `uid`/`gid` may open the tun node (OpenVPN runs as its user
/// from the start); the reason if not.
///
/// # Errors
/// It may not, or the node is missing.
pub fn openable_by(uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(TUN_NODE).map_err(|e| format!("{TUN_NODE}: {e}"))?;
    let mode = meta.mode();
    let rw = |shift: u32| (mode >> shift) & 0o6 == 0o6;
    if uid == 0 || rw(0) || (meta.gid() == gid && rw(3)) || (meta.uid() == uid && rw(6)) {
        return Ok(());
    }
    Err(format!(
        "{TUN_NODE} (mode {:o}) cannot be opened by the server's user; make it 0666, as Debian's udev rule does \
         (opening it grants nothing by itself)",
        mode & 0o777
    ))
}

/// Deletes the tun device `name` (its server was removed from the config).
///
/// # Errors
/// `ip` fails (the device is already gone, say).
pub fn remove(name: &str) -> io::Result<()> {
    ip(&["link", "del", "dev", name])
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}
