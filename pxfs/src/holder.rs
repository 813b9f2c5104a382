//! Exclusive tokens, holder side (see `exclusive` for the protocol): the small writes this
//! node buffers and the byte-range locks it arbitrates, for files no other node has open.
//!
//! Each file this node holds a token for has a slot (an async mutex around its state): FUSE
//! threads take it with `blocking_lock`, the owner's recall (on the ORB runtime) with `lock`,
//! so a recall waits for a write-back in progress rather than overtaking it. A token given up
//! (recalled, surrendered, or recalled before its grant arrived) leaves a tombstone of its
//! epoch, so a reply still carrying that grant does not bring it back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use ssi_orb::{CallOptions, OrbError};

use crate::locks::{Lock, LockTable};
use crate::owners::Owners;
use crate::proto::{Attr, Extent, Fid, HeldLock, HeldLocks, SurrenderReq, WriteBackReq};

/// Writes up to this size are buffered under a token; larger ones go through (after what is
/// buffered), as they gain nothing from waiting.
pub const SMALL_WRITE: usize = 128 << 10;
/// What one file may have buffered before it is written back.
const MAX_BUFFERED: usize = 8 << 20;
/// Tombstones are kept this long (a grant's reply is long in or lost by then).
const TOMBSTONE: Duration = Duration::from_secs(120);
const CALL_DEADLINE: Duration = Duration::from_secs(30);

pub struct Held {
    pub epoch: u64,
    dirty: Vec<Extent>,
    bytes: usize,
    /// The file's attributes as of the last exchange with the owner, advanced by the writes
    /// buffered since (size, times): nobody else can change them while the token is held.
    attr: Option<Attr>,
}

pub type Slot = Arc<tokio::sync::Mutex<Option<Held>>>;
type FileKey = (u32, Bytes);

/// Given-up tokens, (file, epoch), each kept for `TOMBSTONE`. Buried in time order, so the
/// expired ones are at the front of `order`: every node gives up a token per file it closes,
/// and sweeping the whole map on each burial made a create cost O(files closed in 2 min).
#[derive(Default)]
struct Tombstones {
    at: HashMap<(FileKey, u64), Instant>,
    order: VecDeque<(Instant, (FileKey, u64))>,
}

impl Tombstones {
    fn bury(&mut self, key: (FileKey, u64), now: Instant) {
        while let Some((when, _)) = self.order.front() {
            if now.duration_since(*when) < TOMBSTONE {
                break;
            }
            let (when, old) = self.order.pop_front().expect("front was there");
            // Only if not buried again since (then a later entry in `order` owns it).
            if self.at.get(&old) == Some(&when) {
                self.at.remove(&old);
            }
        }
        self.at.insert(key.clone(), now);
        self.order.push_back((now, key));
    }

    /// Whether `key` was buried (and not yet expired); it is removed.
    fn dig_up(&mut self, key: &(FileKey, u64)) -> bool {
        self.at.remove(key).is_some()
    }
}

pub struct Holder {
    node: u32,
    owners: Arc<Owners>,
    slots: Mutex<HashMap<FileKey, Slot>>,
    /// Open file handles of this node per file: the last close gives the token back.
    opens: Mutex<HashMap<FileKey, u32>>,
    tombstones: Mutex<Tombstones>,
    locks: LockTable,
}

fn lock_key(vol: u32, handle: &[u8]) -> Vec<u8> {
    let mut k = vol.to_le_bytes().to_vec();
    k.extend_from_slice(handle);
    k
}

pub enum Buffered {
    /// Buffered: the write is done as far as the caller can tell.
    Yes,
    /// No token, or too big: the caller writes through.
    No,
}

impl Holder {
    pub fn new(node: u32, owners: Arc<Owners>) -> Self {
        Holder {
            node,
            owners,
            slots: Mutex::new(HashMap::new()),
            opens: Mutex::new(HashMap::new()),
            tombstones: Mutex::new(Tombstones::default()),
            locks: LockTable::default(),
        }
    }

    fn slot(&self, vol: u32, handle: &Bytes) -> Option<Slot> {
        self.slots.lock().get(&(vol, handle.clone())).cloned()
    }

    fn slot_or_new(&self, vol: u32, handle: &Bytes) -> Slot {
        self.slots.lock().entry((vol, handle.clone())).or_default().clone()
    }

    fn bury(&self, key: FileKey, epoch: u64) {
        self.tombstones.lock().bury((key, epoch), Instant::now());
    }

