//! The fuser adapter: each kernel request's arguments turned into plain values, handed to
//! the client's operation (`names`, `files`, `attrs`), and its result turned into the reply.
//! Nothing here decides what is cached or where a request goes. The operations share the
//! requests' names: inside `impl Filesystem`, `self.lookup(..)` is `Client`'s own (inherent
//! methods come first).
//!
//! An operation that ends with an invocation answers `Answer::Later`: the reply is sent
//! from the runtime thread that received the result, sparing a FUSE thread's wake per
//! request (a reply is a write to /dev/fuse; it never waits on the mount, so the runtime may
//! make it).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use bytes::Bytes;

use super::attrs::AttrChange;
use super::convert::{creds, dtype_kind, file_attr, syn_attr};
use super::files::LockAsk;
use super::{Answer, Attrs, Client, Found, Opened, XattrAnswer, TTL};
use crate::errno::Errno;
use crate::proto::{Attr, MknodReq, SymlinkReq, TimeSet};

/// A reply that can carry an errno.
trait Fails: Send + 'static {
    fn fail(self, e: Errno);
}

macro_rules! fails {
    ($($t:ty),*) => {$(
        impl Fails for $t {
            fn fail(self, e: Errno) {
                self.error(fuser::Errno::from_i32(e.0))
            }
        }
    )*};
}
fails!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyEmpty,
    ReplyEntry,
    ReplyLock,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr
);

impl Client {
    /// Sends the reply `ok` makes of the operation's result, or its errno, now or once the
    /// result comes (`ok` must not block).
    fn reply<T: Send + 'static, R: Fails>(&self, a: impl Into<Answer<T>>, reply: R, ok: impl FnOnce(R, T) + Send + 'static) {
        match a.into() {
            Answer::Now(Ok(t)) => ok(reply, t),
            Answer::Now(Err(e)) => reply.fail(e),
            Answer::Later(f) => {
                self.rt.spawn(async move {
                    match f.await {
                        Ok(t) => ok(reply, t),
                        Err(e) => reply.fail(e),
                    }
                });
            }
        }
    }
}

/// The kernel's attributes of `ino`, and how long it may keep them.
fn kernel_attr(ino: u64, a: &Attrs) -> (Duration, FileAttr) {
    match a {
        Attrs::Volume(a) => (ttl(a), file_attr(ino, a)),
        Attrs::Synthetic(a) => (Duration::ZERO, syn_attr(ino, a)),
    }
}

/// How long the kernel may keep a volume file's attributes: until a callback, or not at all
/// while the owner's node writes the file through passthrough.
fn ttl(a: &Attr) -> Duration {
    if a.uncached {
        Duration::ZERO
    } else {
        TTL
    }
}

