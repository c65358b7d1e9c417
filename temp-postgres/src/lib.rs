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
    os::unix::fs::PermissionsExt,
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
    /// With TLS: the loopback port it also listens on (TLS only there).
    tls_port: Option<u16>,
    /// Syncs its writes to the disk as a production server does (`fsync`); tests do without.
    durable: bool,
}

impl TempPostgres {
    /// A new, running server with an empty `postgres` database.
    ///
    /// # Errors
    /// PostgreSQL is not installed, or `initdb` or the server failed (their output is in the
    /// error).
    pub fn start() -> io::Result<Self> {
        Self::make(false, false)
    }

    /// As [`Self::start`], syncing its writes to the disk (`fsync` on, as PostgreSQL ships):
    /// for benchmarks, where the tests' shortcut would flatter the database.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub fn start_durable() -> io::Result<Self> {
        Self::make(false, true)
    }

    /// As [`Self::start`], and also listening on 127.0.0.1 (a free port) for TLS connections
    /// only, its certificate (for 127.0.0.1 and localhost) signed by a CA of its own
    /// ([`Self::ca_file`]).
    ///
    /// # Errors
    /// As [`Self::start`]; or `openssl` failed to make the certificates.
    pub fn start_with_tls() -> io::Result<Self> {
        Self::make(true, false)
    }

    /// A new directory of its own for a server, not started.
    fn place() -> io::Result<Self> {
        sweep_leftovers();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let bin = binaries()?;
        let name = format!("{DIR_PREFIX}{:x}x{:x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir)?;
        let server = Self { dir, bin, tls_port: None, durable: false };
        server.own_dir()?;
        Ok(server)
    }

    /// A streaming replica of this server (`pg_basebackup`), running on a socket of its own,
    /// and this server waiting for it at every commit (synchronous replication: a commit the
    /// client saw is on both), as a highly available database for gate would be set up.
    ///
    /// # Errors
    /// `pg_basebackup`, the replica's start or the setting failed.
    pub fn start_standby(&self) -> io::Result<Self> {
        let standby = Self::place()?;
        let port = self.port().to_string();
        standby.run(
            "pg_basebackup",
            &["-h", &self.socket_dir(), "-p", &port, "-U", USER, "-D", &standby.data(), "-R", "-c", "fast"],
        )?;
        standby.start_again()?;
        self.psql("postgres", "ALTER SYSTEM SET synchronous_standby_names = '*'")?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(standby)
    }

    /// Makes a replica ([`Self::start_standby`]) the primary, as a failover does.
    ///
    /// # Errors
    /// `pg_ctl promote` failed.
    pub fn promote(&self) -> io::Result<()> {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "promote"]).map(drop)
    }

    fn make(with_tls: bool, durable: bool) -> io::Result<Self> {
        let mut server = Self::place()?;
        server.durable = durable;
        server.run("initdb", &["-D", &server.data(), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync"])?;
        if with_tls {
            server.make_certificates()?;
            // TCP with TLS only; the socket as before.
            fs::write(
                server.dir.join("data/pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )?;
            server.tls_port = Some(free_port()?);
        }
        server.start_again()?;
        Ok(server)
    }

    /// Connection parameters for `database` (libpq's `key=value` form).
    #[must_use]
    pub fn params(&self, database: &str) -> String {
        format!("host={} port={} user={USER} dbname={database}", self.dir.display(), self.port())
    }

    /// The port: the socket's name carries it.
    fn port(&self) -> u16 {
        self.tls_port.unwrap_or(5432)
    }

    /// The server's own temporary directory (removed with it): a place for a test's files.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of `database` (`postgres://`, the socket directory as its host, no password).
    #[must_use]
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@{}:{}/{database}", self.socket_dir().replace('/', "%2F"), self.port())
    }

    /// The URL of `database` over TCP with TLS required (a server from
    /// [`Self::start_with_tls`]).
    #[must_use]
    pub fn tls_url(&self, database: &str) -> Option<String> {
        self.tls_port.map(|port| format!("postgres://{USER}@127.0.0.1:{port}/{database}?sslmode=require"))
    }

    /// The CA that signed the server's certificate (PEM).
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A CA and a server certificate signed by it, made with the `openssl` command.
    fn make_certificates(&self) -> io::Result<()> {
        let at = |name: &str| self.dir.join(name).display().to_string();
        let openssl = |args: &[&str]| -> io::Result<()> {
            let out = Command::new("openssl").args(args).stdin(Stdio::null()).output()?;
            if out.status.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr))))
            }
        };
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=temp-postgres CA"];
        ca.extend(key);
        let (ca_key, ca_pem) = (at("ca.key"), at("ca.pem"));
        ca.extend(["-keyout", &ca_key, "-out", &ca_pem]);
        openssl(&ca)?;
        let (server_key, server_csr, server_pem, ext) =
            (at("server.key"), at("server.csr"), at("server.pem"), at("san.ext"));
        let mut request = vec!["req", "-subj", "/CN=127.0.0.1"];
        request.extend(key);
        request.extend(["-keyout", &server_key, "-out", &server_csr]);
        openssl(&request)?;
        fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")?;
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &server_csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &server_pem,
            "-extfile",
            &ext,
        ])?;
        // The server reads its key only if no one else may (and runs as `postgres` under root).
        fs::set_permissions(&server_key, fs::Permissions::from_mode(0o600))?;
        if nix::unistd::geteuid().is_root()
            && let Some(user) = nix::unistd::User::from_name("postgres").map_err(io::Error::other)?
        {
            for file in [&server_key, &server_pem] {
                nix::unistd::chown(Path::new(file), Some(user.uid), Some(user.gid)).map_err(io::Error::other)?;
            }
        }
        Ok(())
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
                "-p",
                &self.port().to_string(),
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

    /// `pg_dump` of `database`: what a backup of it holds.
    ///
    /// # Errors
    /// `pg_dump` failed.
    pub fn dump(&self, database: &str) -> io::Result<String> {
        let out =
            self.run("pg_dump", &["-h", &self.socket_dir(), "-p", &self.port().to_string(), "-U", USER, database])?;
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
        let mut options = format!("-k {} -c max_connections=200", self.socket_dir());
        if !self.durable {
            options.push_str(" -c fsync=off");
        }
        match self.tls_port {
            None => options.push_str(" -c listen_addresses="),
            Some(port) => options.push_str(&format!(
                " -c listen_addresses=127.0.0.1 -c port={port} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                self.dir.join("server.pem").display(),
                self.dir.join("server.key").display()
            )),
        }
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

/// A loopback port nothing listens on now (the kernel's pick; free again once closed).
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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

    #[test]
    fn a_tls_server_answers_on_its_port_and_its_socket() {
        let server = TempPostgres::start_with_tls().unwrap();
        assert!(server.tls_url("postgres").unwrap().contains("sslmode=require"));
        assert!(server.ca_file().exists());
        assert_eq!(server.psql("postgres", "SHOW ssl").unwrap().trim(), "on");
    }
}
