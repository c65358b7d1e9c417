//! [`InFlight`]: the nonces of the approvals being checked right now. An approval's nonce is
//! written to the store with the approval itself (one commit, not two), so between the check
//! that the store has not seen it and that write, this set is what refuses the same request
//! arriving twice at once: the second never reaches the box or the signature.
use std::{
    collections::HashSet,
    sync::{Mutex, PoisonError},
};

use gate_protocol::{keys::Token, wire::NONCE_BYTES};

type Key = (Token, [u8; NONCE_BYTES]);

#[derive(Default)]
pub struct InFlight(Mutex<HashSet<Key>>);

/// A nonce held while its approval is checked; let go when dropped.
pub struct Claim<'a> {
    set: &'a InFlight,
    key: Key,
}

impl InFlight {
    /// Holds (token, nonce); `None` if an approval being checked holds it already.
    #[must_use]
    pub fn claim(&self, token: Token, nonce: [u8; NONCE_BYTES]) -> Option<Claim<'_>> {
        let key = (token, nonce);
        let new = self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(key);
        // A claim is made only for a new key: a claim dropped unmade would let go of another's.
        if new { Some(Claim { set: self, key }) } else { None }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_held_once_until_let_go() {
        let set = InFlight::default();
        let first = set.claim(Token([1; 16]), [2; NONCE_BYTES]).expect("a new nonce");
        assert!(set.claim(Token([1; 16]), [2; NONCE_BYTES]).is_none(), "held: the same request at once");
        assert!(set.claim(Token([1; 16]), [2; NONCE_BYTES]).is_none(), "still held after a refused claim");
        assert!(set.claim(Token([3; 16]), [2; NONCE_BYTES]).is_some(), "another client's");
        drop(first);
        assert!(set.claim(Token([1; 16]), [2; NONCE_BYTES]).is_some(), "let go");
    }
}
