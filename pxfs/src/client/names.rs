//! Namespace operations: lookups, listings, creating, linking, removing and renaming names.

use std::sync::Arc;

use bytes::Bytes;
use ssi_orb::proto::{Creds, Empty};
use ssi_orb::{OrbError, Received};

use super::convert::fid;
use super::namespace::join;
use super::{caller_of, Answer, Attrs, Client, Found, Listing, OpenDir};
use crate::errno::Errno;
use crate::owners::{errno_of, invoke};
use crate::proto::*;
use crate::synthetic::SyntheticVolume;

impl Client {
    /// The entry of `spath` in synthetic volume `vol` (its inode registered).
    fn syn_entry(&self, vol: u32, v: &SyntheticVolume, spath: String, global: Vec<u8>, who: &Creds) -> Result<Found, Errno> {
        let a = self.rt.block_on(v.provider.attr(&spath, &caller_of(who))).map_err(Errno::from_i32)?;
        let ino = self.inodes.write().remember(vol, Bytes::from(spath.into_bytes()), global, None);
        Ok(Found::Entry { ino, attrs: Attrs::Synthetic(a) })
    }

    /// Registers the inode of an entry the owner answered with.
    fn found(&self, vol: u32, path: Vec<u8>, e: Entry) -> Result<Found, Errno> {
        match (e.fid, e.attr) {
            (Some(f), Some(a)) => {
                Ok(Found::Entry { ino: self.inodes.write().remember(vol, f.handle, path, Some(a.ino)), attrs: Attrs::Volume(a) })
            }
            _ => Err(Errno::EIO),
        }
    }

    pub(super) fn lookup(&self, who: Creds, parent: u64, name: &[u8]) -> Answer<Found> {
        // A volume mounted here is found without its parent's owner (which may be away).
        let parent_path = self.inodes.read().by_ino.get(&parent).map(|n| n.path.clone()).ok_or(Errno::ESTALE);
        let child = join(&now_or!(parent_path), name);
        if let Some(v) = self.mounts.crossing(&child) {
            if let Some(sv) = self.synthetic.get(&v) {
                return self.syn_entry(v, sv, "/".into(), child, &who).into();
            }
            let e = self.call(v, Some(who), |s| async move { s.root(Empty {}).await });
            return e.and_then(|e| self.found(v, child, e)).into();
        }
        let (vol, h, _) = now_or!(self.node(parent));
        if let Some((sv, spath)) = self.syn(vol, &h) {
            // Synthetic files have UTF-8 names only.
            let Ok(name) = std::str::from_utf8(name) else { return Answer::Now(Err(Errno::ENOENT)) };
            return self.syn_entry(vol, sv, crate::synthetic::child(&spath, name), child, &who).into();
        }
        if self.cache.name_absent(parent, name) {
            return Answer::Now(Ok(Found::Absent));
        }
        let (owners, holder, inodes, name) = (self.owners.clone(), self.holder.clone(), self.inodes.clone(), Bytes::copy_from_slice(name));
        Answer::Later(Box::pin(async move {
            let look = || {
                invoke(&owners, vol, Some(who.clone()), |s| {
                    let r = NameReq { parent: fid(&h), name: name.clone() };
                    async move { s.lookup(r).await }
                })
            };
            let mut e = match look().await {
                Ok(e) => e,
                // Absent: the kernel keeps that too (a negative entry), under the directory's
                // token; a name made elsewhere is called back like any other entry.
                Err(Errno::ENOENT) => return Ok(Found::Absent),
                Err(e) => return Err(e),
            };
            // A file whose writes this node buffers: the owner's size is behind; write back,
            // ask again.
            if let Some(f) = e.fid.clone().filter(|f| holder.may_buffer(vol, &f.handle)) {
                holder.settle(vol, &f.handle, None).await.map_err(|x| errno_of(&x))?;
                e = look().await?;
            }
            match (e.fid, e.attr) {
                (Some(f), Some(a)) => {
                    Ok(Found::Entry { ino: inodes.write().remember(vol, f.handle, child, Some(a.ino)), attrs: Attrs::Volume(a) })
                }
                _ => Err(Errno::EIO),
            }
        }))
    }

    /// A create-like operation (mknod, mkdir when `dir`, symlink, link) of `name` in `parent`.
    pub(super) fn new_entry<F, Fut>(&self, who: Creds, parent: u64, name: &[u8], dir: bool, f: F) -> Answer<Found>
    where
        F: Fn(VolumeStub, Option<Fid>, Bytes) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Received<Entry>, OrbError>> + Send,
    {
        let (vol, h, path) = now_or!(self.node(parent));
        let child = join(&path, name);
        if self.mounts.crossing(&child).is_some() {
            return Answer::Now(Err(Errno::EEXIST));
        }
        let t = self.changing_dir(parent);
        let (owners, cache, inodes, name) = (self.owners.clone(), self.cache.clone(), self.inodes.clone(), Bytes::copy_from_slice(name));
        Answer::Later(Box::pin(async move {
            let mut e = invoke(&owners, vol, Some(who), |s| f(s, fid(&h), name.clone())).await?;
            if let Some(a) = e.parent.take() {
                cache.put_dir(t, parent, a);
            }
            cache.name_changed(parent, &name, true);
            let (Some(f), Some(a)) = (e.fid, e.attr) else { return Err(Errno::EIO) };
            let ino = inodes.write().remember(vol, f.handle, child, Some(a.ino));
            if dir {
                cache.made_dir(t, ino);
            }
            Ok(Found::Entry { ino, attrs: Attrs::Volume(a) })
        }))
    }

