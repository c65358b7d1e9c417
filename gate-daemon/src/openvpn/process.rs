//! A server's process: a child this daemon started, or one an earlier daemon started and this
//! one adopted (the earlier daemon was killed or crashed; the server kept its tunnels). An
//! adopted process is not our child, so its end is watched through a pidfd.
use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd},
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};
use tokio::io::unix::AsyncFd;

/// How long a server gets to stop on SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

pub enum Process {
    Child(tokio::process::Child),
    Adopted { pid: Pid, exited: AsyncFd<OwnedFd> },
}

impl Process {
    /// Watches `pid`, a process this daemon did not start.
    ///
    /// # Errors
    /// The process is gone, or pidfds are not available.
    pub fn adopt(pid: Pid) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        #[expect(
            unsafe_code,
            reason = "pidfd_open has no wrapper in std or nix; the kernel interface needs the syscall"
        )]
        let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
        let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd_open returned an impossible fd"))?;
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the fd was just returned by the kernel, is valid and owned by nobody else.
        #[expect(unsafe_code, reason = "taking ownership of the fd pidfd_open returned")]
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `OwnedFd` keeps the same fd open for as long as the AsyncFd owns it.
        #[expect(unsafe_code, reason = "registering the pidfd with the runtime's reactor")]
        let exited = unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self::Adopted { pid, exited })
    }

    #[must_use]
    pub fn id(&self) -> Option<u32> {
        match self {
            Self::Child(child) => child.id(),
            Self::Adopted { pid, .. } => u32::try_from(pid.as_raw()).ok(),
        }
    }

    /// Waits for the process to end; how it ended, as far as this daemon can know.
    pub async fn wait(&mut self) -> String {
        match self {
            Self::Child(child) => child.wait().await.map_or_else(|e| e.to_string(), |s| s.to_string()),
            // A pidfd turns readable when its process ends; the status went to its parent.
            Self::Adopted { exited, .. } => match exited.readable().await {
                Ok(mut ready) => {
                    ready.retain_ready();
                    "ended (adopted: its exit status went to its parent)".to_owned()
                }
                Err(e) => format!("cannot be watched: {e}"),
            },
        }
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`]; returns once it has ended.
    pub async fn terminate(&mut self) {
        let Some(pid) = self.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw) else { return };
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, self.wait()).await.is_err() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = self.wait().await;
        }
    }
}
