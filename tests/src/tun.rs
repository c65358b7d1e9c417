//! A tun device held open by the test: packets written to it arrive at the host as if received
//! on a layer-3 link (no Ethernet header), and what the host sends out of it can be read back.
//! The device goes when the value drops.
use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Write as _},
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::netns::Netns;

const TUNSETIFF: u64 = 0x4004_54ca;
const IFF_TUN: i16 = 0x0001;
const IFF_NO_PI: i16 = 0x1000;

pub struct Tun {
    file: File,
}

impl Tun {
    /// Makes the tun device `name` inside `ns`.
    pub fn create(ns: &Netns, name: &str) -> Self {
        assert!(name.len() < 16, "interface names are at most 15 bytes");
        let file = ns.run(|| {
            // Opened inside the namespace: the device is made in the namespace of the file.
            let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun").expect("open /dev/net/tun");
            let mut ifreq = [0_u8; 40];
            ifreq[..name.len()].copy_from_slice(name.as_bytes());
            ifreq[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
            let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
            // SAFETY: TUNSETIFF reads and writes a 40-byte struct ifreq, which `ifreq` is; the fd
            // is open for the whole call.
            #[expect(unsafe_code, reason = "TUNSETIFF has no safe wrapper; the kernel interface needs ioctl")]
            let result = unsafe { libc::ioctl(fd, TUNSETIFF, ifreq.as_mut_ptr()) };
            assert_eq!(result, 0, "TUNSETIFF {name}: {}", std::io::Error::last_os_error());
            file
        });
        Self { file }
    }

    /// Hands `packet` (an IP packet) to the host, as received on this device.
    pub fn send(&mut self, packet: &[u8]) {
        self.file.write_all(packet).expect("write to tun");
    }

    /// The first packet the host sends out of this device for which `wanted` holds, within `wait`.
    pub fn receive(&mut self, wait: Duration, wanted: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(millis)).expect("poll tun") == 0 {
                return None;
            }
            let n = self.file.read(&mut buf).expect("read tun");
            if wanted(&buf[..n]) {
                return Some(buf[..n].to_vec());
            }
        }
    }
}
