//! Cluster-wide POSIX byte-range locks, arbitrated by the volume server that owns the file.
//!
//! A lock owner is (client node, FUSE lock owner): the kernel's lock owner ids are only
//! unique per node. Semantics are `fcntl`'s: read locks share, write locks exclude; a new
//! lock of an owner replaces that owner's locks on the range (splitting them); F_UNLCK
//! removes them. Locks go when their owner's file descriptor is closed (FUSE flush), when
//! the node dies, or when the server restarts (locks are not persistent, as with fcntl).

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

pub const F_RDLCK: i32 = libc::F_RDLCK;
pub const F_WRLCK: i32 = libc::F_WRLCK;
pub const F_UNLCK: i32 = libc::F_UNLCK;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub node: u32,
    pub owner: u64,
    pub pid: u32,
    pub typ: i32,
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl Lock {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }
}

#[derive(Default)]
pub struct LockTable {
    files: Mutex<HashMap<Vec<u8>, Vec<Lock>>>,
    changed: Notify,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SetError {
    /// Held by another owner (EAGAIN).
    Conflict,
    /// A blocking request's deadline passed (EINTR, as an interrupted F_SETLKW).
    TimedOut,
}

impl LockTable {
    /// The first lock of another owner that conflicts with the request, if any.
    pub fn conflict(&self, file: &[u8], node: u32, owner: u64, typ: i32, start: u64, end: u64) -> Option<Lock> {
        let files = self.files.lock();
        files
            .get(file)?
            .iter()
            .find(|l| !(l.node == node && l.owner == owner) && l.overlaps(start, end) && (typ == F_WRLCK || l.typ == F_WRLCK))
            .cloned()
    }

    fn apply(locks: &mut Vec<Lock>, new: Lock) {
        let mut out = Vec::with_capacity(locks.len() + 2);
        for l in locks.drain(..) {
            if l.node != new.node || l.owner != new.owner || !l.overlaps(new.start, new.end) {
                out.push(l);
                continue;
            }
            // Keep the parts of the owner's old lock outside the new range.
            if l.start < new.start {
                out.push(Lock { end: new.start - 1, ..l.clone() });
            }
            if l.end > new.end {
                out.push(Lock { start: new.end + 1, ..l });
            }
        }
        if new.typ != F_UNLCK {
            out.push(new);
        }
        *locks = out;
    }

    /// F_SETLK: takes the lock now or answers Conflict.
    pub fn try_set(&self, file: &[u8], lock: Lock) -> Result<(), SetError> {
        if lock.typ != F_UNLCK && self.conflict(file, lock.node, lock.owner, lock.typ, lock.start, lock.end).is_some() {
            return Err(SetError::Conflict);
        }
        let mut files = self.files.lock();
        let locks = files.entry(file.to_vec()).or_default();
        Self::apply(locks, lock);
        if locks.is_empty() {
            files.remove(file);
        }
        drop(files);
        self.changed.notify_waiters();
        Ok(())
    }

    /// F_SETLK (`wait == false`) or F_SETLKW (waits until `deadline`).
    pub async fn set(&self, file: &[u8], lock: Lock, wait: bool, deadline: Instant) -> Result<(), SetError> {
        loop {
            let notified = self.changed.notified();
            match self.try_set(file, lock.clone()) {
                Err(SetError::Conflict) if wait => {}
                r => return r,
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                return Err(SetError::TimedOut);
            }
        }
    }

    /// How many files have locks here.
    pub fn files(&self) -> usize {
        self.files.lock().len()
    }

    /// Whether anyone holds a lock on `file`.
    pub fn held(&self, file: &[u8]) -> bool {
        self.files.lock().contains_key(file)
    }

    /// Removes and returns every lock on `file` (handing them to another arbiter).
    pub fn take(&self, file: &[u8]) -> Vec<Lock> {
        let taken = self.files.lock().remove(file).unwrap_or_default();
        self.changed.notify_waiters();
        taken
    }

    /// Adds locks handed over by another arbiter (they conflicted with nothing there).
    pub fn install(&self, file: &[u8], locks: Vec<Lock>) {
        if !locks.is_empty() {
            self.files.lock().entry(file.to_vec()).or_default().extend(locks);
        }
    }

    /// Every lock of one owner on one file (its descriptor was closed).
    pub fn release_owner(&self, file: &[u8], node: u32, owner: u64) {
        let mut files = self.files.lock();
        if let Some(locks) = files.get_mut(file) {
            locks.retain(|l| !(l.node == node && l.owner == owner));
            if locks.is_empty() {
                files.remove(file);
            }
        }
        drop(files);
        self.changed.notify_waiters();
    }

