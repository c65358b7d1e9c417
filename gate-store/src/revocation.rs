//! Ending a revoked client's grants: its leases close, except where a client that is not revoked
//! holds a live grant for the same address (two clients behind one NAT).
use gate_maps::{GateState, StateError};

use crate::{AuditEvent, AuditKind, Store, StoreError};

/// Closes the leases of every revoked client's grants on `host` and forgets those grants, each
/// closed lease in the audit trail with `actor` (the daemon, or gatectl's user). Returns how
/// many leases were closed. Safe to run from the daemon and `gatectl` at once.
///
/// # Errors
/// The store or the maps refused.
pub fn end_grants(
    store: &Store,
    state: &mut GateState,
    host: &str,
    now: u64,
    actor: &str,
) -> Result<usize, EndGrantsError> {
    let mut closed = 0;
    for grant in store.revoked_grants(host)? {
        let shared = store.address_held_by_live_client(&grant.gate, grant.address, host, now)?;
        let mut ended = false;
        if !shared {
            match state.gate_id(&grant.gate) {
                Ok(id) => ended = state.revoke_one(id, grant.address)?,
                // The gate was removed from the config: its leases went with it.
                Err(StateError::NoSuchGate { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if ended {
            closed += 1;
            let event = AuditEvent::new(now, host, AuditKind::LeaseClosed, "revocation", actor)
                .client(&grant.client)
                .lease(&grant.gate, grant.address);
            store.record_audit(&[event])?;
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
