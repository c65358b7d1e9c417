//! One task per OpenVPN server: write its files (config, CA, server certificate and key, CRL)
//! owned by the user it drops to, start it, answer its management interface, restart it with
//! backoff when it dies (logged), stop it on shutdown, and keep a status file for gatectl.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use gate_notify::Published;
use serde::Serialize;
use sha2::{Digest, Sha512};
use tokio::{process::Command, sync::watch, task::JoinHandle};

use crate::{
    approval::{ApprovalService, service::unix_now},
    config::{Config, OpenVpnConfig, VpnConfig},
    openvpn::{
        management::{self, Authorizer, Sessions},
        process::{Process, STOP_GRACE},
        server_conf::{self, Drop, Network},
        tun,
    },
};

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A server that ran this long before dying restarts at the shortest backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How often the revocations are looked at: a revoked client's certificate is in the server's
/// CRL within this (at once, with its sessions ended, when another host's revocation is heard
/// on a cluster's store). The CRL is also reissued daily, long before it expires.
const CRL_CHECK: Duration = Duration::from_secs(1);
/// How long a starting server may take to say it is initialised before it counts as running.
const INIT_WAIT: Duration = Duration::from_secs(10);
const CRL_REISSUE: Duration = Duration::from_secs(24 * 3600);

/// What `gatectl status` shows of a server (`<run_dir>/<name>/status.json`).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ServerStatus {
    pub name: String,
    /// running, restarting, failed, stopped.
    pub state: String,
    pub pid: Option<u32>,
    pub user: String,
    pub protocol: String,
    pub port: u16,
    pub clients: Vec<String>,
    pub restarts: u32,
    pub error: Option<String>,
}

/// Every server's status under `run_dir` (`<name>/status.json`), by name; a file that cannot be
/// read as one is left out. For `gatectl status` and the metrics page.
#[must_use]
pub fn statuses(run_dir: &Path) -> Vec<ServerStatus> {
    let mut servers: Vec<ServerStatus> = fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| fs::read_to_string(entry.path().join("status.json")).ok())
        .filter_map(|text| serde_json::from_str(&text).ok())
        .collect();
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    servers
}

