//! Open files: open, create, read, write, flush, release, fsync, and byte-range locks.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use ssi_orb::proto::Creds;
use ssi_orb::CallOptions;

use super::convert::fid;
use super::namespace::join;
use super::passthrough::Passthrough;
use super::{caller_of, Answer, Backing, Client, Opened, LOCK_WAIT};
use crate::errno::Errno;
use crate::holder::Buffered;
use crate::locks::{Lock, SetError};
use crate::owners::{errno_of, invoke};
use crate::proto::*;
use crate::server::LocalVolumes;

/// A byte-range lock as fcntl(2) states it: who asks (the kernel's lock owner and the
/// process), the type (F_RDLCK, F_WRLCK, F_UNLCK) and the range `start..=end`.
#[derive(Clone, Copy)]
pub(super) struct LockAsk {
    pub owner: u64,
    pub pid: u32,
    pub typ: i32,
    pub start: u64,
    pub end: u64,
}

/// The backing file for a passthrough open of `ino` (file `h` of volume `vol`), or None:
/// then the open is an ordinary one.
fn backing(local: &LocalVolumes, table: &Arc<Passthrough>, vol: u32, ino: u64, h: &Bytes) -> Option<Backing> {
    match local.backing_file(vol, h) {
        Some(Ok(file)) => Some(Backing { ino, file, table: table.clone() }),
        other => {
            if let Some(Err(e)) = other {
                tracing::debug!(ino, error = %e, "no backing file: an ordinary open");
            }
            table.demote(ino);
            None
        }
    }
}

impl Client {
    pub(super) fn open(&self, who: Creds, ino: u64, flags: i32) -> Answer<Opened> {
        let (vol, h, _) = now_or!(self.node(ino));
        if let Some((sv, spath)) = self.syn(vol, &h) {
            if flags & libc::O_ACCMODE != libc::O_RDONLY {
                return Answer::Now(Err(Errno::EROFS));
            }
            let data = match self.rt.block_on(sv.provider.read(&spath, &caller_of(&who))) {
                Ok(d) => d,
                Err(e) => return Answer::Now(Err(Errno::from_i32(e))),
            };
            let fh = self.next_dh.fetch_add(1, Relaxed) | (1 << 63);
            self.syn_files.lock().insert(fh, Arc::new(data));
            // Not through the page cache: the size is not known before reading.
            return Answer::Now(Ok(Opened { fh, keep_cache: false, direct_io: true, backing: None }));
        }
        let (owners, holder, cache) = (self.owners.clone(), self.holder.clone(), self.cache.clone());
        let t = self.cache.ticket();
        let passthrough = self.passthrough.begin(ino, self.local.serves(vol));
        let (table, local) = (self.passthrough.clone(), self.local.clone());
        Answer::Later(Box::pin(async move {
            let o = invoke(&owners, vol, Some(who), |s| {
                let r = OpenReq { fid: fid(&h), flags, passthrough };
                async move { s.open(r).await }
            })
            .await
            .inspect_err(|_| {
                table.end(ino, passthrough);
            })?;
            holder.opened(vol, &h, o.exclusive).await;
            if passthrough {
                let backing = backing(&local, &table, vol, ino, &h);
                return Ok(Opened { fh: o.fh, keep_cache: false, direct_io: false, backing });
            }
            // Page cache under the owner's token, kept across opens while the data's version
            // is the one the pages were read at; none while the owner's node writes it
            // through passthrough.
            let uncached = o.attr.as_ref().is_some_and(|a| a.uncached);
            let keep_cache = !uncached && o.attr.as_ref().is_some_and(|a| cache.keep_data(t, ino, a.into()));
            Ok(Opened { fh: o.fh, keep_cache, direct_io: uncached, backing: None })
        }))
    }

