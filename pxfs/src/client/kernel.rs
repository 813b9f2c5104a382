//! The kernel's side: fuser's `Filesystem`, each request handed to the client's operations
//! (`names`, `files`) or answered here.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use super::convert::{caller, creds, fid, file_attr, reply_empty, syn_attr};
use super::namespace::join;
use super::{Client, OpenDir, TTL};
use crate::owners::{errno_of, invoke};
use crate::proto::*;

impl Filesystem for Client {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_LOCKS);
        // Large sequential reads: as much readahead as the kernel allows (see also
        // `set_readahead` after mounting, for the mount's own limit).
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.lookup_k(req, parent, name, reply)
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if self.inodes.write().forget(ino.0, nlookup).is_some() {
            self.cache.drop_inode(ino.0);
            self.locked.lock().remove(&ino.0);
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some(a) = self.cache.dir(ino.0) {
            return reply.attr(&TTL, &file_attr(ino.0, &a));
        }
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        if let Some((sv, spath)) = self.syn(vol, &h) {
            return match self.rt.block_on(sv.provider.attr(&spath, &caller(req))) {
                Ok(a) => reply.attr(&Duration::ZERO, &syn_attr(ino.0, &a)),
                Err(e) => reply.error(Errno::from_i32(e)),
            };
        }
        if let Some(a) = self.holder.attr(vol, &h) {
            return reply.attr(&TTL, &file_attr(ino.0, &a));
        }
        or_reply!(reply, self.settle(vol, &h));
        let (owners, holder, who) = (self.owners.clone(), self.holder.clone(), Some(creds(req)));
        self.answer(async move {
            match invoke(&owners, vol, who, |s| {
                let r = Fid { handle: h.clone() };
                async move { s.get_attr(r).await }
            })
            .await
            {
                Ok(a) => {
                    holder.note_attr(vol, &h, &a);
                    reply.attr(&TTL, &file_attr(ino.0, &a))
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        or_reply!(reply, self.settle(vol, &h));
        let ts = |t: Option<TimeOrNow>| {
            t.map(|t| match t {
                TimeOrNow::Now => TimeSet { now: true, ns: 0 },
                TimeOrNow::SpecificTime(st) => TimeSet {
                    now: false,
                    ns: match st.duration_since(UNIX_EPOCH) {
                        Ok(d) => d.as_nanos() as i64,
                        Err(e) => -(e.duration().as_nanos() as i64),
                    },
                },
            })
        };
        let r = SetAttrReq { fid: fid(&h), mode, uid, gid, size, atime: ts(atime), mtime: ts(mtime), fh: fh.map(|f| f.0).unwrap_or(0) };
        // Attributes change; extended attributes do not (a chown may strip a capability, but
        // never adds one: "absent" stays true).
        self.cache.forget_dir(ino.0);
        match self.call(vol, Some(creds(req)), |s| {
            let r = r.clone();
            async move { s.set_attr(r).await }
        }) {
            Ok(a) => {
                self.holder.note_attr(vol, &h, &a);
                reply.attr(&TTL, &file_attr(ino.0, &a))
            }
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        match self.call(vol, Some(creds(req)), |s| {
            let r = Fid { handle: h.clone() };
            async move { s.readlink(r).await }
        }) {
            Ok(d) => reply.data(&d.data),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        self.new_entry(req, parent, name, false, reply, move |s, p, n| {
            let r = MknodReq { parent: p, name: n, mode, umask, rdev };
            async move { s.mknod(r).await }
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        self.new_entry(req, parent, name, true, reply, move |s, p, n| {
            let r = MknodReq { parent: p, name: n, mode, umask, rdev: 0 };
            async move { s.mkdir(r).await }
        });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let Some(t) = target.to_str().map(str::to_string) else { return reply.error(Errno::EINVAL) };
        self.new_entry(req, parent, link_name, false, reply, move |s, p, n| {
            let r = SymlinkReq { parent: p, name: n, target: t.clone() };
            async move { s.symlink(r).await }
        });
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        match self.node(newparent.0) {
            Ok((v2, _, _)) if v2 != vol => return reply.error(Errno::EXDEV),
            Err(e) => return reply.error(e),
            _ => {}
        }
        self.new_entry(req, newparent, newname, false, reply, move |s, p, n| {
            let r = LinkReq { fid: fid(&h), newparent: p, newname: n };
            async move { s.link(r).await }
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.unlink_like(req, parent, name, false, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.unlink_like(req, parent, name, true, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(name), Some(newname)) = (name.to_str(), newname.to_str()) else { return reply.error(Errno::EINVAL) };
        let ((v1, h1, p1), (v2, h2, p2)) = match (self.node(parent.0), self.node(newparent.0)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        if self.mounts.crossing(&join(&p1, name)).is_some() || self.mounts.crossing(&join(&p2, newname)).is_some() {
            return reply.error(Errno::EBUSY);
        }
        if v1 != v2 {
            return reply.error(Errno::EXDEV);
        }
        let r = RenameReq { parent: fid(&h1), name: name.into(), newparent: fid(&h2), newname: newname.into(), flags: flags.bits() };
        // The moved (or replaced) file changes too, and it has no inode number here.
        self.cache.clear();
        let t = self.cache.ticket();
        let r = self.call(v1, Some(creds(req)), |s| {
            let r = r.clone();
            async move { s.rename(r).await }
        });
        if let Ok(c) = &r {
            self.dir_changed(t, parent.0, c.parent);
            self.dir_changed(t, newparent.0, c.newparent);
        }
        reply_empty(reply, r)
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.open_k(req, ino, flags, reply)
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        self.create_k(req, parent, name, mode, umask, flags, reply)
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _f: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.read_k(ino, fh, offset, size, reply)
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _f: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.write_k(ino, fh, offset, data, reply)
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        self.flush_k(ino, fh, lock_owner, reply)
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _f: OpenFlags,
        _lo: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_k(ino, fh, reply)
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        // Held: the buffered writes and the fsync go in one invocation.
        match self.rt.block_on(self.holder.settle(vol, &h, Some((fh.0, datasync)))) {
            Ok(true) => return reply.ok(),
            Ok(false) => {}
            Err(e) => return reply.error(errno_of(&e)),
        }
        // Returns once the owner's fsync(2) has: the data is on the owner's disk.
        reply_empty(
            reply,
            self.call(vol, None, |s| {
                let r = FhReq { fh: fh.0, datasync, lock_owner: 0, surrender: 0 };
                async move { s.fsync(r).await }
            }),
        )
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // The kernel checked read permission (default_permissions); the owner checks again
        // at the listing, as the caller.
        let dh = self.next_dh.fetch_add(1, Relaxed);
        self.dirs.lock().insert(dh, OpenDir::Unlisted(ino.0));
        reply.opened(FileHandle(dh), FopenFlags::empty());
    }

    fn readdir(&self, req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectory) {
        self.readdir_k(req, fh, offset, reply)
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.dirs.lock().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        reply_empty(
            reply,
            self.call(vol, Some(creds(req)), |s| {
                let r = Fid { handle: h.clone() };
                async move { s.fsync_dir(r).await }
            }),
        )
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        if self.synthetic.contains_key(&vol) {
            return reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
        }
        match self.call(vol, Some(creds(req)), |s| {
            let r = Fid { handle: h.clone() };
            async move { s.stat_fs(r).await }
        }) {
            Ok(s) => reply.statfs(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, value: &[u8], flags: i32, _position: u32, reply: ReplyEmpty) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        self.cache.forget(ino.0);
        let r = XattrReq { fid: fid(&h), name: name.to_string_lossy().into(), size: 0, value: Bytes::copy_from_slice(value), flags };
        reply_empty(
            reply,
            self.call(vol, Some(creds(req)), |s| {
                let r = r.clone();
                async move { s.set_xattr(r).await }
            }),
        )
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.to_string_lossy();
        if self.cache.xattr_absent(ino.0, &name) || self.node(ino.0).is_ok_and(|(v, _, _)| self.synthetic.contains_key(&v)) {
            return reply.error(Errno::ENODATA);
        }
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        let r = XattrReq { fid: fid(&h), name: name.to_string(), size, value: Bytes::new(), flags: 0 };
        let t = self.cache.ticket();
        match self.call(vol, Some(creds(req)), |s| {
            let r = r.clone();
            async move { s.get_xattr(r).await }
        }) {
            Ok(d) if size == 0 => reply.size(d.size),
            Ok(d) => reply.data(&d.data),
            Err(e) => {
                if e == Errno::ENODATA {
                    self.cache.put_xattr_absent(t, ino.0, &name);
                }
                reply.error(e)
            }
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        if self.synthetic.contains_key(&vol) {
            return if size == 0 { reply.size(0) } else { reply.data(&[]) };
        }
        let r = XattrReq { fid: fid(&h), name: String::new(), size, value: Bytes::new(), flags: 0 };
        match self.call(vol, Some(creds(req)), |s| {
            let r = r.clone();
            async move { s.list_xattr(r).await }
        }) {
            Ok(d) if size == 0 => reply.size(d.size),
            Ok(d) => reply.data(&d.data),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        self.cache.forget(ino.0);
        let r = XattrReq { fid: fid(&h), name: name.to_string_lossy().into(), size: 0, value: Bytes::new(), flags: 0 };
        reply_empty(
            reply,
            self.call(vol, Some(creds(req)), |s| {
                let r = r.clone();
                async move { s.remove_xattr(r).await }
            }),
        )
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        if self.synthetic.contains_key(&vol) {
            // Read-only; reads are checked by the provider as the caller.
            return if mask.bits() & libc::W_OK != 0 { reply.error(Errno::EROFS) } else { reply.ok() };
        }
        reply_empty(
            reply,
            self.call(vol, Some(creds(req)), |s| {
                let r = AccessReq { fid: fid(&h), mask: mask.bits() };
                async move { s.access(r).await }
            }),
        )
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lo: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        self.locked.lock().insert(ino.0);
        match self.holder.get_lock(vol, &h, lo.0, typ, start, end) {
            Some(Some(l)) => return reply.locked(l.start, l.end, l.typ, l.pid),
            Some(None) => return reply.locked(start, end, crate::locks::F_UNLCK, 0),
            None => {}
        }
        let r = LockReq { fid: fid(&h), owner: lo.0, pid, typ, start, end, wait: false };
        match self.call(vol, None, |s| {
            let r = r.clone();
            async move { s.get_lk(r).await }
        }) {
            Ok(l) => reply.locked(l.start, l.end, l.typ, l.pid),
            Err(e) => reply.error(e),
        }
    }

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lo: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        self.setlk_k(ino, lo, start, end, typ, pid, sleep, reply)
    }
}
