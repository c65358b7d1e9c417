//! Deletes leases that have been closed for a while, so the lease maps do not fill with the dead.
//!
//! Correctness never depends on it: the program refuses a closed lease by its deadlines alone.
//! A closed lease is kept one sweep interval before deletion, so the counters can still tell
//! "expired" from "never had a lease" for a moment.
//!
//! The sweep opens the pinned maps itself rather than sharing the approvals' handle: it reads
//! the leases without any lock and deletes the dead in small batches under the pin dir's lock
//! (`GateState::sweep_yielding`), and between batches it lets the daemon's waiting writers
//! ([`Writers`]) go first, so an approval waits for one batch at most, never for a whole sweep.
//!
//! Each sweep runs on a thread of its own, `gate-sweep`, at the lowest CPU priority (nice 19):
//! a sweep of a million leases takes a second or more of CPU, which on a host under a flood
//! must come out of idle time, not out of packet processing on the same core (threaded NAPI
//! and ksoftirqd run at nice 0).
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use gate_maps::{GateState, StateError, SweptLease, clock};

use crate::{
    approval::{ApprovalService, service::unix_now},
    writers::Writers,
};

/// How long the sweep holds back for the daemon's writers between two batches, at most: a stuck
/// writer must not stop the sweep.
const YIELD_AT_MOST: Duration = Duration::from_millis(50);

/// One sweep of the maps pinned at `pin_dir` (leases closed `grace_ns` before `now_ns`) on a
/// handle of its own, letting `writers` go first between batches, and leaving them the count of
/// live leases it read. Returns the leases it deleted.
///
/// # Errors
/// The maps cannot be opened, read or written.
pub fn sweep(pin_dir: &Path, writers: &Writers, now_ns: u64, grace_ns: u64) -> Result<Vec<SweptLease>, StateError> {
    let yield_to_writers = || {
        let started = std::time::Instant::now();
        while writers.busy() && started.elapsed() < YIELD_AT_MOST {
            std::thread::sleep(Duration::from_micros(50));
        }
    };
    let mut gone = Vec::new();
    let swept = GateState::open(pin_dir)?
        .sweep_yielding(now_ns, grace_ns, yield_to_writers, |batch| gone.extend_from_slice(batch))?;
    writers.swept(swept.live);
    Ok(gone)
}

/// Audit rows written per transaction: each holds the store (and the approvals waiting for it)
/// for about a millisecond.
const AUDIT_CHUNK: usize = 1000;

/// Writes the swept leases to the audit trail (`lease_closed`, by `expiry` or `idle`), at the
/// normal priority (the store's lock must not wait on a thread at nice 19), a chunk a
/// transaction. A failure is logged, once a sweep.
fn record_swept(service: &ApprovalService, pin_dir: &Path, gone: &[SweptLease]) {
    let names: std::collections::BTreeMap<u32, String> = GateState::open(pin_dir)
        .and_then(|state| state.gates())
        .map(|gates| gates.into_iter().map(|g| (g.id, g.name)).collect())
        .unwrap_or_default();
    let (now, host) = (unix_now(), service.settings().host.clone());
    for chunk in gone.chunks(AUDIT_CHUNK) {
        let events: Vec<gate_store::AuditEvent> = chunk
            .iter()
            .map(|lease| {
                let cause = if lease.expired { "expiry" } else { "idle" };
                let gate = names.get(&lease.gate).map_or_else(|| format!("gate {}", lease.gate), Clone::clone);
                gate_store::AuditEvent::new(now, &host, gate_store::AuditKind::LeaseClosed, cause, "daemon")
                    .lease(&gate, lease.addr)
            })
            .collect();
        if let Err(e) = service.store().record_audit(&events) {
            log::warn!("sweep: {} closed leases not written to the audit trail: {e}", gone.len());
            return;
        }
    }
}

/// Sweeps the maps pinned at `pin_dir` every `interval` until the task is dropped, yielding to
/// `writers` between batches; each sweep's deleted leases go to the audit trail of `service`'s
/// store.
pub async fn run(pin_dir: PathBuf, writers: Arc<Writers>, interval: Duration, service: Arc<ApprovalService>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (pins, writers) = (pin_dir.clone(), Arc::clone(&writers));
        let swept = tokio::task::spawn_blocking(move || {
            at_lowest_priority(|| sweep(&pins, &writers, clock::now_ns(), clock::nanos(interval)))
        })
        .await;
        match swept {
            Ok(Ok(Ok(gone))) if gone.is_empty() => {}
            Ok(Ok(Ok(gone))) => {
                log::info!("swept {} closed leases", gone.len());
                let (service, pins) = (Arc::clone(&service), pin_dir.clone());
                let _ = tokio::task::spawn_blocking(move || record_swept(&service, &pins, &gone)).await;
            }
            Ok(Ok(Err(e))) => log::warn!("sweep failed: {e}"),
            Ok(Err(e)) => log::warn!("no thread for the sweep: {e}"),
            Err(e) => log::error!("sweep task died: {e}"),
        }
    }
}

/// The thread name a sweep runs under (visible in `top -H`, `ps -L`).
pub const SWEEP_THREAD: &str = "gate-sweep";

/// Runs `work` on a new thread named [`SWEEP_THREAD`] at nice 19 and waits for it. A new thread
/// each time: without CAP_SYS_NICE a thread cannot get its priority back, and the blocking pool's
/// threads run other work after this. Should the kernel refuse the lower priority, the work runs
/// at the normal one.
///
/// # Errors
/// No thread could be made (the work did not run).
fn at_lowest_priority<T: Send>(work: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new().name(SWEEP_THREAD.to_owned()).spawn_scoped(scope, || {
            let tid = nix::unistd::gettid().as_raw();
            // SAFETY: setpriority(2) on this thread's own id only changes its nice value.
            #[allow(unsafe_code)]
            let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, u32::try_from(tid).unwrap_or(0), 19) };
            if set != 0 {
                log::debug!("sweep at the normal priority: {}", std::io::Error::last_os_error());
            }
            work()
        });
        Ok(thread?.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}
