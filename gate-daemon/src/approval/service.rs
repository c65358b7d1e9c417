//! [`ApprovalService::approve`]: the checks of docs/protocol.md in their order. Runs on a
//! blocking thread (RSA takes milliseconds).
use std::{
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use gate_maps::{LeasePolicy, clock};
use gate_protocol::{
    approval::{self, Approval, Host, Opened},
    encoding::{hex, unhex},
    rand::{RngCore, rngs::OsRng},
    request::Request,
    shared_box::SharedBox,
    wire::{BOX_NONCE_BYTES, NONCE_BYTES, RequestHeaders, SealedBody},
};
use gate_store::{ApprovalRecord, NonceRecord, Recorded, Store, Write};

use crate::approval::store_trouble::StoreTrouble;
use sha2::{Digest, Sha512};

use crate::approval::{
    Counters, Rejection,
    clients::{Client, Clients, KeyUsed, ParsedKeys},
    group_commit::GroupCommit,
    in_flight::InFlight,
    loglimit::LogLimit,
    policy,
};
use crate::writers::Writers;

/// A request as it arrived at the internal API.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub headers: RequestHeaders,
    pub body: Vec<u8>,
    /// The client's address as the front saw it.
    pub observed: Option<IpAddr>,
}

/// A request that passed the cheap checks, with what the rest needs.
pub struct Checked {
    request: Request,
    entry: Arc<Client>,
    who: String,
    settings: Arc<Settings>,
    started: Instant,
    crypto: Duration,
}

/// An approval past the cheap checks, as the rest of the checks see it.
#[derive(Clone, Copy)]
struct Approving<'a> {
    settings: &'a Settings,
    request: &'a Request,
    /// The client as the store has it now.
    entry: &'a Arc<Client>,
    who: &'a str,
    incoming: &'a Incoming,
    now: u64,
}

/// What the service needs to know from the config.
#[derive(Clone, Debug)]
pub struct Settings {
    pub window: Duration,
    pub host: String,
    pub public: Host,
    pub leases: LeasePolicy,
    /// Gate ids by name, as installed (the daemon owns the gates; no map walk per request).
    pub gate_ids: std::collections::HashMap<String, u32>,
    /// How long the audit trail keeps a row.
    pub audit_keep: Duration,
}

pub struct ApprovalService {
    /// Replaced whole by a reload; each approval reads it once, so it sees one version.
    settings: std::sync::RwLock<Arc<Settings>>,
    store: Mutex<Store>,
    /// Connections that read beside `store`, which writes (PostgreSQL only): a nonce's check
    /// and the view's catching up do not wait behind a group's commit, whose round trips to
    /// the database would otherwise hold every approval in turn. Empty for SQLite.
    readers: Vec<Mutex<Store>>,
    next_reader: std::sync::atomic::AtomicUsize,
    /// The writes of concurrent approvals, committed together.
    writes: GroupCommit,
    /// The nonces of the approvals past the cheap checks.
    in_flight: InFlight,
    clients: Mutex<Clients>,
    /// When an unknown token last made the view look at the store; held during such a look.
    unknown_look: Mutex<Option<Instant>>,
    /// Which clients keep their parsed RSA key (a bounded number).
    parsed_keys: ParsedKeys,
    state: Arc<Writers>,
    pub counters: Counters,
    /// Set while the `vpn` part is shut down: every approval is refused.
    vpn_disabled: std::sync::atomic::AtomicBool,
    log_limit: LogLimit,
    /// Store failures, logged as a state (a lost database fails every approval).
    pub trouble: StoreTrouble,
    /// Counts the client writes of other hosts heard as they commit (LISTEN/NOTIFY), so those
    /// who act on revocations (the upkeep, the OpenVPN supervisors) act at once.
    client_changes: tokio::sync::watch::Sender<u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reading connections beside the writing one, on a PostgreSQL store.
const READERS: usize = 4;

/// How often at most a token the view lacks makes it look at the store.
const UNKNOWN_TOKEN_LOOK_EVERY: Duration = Duration::from_millis(50);

/// Unix seconds now.
#[must_use]
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Runs `f`, adding its time to `total`.
fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let result = f();
    *total += start.elapsed();
    result
}

