//! A file's attributes and extended attributes, and the calls on a file that are neither
//! names nor open files: readlink, statfs, access, fsync of a directory, forget.

use bytes::Bytes;
use ssi_orb::proto::Creds;

use super::convert::fid;
use super::{caller_of, Answer, Attrs, Client, XattrAnswer};
use crate::errno::Errno;
use crate::owners::invoke;
use crate::proto::*;

/// What a setattr changes; `None` leaves it. Times are `TimeSet`s (now, or nanoseconds
/// since the epoch).
pub(super) struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    /// The open file the change goes through (ftruncate), or 0.
    pub fh: u64,
}

impl Client {
    pub(super) fn getattr(&self, who: Creds, ino: u64) -> Answer<Attrs> {
        if ino != super::ROOT {
            return self.getattr_of(who, ino);
        }
        // The namespace root: remembered, and answered from memory while its owner is away
        // (never seen: a root-owned directory, mode 0755, as `ssi up` makes it).
        let last = self.last_root_attr.clone();
        let remember = move |r: Result<Attrs, Errno>| match r {
            Ok(Attrs::Volume(a)) => {
                *last.lock() = Some(a);
                Ok(Attrs::Volume(a))
            }
            Err(e) => {
                tracing::debug!("the namespace root's owner does not answer ({e:?}): its last attributes stand in");
                let dir = Attr { ino: super::ROOT, mode: libc::S_IFDIR | 0o755, nlink: 2, blksize: 4096, ..Default::default() };
                Ok(Attrs::Volume((*last.lock()).unwrap_or(dir)))
            }
            other => other,
        };
        match self.getattr_of(who, ino) {
            Answer::Now(r) => Answer::Now(remember(r)),
            Answer::Later(f) => Answer::Later(Box::pin(async move { remember(f.await) })),
        }
    }

    fn getattr_of(&self, who: Creds, ino: u64) -> Answer<Attrs> {
        if let Some(a) = self.cache.dir(ino) {
            return Answer::Now(Ok(Attrs::Volume(a)));
        }
        let (vol, h, _) = now_or!(self.node(ino));
        if let Some((sv, spath)) = self.syn(vol, &h) {
            return Answer::Now(
                self.rt.block_on(sv.provider.attr(&spath, &caller_of(&who))).map(Attrs::Synthetic).map_err(Errno::from_i32),
            );
        }
        if let Some(a) = self.passthrough.attr(ino) {
            return Answer::Now(a.map(Attrs::Volume).map_err(Errno::from));
        }
        // (Not while open through passthrough: its writes change the file behind the token.)
        if let Some(a) = self.holder.attr(vol, &h).filter(|_| !self.passthrough.is_open(ino)) {
            return Answer::Now(Ok(Attrs::Volume(a)));
        }
        now_or!(self.settle(vol, &h));
        let (owners, holder) = (self.owners.clone(), self.holder.clone());
        Answer::Later(Box::pin(async move {
            let a = invoke(&owners, vol, Some(who), |s| {
                let r = Fid { handle: h.clone() };
                async move { s.get_attr(r).await }
            })
            .await?;
            holder.note_attr(vol, &h, &a);
            Ok(Attrs::Volume(a))
        }))
    }

    pub(super) fn setattr(&self, who: Creds, ino: u64, c: AttrChange) -> Result<Attr, Errno> {
        let (vol, h, _) = self.node(ino)?;
        self.settle(vol, &h)?;
        let r = SetAttrReq { fid: fid(&h), mode: c.mode, uid: c.uid, gid: c.gid, size: c.size, atime: c.atime, mtime: c.mtime, fh: c.fh };
        // Attributes change; extended attributes do not (a chown may strip a capability, but
        // never adds one: "absent" stays true).
        self.cache.forget_dir(ino);
        let a = self.call(vol, Some(who), |s| {
            let r = r.clone();
            async move { s.set_attr(r).await }
        })?;
        self.holder.note_attr(vol, &h, &a);
        Ok(a)
    }

    pub(super) fn readlink(&self, who: Creds, ino: u64) -> Result<Bytes, Errno> {
        let (vol, h, _) = self.node(ino)?;
        let d = self.call(vol, Some(who), |s| {
            let r = Fid { handle: h.clone() };
            async move { s.readlink(r).await }
        })?;
        Ok(d.data)
    }