    /// An open or create succeeded; `epoch` is the exclusive token it brought (0: none).
    pub async fn opened(&self, vol: u32, handle: &Bytes, epoch: u64) {
        *self.opens.lock().entry((vol, handle.clone())).or_default() += 1;
        if epoch == 0 {
            return;
        }
        let slot = self.slot_or_new(vol, handle);
        let mut g = slot.lock().await;
        if self.tombstones.lock().dig_up(&((vol, handle.clone()), epoch)) {
            return;
        }
        if g.as_ref().map(|h| h.epoch) != Some(epoch) {
            *g = Some(Held { epoch, dirty: Vec::new(), bytes: 0, attr: None });
        }
    }

    /// Whether this node holds the token of the file now (the answer may change as soon as
    /// the slot is released; callers that act on it hold the slot).
    pub fn with_held<T>(&self, vol: u32, handle: &Bytes, f: impl FnOnce(Option<&mut Held>) -> T) -> T {
        match self.slot(vol, handle) {
            None => f(None),
            Some(slot) => f(slot.blocking_lock().as_mut()),
        }
    }

    /// Whether this node may be buffering writes of the file now (true when its slot is
    /// busy). Does not block: for the runtime.
    pub fn may_buffer(&self, vol: u32, handle: &Bytes) -> bool {
        let Some(slot) = self.slot(vol, handle) else { return false };
        let r = match slot.try_lock() {
            Ok(g) => g.as_ref().is_some_and(|h| !h.dirty.is_empty()),
            Err(_) => true,
        };
        r
    }

    /// Buffers a small write under the token; writes back first when too much is buffered.
    pub fn write(
        &self,
        rt: &tokio::runtime::Handle,
        vol: u32,
        handle: &Bytes,
        fh: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<Buffered, OrbError> {
        let Some(slot) = self.slot(vol, handle) else { return Ok(Buffered::No) };
        let mut g = slot.blocking_lock();
        let Some(held) = g.as_mut() else { return Ok(Buffered::No) };
        if data.len() > SMALL_WRITE {
            rt.block_on(self.write_back(vol, held, None))?;
            held.attr = None;
            return Ok(Buffered::No);
        }
        if let Some(a) = held.attr.as_mut() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
            a.size = a.size.max(offset + data.len() as u64);
            a.blocks = a.blocks.max(a.size.div_ceil(512));
            (a.mtime_ns, a.ctime_ns) = (now, now);
        }
        held.dirty.push(Extent { fh, offset, data: Bytes::copy_from_slice(data) });
        held.bytes += data.len();
        if held.bytes > MAX_BUFFERED {
            rt.block_on(self.write_back(vol, held, None))?;
        }
        Ok(Buffered::Yes)
    }

    /// Writes back what the file has buffered, then fsyncs `sync` = (fh, datasync) if given,
    /// in one invocation. True when it did the fsync (the file is held).
    pub async fn settle(&self, vol: u32, handle: &Bytes, sync: Option<(u64, bool)>) -> Result<bool, OrbError> {
        let Some(slot) = self.slot(vol, handle) else { return Ok(false) };
        let mut g = slot.lock().await;
        match g.as_mut() {
            Some(held) => self.write_back(vol, held, sync).await.map(|_| sync.is_some()),
            None => Ok(false),
        }
    }

    async fn write_back(&self, vol: u32, held: &mut Held, sync: Option<(u64, bool)>) -> Result<(), OrbError> {
        if held.dirty.is_empty() && sync.is_none() {
            return Ok(());
        }
        let extents = std::mem::take(&mut held.dirty);
        held.bytes = 0;
        let (sync_fh, datasync) = sync.unwrap_or((0, false));
        let s = self.owners.stub(vol).await?.with_options(CallOptions::default().deadline(CALL_DEADLINE));
        held.attr = s.write_back(WriteBackReq { extents, sync_fh, datasync }).await?.into_inner().attr;
        Ok(())
    }

    /// The file's attributes, when this node holds its token and knows them.
    pub fn attr(&self, vol: u32, handle: &Bytes) -> Option<Attr> {
        self.with_held(vol, handle, |h| h.and_then(|h| h.attr))
    }

    /// The file changed behind the token (written through passthrough): its attributes are
    /// asked of the owner again.
    pub fn forget_attr(&self, vol: u32, handle: &Bytes) {
        self.with_held(vol, handle, |h| {
            if let Some(h) = h {
                h.attr = None;
            }
        });
    }