/// Replies to an open: through passthrough, backed by the file on this node's disk, or an
/// ordinary open.
fn opened(
    o: Opened,
    open_backing: impl FnOnce(&std::os::fd::OwnedFd) -> io::Result<BackingId>,
) -> (FileHandle, FopenFlags, Option<Arc<BackingId>>) {
    let mut f = FopenFlags::empty();
    if let Some(b) = o.backing {
        if let Some(id) = b.table.backing(b.ino, b.file, open_backing) {
            b.table.opened(b.ino, o.fh);
            return (FileHandle(o.fh), f, Some(id));
        }
    }
    if o.keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if o.direct_io {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    (FileHandle(o.fh), f, None)
}

fn entry(reply: ReplyEntry, f: Found) {
    match f {
        Found::Entry { ino, attrs } => {
            let (ttl, a) = kernel_attr(ino, &attrs);
            reply.entry(&ttl, &a, Generation(0))
        }
        // A negative entry: cached by the kernel under the directory's token.
        Found::Absent => reply.entry(&TTL, &file_attr(0, &Attr::default()), Generation(0)),
    }
}

fn xattr(reply: ReplyXattr, x: XattrAnswer) {
    match x {
        XattrAnswer::Size(n) => reply.size(n),
        XattrAnswer::Data(d) => reply.data(&d),
    }
}

fn time_set(t: Option<TimeOrNow>) -> Option<TimeSet> {
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
}

/// A name as PXFS carries it: its bytes, or ENAMETOOLONG past NAME_MAX (255 bytes), as a
/// local file system answers (the kernel passes FUSE names of up to 1024).
fn name_of(name: &OsStr) -> Result<&[u8], Errno> {
    if name.len() > crate::sys::NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(name.as_bytes())
}

impl Filesystem for Client {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_LOCKS);
        // A read checks the file's attributes when they have expired, and drops the pages
        // if its size or mtime changed: how a node reads at once what the owner writes
        // through passthrough (such files' attributes expire at once; see `kernel_attr`).
        let _ = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA);
        // Passthrough (never with FUSE_WRITEBACK_CACHE, which the kernel does not mix with
        // it); the backing files may be on a stacked file system (overlayfs).
        let stack = config.set_max_stack_depth(2).or_else(|max| config.set_max_stack_depth(max));
        match (config.add_capabilities(InitFlags::FUSE_PASSTHROUGH), stack) {
            (Ok(()), Ok(_)) => {
                self.passthrough.enable();
                tracing::info!("FUSE passthrough on: this node's opens of its own volumes' files go to its disk");
            }
            _ => tracing::info!("FUSE passthrough off: the kernel does not offer it; every open goes through this daemon"),
        }
        // Large sequential reads: as much readahead as the kernel allows (see also
        // `set_readahead` after mounting, for the mount's own limit).
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match name_of(name) {
            Ok(name) => self.reply(self.lookup(creds(req), parent.0, name), reply, entry),
            Err(e) => reply.fail(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.reply(self.getattr(creds(req), ino.0), reply, move |r, a| {
            let (ttl, a) = kernel_attr(ino.0, &a);
            r.attr(&ttl, &a)
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
        let c = AttrChange { mode, uid, gid, size, atime: time_set(atime), mtime: time_set(mtime), fh: fh.map_or(0, |f| f.0) };
        self.reply(self.setattr(creds(req), ino.0, c), reply, move |r, a| r.attr(&ttl(&a), &file_attr(ino.0, &a)));
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.reply(self.readlink(creds(req), ino.0), reply, |r, d| r.data(&d));
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let made = name_of(name).map(|name| {
            self.new_entry(creds(req), parent.0, name, false, move |s, p, n| {
                let r = MknodReq { parent: p, name: n, mode, umask, rdev };
                async move { s.mknod(r).await }
            })
        });
        self.reply(made, reply, entry);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let made = name_of(name).map(|name| {
            self.new_entry(creds(req), parent.0, name, true, move |s, p, n| {
                let r = MknodReq { parent: p, name: n, mode, umask, rdev: 0 };
                async move { s.mkdir(r).await }
            })
        });
        self.reply(made, reply, entry);
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let t = Bytes::copy_from_slice(target.as_os_str().as_bytes());
        let made = name_of(link_name).map(|name| {
            self.new_entry(creds(req), parent.0, name, false, move |s, p, n| {
                let r = SymlinkReq { parent: p, name: n, target: t.clone() };
                async move { s.symlink(r).await }
            })
        });
        self.reply(made, reply, entry);
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let made = name_of(newname).map(|name| self.link(creds(req), ino.0, newparent.0, name));
        self.reply(made, reply, entry);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let done = name_of(name).map(|name| self.unlink(creds(req), parent.0, name, false));
        self.reply(done, reply, |r, ()| r.ok());
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let done = name_of(name).map(|name| self.unlink(creds(req), parent.0, name, true));
        self.reply(done, reply, |r, ()| r.ok());
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
        let done = name_of(name).and_then(|n| self.rename(creds(req), parent.0, n, newparent.0, name_of(newname)?, flags.bits()));
        self.reply(done, reply, |r, ()| r.ok());
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.reply(self.open(creds(req), ino.0, flags.0), reply, |r, o| match opened(o, |fd| r.open_backing(fd)) {
            (fh, f, Some(id)) => r.opened_passthrough(fh, f, &id),
            (fh, f, None) => r.opened(fh, f),
        });
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let made = name_of(name).map(|name| self.create(creds(req), parent.0, name, mode, umask, flags));
        self.reply(made, reply, |r, (ino, a, o)| match opened(o, |fd| r.open_backing(fd)) {
            (fh, f, Some(id)) => r.created_passthrough(&ttl(&a), &file_attr(ino, &a), Generation(0), fh, f, &id),
            (fh, f, None) => r.created(&ttl(&a), &file_attr(ino, &a), Generation(0), fh, f),
        });
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
        self.reply(self.read(ino.0, fh.0, offset, size), reply, |r, d| r.data(&d));
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
        self.reply(self.write(ino.0, fh.0, offset, data), reply, |r, n| r.written(n));
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        self.reply(self.flush(ino.0, fh.0, lock_owner.0), reply, |r, ()| r.ok());
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
        self.release(ino.0, fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.reply(self.fsync(ino.0, fh.0, datasync), reply, |r, ()| r.ok());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(self.opendir(ino.0)), FopenFlags::empty());
    }

    fn readdir(&self, req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectory) {
        self.reply(self.listing(creds(req), fh.0), reply, move |mut r, entries| {
            for (i, (name, kind, ino)) in entries.iter().enumerate().skip(offset as usize) {
                if r.add(INodeNo((*ino).max(1)), i as u64 + 1, dtype_kind(*kind), OsStr::from_bytes(name)) {
                    break;
                }
            }
            r.ok()
        });
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.reply(self.fsyncdir(creds(req), ino.0), reply, |r, ()| r.ok());
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.reply(self.statfs(creds(req), ino.0), reply, |r, s| {
            r.statfs(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize)
        });
    }

    fn setxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, value: &[u8], flags: i32, _position: u32, reply: ReplyEmpty) {
        self.reply(self.setxattr(creds(req), ino.0, &name.to_string_lossy(), value, flags), reply, |r, ()| r.ok());
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.reply(self.getxattr(creds(req), ino.0, &name.to_string_lossy(), size), reply, xattr);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.reply(self.listxattr(creds(req), ino.0, size), reply, xattr);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.reply(self.removexattr(creds(req), ino.0, &name.to_string_lossy()), reply, |r, ()| r.ok());
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.reply(self.access(creds(req), ino.0, mask.bits()), reply, |r, ()| r.ok());
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
        let ask = LockAsk { owner: lo.0, pid, typ, start, end };
        self.reply(self.getlk(ino.0, ask), reply, |r, (start, end, typ, pid)| r.locked(start, end, typ, pid));
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
        let ask = LockAsk { owner: lo.0, pid, typ, start, end };
        self.reply(self.setlk(ino.0, ask, sleep), reply, |r, ()| r.ok());
    }
}
