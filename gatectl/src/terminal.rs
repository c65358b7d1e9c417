//! The terminal for gatectl's live views (`top`, `trace`): raw mode while they run, and a key
//! to quit on.
use std::{io::Read as _, os::fd::AsFd as _, time::Duration};

use anyhow::Context as _;

/// The terminal in raw mode (no echo, no line buffering, Ctrl-C as a key) while held; restored
/// when dropped, also on an error.
pub struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    pub fn enter() -> anyhow::Result<Self> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).context("read the terminal's settings")?;
        let mut raw = saved.clone();
        raw.local_flags.remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("set the terminal to raw")?;
        Ok(Self { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin().as_fd(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// Waits up to `wait` for a key on stdin; whether it asked to quit (q, Q, Ctrl-C). At the end of
/// stdin (`< /dev/null`), stdin is no longer watched and the view runs until killed.
pub fn quit_within(wait: Duration, watching: &mut bool) -> anyhow::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    if !*watching {
        std::thread::sleep(wait);
        return Ok(false);
    }
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    let millis = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    if poll(&mut fds, PollTimeout::from(millis)).context("wait for a key")? == 0 {
        return Ok(false);
    }
    let mut bytes = [0; 64];
    let read = std::io::stdin().lock().read(&mut bytes).context("read a key")?;
    if read == 0 {
        *watching = false;
        std::thread::sleep(wait);
    }
    Ok(bytes[..read].iter().any(|b| matches!(b, b'q' | b'Q' | 0x03)))
}