    /// A hard link to `ino` named `newname` in `newparent` (same volume only).
    pub(super) fn link(&self, who: Creds, ino: u64, newparent: u64, newname: &[u8]) -> Answer<Found> {
        let h = match (self.node(ino), self.node(newparent)) {
            (Ok((vol, h, _)), Ok((v2, _, _))) if v2 == vol => h,
            (Ok(_), Ok(_)) => return Answer::Now(Err(Errno::EXDEV)),
            (Err(e), _) | (_, Err(e)) => return Answer::Now(Err(e)),
        };
        self.new_entry(who, newparent, newname, false, move |s, p, n| {
            let r = LinkReq { fid: fid(&h), newparent: p, newname: n };
            async move { s.link(r).await }
        })
    }

    /// unlink, or rmdir when `dir`.
    pub(super) fn unlink(&self, who: Creds, parent: u64, name: &[u8], dir: bool) -> Answer<()> {
        let (vol, h, path) = now_or!(self.node(parent));
        if self.mounts.crossing(&join(&path, name)).is_some() {
            return Answer::Now(Err(Errno::EBUSY));
        }
        let t = self.changing_dir(parent);
        let (owners, cache, name) = (self.owners.clone(), self.cache.clone(), Bytes::copy_from_slice(name));
        Answer::Later(Box::pin(async move {
            let c = invoke(&owners, vol, Some(who), |s| {
                let req = NameReq { parent: fid(&h), name: name.clone() };
                async move {
                    if dir {
                        s.rmdir(req).await
                    } else {
                        s.unlink(req).await
                    }
                }
            })
            .await?;
            if let Some(a) = c.parent {
                cache.put_dir(t, parent, a);
            }
            cache.name_changed(parent, &name, false);
            Ok(())
        }))
    }

    /// rename(2) (`flags`: RENAME_NOREPLACE, RENAME_EXCHANGE) within one volume.
    pub(super) fn rename(&self, who: Creds, parent: u64, name: &[u8], newparent: u64, newname: &[u8], flags: u32) -> Result<(), Errno> {
        let (v1, h1, p1) = self.node(parent)?;
        let (v2, h2, p2) = self.node(newparent)?;
        if self.mounts.crossing(&join(&p1, name)).is_some() || self.mounts.crossing(&join(&p2, newname)).is_some() {
            return Err(Errno::EBUSY);
        }
        if v1 != v2 {
            return Err(Errno::EXDEV);
        }
        let r = RenameReq {
            parent: fid(&h1),
            name: Bytes::copy_from_slice(name),
            newparent: fid(&h2),
            newname: Bytes::copy_from_slice(newname),
            flags,
        };
        // The moved (or replaced) file changes too, and it has no inode number here.
        self.cache.clear();
        let t = self.cache.ticket();
        let c = self.call(v1, Some(who), |s| {
            let r = r.clone();
            async move { s.rename(r).await }
        })?;
        self.dir_changed(t, parent, c.parent);
        self.dir_changed(t, newparent, c.newparent);
        Ok(())
    }

    /// A directory opened: listed at its first readdir (opening a directory to fsync it, as
    /// SQLite does after creating a journal, needs no listing). The kernel checked read
    /// permission (default_permissions); the owner checks again at the listing, as the caller.
    pub(super) fn opendir(&self, ino: u64) -> u64 {
        let dh = self.next_dh.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dirs.lock().insert(dh, OpenDir::Unlisted(ino));
        dh
    }

    pub(super) fn releasedir(&self, dh: u64) {
        self.dirs.lock().remove(&dh);
    }

    /// The listing of open directory `dh`, made at the first call and kept until it closes
    /// (readdir's offsets index it).
    pub(super) fn listing(&self, who: Creds, dh: u64) -> Result<Arc<Listing>, Errno> {
        let ino = match self.dirs.lock().get(&dh) {
            None => return Err(Errno::EBADF),
            Some(OpenDir::Listed(l)) => return Ok(l.clone()),
            Some(OpenDir::Unlisted(ino)) => *ino,
        };
        let (vol, h, path) = self.node(ino)?;
        let mut entries: Listing = if let Some((sv, spath)) = self.syn(vol, &h) {
            let names = self.rt.block_on(sv.provider.list(&spath, &caller_of(&who))).map_err(Errno::from_i32)?;
            // The kernel takes these numbers only for d_ino; lookups assign the real ones.
            names.into_iter().map(|(n, dir)| (Bytes::from(n), if dir { libc::DT_DIR } else { libc::DT_REG } as u32, 1)).collect()
        } else {
            let list = self.call(vol, Some(who), |s| {
                let r = Fid { handle: h.clone() };
                async move { s.read_dir(r).await }
            })?;
            list.entries.into_iter().map(|e| (e.name, e.kind, super::inodes::stable_ino(vol, e.ino))).collect()
        };
        for (name, _) in self.mounts.below(&path) {
            entries.retain(|e| e.0 != name.as_bytes());
            entries.push((name.into(), libc::DT_DIR as u32, 1));
        }
        let entries = Arc::new(entries);
        self.dirs.lock().insert(dh, OpenDir::Listed(entries.clone()));
        Ok(entries)
    }
}