/// In the child before exec: drops every group but `gid`, then to `uid` (which clears every
/// capability), and forbids regaining privileges through exec.
fn become_user(uid: u32, gid: u32) -> std::io::Result<()> {
    let check = |result: i32| if result == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    // SAFETY: plain syscalls on values; the group list is one gid on the stack.
    #[expect(unsafe_code, reason = "between fork and exec only raw syscalls are safe to make")]
    unsafe {
        check(nix::libc::setgroups(1, &gid))?;
        check(nix::libc::setresgid(gid, gid, gid))?;
        check(nix::libc::setresuid(uid, uid, uid))?;
        check(nix::libc::prctl(nix::libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    }
}

/// Bytes a server received and sent on its link since it started (OpenVPN's `load-stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkBytes {
    pub received: u64,
    pub sent: u64,
}

/// Each server's latest byte counts by name, for the metrics page.
pub type Traffic = Arc<std::sync::Mutex<std::collections::BTreeMap<String, LinkBytes>>>;

/// The running supervisors, one per configured server.
pub struct Supervisors {
    running: std::collections::BTreeMap<String, Running>,
    service: Arc<ApprovalService>,
    states: watch::Receiver<Published>,
    traffic: Traffic,
}

/// One server's supervisor, and the settings it runs with.
struct Running {
    server: OpenVpnConfig,
    vpn: VpnConfig,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What [`Supervisors::apply`] did, by server name.
#[derive(Debug, Default)]
pub struct Applied {
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub stopped: Vec<String>,
}

impl Supervisors {
    /// The servers' byte counts, as they come.
    #[must_use]
    pub fn traffic(&self) -> Traffic {
        Arc::clone(&self.traffic)
    }

    /// Stops every server and waits for them.
    pub async fn stop(self) {
        for (_, running) in self.running {
            running.stop().await;
        }
    }

    /// Brings the servers to `config`'s (a reload): servers no longer listed are stopped and
    /// their run directories removed, changed ones (their own settings or `[vpn]`'s) are
    /// restarted, new ones started; the others keep running untouched, with their clients.
    pub async fn apply(&mut self, config: &Config) -> Applied {
        let mut applied = Applied::default();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            let wanted = config.openvpn.iter().find(|s| s.name == name);
            let unchanged =
                wanted.is_some_and(|w| self.running.get(&name).is_some_and(|r| &r.server == w && r.vpn == config.vpn));
            if unchanged {
                continue;
            }
            if let Some(running) = self.running.remove(&name) {
                let dir = running.vpn.run_dir.join(&name);
                let device = server_conf::device(&running.server);
                running.stop().await;
                if wanted.is_none() {
                    let _ = fs::remove_dir_all(&dir);
                    if let Err(e) = tun::remove(&device) {
                        log::warn!("openvpn {name}: remove its tun device: {e}");
                    }
                    applied.stopped.push(name);
                } else {
                    applied.restarted.push(name);
                }
            }
        }
        let cgroup_procs = servers_cgroup_procs(config);
        for server in &config.openvpn {
            if self.running.contains_key(&server.name) {
                continue;
            }
            if !applied.restarted.contains(&server.name) {
                applied.started.push(server.name.clone());
            }
            if let Some(procs) = &cgroup_procs {
                let running = self.spawn(server, &config.vpn, procs.clone());
                self.running.insert(server.name.clone(), running);
            }
        }
        applied
    }

    fn spawn(&self, server: &OpenVpnConfig, vpn: &VpnConfig, cgroup_procs: Option<Arc<std::ffi::CString>>) -> Running {
        let (stop, watch) = watch::channel(false);
        let supervisor = Supervisor {
            server: server.clone(),
            vpn: vpn.clone(),
            dir: vpn.run_dir.join(&server.name),
            service: Arc::clone(&self.service),
            cgroup_procs,
            traffic: Arc::clone(&self.traffic),
        };
        let task = tokio::spawn(supervisor.run(watch, self.states.clone()));
        Running { server: server.clone(), vpn: vpn.clone(), stop, task }
    }
}

/// `cgroup.procs` of the cgroup the servers run in: `Some(None)` without the backstop, `None`
/// (no server may start) if the backstop's cgroup is unusable. The servers run in the
/// backstop's cgroup, so their sockets are guarded where packets meet them.
fn servers_cgroup_procs(config: &Config) -> Option<Option<Arc<std::ffi::CString>>> {
    if !config.backstop.enabled {
        return Some(None);
    }
    match config.servers_cgroup().and_then(|path| crate::cgroup::procs_file(&path)) {
        Ok(procs) => Some(Some(Arc::new(procs))),
        Err(e) => {
            log::error!("openvpn: the servers' cgroup is unusable ({e}); no server started");
            None
        }
    }
}

/// Starts a supervisor for every configured server.
#[must_use]
pub fn start_all(config: &Config, service: &Arc<ApprovalService>, states: watch::Receiver<Published>) -> Supervisors {
    let mut supervisors = Supervisors {
        running: std::collections::BTreeMap::new(),
        service: Arc::clone(service),
        states,
        traffic: Traffic::default(),
    };
    if let Some(procs) = servers_cgroup_procs(config) {
        for server in &config.openvpn {
            let running = supervisors.spawn(server, &config.vpn, procs.clone());
            supervisors.running.insert(server.name.clone(), running);
        }
    }
    supervisors
}

struct Supervisor {
    server: OpenVpnConfig,
    vpn: VpnConfig,
    dir: PathBuf,
    service: Arc<ApprovalService>,
    /// `cgroup.procs` of the cgroup the server runs in (the backstop's), if any.
    cgroup_procs: Option<Arc<std::ffi::CString>>,
    traffic: Traffic,
}

/// Session tokens decide who connects: the token of this client's own approval for this gate.
struct SessionTokens {
    service: Arc<ApprovalService>,
    gate: String,
}

impl Authorizer for SessionTokens {
    fn connect(&self, common_name: &str, username: &str, password: &str) -> Result<(), String> {
        if common_name.is_empty() || username != common_name {
            return Err("the username is not the certificate's name".into());
        }
        let digest = Sha512::digest(password.as_bytes());
        let spent =
            self.service.with_store(|store| store.spend_session_token(&digest, common_name, &self.gate, unix_now()));
        match spent {
            Ok(true) => Ok(()),
            Ok(false) => Err("no valid session token (unknown, used, expired, another client's, or revoked)".into()),
            Err(e) => Err(format!("store: {e}")),
        }
    }

    fn reauth(&self, common_name: &str) -> Result<(), String> {
        match self.service.with_store(|store| store.is_revoked(common_name)) {
            Ok(false) => Ok(()),
            Ok(true) => Err("revoked".into()),
            Err(e) => Err(format!("store: {e}")),
        }
    }
}

fn write_file(path: &Path, text: &str, owner: Option<&Drop>) -> Result<(), String> {
    let temp = path.with_extension("new");
    fs::write(&temp, text).map_err(|e| format!("write {}: {e}", temp.display()))?;
    fs::set_permissions(&temp, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", temp.display()))?;
    if let Some(drop) = owner {
        std::os::unix::fs::chown(&temp, Some(drop.uid), Some(drop.gid))
            .map_err(|e| format!("chown {}: {e}", temp.display()))?;
    }
    fs::rename(&temp, path).map_err(|e| format!("rename {}: {e}", path.display()))
}

/// What a server's management interface tells, kept: its sessions in the status file, its byte
/// counts in the traffic table.
struct Following<'a> {
    supervisor: &'a Supervisor,
    sessions: Sessions,
    status: ServerStatus,
}

impl management::Observer for Following<'_> {
    fn sessions_changed(&self) {
        let mut status = self.status.clone();
        let mut clients: Vec<String> =
            self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect();
        clients.sort();
        status.clients = clients;
        self.supervisor.write_status(&status);
    }

    fn traffic(&self, received: u64, sent: u64) {
        let mut traffic = self.supervisor.traffic.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        traffic.insert(self.supervisor.name().to_owned(), LinkBytes { received, sent });
    }
}

