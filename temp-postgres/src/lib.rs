//! A PostgreSQL server of a test's own. [`TempPostgres::start`] makes a cluster in a fresh
//! directory under the system's temporary directory (`initdb`, ~0.5 s), starts it listening
//! only on a Unix socket in that directory, and [`Drop`] stops it and removes the directory,
//! also when the test panics. A server whose test process died without dropping it (killed -9)
//! is stopped by the next `start` (the directory's name carries the owner's pid).
//!
//! Debian's `postgresql` package provides the binaries (`scripts/setup` installs it); the server
//! runs as the `postgres` user when the test runs as root (PostgreSQL refuses to run as root).
use std::{
    fs, io,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Once,
        atomic::{AtomicU32, Ordering},
    },
};

const DIR_PREFIX: &str = "gate-pg-";
/// The superuser `initdb` makes, the user tests connect as.
pub const USER: &str = "gate";

pub struct TempPostgres {
    dir: PathBuf,
    bin: PathBuf,
}

impl TempPostgres {
    /// A new, running server with an empty `postgres` database.
    ///
    /// # Errors
    /// PostgreSQL is not installed, or `initdb` or the server failed (their output is in the
    /// error).
    pub fn start() -> io::Result<Self> {
        sweep_leftovers();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let bin = binaries()?;
        let name = format!("{DIR_PREFIX}{:x}x{:x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir)?;
        let server = Self { dir, bin };
        server.own_dir()?;
        server.run("initdb", &["-D", &server.data(), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync"])?;
        server.start_again()?;
        Ok(server)
    }

    /// Connection parameters for `database` (libpq's `key=value` form).
    #[must_use]
    pub fn params(&self, database: &str) -> String {
        format!("host={} port=5432 user={USER} dbname={database}", self.dir.display())
    }

    /// The URL of `database` (`postgres://`, the socket directory as its host, no password).
    #[must_use]
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@{}/{database}", self.socket_dir().replace('/', "%2F"))
    }

    /// Runs SQL through `psql` on `database`; returns its output.
    ///
    /// # Errors
    /// `psql` failed (its output is in the error).
    pub fn psql(&self, database: &str, sql: &str) -> io::Result<String> {
        let out = self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &self.socket_dir(),
                "-U",
                USER,
                "-d",
                database,
                "-c",
                sql,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What the server logged so far.
    #[must_use]
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Has the server log every statement it runs from now on (`log_statement = all`).
    ///
    /// # Errors
    /// As [`Self::psql`].
    pub fn log_statements(&self) -> io::Result<()> {
        self.psql("postgres", "ALTER SYSTEM SET log_statement = 'all'")?;
        self.psql("postgres", "SELECT pg_reload_conf()").map(drop)
    }

    /// Makes an empty database.
    ///
    /// # Errors
    /// As [`Self::psql`].
    pub fn create_database(&self, name: &str) -> io::Result<()> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\"")).map(drop)
    }

    /// Stops the server at once (as a crash or a lost database host would), keeping its data.
    ///
    /// # Errors
    /// `pg_ctl` failed.
    pub fn stop(&self) -> io::Result<()> {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]).map(drop)
    }

    /// Starts the server again after [`Self::stop`].
    ///
    /// # Errors
    /// `pg_ctl` failed.
    pub fn start_again(&self) -> io::Result<()> {
        let options = format!("-k {} -c listen_addresses= -c fsync=off -c max_connections=200", self.socket_dir());
        let log = self.dir.join("server.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"]).map(drop)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn socket_dir(&self) -> String {
        self.dir.display().to_string()
    }

    /// The directory to the user the server runs as.
    fn own_dir(&self) -> io::Result<()> {
        if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .map_err(io::Error::other)?
                .ok_or_else(|| io::Error::other("no `postgres` user: install PostgreSQL (scripts/setup)"))?;
            nix::unistd::chown(&self.dir, Some(user.uid), Some(user.gid)).map_err(io::Error::other)?;
        }
        Ok(())
    }

    fn run(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        run(&self.bin, program, args)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs a PostgreSQL program (as `postgres` when root); an error unless it succeeds.
fn run(bin: &Path, program: &str, args: &[&str]) -> io::Result<Output> {
    let path = bin.join(program);
    let mut command = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    let out = command.args(args).current_dir("/").stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{program} {}: {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out)
}

/// The newest installed PostgreSQL's programs (Debian keeps them per major version).
fn binaries() -> io::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| io::Error::other(format!("/usr/lib/postgresql: {e}: install PostgreSQL (scripts/setup)")))?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| io::Error::other("no PostgreSQL under /usr/lib/postgresql"))
}

/// Whether `pid` is a live process (a zombie waiting for its parent is not).
fn runs(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Stops and removes the servers of test processes that no longer exist.
fn sweep_leftovers() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let Ok(bin) = binaries() else { return };
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(owner) = name.strip_prefix(DIR_PREFIX).and_then(|rest| rest.split_once('x')) else { continue };
            let Ok(pid) = u32::from_str_radix(owner.0, 16) else { continue };
            if runs(pid) {
                continue;
            }
            let data = entry.path().join("data").display().to_string();
            let _ = run(&bin, "pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
            let _ = fs::remove_dir_all(entry.path());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_answers_and_is_gone_after_drop() {
        let server = TempPostgres::start().unwrap();
        server.create_database("t").unwrap();
        assert_eq!(server.psql("t", "SELECT 40 + 2").unwrap().trim(), "42");
        let dir = server.dir.clone();
        let pid: u32 =
            fs::read_to_string(dir.join("data/postmaster.pid")).unwrap().lines().next().unwrap().parse().unwrap();
        drop(server);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(!runs(pid), "the server (pid {pid}) still runs");
    }
}