    /// Attributes the owner just sent for a file (kept while it is held and nothing is
    /// buffered; skipped when the slot is busy). Does not block.
    pub fn note_attr(&self, vol: u32, handle: &Bytes, a: &Attr) {
        if let Some(slot) = self.slot(vol, handle) {
            if let Ok(mut g) = slot.try_lock() {
                if let Some(h) = g.as_mut().filter(|h| h.dirty.is_empty()) {
                    h.attr = Some(*a);
                }
            }
        }
    }

    /// F_GETLK under the token: Some(conflicting lock or None), or None when not held.
    pub fn get_lock(&self, vol: u32, handle: &Bytes, owner: u64, typ: i32, start: u64, end: u64) -> Option<Option<Lock>> {
        let key = lock_key(vol, handle);
        self.with_held(vol, handle, |h| h.map(|_| self.locks.conflict(&key, self.node, owner, typ, start, end)))
    }

    /// F_SETLK/F_SETLKW under the token: Some(result) when arbitrated here, None when the
    /// owner must do it (not held; or a conflict a waiter must wait out: then the token goes
    /// back to the owner first, with this node's locks).
    pub fn set_lock(
        &self,
        rt: &tokio::runtime::Handle,
        vol: u32,
        handle: &Bytes,
        lock: Lock,
        wait: bool,
    ) -> Option<Result<(), crate::locks::SetError>> {
        let slot = self.slot(vol, handle)?;
        let mut g = slot.blocking_lock();
        let held = g.as_mut()?;
        let key = lock_key(vol, handle);
        let lock = Lock { node: self.node, ..lock };
        match self.locks.try_set(&key, lock) {
            Err(crate::locks::SetError::Conflict) if wait => {
                let epoch = held.epoch;
                let r = rt.block_on(async {
                    self.write_back(vol, held, None).await?;
                    let locks = self.hand_over(&key);
                    let s = self.owners.stub(vol).await?.with_options(CallOptions::default().deadline(CALL_DEADLINE));
                    s.surrender(SurrenderReq { fid: Some(Fid { handle: handle.clone() }), epoch, locks }).await
                });
                if let Err(e) = r {
                    tracing::warn!(error = %e, "giving an exclusive token back failed");
                }
                *g = None;
                self.bury((vol, handle.clone()), epoch);
                None
            }
            r => Some(r),
        }
    }

    /// A close of `owner`'s descriptor under the token: writes back, drops its locks here.
    /// False when not held (the owner must drop the locks).
    pub fn closing(&self, rt: &tokio::runtime::Handle, vol: u32, handle: &Bytes, owner: u64) -> Result<bool, OrbError> {
        let Some(slot) = self.slot(vol, handle) else { return Ok(false) };
        let mut g = slot.blocking_lock();
        let Some(held) = g.as_mut() else { return Ok(false) };
        self.locks.release_owner(&lock_key(vol, handle), self.node, owner);
        rt.block_on(self.write_back(vol, held, None))?;
        Ok(true)
    }

    /// The last-but-one step of a release: writes back. Returns the epoch to give back with
    /// the release when this was the file's last open handle here and no lock is left.
    pub fn released(&self, rt: &tokio::runtime::Handle, vol: u32, handle: &Bytes) -> Result<u64, OrbError> {
        let key: FileKey = (vol, handle.clone());
        let last = {
            let mut o = self.opens.lock();
            let n = o.entry(key.clone()).or_default();
            *n = n.saturating_sub(1);
            let last = *n == 0;
            if last {
                o.remove(&key);
            }
            last
        };
        let Some(slot) = self.slot(vol, handle) else { return Ok(0) };
        let mut g = slot.blocking_lock();
        let Some(held) = g.as_mut() else {
            if last {
                self.slots.lock().remove(&key);
            }
            return Ok(0);
        };
        rt.block_on(self.write_back(vol, held, None))?;
        if !last || self.locks.held(&lock_key(vol, handle)) || self.opens.lock().contains_key(&key) {
            return Ok(0);
        }
        let epoch = held.epoch;
        *g = None;
        drop(g);
        self.bury(key.clone(), epoch);
        self.slots.lock().remove(&key);
        Ok(epoch)
    }

    fn hand_over(&self, key: &[u8]) -> Vec<HeldLock> {
        self.locks.take(key).into_iter().map(|l| HeldLock { owner: l.owner, pid: l.pid, typ: l.typ, start: l.start, end: l.end }).collect()
    }