    /// open(2) with O_CREAT of `name` in `parent`: the new file's inode, attributes and open.
    pub(super) fn create(&self, who: Creds, parent: u64, name: &[u8], mode: u32, umask: u32, flags: i32) -> Answer<(u64, Attr, Opened)> {
        let (vol, h, path) = now_or!(self.node(parent));
        let child = join(&path, name);
        if self.mounts.crossing(&child).is_some() {
            return Answer::Now(Err(Errno::EISDIR));
        }
        let passthrough = self.local.serves(vol);
        let r = CreateReq { parent: fid(&h), name: Bytes::copy_from_slice(name), mode, umask, flags, passthrough };
        let t = self.changing_dir(parent);
        let (owners, holder, cache, inodes, name) =
            (self.owners.clone(), self.holder.clone(), self.cache.clone(), self.inodes.clone(), Bytes::copy_from_slice(name));
        let (table, local) = (self.passthrough.clone(), self.local.clone());
        Answer::Later(Box::pin(async move {
            let reply = invoke(&owners, vol, Some(who), |s| {
                let r = r.clone();
                async move { s.create(r).await }
            })
            .await?;
            let CreateReply { entry: Some(Entry { fid: Some(f), attr: Some(a), parent: dir }), fh, exclusive } = reply else {
                return Err(Errno::EIO);
            };
            if let Some(d) = dir {
                cache.put_dir(t, parent, d);
            }
            holder.opened(vol, &f.handle, exclusive).await;
            holder.note_attr(vol, &f.handle, &a);
            let ino = inodes.write().remember(vol, f.handle.clone(), child, Some(a.ino));
            cache.name_changed(parent, &name, true);
            // A new file has no capabilities; the kernel asks before its first write.
            cache.put_xattr_absent(t, ino, "security.capability");
            // The server was told before the inode was known; an open of the file that
            // already exists here in cached mode keeps this one out of passthrough.
            let backing = if table.begin(ino, passthrough) { backing(&local, &table, vol, ino, &f.handle) } else { None };
            Ok((ino, a, Opened { fh, keep_cache: false, direct_io: false, backing }))
        }))
    }

    pub(super) fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Answer<Bytes> {
        if let Some(d) = self.syn_files.lock().get(&fh) {
            let start = (offset as usize).min(d.len());
            return Answer::Now(Ok(Bytes::copy_from_slice(&d[start..(start + size as usize).min(d.len())])));
        }
        let vol = now_or!(self.node(ino).and_then(|(vol, h, _)| self.settle(vol, &h).map(|()| vol)));
        if self.volumes.get(&vol).is_some_and(|v| v.node == self.orb.node()) {
            match self.local.read(vol, fh, self.orb.node(), offset, size) {
                Some(Ok(d)) => return Answer::Now(Ok(d.into())),
                Some(Err(e)) => return Answer::Now(Err(e.into())),
                None => {}
            }
        }
        let owners = self.owners.clone();
        Answer::Later(Box::pin(async move {
            let d = invoke(&owners, vol, None, |s| {
                let r = ReadReq { fh, offset, size };
                async move { s.read(r).await }
            })
            .await?;
            Ok(d.data)
        }))
    }

