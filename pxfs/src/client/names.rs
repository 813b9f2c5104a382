//! Namespace operations: lookups, listings, creating, linking and removing names (rename, with
//! fuser's whole signature, is answered in `kernel`).

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fuser::{Errno, FileHandle, FileType, Generation, INodeNo, ReplyDirectory, ReplyEmpty, ReplyEntry, Request};
use ssi_orb::proto::Empty;
use ssi_orb::{OrbError, Received};

use super::convert::{caller, creds, dtype_kind, fid, reply_absent, reply_empty, reply_entry, syn_attr};
use super::namespace::join;
use super::{Client, Listing, OpenDir};
use crate::owners::{errno_of, invoke};
use crate::proto::*;
use crate::synthetic::{Caller, SyntheticVolume};

impl Client {
    /// Answers a lookup of `path` in synthetic volume `vol` (registering its inode).
    pub(super) fn syn_entry(&self, vol: u32, v: &SyntheticVolume, spath: String, global: String, who: &Caller, reply: ReplyEntry) {
        match self.rt.block_on(v.provider.attr(&spath, who)) {
            Ok(a) => {
                let ino = self.inodes.write().remember(vol, Bytes::from(spath.into_bytes()), global);
                reply.entry(&Duration::ZERO, &syn_attr(ino, &a), Generation(0))
            }
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    /// A create-like operation (mknod, mkdir when `dir`, symlink, link) of `name` in `parent`.
    pub(super) fn new_entry<F, Fut>(&self, req: &Request, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEntry, f: F)
    where
        F: Fn(VolumeStub, Option<Fid>, String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Received<Entry>, OrbError>> + Send,
    {
        let Some(name) = name.to_str() else { return reply.error(Errno::EINVAL) };
        let (vol, h, path) = or_reply!(reply, self.node(parent.0));
        let child = join(&path, name);
        if self.mounts.crossing(&child).is_some() {
            return reply.error(Errno::EEXIST);
        }
        let t = self.changing_dir(parent.0);
        let (owners, cache, inodes, who, name) =
            (self.owners.clone(), self.cache.clone(), self.inodes.clone(), Some(creds(req)), name.to_string());
        self.answer(async move {
            match invoke(&owners, vol, who, |s| f(s, fid(&h), name.clone())).await {
                Ok(mut e) => {
                    if let Some(a) = e.parent.take() {
                        cache.put_dir(t, parent.0, a);
                    }
                    cache.name_changed(parent.0, &name, true);
                    if let Some(ino) = reply_entry(&inodes, vol, child, e, reply) {
                        if dir {
                            cache.made_dir(t, ino);
                        }
                    }
                }
                Err(e) => reply.error(e),
            }
        });
    }

    pub(super) fn unlink_like(&self, req: &Request, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let Some(name) = name.to_str() else { return reply.error(Errno::EINVAL) };
        let (vol, h, path) = or_reply!(reply, self.node(parent.0));
        if self.mounts.crossing(&join(&path, name)).is_some() {
            return reply.error(Errno::EBUSY);
        }
        let t = self.changing_dir(parent.0);
        let (owners, cache, who, name) = (self.owners.clone(), self.cache.clone(), Some(creds(req)), name.to_string());
        self.answer(async move {
            let r = invoke(&owners, vol, who, |s| {
                let req = NameReq { parent: fid(&h), name: name.clone() };
                async move {
                    if dir {
                        s.rmdir(req).await
                    } else {
                        s.unlink(req).await
                    }
                }
            })
            .await;
            if let Ok(c) = &r {
                if let Some(a) = c.parent {
                    cache.put_dir(t, parent.0, a);
                }
                cache.name_changed(parent.0, &name, false);
            }
            reply_empty(reply, r);
        });
    }

    pub(super) fn lookup_k(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else { return reply.error(Errno::ENOENT) };
        let (vol, h, path) = or_reply!(reply, self.node(parent.0));
        let child = join(&path, name);
        if let Some((sv, spath)) = self.syn(vol, &h) {
            return self.syn_entry(vol, sv, crate::synthetic::child(&spath, name), child, &caller(req), reply);
        }
        if self.cache.name_absent(parent.0, name) && self.mounts.crossing(&child).is_none() {
            return reply_absent(reply);
        }
        if let Some(v) = self.mounts.crossing(&child) {
            if let Some(sv) = self.synthetic.get(&v) {
                return self.syn_entry(v, sv, "/".into(), child, &caller(req), reply);
            }
            let e = match self.call(v, Some(creds(req)), |s| async move { s.root(Empty {}).await }) {
                Ok(e) => e,
                Err(e) => return reply.error(e),
            };
            reply_entry(&self.inodes, v, child, e, reply);
            return;
        }
        let (owners, holder, inodes, who, name) =
            (self.owners.clone(), self.holder.clone(), self.inodes.clone(), Some(creds(req)), name.to_string());
        self.answer(async move {
            let look = || {
                invoke(&owners, vol, who.clone(), |s| {
                    let r = NameReq { parent: fid(&h), name: name.clone() };
                    async move { s.lookup(r).await }
                })
            };
            let mut e = match look().await {
                Ok(e) => e,
                // Absent: the kernel keeps that too (a negative entry), under the directory's
                // token; a name made elsewhere is called back like any other entry.
                Err(Errno::ENOENT) => return reply_absent(reply),
                Err(e) => return reply.error(e),
            };
            // A file whose writes this node buffers: the owner's size is behind; write back,
            // ask again.
            if let Some(f) = e.fid.clone().filter(|f| holder.may_buffer(vol, &f.handle)) {
                if let Err(x) = holder.settle(vol, &f.handle, None).await {
                    return reply.error(errno_of(&x));
                }
                e = or_reply!(reply, look().await);
            }
            reply_entry(&inodes, vol, child, e, reply);
        });
    }

    pub(super) fn readdir_k(&self, req: &Request, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let unlisted = match self.dirs.lock().get(&fh.0) {
            None => return reply.error(Errno::EBADF),
            Some(OpenDir::Listed(l)) => Err(l.clone()),
            Some(OpenDir::Unlisted(ino)) => Ok(*ino),
        };
        let entries = match unlisted {
            Err(listed) => listed,
            Ok(ino) => {
                let (vol, h, path) = or_reply!(reply, self.node(ino));
                let mut entries: Listing = if let Some((sv, spath)) = self.syn(vol, &h) {
                    let names = or_reply!(reply, self.rt.block_on(sv.provider.list(&spath, &caller(req))).map_err(Errno::from_i32));
                    // The kernel takes these numbers only for d_ino; lookups assign the real ones.
                    names.into_iter().map(|(n, dir)| (n, if dir { FileType::Directory } else { FileType::RegularFile }, 1)).collect()
                } else {
                    let list = match self.call(vol, Some(creds(req)), |s| {
                        let r = Fid { handle: h.clone() };
                        async move { s.read_dir(r).await }
                    }) {
                        Ok(l) => l,
                        Err(e) => return reply.error(e),
                    };
                    list.entries.into_iter().map(|e| (e.name, dtype_kind(e.kind), e.ino)).collect()
                };
                for (name, _) in self.mounts.below(&path) {
                    entries.retain(|e| e.0 != name);
                    entries.push((name, FileType::Directory, 1));
                }
                let entries = Arc::new(entries);
                self.dirs.lock().insert(fh.0, OpenDir::Listed(entries.clone()));
                entries
            }
        };
        for (i, (name, kind, ino)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo((*ino).max(1)), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