    /// The statfs of the volume `ino` is on; a synthetic volume has no blocks.
    pub(super) fn statfs(&self, who: Creds, ino: u64) -> Result<StatFsReply, Errno> {
        let (vol, h, _) = self.node(ino)?;
        if self.synthetic.contains_key(&vol) {
            return Ok(StatFsReply { bsize: 4096, namelen: crate::sys::NAME_MAX as u32, frsize: 4096, ..Default::default() });
        }
        self.call(vol, Some(who), |s| {
            let r = Fid { handle: h.clone() };
            async move { s.stat_fs(r).await }
        })
    }

    /// access(2) as the caller (`mask`: R_OK, W_OK, X_OK).
    pub(super) fn access(&self, who: Creds, ino: u64, mask: i32) -> Result<(), Errno> {
        let (vol, h, _) = self.node(ino)?;
        if self.synthetic.contains_key(&vol) {
            // Read-only; reads are checked by the provider as the caller.
            return if mask & libc::W_OK != 0 { Err(Errno::EROFS) } else { Ok(()) };
        }
        self.call(vol, Some(who), |s| {
            let r = AccessReq { fid: fid(&h), mask };
            async move { s.access(r).await }
        })
        .map(|_| ())
    }

    pub(super) fn fsyncdir(&self, who: Creds, ino: u64) -> Result<(), Errno> {
        let (vol, h, _) = self.node(ino)?;
        self.call(vol, Some(who), |s| {
            let r = Fid { handle: h.clone() };
            async move { s.fsync_dir(r).await }
        })
        .map(|_| ())
    }

    /// The kernel dropped `nlookup` references to `ino`; at none left, so does this node.
    pub(super) fn forget(&self, ino: u64, nlookup: u64) {
        if self.inodes.write().forget(ino, nlookup).is_some() {
            self.cache.drop_inode(ino);
            self.locked.lock().remove(&ino);
        }
    }

    pub(super) fn setxattr(&self, who: Creds, ino: u64, name: &str, value: &[u8], flags: i32) -> Result<(), Errno> {
        let (vol, h, _) = self.node(ino)?;
        self.cache.forget(ino);
        let r = XattrReq { fid: fid(&h), name: name.into(), size: 0, value: Bytes::copy_from_slice(value), flags };
        self.call(vol, Some(who), |s| {
            let r = r.clone();
            async move { s.set_xattr(r).await }
        })
        .map(|_| ())
    }

    /// getxattr(2): the value's size when `size` is 0, else the value. An absent name is
    /// remembered under the file's token (the kernel asks for `security.capability` before
    /// every write).
    pub(super) fn getxattr(&self, who: Creds, ino: u64, name: &str, size: u32) -> Result<XattrAnswer, Errno> {
        if self.cache.xattr_absent(ino, name) || self.node(ino).is_ok_and(|(v, _, _)| self.synthetic.contains_key(&v)) {
            return Err(Errno::ENODATA);
        }
        let (vol, h, _) = self.node(ino)?;
        let r = XattrReq { fid: fid(&h), name: name.to_string(), size, value: Bytes::new(), flags: 0 };
        let t = self.cache.ticket();
        let d = self
            .call(vol, Some(who), |s| {
                let r = r.clone();
                async move { s.get_xattr(r).await }
            })
            .inspect_err(|e| {
                if *e == Errno::ENODATA {
                    self.cache.put_xattr_absent(t, ino, name);
                }
            })?;
        Ok(if size == 0 { XattrAnswer::Size(d.size) } else { XattrAnswer::Data(d.data) })
    }

    pub(super) fn listxattr(&self, who: Creds, ino: u64, size: u32) -> Result<XattrAnswer, Errno> {
        let (vol, h, _) = self.node(ino)?;
        if self.synthetic.contains_key(&vol) {
            return Ok(if size == 0 { XattrAnswer::Size(0) } else { XattrAnswer::Data(Bytes::new()) });
        }
        let r = XattrReq { fid: fid(&h), name: String::new(), size, value: Bytes::new(), flags: 0 };
        let d = self.call(vol, Some(who), |s| {
            let r = r.clone();
            async move { s.list_xattr(r).await }
        })?;
        Ok(if size == 0 { XattrAnswer::Size(d.size) } else { XattrAnswer::Data(d.data) })
    }

    pub(super) fn removexattr(&self, who: Creds, ino: u64, name: &str) -> Result<(), Errno> {
        let (vol, h, _) = self.node(ino)?;
        self.cache.forget(ino);
        let r = XattrReq { fid: fid(&h), name: name.into(), size: 0, value: Bytes::new(), flags: 0 };
        self.call(vol, Some(who), |s| {
            let r = r.clone();
            async move { s.remove_xattr(r).await }
        })
        .map(|_| ())
    }
}
