//! The daemon's handle on the pinned maps for every writer but the sweep (approvals, closing the
//! leases of revoked clients, a `vpn` shutdown, reload), which counts the writers that want the
//! maps. The sweeper works on a handle of its own, in small batches under the pin dir's lock, and
//! between batches it steps aside while a writer here is waiting: `flock` is not fair, and
//! without this an approval could lose the lock to the sweep's next batch again and again.
//! The sweep leaves here the live leases it counted, for the heartbeat in the store.
use std::sync::{
    Mutex, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

use gate_maps::GateState;

pub struct Writers {
    state: Mutex<GateState>,
    /// Writers inside [`Writers::with`]: waiting for the maps or writing them.
    active: AtomicUsize,
    /// Live leases the last sweep counted (`None` before the first).
    live_at_last_sweep: Mutex<Option<usize>>,
}

impl Writers {
    #[must_use]
    pub fn new(state: GateState) -> Self {
        Self { state: Mutex::new(state), active: AtomicUsize::new(0), live_at_last_sweep: Mutex::new(None) }
    }

    /// Runs `f` on the maps; until it returns, the sweeper holds back its next batch.
    pub fn with<T>(&self, f: impl FnOnce(&mut GateState) -> T) -> T {
        struct Active<'a>(&'a AtomicUsize);
        impl Drop for Active<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.active.fetch_add(1, Ordering::SeqCst);
        let _active = Active(&self.active);
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether a writer is waiting for the maps or writing them.
    #[must_use]
    pub fn busy(&self) -> bool {
        self.active.load(Ordering::SeqCst) > 0
    }

    /// Records the live leases a sweep counted.
    pub fn swept(&self, live: usize) {
        *self.live_at_last_sweep.lock().unwrap_or_else(PoisonError::into_inner) = Some(live);
    }

    /// Live leases at the last sweep (`None` before the first): a count without a pass of its
    /// own over the maps.
    #[must_use]
    pub fn live_leases(&self) -> Option<usize> {
        *self.live_at_last_sweep.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