    /// Every lock held from `node` (it died).
    pub fn release_node(&self, node: u32) -> usize {
        let mut n = 0;
        let mut files = self.files.lock();
        for locks in files.values_mut() {
            let before = locks.len();
            locks.retain(|l| l.node != node);
            n += before - locks.len();
        }
        files.retain(|_, l| !l.is_empty());
        drop(files);
        self.changed.notify_waiters();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lk(node: u32, owner: u64, typ: i32, start: u64, end: u64) -> Lock {
        Lock { node, owner, pid: 1, typ, start, end }
    }

    fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    #[tokio::test]
    async fn posix_semantics() {
        let t = LockTable::default();
        let f = b"f".as_slice();
        t.set(f, lk(1, 1, F_RDLCK, 0, 99), false, far()).await.unwrap();
        t.set(f, lk(2, 1, F_RDLCK, 50, 149), false, far()).await.unwrap();
        // Same owner id on another node is another owner.
        assert_eq!(t.set(f, lk(2, 1, F_WRLCK, 0, 10), false, far()).await, Err(SetError::Conflict));
        assert!(t.conflict(f, 3, 9, F_WRLCK, 120, 130).is_some());
        assert!(t.conflict(f, 3, 9, F_RDLCK, 120, 130).is_none());
        // Unlocking the middle of an owner's range splits it.
        t.set(f, lk(1, 1, F_UNLCK, 20, 29), false, far()).await.unwrap();
        assert!(t.conflict(f, 3, 9, F_WRLCK, 20, 29).is_none());
        assert!(t.conflict(f, 3, 9, F_WRLCK, 19, 19).is_some());
        assert!(t.conflict(f, 3, 9, F_WRLCK, 30, 30).is_some());
        // An owner upgrades its own range when nobody else holds it.
        t.set(f, lk(1, 1, F_WRLCK, 0, 10), false, far()).await.unwrap();
        assert_eq!(t.release_node(1), 3);
        assert!(t.conflict(f, 3, 9, F_WRLCK, 0, 10).is_none());
    }

    #[tokio::test]
    async fn a_waiter_gets_the_lock_when_it_is_released() {
        let t = std::sync::Arc::new(LockTable::default());
        let f = b"f".as_slice();
        t.set(f, lk(1, 1, F_WRLCK, 0, u64::MAX), false, far()).await.unwrap();
        let t2 = t.clone();
        let w = tokio::spawn(async move { t2.set(b"f", lk(2, 7, F_WRLCK, 0, u64::MAX), true, far()).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!w.is_finished());
        t.release_owner(f, 1, 1);
        assert_eq!(w.await.unwrap(), Ok(()));
        let short = Instant::now() + std::time::Duration::from_millis(30);
        assert_eq!(t.set(f, lk(3, 1, F_RDLCK, 5, 5), true, short).await, Err(SetError::TimedOut));
    }

    #[tokio::test]
    async fn a_dead_nodes_locks_go_and_its_waiter_gets_the_lock() {
        let t = std::sync::Arc::new(LockTable::default());
        t.set(b"f", lk(1, 1, F_WRLCK, 0, 9), false, far()).await.unwrap();
        t.set(b"g", lk(1, 2, F_RDLCK, 0, 9), false, far()).await.unwrap();
        t.set(b"g", lk(2, 2, F_RDLCK, 0, 9), false, far()).await.unwrap();
        let t2 = t.clone();
        let w = tokio::spawn(async move { t2.set(b"f", lk(3, 1, F_WRLCK, 5, 5), true, far()).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!w.is_finished(), "node 1 holds it");
        assert_eq!(t.release_node(1), 2, "every lock node 1 held, on every file");
        assert_eq!(w.await.unwrap(), Ok(()), "the waiter is woken, not left to its deadline");
        assert!(t.conflict(b"g", 4, 1, F_WRLCK, 0, 0).is_some(), "node 2's lock stays");
    }

    #[tokio::test]
    async fn a_close_releases_that_owners_locks_only() {
        let t = LockTable::default();
        t.set(b"f", lk(1, 1, F_RDLCK, 0, 9), false, far()).await.unwrap();
        t.set(b"f", lk(1, 2, F_RDLCK, 20, 29), false, far()).await.unwrap();
        t.release_owner(b"f", 1, 1);
        assert!(t.conflict(b"f", 2, 1, F_WRLCK, 0, 9).is_none());
        assert!(t.conflict(b"f", 2, 1, F_WRLCK, 20, 29).is_some(), "another owner on the same node keeps its lock");
        t.release_owner(b"f", 1, 2);
        assert_eq!(t.files(), 0, "a file with no lock leaves the table");
    }

    #[tokio::test]
    async fn locks_handed_to_another_arbiter_conflict_as_before() {
        let holder = LockTable::default();
        holder.set(b"f", lk(1, 1, F_WRLCK, 100, 199), false, far()).await.unwrap();
        let taken = holder.take(b"f");
        assert!(!holder.held(b"f"));
        let owner = LockTable::default();
        owner.install(b"f", taken);
        assert_eq!(owner.try_set(b"f", lk(2, 1, F_RDLCK, 150, 150)), Err(SetError::Conflict));
        assert_eq!(owner.try_set(b"f", lk(2, 1, F_RDLCK, 200, 300)), Ok(()));
    }
}
