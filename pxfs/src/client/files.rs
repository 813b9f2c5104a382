//! Open files: open, create, read, write, flush, release, and byte-range locks.

use std::ffi::OsStr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use fuser::{
    Errno, FileHandle, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags, ReplyCreate, ReplyData, ReplyEmpty, ReplyOpen, ReplyWrite,
    Request,
};
use ssi_orb::CallOptions;

use super::convert::{caller, creds, fid, file_attr, reply_empty};
use super::namespace::join;
use super::{Client, LOCK_WAIT, TTL};
use crate::holder::Buffered;
use crate::locks::{Lock, SetError};
use crate::owners::{errno_of, invoke};
use crate::proto::*;

impl Client {
    pub(super) fn open_k(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        if let Some((sv, spath)) = self.syn(vol, &h) {
            if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
                return reply.error(Errno::EROFS);
            }
            let data = or_reply!(reply, self.rt.block_on(sv.provider.read(&spath, &caller(req))).map_err(Errno::from_i32));
            let fh = self.next_dh.fetch_add(1, Relaxed) | (1 << 63);
            self.syn_files.lock().insert(fh, Arc::new(data));
            // Not through the page cache: the size is not known before reading.
            return reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
        }
        let (owners, holder, cache, who) = (self.owners.clone(), self.holder.clone(), self.cache.clone(), Some(creds(req)));
        let t = self.cache.ticket();
        self.answer(async move {
            match invoke(&owners, vol, who, |s| {
                let r = OpenReq { fid: fid(&h), flags: flags.0 };
                async move { s.open(r).await }
            })
            .await
            {
                // Page cache under the owner's token, kept across opens while the data's
                // version is the one the pages were read at.
                Ok(o) => {
                    holder.opened(vol, &h, o.exclusive).await;
                    let keep = o.attr.as_ref().is_some_and(|a| cache.keep_data(t, ino.0, a.into()));
                    reply.opened(FileHandle(o.fh), if keep { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() })
                }
                Err(e) => reply.error(e),
            }
        });
    }

    // The kernel request's fields, as fuser hands them over.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_k(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let Some(name) = name.to_str() else { return reply.error(Errno::EINVAL) };
        let (vol, h, path) = or_reply!(reply, self.node(parent.0));
        let child = join(&path, name);
        if self.mounts.crossing(&child).is_some() {
            return reply.error(Errno::EISDIR);
        }
        let r = CreateReq { parent: fid(&h), name: name.into(), mode, umask, flags };
        let t = self.changing_dir(parent.0);
        let (owners, holder, cache, inodes, who, name) =
            (self.owners.clone(), self.holder.clone(), self.cache.clone(), self.inodes.clone(), Some(creds(req)), name.to_string());
        self.answer(async move {
            match invoke(&owners, vol, who, |s| {
                let r = r.clone();
                async move { s.create(r).await }
            })
            .await
            {
                Ok(CreateReply { entry: Some(Entry { fid: Some(f), attr: Some(a), parent: dir }), fh, exclusive }) => {
                    if let Some(d) = dir {
                        cache.put_dir(t, parent.0, d);
                    }
                    holder.opened(vol, &f.handle, exclusive).await;
                    holder.note_attr(vol, &f.handle, &a);
                    let ino = inodes.write().remember(vol, f.handle, child);
                    cache.name_changed(parent.0, &name, true);
                    // A new file has no capabilities; the kernel asks before its first write.
                    cache.put_xattr_absent(t, ino, "security.capability");
                    reply.created(&TTL, &file_attr(ino, &a), Generation(0), FileHandle(fh), FopenFlags::empty());
                }
                Ok(_) => reply.error(Errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    pub(super) fn read_k(&self, ino: INodeNo, fh: FileHandle, offset: u64, size: u32, reply: ReplyData) {
        if let Some(d) = self.syn_files.lock().get(&fh.0) {
            let start = (offset as usize).min(d.len());
            return reply.data(&d[start..(start + size as usize).min(d.len())]);
        }
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        or_reply!(reply, self.settle(vol, &h));
        if self.volumes.get(&vol).is_some_and(|v| v.node == self.orb.node()) {
            match self.local.read(vol, fh.0, self.orb.node(), offset, size) {
                Some(Ok(d)) => return reply.data(&d),
                Some(Err(e)) => return reply.error(Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))),
                None => {}
            }
        }
        let owners = self.owners.clone();
        self.answer(async move {
            match invoke(&owners, vol, None, |s| {
                let r = ReadReq { fh: fh.0, offset, size };
                async move { s.read(r).await }
            })
            .await
            {
                Ok(d) => reply.data(&d.data),
                Err(e) => reply.error(e),
            }
        });
    }

    pub(super) fn write_k(&self, ino: INodeNo, fh: FileHandle, offset: u64, data: &[u8], reply: ReplyWrite) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        // Under an exclusive token small writes wait here until something needs them.
        match self.holder.write(&self.rt, vol, &h, fh.0, offset, data) {
            Ok(Buffered::Yes) => return reply.written(data.len() as u32),
            Ok(Buffered::No) => {}
            Err(e) => return reply.error(errno_of(&e)),
        }
        let data = Bytes::copy_from_slice(data);
        let owners = self.owners.clone();
        self.answer(async move {
            match invoke(&owners, vol, None, |s| {
                let r = WriteReq { fh: fh.0, offset, data: data.clone() };
                async move { s.write(r).await }
            })
            .await
            {
                Ok(w) => reply.written(w.written),
                Err(e) => reply.error(e),
            }
        });
    }

    pub(super) fn flush_k(&self, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        if self.syn_files.lock().contains_key(&fh.0) {
            return reply.ok();
        }
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        // Close-to-open: what this node buffered reaches the owner by the close; errors of
        // the write-back are the close's.
        match self.holder.closing(&self.rt, vol, &h, lock_owner.0) {
            Ok(true) => return reply.ok(),
            Ok(false) => {}
            Err(e) => return reply.error(errno_of(&e)),
        }
        if !self.locked.lock().contains(&ino.0) {
            return reply.ok();
        }
        reply_empty(
            reply,
            self.call(vol, None, |s| {
                let r = FhReq { fh: fh.0, datasync: false, lock_owner: lock_owner.0, surrender: 0 };
                async move { s.flush(r).await }
            }),
        )
    }

    pub(super) fn release_k(&self, ino: INodeNo, fh: FileHandle, reply: ReplyEmpty) {
        if self.syn_files.lock().remove(&fh.0).is_some() {
            return reply.ok();
        }
        // One-way: the owner closes its descriptor; nobody waits for that.
        if let Ok((vol, h, _)) = self.node(ino.0) {
            let surrender = self.holder.released(&self.rt, vol, &h).unwrap_or_else(|e| {
                tracing::error!(error = %e, "write-back at release failed");
                0
            });
            let r = FhReq { fh: fh.0, datasync: false, lock_owner: 0, surrender };
            let _ = self.rt.block_on(async move {
                match self.owners.stub(vol).await {
                    Ok(s) => s.release(r).await,
                    Err(e) => Err(e),
                }
            });
        }
        reply.ok();
    }

    // The kernel request's fields, as fuser hands them over.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn setlk_k(&self, ino: INodeNo, lo: LockOwner, start: u64, end: u64, typ: i32, pid: u32, sleep: bool, reply: ReplyEmpty) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        self.locked.lock().insert(ino.0);
        let local = Lock { node: 0, owner: lo.0, pid, typ, start, end };
        match self.holder.set_lock(&self.rt, vol, &h, local, sleep) {
            Some(Ok(())) => return reply.ok(),
            Some(Err(SetError::Conflict)) => return reply.error(Errno::EAGAIN),
            Some(Err(SetError::TimedOut)) => return reply.error(Errno::EINTR),
            None => {}
        }
        let r = LockReq { fid: fid(&h), owner: lo.0, pid, typ, start, end, wait: sleep };
        if !sleep {
            return reply_empty(
                reply,
                self.call(vol, None, |s| {
                    let r = r.clone();
                    async move { s.set_lk(r).await }
                }),
            );
        }
        // F_SETLKW: wait in a task, not in this FUSE thread. The wait for the holder is not a
        // cost of the request-response: the tracer leaves the call out of its stages.
        let stub = match self.rt.block_on(self.owners.stub(vol)) {
            Ok(s) => s.with_options(CallOptions::default().deadline(LOCK_WAIT).waiting()),
            Err(e) => return reply.error(errno_of(&e)),
        };
        self.rt.spawn(async move {
            reply_empty(reply, stub.set_lk(r).await.map_err(|e| errno_of(&e)));
        });
    }
}