    /// `node` left the view: the tokens of its volumes are void (a restarted owner knows
    /// nothing of them). What was buffered is lost, as if this node had crashed; the next
    /// fsync or close of those files reports the error (their handles are stale too).
    pub async fn owner_gone(&self, node: u32) {
        let slots: Vec<(FileKey, Slot)> = {
            let all = self.slots.lock();
            all.iter().filter(|((vol, _), _)| self.owners.node_of(*vol) == Some(node)).map(|(k, s)| (k.clone(), s.clone())).collect()
        };
        for ((vol, handle), slot) in slots {
            let mut g = slot.lock().await;
            if let Some(held) = g.take() {
                if held.bytes > 0 {
                    tracing::warn!(volume = vol, node, bytes = held.bytes, "owner left with buffered writes; they are lost");
                }
                self.locks.take(&lock_key(vol, &handle));
                self.bury((vol, handle), held.epoch);
            }
        }
    }

    /// The owner takes the token back (on the ORB runtime): write back, hand the locks over.
    pub async fn recall(&self, vol: u32, handle: Bytes, epoch: u64) -> HeldLocks {
        let slot = self.slot_or_new(vol, &handle);
        let mut g = slot.lock().await;
        self.bury((vol, handle.clone()), epoch);
        let Some(held) = g.as_mut() else {
            return HeldLocks { locks: vec![], not_held: true };
        };
        if let Err(e) = self.write_back(vol, held, None).await {
            // The buffered writes are lost, as if this node had crashed before writing them.
            tracing::error!(volume = vol, error = %e, "write-back at recall failed");
        }
        let locks = self.hand_over(&lock_key(vol, &handle));
        self.bury((vol, handle.clone()), held.epoch);
        *g = None;
        HeldLocks { locks, not_held: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8, epoch: u64) -> (FileKey, u64) {
        ((1, Bytes::from(vec![n])), epoch)
    }

    #[test]
    fn tombstones_expire_in_burial_order_and_are_dug_up_once() {
        let mut t = Tombstones::default();
        let t0 = Instant::now();
        t.bury(key(1, 1), t0);
        t.bury(key(2, 1), t0 + Duration::from_secs(60));
        assert!(t.dig_up(&key(1, 1)));
        assert!(!t.dig_up(&key(1, 1)), "a tombstone is dug up once");
        // Buried again later: the first burial's expiry must not take the second.
        t.bury(key(2, 1), t0 + Duration::from_secs(100));
        t.bury(key(3, 1), t0 + TOMBSTONE + Duration::from_secs(61));
        assert!(t.at.contains_key(&key(2, 1)), "re-buried at 100 s, not expired at 181 s");
        assert_eq!(t.order.len(), 2, "the 60 s burial of key 2 and the dug-up key 1 expired");
        t.bury(key(4, 1), t0 + TOMBSTONE + Duration::from_secs(101));
        assert!(!t.at.contains_key(&key(2, 1)));
        assert_eq!(t.at.len(), 2);
    }

    /// A holder for node 1 whose volume 0 is owned by node 2 (never reached in these tests).
    async fn holder() -> Holder {
        let key = ssi_orb::ClusterKey::parse(&ssi_orb::ClusterKey::generate_hex()).unwrap();
        let orb = ssi_orb::Orb::start(ssi_orb::OrbConfig::new("t", 1, 1, key)).await.unwrap();
        Holder::new(1, Arc::new(Owners::new(orb, HashMap::from([(0, 2)]))))
    }

    fn held(h: &Holder, f: &Bytes) -> Option<u64> {
        h.slot(0, f).and_then(|s| s.try_lock().ok().and_then(|g| g.as_ref().map(|x| x.epoch)))
    }

    #[tokio::test]
    async fn a_recall_takes_the_token_and_a_late_reply_of_its_grant_is_ignored() {
        let h = holder().await;
        let f = Bytes::from_static(b"f");
        h.opened(0, &f, 5).await;
        assert_eq!(held(&h, &f), Some(5));
        let r = h.recall(0, f.clone(), 5).await;
        assert!(!r.not_held && r.locks.is_empty());
        assert_eq!(held(&h, &f), None, "the token is the owner's again");
        // The same grant's reply, arriving after its recall (a reordered duplicate).
        h.opened(0, &f, 5).await;
        assert_eq!(held(&h, &f), None, "a given-up epoch never comes back");
    }

    #[tokio::test]
    async fn a_recall_that_overtakes_its_grant_voids_the_grant() {
        let h = holder().await;
        let f = Bytes::from_static(b"g");
        let r = h.recall(0, f.clone(), 9).await;
        assert!(r.not_held, "nothing held yet: the grant's reply is still on its way");
        h.opened(0, &f, 9).await;
        assert_eq!(held(&h, &f), None, "the grant that reply carries is void");
        h.opened(0, &f, 10).await;
        assert_eq!(held(&h, &f), Some(10), "a later grant holds");
    }
}