/// The first characters of a token: enough to find the client in the logs.
fn short(token: &impl ToString) -> String {
    token.to_string().chars().take(8).collect()
}

impl ApprovalService {
    /// # Errors
    /// The store cannot give the server key or the clients.
    pub fn new(settings: Settings, store: Store, state: Arc<Writers>) -> Result<Self, gate_store::StoreError> {
        let mut clients = Clients::default();
        clients.refresh(&store)?;
        log::info!("approval: {} enrolled clients", clients.len());
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let Some(reader) = store.another_connection()? else { break };
            readers.push(Mutex::new(reader));
        }
        Ok(Self {
            settings: std::sync::RwLock::new(Arc::new(settings)),
            store: Mutex::new(store),
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            writes: GroupCommit::default(),
            in_flight: InFlight::default(),
            clients: Mutex::new(clients),
            unknown_look: Mutex::new(None),
            parsed_keys: ParsedKeys::default(),
            state,
            counters: Counters::default(),
            vpn_disabled: std::sync::atomic::AtomicBool::new(false),
            log_limit: LogLimit::default(),
            trouble: StoreTrouble::default(),
            client_changes: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Another process's client write was heard (an enrollment, a revocation).
    pub fn heard_client_change(&self) {
        self.client_changes.send_modify(|heard| *heard = heard.wrapping_add(1));
    }

    /// Changes as [`Self::heard_client_change`] hears them.
    #[must_use]
    pub fn client_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.client_changes.subscribe()
    }

    /// The settings in force.
    #[must_use]
    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// New settings for every approval from now on (a reload).
    pub fn set_settings(&self, settings: Settings) {
        *self.settings.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(settings);
    }

    /// The store from async code: the worker hands its other tasks to another thread while
    /// `work` runs (a PostgreSQL store's client must not block a runtime's worker; an SQLite
    /// store's file locks would block it too).
    pub fn with_store<T>(&self, work: impl FnOnce(&mut Store) -> T) -> T {
        tokio::task::block_in_place(|| work(&mut self.store()))
    }

    /// The store, for upkeep.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// A connection to read from: a free reader if there is one (else the next in turn), or
    /// the one store connection (SQLite).
    fn reader(&self) -> MutexGuard<'_, Store> {
        let count = self.readers.len();
        if count == 0 {
            return self.store();
        }
        let first = self.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..count {
            match self.readers[(first + i) % count].try_lock() {
                Ok(reader) => return reader,
                Err(std::sync::TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        lock(&self.readers[first % count])
    }

    #[must_use]
    pub fn state(&self) -> &Arc<Writers> {
        &self.state
    }

    /// Checks `incoming` at `now` (Unix seconds) and, if every check passes, opens the gate and
    /// returns the sealed approval. Counts and logs the outcome.
    ///
    /// # Errors
    /// Why it was refused; the requester must learn nothing of it.
    pub fn approve(&self, incoming: &Incoming, now: u64) -> Result<SealedBody, Rejection> {
        let checked = self.check_cheap(incoming, now)?;
        self.approve_checked(checked, incoming, now)
    }

    /// The cheap checks (shutdown state, sizes, window, token, HMAC): microseconds and no disk,
    /// fit to run on an async worker, so a refused stranger never costs a thread handoff.
    /// Counts and logs a refusal.
    ///
    /// # Errors
    /// Why it was refused.
    pub fn check_cheap(&self, incoming: &Incoming, now: u64) -> Result<Checked, Rejection> {
        let started = Instant::now();
        if self.vpn_disabled.load(std::sync::atomic::Ordering::SeqCst) {
            self.refused(Rejection::VpnDisabled, "vpn shut down");
            return Err(Rejection::VpnDisabled);
        }
        self.cheap_checks(incoming, now, started).map_err(|(reason, who, client)| {
            self.refused_for(reason, &who, client.as_deref(), incoming.observed);
            reason
        })
    }

    /// The rest, for a request that passed [`Self::check_cheap`]: the nonce (a store write),
    /// box, RSA, payload, policy, the sealed answer and the leases. Blocking: run it off the
    /// async workers. Counts and logs the outcome.
    ///
    /// # Errors
    /// Why it was refused.
    pub fn approve_checked(&self, checked: Checked, incoming: &Incoming, now: u64) -> Result<SealedBody, Rejection> {
        let Checked { request, entry, who, settings, started, mut crypto } = checked;
        let claimed = Arc::clone(&entry);
        let outcome = self.caught_up(&request, entry).and_then(|entry| {
            let approving =
                Approving { settings: &settings, request: &request, entry: &entry, who: &who, incoming, now };
            self.open_checked(&approving, &mut crypto)
        });
        match &outcome {
            Ok(_) => self.counters.approved(started.elapsed(), crypto),
            Err(reason) => self.refused_for(*reason, &who, Some(&claimed.record.name), incoming.observed),
        }
        outcome
    }

    /// Sets whether approvals are refused for a `vpn` shutdown. Returns whether it changed.
    pub fn set_vpn_disabled(&self, disabled: bool) -> bool {
        self.vpn_disabled.swap(disabled, std::sync::atomic::Ordering::SeqCst) != disabled
    }

    /// Closes every lease on every gate (a `vpn` shutdown), each in the audit trail. Returns how
    /// many.
    pub fn close_all_leases(&self) -> usize {
        let settings = self.settings();
        let closed: Vec<(String, IpAddr)> = self.state.with(|state| {
            let mut closed = Vec::new();
            for (name, id) in &settings.gate_ids {
                match state.revoke_gate(*id) {
                    Ok(addrs) => closed.extend(addrs.into_iter().map(|addr| (name.clone(), addr))),
                    Err(e) => log::error!("vpn shutdown: close the leases of gate {id}: {e}"),
                }
            }
            closed
        });
        let now = unix_now();
        let events: Vec<gate_store::AuditEvent> = closed
            .iter()
            .map(|(gate, addr)| {
                gate_store::AuditEvent::new(
                    now,
                    &settings.host,
                    gate_store::AuditKind::LeaseClosed,
                    "vpn_shutdown",
                    "daemon",
                )
                .lease(gate, *addr)
            })
            .collect();
        if let Err(e) = self.store().record_audit(&events) {
            log::error!("vpn shutdown: {} closed leases not written to the audit trail: {e}", events.len());
        }
        closed.len()
    }

    /// Counts and logs a refusal (also those the HTTP layer makes before the service runs).
    pub fn refused(&self, reason: Rejection, who: &str) {
        self.refused_for(reason, who, None, None);
    }

    /// As [`Self::refused`], with the client the request named (its token's, authenticated or
    /// not) and the address it came from, as log fields.
    pub fn refused_for(&self, reason: Rejection, who: &str, client: Option<&str>, address: Option<IpAddr>) {
        self.counters.rejected(reason);
        let Some(held) = self.log_limit.admit(Instant::now()) else { return };
        let address = address.map(|a| a.to_string());
        let fields: Vec<(&str, &str)> =
            [("reason", Some(reason.name())), ("client", client), ("address", address.as_deref())]
                .into_iter()
                .filter_map(|(key, value)| Some((key, value?)))
                .collect();
        let more = if held > 0 { format!("; {held} more refusals not logged") } else { String::new() };
        gate_config::logging::with_fields(
            log::Level::Warn,
            module_path!(),
            &fields,
            format_args!("approval refused: {} ({who}){more}", reason.name()),
        );
    }

    /// Checks 1-5 of a request whose handling began at `started`.
    /// A refusal says why, who (as the log's text) and the client the token named, if any.
    fn cheap_checks(
        &self,
        incoming: &Incoming,
        now: u64,
        started: Instant,
    ) -> Result<Checked, (Rejection, String, Option<String>)> {
        let mut crypto = Duration::ZERO;
        let settings = self.settings();
        let stranger = |reason: Rejection| (reason, "unauthenticated".to_owned(), None);
        // 1-2. Sizes, shapes, encodings.
        let request =
            Request::parse(incoming.headers.clone(), &incoming.body).map_err(|e| stranger(Rejection::of_parse(&e)))?;
        // 3. Timestamp window, both ways.
        if now.abs_diff(request.timestamp) > settings.window.as_secs() {
            return Err(stranger(Rejection::Skew));
        }
        // 4. Token, in the view as it is (an unknown one after a look for changes: a client
        // enrolled a moment ago); whether gatectl changed the store is asked of SQLite (file
        // locks: system calls) only by requests that pass the HMAC, in `approve_checked`.
        let entry =
            self.known_client(&request).map_err(|reason| (reason, format!("token {}", short(&request.token)), None))?;
        let client = &entry.record;
        let who = format!("client {:?}", client.name);
        let fail = |reason: Rejection| (reason, who.clone(), Some(client.name.clone()));
        // 5. HMAC, constant time. Nothing below runs for a request that fails here.
        self.counters.hmac_check();
        timed(&mut crypto, || request.verify_hmac(&client.secret)).map_err(|_| fail(Rejection::BadHmac))?;
        Ok(Checked { request, entry, who, settings, started, crypto })
    }

    /// Check 6, then the rest; adds the time spent in crypto to `crypto`.
    fn open_checked(&self, approving: &Approving<'_>, crypto: &mut Duration) -> Result<SealedBody, Rejection> {
        let Approving { settings, request, entry, now, .. } = *approving;
        let token = entry.record.token;
        // 6. Nonce: new to the store and to the approvals being checked now. It is written
        // with the approval (one commit), or alone if the request is refused below (a no-op if
        // the approval's write had put it there): kept for twice the window past the later of
        // now and the timestamp.
        let nonce = unhex::<NONCE_BYTES>(&request.headers.nonce, "nonce").map_err(|_| Rejection::Malformed)?;
        let Some(_claim) = self.in_flight.claim(token, nonce) else { return Err(Rejection::Replay) };
        let seen = self.reader().nonce_seen(token, &nonce).map_err(|e| {
            self.trouble.failed("check a nonce", &e);
            Rejection::Internal
        })?;
        if seen {
            return Err(Rejection::Replay);
        }
        let nonce = NonceRecord {
            token,
            nonce: nonce.to_vec(),
            expires_at: now.max(request.timestamp) + 2 * settings.window.as_secs(),
            host: settings.host.clone(),
        };
        let outcome = self.verify_and_open(approving, crypto, &nonce);
        if outcome.is_err() {
            // Spent all the same: the same request never costs the checks again.
            if let Err(e) = self.writes.commit(&self.store, Write::Nonce(nonce)) {
                self.trouble.failed("spend a nonce", &e);
            }
        }
        outcome
    }

    /// Checks 7-10, then the leases (11) with the approval's record and `nonce`.
    fn verify_and_open(
        &self,
        approving: &Approving<'_>,
        crypto: &mut Duration,
        nonce: &NonceRecord,
    ) -> Result<SealedBody, Rejection> {
        let Approving { settings, request, entry, who, incoming, now } = *approving;
        let client = &entry.record;
        // 7. Box: boxed to the server's current key, or during a rotation to the previous one.
        let (shared, plaintext, key_used) =
            timed(crypto, || entry.open_box(|shared| request.open_with(shared))).ok_or(Rejection::BadBox)?;
        // 8. RSA.
        self.counters.rsa_verification();
        let key = entry.verifying_key(&self.parsed_keys).ok_or(Rejection::BadSignature)?;
        timed(crypto, || request.verify_rsa(&key)).map_err(|_| Rejection::BadSignature)?;
        // 9. The inside repeats the outside.
        let payload = request.payload(&plaintext).map_err(|_| Rejection::PayloadMismatch)?;
        // 10. Policy.
        if client.revoked_at.is_some() {
            return Err(Rejection::Revoked);
        }
        if !client.gates.contains(&payload.gate) {
            return Err(Rejection::GateNotAllowed);
        }
        let gate_id = *settings.gate_ids.get(&payload.gate).ok_or(Rejection::UnknownGate)?;
        let addresses = policy::addresses(payload.ipv4, payload.ipv6, incoming.observed)?;
        // The answer is sealed first, so writing the leases is the last step that can fail.
        let expires_at = now + settings.leases.max_lifetime.as_secs();
        let opened = addresses.iter().map(|&address| Opened { address, expires_at }).collect();
        let (sealed, session_digest) = timed(crypto, || self.seal(approving, shared, &payload.gate, opened))?;
        // 11. Leases, all or none.
        let record = ApprovalRecord {
            at: now,
            client: client.name.clone(),
            gate: payload.gate.clone(),
            addresses: addresses.clone(),
            expires_at,
            session: Some((session_digest, now + settings.leases.connect_window.as_secs())),
            host: settings.host.clone(),
        };
        self.open(settings, nonce.clone(), record, gate_id, now)?;
        self.counters.approved_on(gate_id);
        let opened: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        let mut fields = vec![("client", client.name.as_str()), ("gate", &payload.gate)];
        let joined = opened.join(",");
        fields.push(("address", &joined));
        let mut note = "";
        if key_used == KeyUsed::Previous {
            self.counters.approved_with_previous_key();
            fields.push(("box_key", "previous"));
            note = "; boxed to the previous server key: its profile wants an update";
        }
        gate_config::logging::with_fields(
            log::Level::Info,
            module_path!(),
            &fields,
            format_args!(
                "approved {who} on gate {:?} for {} (version {:?}){note}",
                payload.gate,
                opened.join(", "),
                payload.client_version
            ),
        );
        Ok(sealed)
    }

    /// The client of `request`'s token in the view; only for a token the view lacks, the view
    /// first catches up with the store, at most once every [`UNKNOWN_TOKEN_LOOK_EVERY`]: a
    /// flood of made-up tokens costs the store (a database server other hosts share, perhaps)
    /// a few reads a second, not one each. (A client enrolled in the last moment may be told
    /// its token is unknown once during such a flood; its next try finds it.)
    fn known_client(&self, request: &Request) -> Result<Arc<Client>, Rejection> {
        if let Some(entry) = lock(&self.clients).get(&request.token) {
            return Ok(entry);
        }
        // One such look at a time: a request that waited for another's asks the view again
        // first (the same new client's requests at once all find it after the first look).
        let mut last_look = lock(&self.unknown_look);
        if let Some(entry) = lock(&self.clients).get(&request.token) {
            return Ok(entry);
        }
        if last_look.is_some_and(|at| at.elapsed() < UNKNOWN_TOKEN_LOOK_EVERY) {
            return Err(Rejection::UnknownToken);
        }
        *last_look = Some(Instant::now());
        tokio::task::block_in_place(|| self.current_client(request))
    }

    /// The client of `request`'s token after the view caught up with the store.
    fn current_client(&self, request: &Request) -> Result<Arc<Client>, Rejection> {
        let store = self.reader();
        let mut clients = lock(&self.clients);
        if let Err(e) = clients.refresh(&store) {
            self.trouble.failed("read the clients", &e);
        }
        clients.get(&request.token).ok_or(Rejection::UnknownToken)
    }

    /// `checked`, the client as the cheap checks saw it, as the store has it now (revoked or
    /// removed meanwhile, say); a changed secret is checked again.
    fn caught_up(&self, request: &Request, checked: Arc<Client>) -> Result<Arc<Client>, Rejection> {
        let current = self.current_client(request)?;
        if !Arc::ptr_eq(&current, &checked) && current.record.secret.0 != checked.record.secret.0 {
            request.verify_hmac(&current.record.secret).map_err(|_| Rejection::BadHmac)?;
        }
        Ok(current)
    }

    /// Records the approval with its nonce, writes the leases, and checks the client was not
    /// revoked meanwhile (a revocation either sees the grants and closes the leases, or is seen
    /// here).
    fn open(
        &self,
        settings: &Settings,
        nonce: NonceRecord,
        record: ApprovalRecord,
        gate_id: u32,
        now: u64,
    ) -> Result<(), Rejection> {
        let host = &settings.host;
        let recorded = self.writes.commit(&self.store, Write::Approval(nonce, record.clone())).map_err(|e| {
            self.trouble.failed("record an approval", &e);
            Rejection::Internal
        })?;
        self.trouble.answered();
        match recorded {
            Recorded::Yes => {}
            Recorded::Replay => return Err(Rejection::Replay),
            Recorded::Revoked => return Err(Rejection::Revoked),
        }
        let lease = settings.leases.lease_at(clock::now_ns());
        if let Err(e) = self.state.with(|state| state.grant_all(gate_id, &record.addresses, lease)) {
            log::error!("approval: open gate {:?} for client {:?}: {e}", record.gate, record.client);
            if let Err(e) = self.store().delete_grants(&record.client, &record.gate, &record.addresses, host) {
                self.trouble.failed("forget grants", &e);
            }
            return Err(Rejection::LeaseFailed);
        }
        if self.revoked_meanwhile(&record.client) {
            let store = self.store();
            if let Err(e) = self.state.with(|state| gate_store::end_grants(&store, state, host, now, "daemon")) {
                log::error!("approval: end grants of a client revoked meanwhile: {e}");
            }
            return Err(Rejection::Revoked);
        }
        Ok(())
    }

    /// Whether `client` was revoked since its request was checked: the in-memory view reloads
    /// only if another process committed (one cheap pragma), so the common case costs no query.
    fn revoked_meanwhile(&self, client: &str) -> bool {
        let store = self.reader();
        let mut clients = lock(&self.clients);
        match clients.refresh(&store) {
            Ok(false) => false,
            Ok(true) => clients.by_name(client).is_none_or(|c| c.record.revoked_at.is_some()),
            Err(e) => {
                self.trouble.failed("read the clients", &e);
                true
            }
        }
    }

    /// The sealed answer, in the box `shared` with the client, and the digest of the session
    /// token it carries.
    fn seal(
        &self,
        approving: &Approving<'_>,
        shared: &SharedBox,
        gate: &str,
        opened: Vec<Opened>,
    ) -> Result<(SealedBody, Vec<u8>), Rejection> {
        let Approving { settings, request, entry, now, .. } = *approving;
        let client = &entry.record;
        let policy = settings.leases;
        let connect_by = now + policy.connect_window.as_secs();
        let mut session = [0; 16];
        OsRng.fill_bytes(&mut session);
        let session_token = hex(&session);
        let digest = Sha512::digest(session_token.as_bytes()).to_vec();
        let answer = Approval {
            approved: true,
            request_nonce: request.headers.nonce.clone(),
            gate: gate.to_owned(),
            opened,
            connect_by,
            idle_timeout_secs: policy.idle_timeout.as_secs(),
            host: settings.public.clone(),
            session_token,
            session_token_expires_at: connect_by,
        };
        let mut box_nonce = [0; BOX_NONCE_BYTES];
        OsRng.fill_bytes(&mut box_nonce);
        let sealed = approval::seal_with(&answer, client.token, &client.secret, shared, box_nonce).map_err(|e| {
            log::error!("approval: seal: {e}");
            Rejection::Internal
        })?;
        Ok((sealed, digest))
    }
}
