//! This node's `CacheManager`: an owner's revocations and recalls. What the kernel caches
//! is dropped by a thread of its own (fuser's Notifier): never from a FUSE handler or the ORB
//! runtime, where waiting for an inode lock held by an in-flight request would deadlock.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fuser::INodeNo;
use parking_lot::{Mutex, RwLock};
use ssi_orb::proto::Empty;

use super::inodes::Inodes;
use crate::attrcache::AttrCache;
use crate::holder::Holder;
use crate::proto::*;

/// How long a `CacheManager` call waits for the kernel to drop a cache before answering.
const INVALIDATE_WAIT: Duration = Duration::from_millis(500);

/// What the notifier thread is asked to drop.
pub(super) enum Inval {
    Inode(u64),
    Entry(u64, bytes::Bytes),
}

pub(super) type InvalQueue = std::sync::mpsc::Sender<(Vec<Inval>, tokio::sync::oneshot::Sender<()>)>;

/// Starts the thread that has the kernel drop what `Inval`s name, through `notifier`.
pub(super) fn start_invalidator(notifier: fuser::Notifier) -> std::io::Result<InvalQueue> {
    let (tx, rx) = std::sync::mpsc::channel::<(Vec<Inval>, tokio::sync::oneshot::Sender<()>)>();
    std::thread::Builder::new().name("pxfs-inval".into()).spawn(move || {
        for (work, done) in rx {
            for w in work {
                // ENOENT: the kernel no longer has it cached; nothing to drop.
                let _ = match w {
                    Inval::Inode(ino) => notifier.inval_inode(INodeNo(ino), 0, 0),
                    Inval::Entry(parent, name) => notifier.inval_entry(INodeNo(parent), OsStr::from_bytes(&name)),
                };
            }
            let _ = done.send(());
        }
    })?;
    Ok(tx)
}

/// This node's answer to an owner's revocation: drop what the kernel caches of those files
/// and names, then say so (or after INVALIDATE_WAIT, whichever is first).
pub(super) struct CacheManagerServant {
    pub(super) inodes: Arc<RwLock<Inodes>>,
    pub(super) cache: Arc<AttrCache>,
    pub(super) holder: Arc<Holder>,
    pub(super) queue: Mutex<InvalQueue>,
}

#[ssi_orb::async_trait]
impl CacheManager for CacheManagerServant {
    async fn invalidate(&self, _ctx: &ssi_orb::CallCtx, req: InvalidateReq) -> Result<Empty, ssi_orb::Exception> {
        let work: Vec<Inval> = {
            let t = self.inodes.read();
            let ino = |h: &Bytes| t.by_fid.get(&(req.volume, h.clone())).copied();
            let mut w: Vec<Inval> = req.inodes.iter().filter_map(ino).map(Inval::Inode).collect();
            w.extend(req.entries.iter().filter_map(|e| ino(&e.parent).map(|p| Inval::Entry(p, e.name.clone()))));
            w
        };
        let changed: HashSet<u64> = work
            .iter()
            .map(|w| match w {
                Inval::Inode(i) | Inval::Entry(i, _) => *i,
            })
            .collect();
        self.cache.revoke(&changed);
        if work.is_empty() {
            return Ok(Empty {});
        }
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.queue.lock().send((work, done)).is_ok() {
            let _ = tokio::time::timeout(INVALIDATE_WAIT, wait).await;
        }
        Ok(Empty {})
    }

    async fn recall(&self, _ctx: &ssi_orb::CallCtx, req: RecallReq) -> Result<HeldLocks, ssi_orb::Exception> {
        Ok(self.holder.recall(req.volume, req.handle, req.epoch).await)
    }
}