    pub(super) fn write(&self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> Answer<u32> {
        let (vol, h, _) = now_or!(self.node(ino));
        // Under an exclusive token small writes wait here until something needs them.
        match self.holder.write(&self.rt, vol, &h, fh, offset, data) {
            Ok(Buffered::Yes) => return Answer::Now(Ok(data.len() as u32)),
            Ok(Buffered::No) => {}
            Err(e) => return Answer::Now(Err(errno_of(&e))),
        }
        let data = Bytes::copy_from_slice(data);
        let owners = self.owners.clone();
        Answer::Later(Box::pin(async move {
            let w = invoke(&owners, vol, None, |s| {
                let r = WriteReq { fh, offset, data: data.clone() };
                async move { s.write(r).await }
            })
            .await?;
            Ok(w.written)
        }))
    }

    /// A close of a descriptor (the file may stay open through others).
    pub(super) fn flush(&self, ino: u64, fh: u64, lock_owner: u64) -> Result<(), Errno> {
        if self.syn_files.lock().contains_key(&fh) {
            return Ok(());
        }
        let (vol, h, _) = self.node(ino)?;
        // Close-to-open: what this node buffered reaches the owner by the close; errors of
        // the write-back are the close's.
        if self.holder.closing(&self.rt, vol, &h, lock_owner).map_err(|e| errno_of(&e))? {
            return Ok(());
        }
        if !self.locked.lock().contains(&ino) {
            return Ok(());
        }
        self.call(vol, None, |s| {
            let r = FhReq { fh, datasync: false, lock_owner, surrender: 0 };
            async move { s.flush(r).await }
        })
        .map(|_| ())
    }

    /// The file's last close on this node. One-way: the owner closes its descriptor;
    /// nobody waits for that.
    pub(super) fn release(&self, ino: u64, fh: u64) {
        if self.syn_files.lock().remove(&fh).is_some() {
            return;
        }
        let passthrough_ended = self.passthrough.released(ino, fh);
        if let Ok((vol, h, _)) = self.node(ino) {
            if passthrough_ended {
                self.holder.forget_attr(vol, &h);
            }
            let surrender = self.holder.released(&self.rt, vol, &h).unwrap_or_else(|e| {
                tracing::error!(error = %e, "write-back at release failed");
                0
            });
            let r = FhReq { fh, datasync: false, lock_owner: 0, surrender };
            let _ = self.rt.block_on(async move {
                match self.owners.stub(vol).await {
                    Ok(s) => s.release(r).await,
                    Err(e) => Err(e),
                }
            });
        }
    }

    /// Returns once the owner's fsync(2) has: the data is on the owner's disk.
    pub(super) fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> Result<(), Errno> {
        // Through passthrough the data is in this node's page cache of the file on its disk.
        // Its writes never met the server's fencing; the fsync that acknowledges them does
        // here: a node cut off from the majority (before or during the fsync) acknowledges
        // nothing.
        if let Some(f) = self.passthrough.file(fh) {
            let cut_off = || self.orb.fenced().map_or(Ok(()), |_| Err(Errno::EROFS));
            cut_off()?;
            crate::sys::fsync(f.as_raw_fd(), datasync)?;
            return cut_off();
        }
        let (vol, h, _) = self.node(ino)?;
        // Held: the buffered writes and the fsync go in one invocation.
        if self.rt.block_on(self.holder.settle(vol, &h, Some((fh, datasync)))).map_err(|e| errno_of(&e))? {
            return Ok(());
        }
        self.call(vol, None, |s| {
            let r = FhReq { fh, datasync, lock_owner: 0, surrender: 0 };
            async move { s.fsync(r).await }
        })
        .map(|_| ())
    }

    /// F_GETLK: the lock that would conflict with `ask`, or F_UNLCK over `ask`'s range.
    pub(super) fn getlk(&self, ino: u64, ask: LockAsk) -> Result<(u64, u64, i32, u32), Errno> {
        let (vol, h, _) = self.node(ino)?;
        self.locked.lock().insert(ino);
        match self.holder.get_lock(vol, &h, ask.owner, ask.typ, ask.start, ask.end) {
            Some(Some(l)) => return Ok((l.start, l.end, l.typ, l.pid)),
            Some(None) => return Ok((ask.start, ask.end, crate::locks::F_UNLCK, 0)),
            None => {}
        }
        let r = LockReq { fid: fid(&h), owner: ask.owner, pid: ask.pid, typ: ask.typ, start: ask.start, end: ask.end, wait: false };
        let l = self.call(vol, None, |s| {
            let r = r.clone();
            async move { s.get_lk(r).await }
        })?;
        Ok((l.start, l.end, l.typ, l.pid))
    }

    /// F_SETLK, or F_SETLKW when `sleep`: a waiting request is answered from a task, not
    /// from a FUSE thread. The wait for the holder is not a cost of the request-response:
    /// the tracer leaves the call out of its stages.
    pub(super) fn setlk(&self, ino: u64, ask: LockAsk, sleep: bool) -> Answer<()> {
        let (vol, h, _) = now_or!(self.node(ino));
        self.locked.lock().insert(ino);
        let local = Lock { node: 0, owner: ask.owner, pid: ask.pid, typ: ask.typ, start: ask.start, end: ask.end };
        match self.holder.set_lock(&self.rt, vol, &h, local, sleep) {
            Some(Ok(())) => return Answer::Now(Ok(())),
            Some(Err(SetError::Conflict)) => return Answer::Now(Err(Errno::EAGAIN)),
            Some(Err(SetError::TimedOut)) => return Answer::Now(Err(Errno::EINTR)),
            None => {}
        }
        let r = LockReq { fid: fid(&h), owner: ask.owner, pid: ask.pid, typ: ask.typ, start: ask.start, end: ask.end, wait: sleep };
        if !sleep {
            let done = self.call(vol, None, |s| {
                let r = r.clone();
                async move { s.set_lk(r).await }
            });
            return Answer::Now(done.map(|_| ()));
        }
        let stub = match self.rt.block_on(self.owners.stub(vol)) {
            Ok(s) => s.with_options(CallOptions::default().deadline(LOCK_WAIT).waiting()),
            Err(e) => return Answer::Now(Err(errno_of(&e))),
        };
        Answer::Later(Box::pin(async move { stub.set_lk(r).await.map(|_| ()).map_err(|e| errno_of(&e)) }))
    }
}
