//! Ending a revoked client's grants: its leases close, except where a client that is not revoked
//! holds a live grant for the same address (two clients behind one NAT).
use gate_maps::{GateState, StateError};

use crate::{Store, StoreError};

/// Closes the leases of every revoked client's grants on `host` and forgets those grants.
/// Returns how many leases were closed. Safe to run from the daemon and `gatectl` at once.
///
/// # Errors
/// The store or the maps refused.
pub fn end_grants(store: &Store, state: &mut GateState, host: &str, now: u64) -> Result<usize, EndGrantsError> {
    let mut closed = 0;
    for grant in store.revoked_grants(host)? {
        let shared = store.address_held_by_live_client(&grant.gate, grant.address, host, now)?;
        if !shared {
            match state.gate_id(&grant.gate) {
                Ok(id) => closed += usize::from(state.revoke_one(id, grant.address)?),
                // The gate was removed from the config: its leases went with it.
                Err(StateError::NoSuchGate { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        store.delete_grants(&grant.client, &grant.gate, &[grant.address], host)?;
    }
    Ok(closed)
}

#[derive(Debug, thiserror::Error)]
pub enum EndGrantsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
}
