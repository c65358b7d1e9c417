//! [`GroupCommit`]: the store writes of concurrent approvals (each one's nonce, each one's
//! record) committed together. An approval queues its write, then takes the store: if the
//! approval that held it meanwhile committed the write along with its own, the answer is
//! waiting; if not, this one commits everything queued. In a storm that is one SQLite commit for
//! every approval that waited, instead of one each (the commits were the storm's limit: see
//! docs/benchmarks.md). No thread of its own: the approvals that would wait for the store anyway
//! take turns committing for each other.
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use gate_store::{Recorded, Store, StoreError, Write};

type Answer = Result<Recorded, StoreError>;

/// Where a queued write's answer is left for the approval that queued it.
#[derive(Default)]
struct Slot(Mutex<Option<Answer>>);

#[derive(Default)]
pub struct GroupCommit {
    queue: Mutex<Vec<(Write, Arc<Slot>)>>,
    /// Transactions committed, and the writes in them.
    groups: AtomicU64,
    writes: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GroupCommit {
    /// Commits `write` to `store`, with whatever other writes are queued, and returns its
    /// answer once it is committed.
    ///
    /// # Errors
    /// SQLite failed for this write.
    pub fn commit(&self, store: &Mutex<Store>, write: Write) -> Answer {
        let slot = Arc::new(Slot::default());
        lock(&self.queue).push((write, Arc::clone(&slot)));
        let mut store = lock(store);
        // Only a holder of the store takes from the queue, and it answers every write it took
        // before letting the store go: either ours is answered now or it is still queued.
        if let Some(answer) = lock(&slot.0).take() {
            return answer;
        }
        let group = std::mem::take(&mut *lock(&self.queue));
        let (writes, slots): (Vec<Write>, Vec<Arc<Slot>>) = group.into_iter().unzip();
        let answers = store.commit_group(&writes);
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(writes.len() as u64, Ordering::Relaxed);
        for (queued, answer) in slots.iter().zip(answers) {
            *lock(&queued.0) = Some(answer);
        }
        drop(store);
        lock(&slot.0).take().unwrap_or_else(|| unreachable!("a write taken from the queue was not answered"))
    }

    /// Groups committed so far, and the writes they held.
    #[must_use]
    pub fn committed(&self) -> (u64, u64) {
        (self.groups.load(Ordering::Relaxed), self.writes.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Barrier, atomic::AtomicUsize},
        thread,
    };

    use gate_protocol::keys::Token;

    use super::*;

    fn nonce(token: Token, nonce: u8) -> Write {
        Write::Nonce(gate_store::NonceRecord { token, nonce: vec![nonce; 16], expires_at: 1000, host: "h".to_owned() })
    }

    /// Many threads at once, each nonce sent twice: every write answered, each nonce accepted
    /// exactly once, and fewer commits than writes.
    #[test]
    fn concurrent_writes_are_each_answered_once_and_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open_or_create(dir.path().join("gate.db")).unwrap();
        let store = Mutex::new(store);
        let group = GroupCommit::default();
        let threads = 16;
        let per_thread = 50_u8;
        let accepted = AtomicUsize::new(0);
        let start = Barrier::new(threads);
        thread::scope(|s| {
            for t in 0..threads {
                let (store, group, accepted, start) = (&store, &group, &accepted, &start);
                s.spawn(move || {
                    // Threads t and t + threads/2 send the same nonces: each is a replay for one.
                    let token = Token([u8::try_from(t % (threads / 2)).unwrap(); 16]);
                    start.wait();
                    for n in 0..per_thread {
                        if group.commit(store, nonce(token, n)).unwrap() == Recorded::Yes {
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(accepted.load(Ordering::SeqCst), threads / 2 * usize::from(per_thread));
        assert!(lock(&group.queue).is_empty());
        let (groups, writes) = group.committed();
        assert_eq!(writes, threads as u64 * u64::from(per_thread));
        assert!(groups < writes, "16 threads writing at once never shared a commit ({groups} commits)");
    }
}