impl Supervisor {
    fn name(&self) -> &str {
        &self.server.name
    }

    fn status_path(&self) -> PathBuf {
        self.dir.join("status.json")
    }

    fn write_status(&self, status: &ServerStatus) {
        let text = serde_json::to_string_pretty(status).unwrap_or_default();
        if let Err(e) = write_file(&self.status_path(), &text, None) {
            log::warn!("openvpn {}: status: {e}", self.name());
        }
    }

    fn base_status(&self, drop: Option<&Drop>) -> ServerStatus {
        ServerStatus {
            name: self.server.name.clone(),
            user: drop.map_or_else(|| "root".to_owned(), |d| d.user.clone()),
            protocol: self.server.protocol.to_string(),
            port: self.server.port,
            ..ServerStatus::default()
        }
    }

    /// Checks, files and device; an error here keeps this server from starting. `Some(pid)` if
    /// a server an earlier daemon left running (killed, crashed) is adopted instead of a new
    /// device being readied: it runs with exactly the config this daemon would write, so it is
    /// kept, with its tunnels. One running another config is stopped.
    fn prepare(&self) -> Result<(Option<Drop>, Option<nix::unistd::Pid>), String> {
        let network = Network::parse(&self.server.network)?;
        let drop = server_conf::privileges(&self.server, &self.vpn)?;
        if drop.is_none() {
            log::warn!("openvpn {}: no user/group configured; it runs as root", self.name());
        }
        fs::create_dir_all(&self.dir).map_err(|e| format!("create {}: {e}", self.dir.display()))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod {}: {e}", self.dir.display()))?;
        if let Some(drop) = &drop {
            std::os::unix::fs::chown(&self.dir, Some(drop.uid), Some(drop.gid))
                .map_err(|e| format!("chown {}: {e}", self.dir.display()))?;
        }
        let now = unix_now();
        let (identity, crl) = {
            let mut store = self.service.store();
            let identity =
                store.server_identity(&format!("openvpn-{}", self.name()), now).map_err(|e| e.to_string())?;
            (identity, store.crl(now).map_err(|e| e.to_string())?)
        };
        let conf = server_conf::render(&self.server, network, &self.dir)?;
        let orphan = self.orphan();
        // Adopted only if it runs with exactly these files (a CA rotated while no daemon ran
        // changes them: that server is stopped and started anew).
        let unchanged = |file: &str, text: &str| fs::read_to_string(self.dir.join(file)).is_ok_and(|had| had == text);
        let adopt = orphan.filter(|_| {
            unchanged("server.conf", &conf)
                && unchanged("ca.pem", &identity.ca_pem)
                && unchanged("server.pem", &identity.cert_pem)
        });
        let owner = drop.as_ref();
        write_file(&self.dir.join("ca.pem"), &identity.ca_pem, owner)?;
        write_file(&self.dir.join("server.pem"), &identity.cert_pem, owner)?;
        write_file(&self.dir.join("server.key"), &identity.key_pem, owner)?;
        write_file(&self.dir.join("crl.pem"), &crl, owner)?;
        write_file(&self.dir.join("server.conf"), &conf, owner)?;
        if adopt.is_some() {
            return Ok((drop, adopt));
        }
        if let Some(pid) = orphan {
            self.stop_orphan(pid);
        }
        let _ = fs::remove_file(self.dir.join("management.sock"));
        let (uid, gid) = drop.as_ref().map_or((0, 0), |d| (d.uid, d.gid));
        tun::openable_by(uid, gid)?;
        let device = server_conf::device(&self.server);
        tun::ensure(&device, uid, gid, network).map_err(|e| format!("tun device {device}: {e}"))?;
        Ok((drop, None))
    }

