//! Exclusive tokens, owner side: which node may buffer a file's writes and arbitrate its
//! byte-range locks by itself.
//!
//! Sprite's rule, NFSv4's delegations: while only one node has a file open, nothing another
//! node sees depends on that node's writes and locks reaching the owner one by one. The owner
//! grants that node the file's exclusive token at open (when no other node has it open and no
//! lock on it is held here); the holder then buffers small writes and keeps the file's locks
//! in its own table. Before anything another node does with the file — lookup, stat, open,
//! truncate, locks — the owner recalls the token: the holder writes back what it buffered and
//! hands its locks over, and from then on the file is shared as usual. A holder also gives the
//! token back by itself when it must wait for a lock (waiting is the owner's job).
//!
//! Epochs tell grants apart: a recall can overtake the reply that carried its grant; the
//! holder then answers "not held" and ignores that grant when the reply comes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub node: u32,
    pub epoch: u64,
}

pub struct Grants {
    table: Mutex<HashMap<Vec<u8>, Grant>>,
    next_epoch: AtomicU64,
    /// Recalls run one at a time: they are rare, and a second caller then finds the token gone.
    pub recalling: tokio::sync::Mutex<()>,
}

impl Default for Grants {
    fn default() -> Self {
        Grants { table: Mutex::new(HashMap::new()), next_epoch: AtomicU64::new(1), recalling: tokio::sync::Mutex::new(()) }
    }
}

impl Grants {
    /// How many files have an exclusive holder.
    pub fn len(&self) -> usize {
        self.table.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.lock().is_empty()
    }

    pub fn holder(&self, file: &[u8]) -> Option<Grant> {
        self.table.lock().get(file).copied()
    }

    /// Grants `node` the token of `file` (or confirms the one it has) if `free()` says the
    /// file is free of other openers and locks; the epoch, or None. `free` runs under the
    /// table's lock, so a grant and another node's open cannot both miss each other (an open
    /// registers itself before it checks for a holder).
    pub fn grant(&self, file: &[u8], node: u32, free: impl FnOnce() -> bool) -> Option<u64> {
        let mut t = self.table.lock();
        match t.get(file) {
            Some(g) if g.node == node => return Some(g.epoch),
            Some(_) => return None,
            None => {}
        }
        if !free() {
            return None;
        }
        let epoch = self.next_epoch.fetch_add(1, Relaxed);
        t.insert(file.to_vec(), Grant { node, epoch });
        Some(epoch)
    }

    /// Ends grant `g` of `file` if it is still the current one.
    pub fn end(&self, file: &[u8], g: Grant) -> bool {
        let mut t = self.table.lock();
        if t.get(file) == Some(&g) {
            t.remove(file);
            return true;
        }
        false
    }

    /// A node left: its tokens are void (its buffered writes and its locks died with it).
    pub fn node_gone(&self, node: u32) -> usize {
        let mut t = self.table.lock();
        let before = t.len();
        t.retain(|_, g| g.node != node);
        before - t.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_epochs_never_repeat() {
        let g = Grants::default();
        let e1 = g.grant(b"f", 1, || true).unwrap();
        assert_eq!(g.grant(b"f", 1, || false), Some(e1), "the holder keeps its grant");
        assert_eq!(g.grant(b"f", 2, || true), None);
        assert!(!g.end(b"f", Grant { node: 1, epoch: e1 + 7 }));
        assert!(g.end(b"f", Grant { node: 1, epoch: e1 }));
        assert_eq!(g.grant(b"f", 2, || false), None, "not free: no grant");
        let e2 = g.grant(b"f", 2, || true).unwrap();
        assert!(e2 > e1);
        assert_eq!(g.node_gone(2), 1);
        assert_eq!(g.holder(b"f"), None);
    }

    #[test]
    fn a_grant_checks_for_other_openers_under_the_table_lock() {
        let g = Grants::default();
        // An opener registered elsewhere: the check says the file is not free.
        let mut asked = 0;
        assert_eq!(
            g.grant(b"f", 1, || {
                asked += 1;
                false
            }),
            None
        );
        assert_eq!(asked, 1);
        assert!(g.is_empty(), "no token when another node has the file open");
        // The holder asking again does not need the file free (it is the one opener).
        let e = g.grant(b"f", 1, || true).unwrap();
        assert_eq!(g.grant(b"f", 1, || panic!("not asked for the holder itself")), Some(e));
    }
}