    /// A server an earlier daemon left running: its pid file names a live process whose command
    /// line names this server's config.
    fn orphan(&self) -> Option<nix::unistd::Pid> {
        let pid = fs::read_to_string(self.dir.join("openvpn.pid")).ok()?.trim().parse::<i32>().ok()?;
        let config = self.dir.join("server.conf");
        let ours = fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == config.as_os_str().as_encoded_bytes()));
        ours.then(|| nix::unistd::Pid::from_raw(pid))
    }

    /// Stops `pid`, a server an earlier daemon left running (it crashed, or was killed), found by
    /// [`Self::orphan`]: it holds the tun device and the port. Stopped, never fought over.
    fn stop_orphan(&self, pid: nix::unistd::Pid) {
        log::warn!("openvpn {}: an earlier daemon's server still runs (pid {pid}); stopping it", self.name());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if nix::sys::signal::kill(pid, None).is_ok() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ends the sessions of clients revoked since they connected (`kill <name>`).
    fn end_revoked_sessions(&self, sessions: &Sessions, commands: &tokio::sync::mpsc::UnboundedSender<String>) {
        let names: Vec<String> =
            sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect();
        for name in names {
            if self.service.with_store(|store| store.is_revoked(&name)).unwrap_or(false) {
                log::warn!("openvpn {}: ending the session of revoked client {name:?}", self.name());
                let _ = commands.send(format!("kill {name}"));
            }
        }
    }

    fn refresh_crl(&self, drop: Option<&Drop>) {
        let crl = self.service.with_store(|store| store.crl(unix_now()));
        match crl.map_err(|e| e.to_string()).and_then(|crl| write_file(&self.dir.join("crl.pem"), &crl, drop)) {
            Ok(()) => {}
            Err(e) => log::warn!("openvpn {}: CRL refresh: {e}", self.name()),
        }
    }

    /// What the server logged from byte `from` of its log on: this run's lines.
    fn log_since(&self, from: u64) -> String {
        let text = fs::read(self.dir.join("openvpn.log")).unwrap_or_default();
        let start = usize::try_from(from).unwrap_or(0).min(text.len());
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// Why the run that logged from byte `from` on ended: its error lines (OpenVPN marks them
    /// with an errno or an ERROR), else its last lines.
    fn why_it_ended(&self, from: u64) -> String {
        let text = self.log_since(from);
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains("errno=") || l.contains("ERROR") || l.contains("Options error") || l.contains("Cannot")
            })
            .take(3)
            .collect();
        let lines = if errors.is_empty() {
            text.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect()
        } else {
            errors
        };
        lines.join(" | ")
    }

    /// Waits until the run that logs from `from` on says it is initialised (bound, privileges
    /// dropped), it exits, or [`INIT_WAIT`] passes; so "running" in the status means ready.
    async fn wait_initialised(&self, child: &mut tokio::process::Child, from: u64) {
        let deadline = Instant::now() + INIT_WAIT;
        while Instant::now() < deadline {
            if self.log_since(from).contains("Initialization Sequence Completed") {
                return;
            }
            if !matches!(child.try_wait(), Ok(None)) {
                return; // exited: the run loop reports it
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        log::warn!("openvpn {}: not initialised after {INIT_WAIT:?}; reported running anyway", self.name());
    }

    /// Starts OpenVPN as the server's user, in the servers' cgroup, and waits until it says it
    /// is initialised (or ends).
    async fn spawn(&self, drop: Option<&Drop>, log_from: u64) -> std::io::Result<Process> {
        let log_file = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("openvpn.log"));
        let (out, err) = match log_file.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((out, err)) => (Stdio::from(out), Stdio::from(err)),
            Err(_) => (Stdio::null(), Stdio::null()),
        };
        let mut command = Command::new(&self.vpn.openvpn);
        command
            .arg("--config")
            .arg(self.dir.join("server.conf"))
            // The daemon's own line to the service manager: OpenVPN (built with systemd
            // support) would otherwise send its READY=1 there.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let procs = self.cgroup_procs.clone();
        let ids = drop.map(|d| (d.uid, d.gid));
        // SAFETY: the closure only calls `join_in_child` and `become_user`, which make plain
        // syscalls and allocate nothing, as a child between fork and exec requires.
        #[expect(unsafe_code, reason = "pre_exec: join the cgroup as root, then become the server's user")]
        unsafe {
            command.pre_exec(move || {
                if let Some(procs) = &procs {
                    crate::cgroup::join_in_child(procs)?;
                }
                match ids {
                    Some((uid, gid)) => become_user(uid, gid),
                    None => Ok(()),
                }
            });
        }
        let mut child = command.spawn()?;
        self.wait_initialised(&mut child, log_from).await;
        log::info!(
            "openvpn {}: started (pid {}, {}/{}, as {})",
            self.name(),
            child.id().unwrap_or(0),
            self.server.protocol,
            self.server.port,
            drop.map_or("root", |d| d.user.as_str())
        );
        Ok(Process::Child(child))
    }

    async fn run(self, mut stop: watch::Receiver<bool>, mut states: watch::Receiver<Published>) {
        let mut backoff = Duration::from_secs(1);
        let mut restarts = 0;
        let vpn_off = |states: &watch::Receiver<Published>| states.borrow().vpn == gate_notify::State::Disabled;
        loop {
            if vpn_off(&states) {
                let mut status = self.base_status(None);
                status.state = "shut down".into();
                status.error = Some("vpn disabled (self-shutdown)".into());
                let _ = fs::create_dir_all(&self.dir);
                self.write_status(&status);
                log::warn!("openvpn {}: not running: vpn disabled", self.name());
                while vpn_off(&states) {
                    tokio::select! {
                        changed = states.changed() => if changed.is_err() { return },
                        _ = stop.changed() => return,
                    }
                }
                log::info!("openvpn {}: vpn back to ok; starting", self.name());
            }
            // Files, the store, the device, maybe an orphan to stop (up to 5 s): blocking work.
            let (drop, adopted) = match tokio::task::block_in_place(|| self.prepare()) {
                Ok(prepared) => prepared,
                Err(e) => {
                    log::error!("openvpn {}: {e}; not started (the other servers are unaffected)", self.name());
                    let mut status = self.base_status(None);
                    status.state = "failed".into();
                    status.error = Some(e);
                    let _ = fs::create_dir_all(&self.dir);
                    self.write_status(&status);
                    return;
                }
            };
            let started = Instant::now();
            let log_from = fs::metadata(self.dir.join("openvpn.log")).map_or(0, |m| m.len());
            let mut child = match adopted.map(Process::adopt) {
                Some(Ok(process)) => {
                    log::warn!(
                        "openvpn {}: adopted the server an earlier daemon left running (pid {}), with its tunnels",
                        self.name(),
                        process.id().unwrap_or(0)
                    );
                    process
                }
                adopt => {
                    if let Some(Err(e)) = adopt {
                        log::warn!("openvpn {}: cannot adopt the earlier server ({e}); stopping it", self.name());
                        if let Some(pid) = adopted {
                            tokio::task::block_in_place(|| self.stop_orphan(pid));
                        }
                        continue;
                    }
                    match self.spawn(drop.as_ref(), log_from).await {
                        Ok(child) => child,
                        Err(e) => {
                            log::error!("openvpn {}: cannot run {}: {e}", self.name(), self.vpn.openvpn.display());
                            let mut status = self.base_status(drop.as_ref());
                            status.state = "failed".into();
                            status.error = Some(format!("cannot run {}: {e}", self.vpn.openvpn.display()));
                            self.write_status(&status);
                            return;
                        }
                    }
                }
            };
            let pid = child.id();
            let sessions: Sessions = Arc::default();
            let mut status = self.base_status(drop.as_ref());
            status.state = "running".into();
            status.pid = pid;
            status.restarts = restarts;
            self.write_status(&status);
            let (commands, command_queue) = tokio::sync::mpsc::unbounded_channel();
            let manager = self.manage(Arc::clone(&sessions), status.clone(), command_queue, adopted.is_some());
            let mut manager = std::pin::pin!(manager);
            let mut crl_ticker = tokio::time::interval(CRL_CHECK);
            crl_ticker.tick().await;
            // An adopted server may carry sessions of clients revoked while no daemon ran: its
            // first round reissues the CRL and ends them.
            let mut crl_mark =
                if adopted.is_some() { None } else { self.service.with_store(|store| store.revocation_mark()).ok() };
            let mut crl_issued = Instant::now();
            // The CAs the server was started with: a rotation's step restarts it with the new.
            let ca_mark = self.service.with_store(|store| store.ca_mark()).ok();
            let mut ca_changed = false;
            let mut heard = self.service.client_changes();
            let how = loop {
                tokio::select! {
                    how = child.wait() => break how,
                    changed = states.changed() => {
                        if changed.is_ok() && vpn_off(&states) {
                            child.terminate().await;
                            log::warn!("openvpn {}: stopped: vpn disabled", self.name());
                            break String::new();
                        }
                    }
                    () = &mut manager => {}
                    // Every second, and at once when another host's revocation is heard.
                    () = async {
                        tokio::select! {
                            _ = crl_ticker.tick() => {}
                            Ok(()) = heard.changed() => {}
                        }
                    } => {
                        if ca_mark.is_some() && self.service.with_store(|store| store.ca_mark()).ok() != ca_mark {
                            log::warn!(
                                "openvpn {}: the CAs changed (a CA rotation): restarting with the new ones; \
                                 its clients reconnect",
                                self.name()
                            );
                            child.terminate().await;
                            ca_changed = true;
                            break String::new();
                        }
                        let mark = self.service.with_store(|store| store.revocation_mark()).ok();
                        if mark != crl_mark || crl_issued.elapsed() > CRL_REISSUE {
                            self.refresh_crl(drop.as_ref());
                            if mark != crl_mark {
                                self.end_revoked_sessions(&sessions, &commands);
                            }
                            crl_mark = mark;
                            crl_issued = Instant::now();
                        }
                    }
                    _ = stop.changed() => {
                        child.terminate().await;
                        status.state = "stopped".into();
                        status.pid = None;
                        status.clients.clear();
                        self.write_status(&status);
                        log::info!("openvpn {}: stopped", self.name());
                        return;
                    }
                }
            };
            if vpn_off(&states) || ca_changed {
                continue;
            }
            if started.elapsed() > STABLE_AFTER {
                backoff = Duration::from_secs(1);
            }
            restarts += 1;
            log::error!(
                "openvpn {}: exited ({how}): {}; restarting in {}s",
                self.name(),
                self.why_it_ended(log_from),
                backoff.as_secs()
            );
            status.state = "restarting".into();
            status.pid = None;
            status.clients.clear();
            status.restarts = restarts;
            status.error = Some(format!("exited ({how}): {}", self.why_it_ended(log_from)));
            self.write_status(&status);
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Connects to the management socket once it exists and serves it; then waits for ever
    /// (the process's exit ends the round).
    async fn manage(
        &self,
        sessions: Sessions,
        status: ServerStatus,
        commands: tokio::sync::mpsc::UnboundedReceiver<String>,
        adopted: bool,
    ) {
        let socket = self.dir.join("management.sock");
        let authorizer: Arc<dyn Authorizer> =
            Arc::new(SessionTokens { service: Arc::clone(&self.service), gate: self.server.gate.clone() });
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let observer = Following { supervisor: self, sessions: Arc::clone(&sessions), status };
        if let Err(e) =
            management::serve(&socket, self.name(), authorizer, sessions, &observer, commands, adopted).await
        {
            log::warn!("openvpn {}: management interface: {e}", self.name());
        }
        std::future::pending::<()>().await;
    }
}
