//! The volume server: one `Volume` object per volume, on the node whose disk holds it.
//!
//! Stateless about names: every file is addressed by its kernel file handle. The server keeps
//! only open files (per client node) and byte-range locks. Each call resolves the handles it
//! names as root, then runs the system call on a blocking thread as the caller (`sys::AsUser`).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use ssi_orb::proto::{Creds, Empty, OneWay};
use ssi_orb::{CallCtx, Exception, ObjHandle, Orb};

use crate::cache::Tokens;
use crate::exclusive::{Grant, Grants};
use crate::locks::{Lock, LockTable, SetError};
use crate::openfiles::{OpenFile, OpenFiles};
use crate::proto::*;
use crate::sys;

/// A name inside a directory: one path component of any bytes but '/' and NUL, at most
/// NAME_MAX of them.
fn component(name: &[u8]) -> Result<&[u8], Exception> {
    if name.len() > sys::NAME_MAX {
        return Err(Exception::errno(libc::ENAMETOOLONG, format!("a name of {} bytes (at most {})", name.len(), sys::NAME_MAX)));
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(Exception::errno(libc::EINVAL, "not a single path component"));
    }
    Ok(name)
}

/// Whether mode `to` is `from` with only S_ISUID and/or S_ISGID taken away.
fn only_drops_set_id(from: u32, to: u32) -> bool {
    let set_id = libc::S_ISUID | libc::S_ISGID;
    to != from && to & !from == 0 && (from & !to) & !set_id == 0
}

pub fn attr_of(st: &libc::stat) -> Attr {
    Attr {
        ino: st.st_ino,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime_ns: st.st_atime * 1_000_000_000 + st.st_atime_nsec,
        mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
        ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec,
        mode: st.st_mode,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        uncached: false,
    }
}

pub struct VolumeServer {
    pub id: u32,
    pub dir: PathBuf,
    root_fd: OwnedFd,
    root_handle: Vec<u8>,
    open: Mutex<OpenFiles>,
    next_fh: AtomicU64,
    locks: LockTable,
    tokens: Tokens,
    grants: Grants,
}

type Who = (u32, u32, Vec<u32>);

/// Whom an operation runs as: the user the caller acts for; a call with no credentials is
/// a node acting for itself (authenticated by the cluster key) and runs as the daemon.
fn who(creds: Option<&Creds>) -> Who {
    match creds {
        Some(Creds { uid, gid, groups }) => (*uid, *gid, groups.clone()),
        // A node acting for itself (no user behind the call).
        None => (0, 0, vec![]),
    }
}

/// A node cut off from a majority serves reads but changes nothing on its volumes: the
/// majority may already count it gone (and, once volumes are replicated, serve them
/// elsewhere). `EROFS`, with the reason in the message.
fn fenced(ctx: &CallCtx) -> Result<(), Exception> {
    match ctx.orb.fenced() {
        Some(why) => Err(Exception::errno(libc::EROFS, format!("read-only while cut off: {why}"))),
        None => Ok(()),
    }
}

impl VolumeServer {
    pub fn new(orb: &Orb, id: u32, dir: &Path) -> io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        // Not O_PATH: open_by_handle_at refuses an O_PATH mount_fd (EBADF).
        let root_fd = sys::open_path(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let root_handle = sys::handle_at(root_fd.as_raw_fd(), b"")?;
        Ok(Arc::new(VolumeServer {
            id,
            dir: dir.to_path_buf(),
            root_fd,
            root_handle,
            open: Mutex::new(OpenFiles::default()),
            next_fh: AtomicU64::new(1),
            locks: LockTable::default(),
            tokens: Tokens::new(orb.clone(), id),
            grants: Grants::default(),
        }))
    }

    fn fid_handle(f: &Option<Fid>) -> Result<Vec<u8>, Exception> {
        f.as_ref().map(|f| f.handle.to_vec()).ok_or_else(|| Exception::errno(libc::EINVAL, "missing file id"))
    }

    /// Runs a metadata operation (lookup, stat, create, unlink, rename, xattrs, ...) right
    /// here on the runtime thread: handles opened as root, then the caller's credentials for
    /// the operation itself. These are bounded operations on the local disk's metadata; a
    /// hop to the blocking pool and back would cost more than most of them (two thread wakes).
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        ctx: &CallCtx,
        handles: Vec<Vec<u8>>,
        op: impl FnOnce(&VolumeServer, &[OwnedFd]) -> io::Result<T> + Send + 'static,
    ) -> Result<T, Exception> {
        self.run_on(ctx, false, handles, op).await
    }

    /// As `run`, on a blocking thread when `slow`: for operations that may wait on the disk's
    /// data (truncation, opening with O_TRUNC, listing a whole directory).
    async fn run_on<T: Send + 'static>(
        self: &Arc<Self>,
        ctx: &CallCtx,
        slow: bool,
        handles: Vec<Vec<u8>>,
        op: impl FnOnce(&VolumeServer, &[OwnedFd]) -> io::Result<T> + Send + 'static,
    ) -> Result<T, Exception> {
        let caller = who(ctx.creds.as_ref());
        if !slow {
            return self.as_caller(caller, handles, op).map_err(Exception::from_io);
        }
        let me = self.clone();
        blocking(move || me.as_caller(caller, handles, op)).await
    }

    fn as_caller<T>(
        &self,
        (uid, gid, groups): Who,
        handles: Vec<Vec<u8>>,
        op: impl FnOnce(&VolumeServer, &[OwnedFd]) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut fds = Vec::with_capacity(handles.len());
        for h in &handles {
            fds.push(sys::open_handle(self.root_fd.as_raw_fd(), h, libc::O_PATH)?);
        }
        let _as = sys::AsUser::new(uid, gid, &groups)?;
        op(self, &fds)
    }

    fn entry_at(&self, dir: RawFd, name: &[u8]) -> io::Result<Entry> {
        let st = sys::stat_at(dir, name)?;
        let handle = sys::handle_at(dir, name)?;
        Ok(Entry { fid: Some(Fid { handle: handle.into() }), attr: Some(attr_of(&st)), parent: None })
    }

    /// The entry of a name just made in `dir`, with the directory's attributes after it.
    fn new_entry_at(&self, dir: RawFd, name: &[u8]) -> io::Result<Entry> {
        let mut e = self.entry_at(dir, name)?;
        e.parent = Some(attr_of(&sys::stat_fd(dir)?));
        Ok(e)
    }

    fn file(&self, fh: u64) -> Result<(Arc<OwnedFd>, Vec<u8>), Exception> {
        self.open
            .lock()
            .get(fh)
            .map(|f| (f.fd.clone(), f.handle.clone()))
            .ok_or_else(|| Exception::errno(libc::EBADF, format!("no open file {fh} (the server restarted?)")))
    }

    fn add_open(&self, fd: OwnedFd, node: u32, handle: Vec<u8>, passthrough_writer: bool) -> u64 {
        let fh = self.next_fh.fetch_add(1, Relaxed);
        self.open.lock().insert(fh, OpenFile { fd: Arc::new(fd), node, handle, passthrough_writer });
        fh
    }

    /// `a`, the attributes of `file`, marked uncached for the other nodes while the owner's
    /// node writes the file through passthrough (its own kernel sees those writes).
    fn mark(&self, ctx: &CallCtx, file: &[u8], mut a: Attr) -> Attr {
        a.uncached = ctx.src != ctx.orb.node() && self.open.lock().written_through_passthrough(file);
        a
    }

    /// The exclusive token, if free; and for a passthrough writer, every other node's cache
    /// of the file called back (granting the token did), as the file is uncached from now on.
    async fn exclusive_or_uncached(&self, ctx: &CallCtx, file: &[u8], passthrough: bool, flags: i32) -> u64 {
        let epoch = self.exclusive_for(ctx, file).await;
        if epoch == 0 && passthrough && is_writer(flags) {
            self.tokens.revoke(ctx.src, vec![file.to_vec()], vec![]).await;
        }
        epoch
    }

    /// A node left the view: its open files close, its locks and its tokens go.
    pub fn node_gone(&self, node: u32) {
        let n = self.open.lock().remove_node(node);
        let l = self.locks.release_node(node);
        let g = self.grants.node_gone(node);
        let c = self.tokens.node_gone(node);
        if n + l + g + c > 0 {
            tracing::info!(
                volume = self.id,
                node,
                files = n,
                locks = l,
                tokens = g,
                cached = c,
                "released a departed node's files, locks, exclusive and cache tokens"
            );
        }
    }

    /// Before node `src` uses `file`: another node's exclusive token on it is recalled (that
    /// node's buffered writes reach the disk and its locks come into this table).
    async fn recall(&self, file: &[u8], src: u32) {
        if self.grants.holder(file).is_none_or(|g| g.node == src) {
            return;
        }
        let _one = self.grants.recalling.lock().await;
        let Some(g) = self.grants.holder(file).filter(|g| g.node != src) else { return };
        let held = self.tokens.recall(g.node, file, g.epoch).await;
        // A surrender that crossed this recall has ended the grant and installed the locks.
        if self.grants.end(file, g) {
            if let Some(h) = held.filter(|h| !h.not_held) {
                self.locks.install(file, held_locks(g.node, h.locks));
            }
        }
    }

    /// The exclusive token of `file` for the caller, if no other node has it open and no lock
    /// on it is held here: its epoch, or 0. Other nodes' cached copies are called back (their
    /// next look at the file comes here, and recalls the token).
    async fn exclusive_for(&self, ctx: &CallCtx, file: &[u8]) -> u64 {
        let node = ctx.src;
        if node == ssi_orb::TOOL_NODE {
            return 0;
        }
        let free = || !self.locks.held(file) && !self.open.lock().open_elsewhere(file, node);
        match self.grants.grant(file, node, free) {
            Some(epoch) => {
                self.tokens.revoke(node, vec![file.to_vec()], vec![]).await;
                epoch
            }
            None => 0,
        }
    }
}

fn held_locks(node: u32, locks: Vec<HeldLock>) -> Vec<Lock> {
    locks.into_iter().map(|l| Lock { node, owner: l.owner, pid: l.pid, typ: l.typ, start: l.start, end: l.end }).collect()
}

/// I/O on an already open descriptor (its rights were checked at open): on a blocking thread,
/// as the daemon.
async fn blocking<T: Send + 'static>(op: impl FnOnce() -> io::Result<T> + Send + 'static) -> Result<T, Exception> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| Exception::app(format!("volume server task failed: {e}")))?
        .map_err(Exception::from_io)
}

/// Whether open(2) flags open for writing.
fn is_writer(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY
}

fn handle_of(e: &Entry) -> Vec<u8> {
    e.fid.as_ref().map(|f| f.handle.to_vec()).unwrap_or_default()
}

impl VolumeServer {
    /// The caller now caches `handles` (attributes, data, entries).
    fn grant(&self, ctx: &CallCtx, handles: &[&[u8]]) {
        for h in handles {
            self.tokens.grant(ctx.src, h);
        }
    }
    /// unlink or rmdir; the removed file's and the directory's cachers are called back.
    async fn remove(self: &Arc<Self>, ctx: &CallCtx, req: NameReq, dir: bool) -> Result<DirChange, Exception> {
        let (p, name) = name_of(&req.parent, &req.name)?;
        let (p2, n2) = (p.clone(), name.clone());
        let (victim, last_link, parent) = self
            .run(ctx, vec![p], move |_, fds| {
                let d = fds[0].as_raw_fd();
                let victim = sys::handle_at(d, &name).ok();
                let last_link = dir || sys::stat_at(d, &name).is_ok_and(|st| st.st_nlink <= 1);
                sys::unlink_at(d, &name, dir)?;
                Ok((victim, last_link, attr_of(&sys::stat_fd(d)?)))
            })
            .await?;
        let mut inodes = vec![p2.clone()];
        inodes.extend(victim.clone());
        self.revoke(ctx, inodes, vec![(p2.clone(), n2)]).await;
        self.tokens.grant_names(ctx.src, &p2);
        if let (Some(v), true) = (victim, last_link) {
            self.file_may_be_gone(&v);
        }
        Ok(DirChange { parent: Some(parent), newparent: None })
    }
    /// `file` lost its last name: once nobody has it open either, no node can reach it again,
    /// and its tokens go (else they would pile up, one per file ever made and removed).
    fn file_may_be_gone(&self, file: &[u8]) {
        if !self.open.lock().is_open(file) {
            self.tokens.forget(file);
        }
    }
    /// A name `name` now exists in directory `parent`: the directory changed for the others;
    /// the caller caches both.
    async fn new_name(&self, ctx: &CallCtx, parent: Vec<u8>, name: Vec<u8>, e: &Entry) {
        self.tokens.revoke(ctx.src, vec![parent.clone()], vec![(parent.clone(), name)]).await;
        self.tokens.grant_names(ctx.src, &parent);
        self.grant(ctx, &[&parent, &handle_of(e)]);
    }
    /// Every other node drops what it caches of `inodes` and of the names in `entries`.
    async fn revoke(&self, ctx: &CallCtx, inodes: Vec<Vec<u8>>, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        self.tokens.revoke(ctx.src, inodes, entries).await;
    }
}

/// The servant: forwards to the shared server state.
pub struct VolumeServant(pub Arc<VolumeServer>);

fn name_of(p: &Option<Fid>, name: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Exception> {
    Ok((VolumeServer::fid_handle(p)?, component(name)?.to_vec()))
}

#[ssi_orb::async_trait]
impl Volume for VolumeServant {
    async fn root(&self, ctx: &CallCtx, _req: Empty) -> Result<Entry, Exception> {
        let h = self.0.root_handle.clone();
        let h2 = h.clone();
        let e = self
            .0
            .run(ctx, vec![h.clone()], move |_, fds| {
                Ok(Entry { fid: Some(Fid { handle: h.into() }), attr: Some(attr_of(&sys::stat_fd(fds[0].as_raw_fd())?)), parent: None })
            })
            .await?;
        self.0.grant(ctx, &[&h2]);
        Ok(e)
    }
    async fn lookup(&self, ctx: &CallCtx, req: NameReq) -> Result<Entry, Exception> {
        let (p, name) = name_of(&req.parent, &req.name)?;
        let n2 = name.clone();
        let found = self.0.run(ctx, vec![p.clone()], move |s, fds| s.entry_at(fds[0].as_raw_fd(), &name)).await;
        // The caller caches the name, present or absent.
        self.0.tokens.grant_names(ctx.src, &p);
        let mut e = found?;
        let h = handle_of(&e);
        if self.0.grants.holder(&h).is_some_and(|g| g.node != ctx.src) {
            // Its size and times are the holder's to tell: recalled, then looked at again.
            self.0.recall(&h, ctx.src).await;
            e = self.0.run(ctx, vec![p.clone()], move |s, fds| s.entry_at(fds[0].as_raw_fd(), &n2)).await?;
        }
        self.0.grant(ctx, &[&p, &handle_of(&e)]);
        e.attr = e.attr.map(|a| self.0.mark(ctx, &h, a));
        Ok(e)
    }
    async fn get_attr(&self, ctx: &CallCtx, req: Fid) -> Result<Attr, Exception> {
        self.0.recall(&req.handle, ctx.src).await;
        let a = self.0.run(ctx, vec![req.handle.to_vec()], |_, fds| Ok(attr_of(&sys::stat_fd(fds[0].as_raw_fd())?))).await?;
        self.0.grant(ctx, &[&req.handle]);
        Ok(self.0.mark(ctx, &req.handle, a))
    }
    async fn set_attr(&self, ctx: &CallCtx, req: SetAttrReq) -> Result<Attr, Exception> {
        fenced(ctx)?;
        let h = VolumeServer::fid_handle(&req.fid)?;
        let open = if req.fh != 0 { Some(self.0.file(req.fh)?.0) } else { None };
        self.0.recall(&h, ctx.src).await;
        let h2 = h.clone();
        let a = self
            .0
            .run_on(ctx, req.size.is_some(), vec![h], move |_, fds| {
                let fd = fds[0].as_raw_fd();
                if let Some(m) = req.mode {
                    let m = m & 0o7777;
                    match sys::chmod_fd(fd, m) {
                        // The kernel clears S_ISUID/S_ISGID for whoever writes, truncates or
                        // chowns, and asks us to as that caller, who need not own the file.
                        Err(e) if e.raw_os_error() == Some(libc::EPERM) && only_drops_set_id(sys::stat_fd(fd)?.st_mode & 0o7777, m) => {
                            sys::chmod_fd_as_root(fd, m)?
                        }
                        r => r?,
                    }
                }
                if req.uid.is_some() || req.gid.is_some() {
                    sys::chown_fd(fd, req.uid, req.gid)?;
                }
                if let Some(size) = req.size {
                    match &open {
                        Some(f) => sys::ftruncate(f.as_raw_fd(), size)?,
                        None => sys::truncate_fd(fd, size)?,
                    }
                }
                let t = |t: &Option<TimeSet>| t.as_ref().map(|t| if t.now { None } else { Some(t.ns) });
                if req.atime.is_some() || req.mtime.is_some() {
                    sys::utimens_fd(fd, t(&req.atime), t(&req.mtime))?;
                }
                Ok(attr_of(&sys::stat_fd(fd)?))
            })
            .await?;
        self.0.revoke(ctx, vec![h2.clone()], vec![]).await;
        self.0.grant(ctx, &[&h2]);
        Ok(self.0.mark(ctx, &h2, a))
    }
    async fn mknod(&self, ctx: &CallCtx, req: MknodReq) -> Result<Entry, Exception> {
        fenced(ctx)?;
        let (p, name) = name_of(&req.parent, &req.name)?;
        let (mode, rdev) = (req.mode & !req.umask, req.rdev);
        let (p2, n2) = (p.clone(), name.clone());
        let e = self
            .0
            .run(ctx, vec![p], move |s, fds| {
                sys::mknod_at(fds[0].as_raw_fd(), &name, mode, rdev)?;
                s.new_entry_at(fds[0].as_raw_fd(), &name)
            })
            .await?;
        self.0.new_name(ctx, p2, n2, &e).await;
        Ok(e)
    }
    async fn mkdir(&self, ctx: &CallCtx, req: MknodReq) -> Result<Entry, Exception> {
        fenced(ctx)?;
        let (p, name) = name_of(&req.parent, &req.name)?;
        let mode = req.mode & !req.umask;
        let (p2, n2) = (p.clone(), name.clone());
        let e = self
            .0
            .run(ctx, vec![p], move |s, fds| {
                sys::mkdir_at(fds[0].as_raw_fd(), &name, mode)?;
                s.new_entry_at(fds[0].as_raw_fd(), &name)
            })
            .await?;
        self.0.new_name(ctx, p2, n2, &e).await;
        // The caller knows every name of the new directory (none): it hears of each new one.
        self.0.tokens.grant_names(ctx.src, &handle_of(&e));
        Ok(e)
    }
    async fn symlink(&self, ctx: &CallCtx, req: SymlinkReq) -> Result<Entry, Exception> {
        fenced(ctx)?;
        let (p, name) = name_of(&req.parent, &req.name)?;
        let target = req.target;
        let (p2, n2) = (p.clone(), name.clone());
        let e = self
            .0
            .run(ctx, vec![p], move |s, fds| {
                sys::symlink_at(&target, fds[0].as_raw_fd(), &name)?;
                s.new_entry_at(fds[0].as_raw_fd(), &name)
            })
            .await?;
        self.0.new_name(ctx, p2, n2, &e).await;
        Ok(e)
    }
    async fn link(&self, ctx: &CallCtx, req: LinkReq) -> Result<Entry, Exception> {
        fenced(ctx)?;
        let f = VolumeServer::fid_handle(&req.fid)?;
        let (p, name) = name_of(&req.newparent, &req.newname)?;
        let (f2, p2, n2) = (f.clone(), p.clone(), name.clone());
        let e = self
            .0
            .run(ctx, vec![f, p], move |s, fds| {
                sys::link_fd(fds[0].as_raw_fd(), fds[1].as_raw_fd(), &name)?;
                s.new_entry_at(fds[1].as_raw_fd(), &name)
            })
            .await?;
        self.0.revoke(ctx, vec![f2], vec![]).await;
        self.0.new_name(ctx, p2, n2, &e).await;
        Ok(e)
    }
    async fn unlink(&self, ctx: &CallCtx, req: NameReq) -> Result<DirChange, Exception> {
        fenced(ctx)?;
        self.0.remove(ctx, req, false).await
    }
    async fn rmdir(&self, ctx: &CallCtx, req: NameReq) -> Result<DirChange, Exception> {
        fenced(ctx)?;
        self.0.remove(ctx, req, true).await
    }
    async fn rename(&self, ctx: &CallCtx, req: RenameReq) -> Result<DirChange, Exception> {
        fenced(ctx)?;
        let (p, name) = name_of(&req.parent, &req.name)?;
        let (np, newname) = name_of(&req.newparent, &req.newname)?;
        let flags = req.flags;
        let (p2, n2, np2, nn2) = (p.clone(), name.clone(), np.clone(), newname.clone());
        let moved = self
            .0
            .run(ctx, vec![p, np], move |_, fds| {
                let (from, to) = (sys::handle_at(fds[0].as_raw_fd(), &name).ok(), sys::handle_at(fds[1].as_raw_fd(), &newname).ok());
                // A file replaced by the rename loses its name; was it its last?
                let replaced = to.clone().filter(|t| from.as_ref() != Some(t) && flags & libc::RENAME_EXCHANGE == 0).filter(|_| {
                    sys::stat_at(fds[1].as_raw_fd(), &newname)
                        .is_ok_and(|st| st.st_nlink <= 1 || st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                });
                sys::rename_at(fds[0].as_raw_fd(), &name, fds[1].as_raw_fd(), &newname, flags)?;
                let change = DirChange {
                    parent: Some(attr_of(&sys::stat_fd(fds[0].as_raw_fd())?)),
                    newparent: Some(attr_of(&sys::stat_fd(fds[1].as_raw_fd())?)),
                };
                Ok((from.into_iter().chain(to).collect::<Vec<_>>(), replaced, change))
            })
            .await?;
        let (moved, replaced, change) = moved;
        let mut inodes = vec![p2.clone(), np2.clone()];
        inodes.extend(moved);
        self.0.revoke(ctx, inodes, vec![(p2.clone(), n2), (np2.clone(), nn2)]).await;
        self.0.tokens.grant_names(ctx.src, &p2);
        self.0.tokens.grant_names(ctx.src, &np2);
        if let Some(r) = replaced {
            self.0.file_may_be_gone(&r);
        }
        Ok(change)
    }
    async fn readlink(&self, ctx: &CallCtx, req: Fid) -> Result<Data, Exception> {
        self.0
            .run(ctx, vec![req.handle.to_vec()], |_, fds| {
                let d = sys::readlink_fd(fds[0].as_raw_fd())?;
                Ok(Data { size: d.len() as u32, data: d.into() })
            })
            .await
    }
    async fn open(&self, ctx: &CallCtx, req: OpenReq) -> Result<OpenReply, Exception> {
        let h = VolumeServer::fid_handle(&req.fid)?;
        let node = ctx.src;
        let (flags, passthrough) = (req.flags, req.passthrough);
        let h2 = h.clone();
        let h3 = h.clone();
        let truncating = flags & libc::O_TRUNC != 0;
        if passthrough && is_writer(flags) {
            // Its writes will not pass here to be refused: a node cut off opens none.
            fenced(ctx)?;
        }
        if truncating {
            // The holder's buffered writes came before this truncation.
            self.0.recall(&h, node).await;
        }
        let mut o = self
            .0
            .run_on(ctx, truncating, vec![h], move |s, fds| {
                let fd = sys::reopen(fds[0].as_raw_fd(), flags)?;
                let attr = attr_of(&sys::stat_fd(fd.as_raw_fd())?);
                Ok(OpenReply { fh: s.add_open(fd, node, h2, passthrough && is_writer(flags)), exclusive: 0, attr: Some(attr) })
            })
            .await?;
        // Registered as an opener first: a grant racing this open sees it, or this sees the grant.
        self.0.recall(&h3, node).await;
        o.exclusive = self.0.exclusive_or_uncached(ctx, &h3, passthrough, flags).await;
        self.0.grant(ctx, &[&h3]);
        o.attr = o.attr.map(|a| self.0.mark(ctx, &h3, a));
        Ok(o)
    }
    async fn create(&self, ctx: &CallCtx, req: CreateReq) -> Result<CreateReply, Exception> {
        fenced(ctx)?;
        let (p, name) = name_of(&req.parent, &req.name)?;
        let node = ctx.src;
        let (mode, flags, passthrough) = (req.mode & !req.umask, req.flags, req.passthrough);
        let (p2, n2) = (p.clone(), name.clone());
        if flags & libc::O_TRUNC != 0 {
            let n3 = name.clone();
            if let Ok(Some(existing)) =
                self.0.run(ctx, vec![p.clone()], move |_, fds| Ok(sys::handle_at(fds[0].as_raw_fd(), &n3).ok())).await
            {
                self.0.recall(&existing, node).await;
            }
        }
        let mut r = self
            .0
            .run(ctx, vec![p], move |s, fds| {
                let fd = sys::open_at(fds[0].as_raw_fd(), &name, flags | libc::O_CREAT, mode)?;
                let entry = s.new_entry_at(fds[0].as_raw_fd(), &name)?;
                let handle = entry.fid.as_ref().map(|f| f.handle.to_vec()).unwrap_or_default();
                let writer = passthrough && is_writer(flags);
                Ok(CreateReply { entry: Some(entry), fh: s.add_open(fd, node, handle, writer), exclusive: 0 })
            })
            .await?;
        let h = r.entry.as_ref().map(handle_of).unwrap_or_default();
        self.0.recall(&h, node).await;
        r.exclusive = self.0.exclusive_or_uncached(ctx, &h, passthrough, flags).await;
        if let Some(e) = r.entry.as_mut() {
            e.attr = e.attr.map(|a| self.0.mark(ctx, &h, a));
        }
        if let Some(e) = &r.entry {
            // O_TRUNC on an existing file changes it for every node that caches it.
            if flags & libc::O_TRUNC != 0 {
                self.0.revoke(ctx, vec![handle_of(e)], vec![]).await;
            }
            self.0.new_name(ctx, p2, n2, e).await;
        }
        Ok(r)
    }
    async fn read(&self, ctx: &CallCtx, req: ReadReq) -> Result<Data, Exception> {
        // The descriptor was opened with the caller's rights; reading needs none beyond it.
        let (fd, handle) = self.0.file(req.fh)?;
        self.0.grant(ctx, &[&handle]);
        let d = blocking(move || read_at(&fd, req.size, req.offset)).await?;
        Ok(Data { size: d.len() as u32, data: Bytes::from(d) })
    }
    async fn write(&self, ctx: &CallCtx, req: WriteReq) -> Result<WriteReply, Exception> {
        fenced(ctx)?;
        let (fd, handle) = self.0.file(req.fh)?;
        let n = blocking(move || sys::pwrite(fd.as_raw_fd(), &req.data, req.offset)).await?;
        // Other nodes' cached pages and size of this file are now wrong.
        self.0.revoke(ctx, vec![handle], vec![]).await;
        Ok(WriteReply { written: n as u32, attr: None })
    }
    async fn fsync(&self, _ctx: &CallCtx, req: FhReq) -> Result<Empty, Exception> {
        let (fd, _) = self.0.file(req.fh)?;
        blocking(move || sys::fsync(fd.as_raw_fd(), req.datasync)).await?;
        Ok(Empty {})
    }
    async fn write_back(&self, ctx: &CallCtx, req: WriteBackReq) -> Result<WriteReply, Exception> {
        fenced(ctx)?;
        let mut files = Vec::with_capacity(req.extents.len());
        let mut handles: Vec<Vec<u8>> = Vec::new();
        for x in &req.extents {
            let (fd, h) = self.0.file(x.fh)?;
            if !handles.contains(&h) {
                handles.push(h);
            }
            files.push(fd);
        }
        let sync = if req.sync_fh != 0 { Some(self.0.file(req.sync_fh)?.0) } else { None };
        let (n, attr) = blocking(move || {
            let mut n = 0usize;
            for (x, fd) in req.extents.iter().zip(&files) {
                n += sys::pwrite(fd.as_raw_fd(), &x.data, x.offset)?;
            }
            if let Some(fd) = &sync {
                sys::fsync(fd.as_raw_fd(), req.datasync)?;
            }
            let last = sync.as_ref().or(files.last());
            Ok((n, last.map(|fd| sys::stat_fd(fd.as_raw_fd())).transpose()?))
        })
        .await?;
        if !handles.is_empty() {
            self.0.revoke(ctx, handles, vec![]).await;
        }
        Ok(WriteReply { written: n as u32, attr: attr.as_ref().map(attr_of) })
    }
    async fn surrender(&self, ctx: &CallCtx, req: SurrenderReq) -> Result<Empty, Exception> {
        let h = VolumeServer::fid_handle(&req.fid)?;
        if self.0.grants.end(&h, Grant { node: ctx.src, epoch: req.epoch }) {
            self.0.locks.install(&h, held_locks(ctx.src, req.locks));
        }
        Ok(Empty {})
    }
    async fn fsync_dir(&self, ctx: &CallCtx, req: Fid) -> Result<Empty, Exception> {
        self.0
            .run_on(ctx, true, vec![req.handle.to_vec()], |_, fds| {
                let d = sys::reopen(fds[0].as_raw_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
                sys::fsync(d.as_raw_fd(), false).map(|_| Empty {})
            })
            .await
    }
    async fn flush(&self, ctx: &CallCtx, req: FhReq) -> Result<Empty, Exception> {
        let (_, handle) = self.0.file(req.fh)?;
        self.0.locks.release_owner(&handle, ctx.src, req.lock_owner);
        Ok(Empty {})
    }
    async fn release(&self, ctx: &CallCtx, req: FhReq) -> Result<OneWay, Exception> {
        let Some((f, last)) = self.0.open.lock().remove(req.fh) else { return Ok(OneWay {}) };
        if req.surrender != 0 {
            self.0.grants.end(&f.handle, Grant { node: ctx.src, epoch: req.surrender });
        }
        // The last close of a file removed while open.
        if last && sys::stat_fd(f.fd.as_raw_fd()).is_ok_and(|st| st.st_nlink == 0) {
            self.0.file_may_be_gone(&f.handle);
        }
        Ok(OneWay {})
    }
    async fn state(&self, _ctx: &CallCtx, _req: Empty) -> Result<VolumeState, Exception> {
        let s = &self.0;
        let (cached, named) = s.tokens.counts();
        Ok(VolumeState {
            open_files: s.open.lock().len() as u64,
            cached_files: cached as u64,
            named_dirs: named as u64,
            exclusive_tokens: s.grants.len() as u64,
            locked_files: s.locks.files() as u64,
            cached_by_node: s.tokens.cached_by_node(),
        })
    }
    async fn read_dir(&self, ctx: &CallCtx, req: Fid) -> Result<DirList, Exception> {
        self.0
            .run_on(ctx, true, vec![req.handle.to_vec()], |_, fds| {
                let entries = sys::read_dir(fds[0].as_raw_fd())?;
                Ok(DirList {
                    entries: entries.into_iter().map(|(name, kind, ino)| DirEntry { name: name.into(), kind: kind as u32, ino }).collect(),
                })
            })
            .await
    }
    async fn stat_fs(&self, ctx: &CallCtx, req: Fid) -> Result<StatFsReply, Exception> {
        self.0
            .run(ctx, vec![req.handle.to_vec()], |_, fds| {
                let s = sys::statvfs_fd(fds[0].as_raw_fd())?;
                Ok(StatFsReply {
                    blocks: s.f_blocks,
                    bfree: s.f_bfree,
                    bavail: s.f_bavail,
                    files: s.f_files,
                    ffree: s.f_ffree,
                    bsize: s.f_bsize as u32,
                    namelen: s.f_namemax as u32,
                    frsize: s.f_frsize as u32,
                })
            })
            .await
    }
    async fn get_xattr(&self, ctx: &CallCtx, req: XattrReq) -> Result<Data, Exception> {
        let h = VolumeServer::fid_handle(&req.fid)?;
        // The caller may cache the answer (its client caches "no such attribute").
        self.0.grant(ctx, &[&h]);
        self.0
            .run(ctx, vec![h], move |_, fds| {
                let (d, n) = sys::getxattr_fd(fds[0].as_raw_fd(), &req.name, req.size as usize)?;
                Ok(Data { data: d.into(), size: n as u32 })
            })
            .await
    }
    async fn list_xattr(&self, ctx: &CallCtx, req: XattrReq) -> Result<Data, Exception> {
        let h = VolumeServer::fid_handle(&req.fid)?;
        self.0
            .run(ctx, vec![h], move |_, fds| {
                let (d, n) = sys::listxattr_fd(fds[0].as_raw_fd(), req.size as usize)?;
                Ok(Data { data: d.into(), size: n as u32 })
            })
            .await
    }
    async fn set_xattr(&self, ctx: &CallCtx, req: XattrReq) -> Result<Empty, Exception> {
        fenced(ctx)?;
        let h = VolumeServer::fid_handle(&req.fid)?;
        let h2 = h.clone();
        self.0.run(ctx, vec![h], move |_, fds| sys::setxattr_fd(fds[0].as_raw_fd(), &req.name, &req.value, req.flags)).await?;
        self.0.revoke(ctx, vec![h2], vec![]).await;
        Ok(Empty {})
    }
    async fn remove_xattr(&self, ctx: &CallCtx, req: XattrReq) -> Result<Empty, Exception> {
        fenced(ctx)?;
        let h = VolumeServer::fid_handle(&req.fid)?;
        let h2 = h.clone();
        self.0.run(ctx, vec![h], move |_, fds| sys::removexattr_fd(fds[0].as_raw_fd(), &req.name)).await?;
        self.0.revoke(ctx, vec![h2], vec![]).await;
        Ok(Empty {})
    }
    async fn access(&self, ctx: &CallCtx, req: AccessReq) -> Result<Empty, Exception> {
        let h = VolumeServer::fid_handle(&req.fid)?;
        self.0.run(ctx, vec![h], move |_, fds| sys::access_fd(fds[0].as_raw_fd(), req.mask).map(|_| Empty {})).await
    }
    async fn get_lk(&self, ctx: &CallCtx, req: LockReq) -> Result<LockReply, Exception> {
        let h = VolumeServer::fid_handle(&req.fid)?;
        self.0.recall(&h, ctx.src).await;
        Ok(match self.0.locks.conflict(&h, ctx.src, req.owner, req.typ, req.start, req.end) {
            Some(l) => LockReply { typ: l.typ, start: l.start, end: l.end, pid: l.pid },
            None => LockReply { typ: crate::locks::F_UNLCK, start: req.start, end: req.end, pid: 0 },
        })
    }
    async fn set_lk(&self, ctx: &CallCtx, req: LockReq) -> Result<Empty, Exception> {
        // No new lock while cut off (its holder could not know the majority saw it go);
        // unlocking is always allowed.
        if req.typ != crate::locks::F_UNLCK {
            fenced(ctx).map_err(|e| Exception::errno(libc::ENOLCK, e.message))?;
        }
        let h = VolumeServer::fid_handle(&req.fid)?;
        if ![crate::locks::F_RDLCK, crate::locks::F_WRLCK, crate::locks::F_UNLCK].contains(&req.typ) || req.start > req.end {
            return Err(Exception::errno(libc::EINVAL, "bad lock request"));
        }
        self.0.recall(&h, ctx.src).await;
        let lock = Lock { node: ctx.src, owner: req.owner, pid: req.pid, typ: req.typ, start: req.start, end: req.end };
        // Answer a little before the caller's deadline, so it hears EINTR rather than a timeout.
        let deadline = ctx.deadline.checked_sub(std::time::Duration::from_millis(200)).unwrap_or_else(Instant::now);
        match self.0.locks.set(&h, lock, req.wait, deadline).await {
            Ok(()) => Ok(Empty {}),
            Err(SetError::Conflict) => Err(Exception::errno(libc::EAGAIN, "lock held by another owner")),
            Err(SetError::TimedOut) => Err(Exception::errno(libc::EINTR, "lock wait timed out")),
        }
    }
}

/// The most one read returns (a larger request gets a short read, as from a pipe).
const MAX_READ: u32 = 16 << 20;

/// One read of an open file, `Read`'s and the local road's alike.
fn read_at(fd: &OwnedFd, size: u32, offset: u64) -> io::Result<Vec<u8>> {
    sys::pread(fd.as_raw_fd(), size.min(MAX_READ) as usize, offset)
}

/// The volume servers of this process, handed to this node's client: its reads of files on
/// them go straight to the descriptors the servers opened (with the reader's rights, at
/// open), on the client's thread, without the trips through the runtime and the blocking pool.
#[derive(Clone, Default)]
pub struct LocalVolumes(Arc<Mutex<BTreeMap<u32, std::sync::Weak<VolumeServer>>>>);

impl LocalVolumes {
    /// Whether volume `vol` is served by this process.
    pub fn serves(&self, vol: u32) -> bool {
        self.0.lock().get(&vol).is_some_and(|s| s.strong_count() > 0)
    }

    /// File `handle` of volume `vol` open for reading and writing on this node's disk, as
    /// the daemon: the backing file of passthrough opens (each opener's rights were checked
    /// by its own open). None when the volume is not served here.
    pub fn backing_file(&self, vol: u32, handle: &[u8]) -> Option<io::Result<OwnedFd>> {
        let server = self.0.lock().get(&vol)?.upgrade()?;
        Some(sys::open_handle(server.root_fd.as_raw_fd(), handle, libc::O_RDWR | libc::O_CLOEXEC))
    }

    /// A read by this node's own client: the same as a `Read` invocation. None when the
    /// volume is not served here or `fh` is not open.
    pub fn read(&self, vol: u32, fh: u64, node: u32, offset: u64, size: u32) -> Option<io::Result<Vec<u8>>> {
        let server = self.0.lock().get(&vol)?.upgrade()?;
        let (fd, handle) = server.file(fh).ok()?;
        // This node caches the pages it reads: a token, as for a `Read`.
        server.tokens.grant(node, &handle);
        Some(read_at(&fd, size, offset))
    }
}

/// The ORB name of volume `id`'s server object.
pub fn volume_name(id: u32) -> String {
    format!("pxfs.volume.{id}")
}

/// Exports the server of volume `id` (directory `dir`), enters it in `local` for this node's
/// client, and releases a departed node's files and locks whenever a view drops it.
pub fn serve(orb: &Orb, id: u32, dir: &Path, local: &LocalVolumes) -> io::Result<(Arc<VolumeServer>, ObjHandle)> {
    let server = VolumeServer::new(orb, id, dir)?;
    local.0.lock().insert(id, Arc::downgrade(&server));
    let h = export_volume(orb, VolumeServant(server.clone()));
    orb.register_name(&volume_name(id), &h);
    let s = server.clone();
    tokio::spawn(orb.departures(move |gone| {
        s.node_gone(gone);
        async {}
    }));
    Ok((server, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_runs_as_the_user_it_carries_and_a_bare_node_call_as_the_daemon() {
        let c = Creds { uid: 1000, gid: 100, groups: vec![100, 27] };
        assert_eq!(who(Some(&c)), (1000, 100, vec![100, 27]), "exactly the caller's uid, gid and groups");
        assert_eq!(who(None), (0, 0, vec![]), "no user behind the call");
    }

    #[test]
    fn only_a_loss_of_set_id_bits_is_done_as_root() {
        assert!(only_drops_set_id(0o4777, 0o777));
        assert!(only_drops_set_id(0o6755, 0o755));
        assert!(only_drops_set_id(0o6755, 0o4755));
        assert!(!only_drops_set_id(0o4777, 0o4777), "no change");
        assert!(!only_drops_set_id(0o4777, 0o666), "other bits too");
        assert!(!only_drops_set_id(0o777, 0o4777), "a gain");
        assert!(!only_drops_set_id(0o755, 0o750));
    }

    #[test]
    fn long_names_are_too_long_and_odd_ones_invalid() {
        let code = |n: &[u8]| component(n).map(|_| 0).unwrap_or_else(|e| e.code);
        assert_eq!(code("x".repeat(255).as_bytes()), 0);
        assert_eq!(code(b"caf\xe9 \xff"), 0, "any bytes but '/' and NUL");
        assert_eq!(code("x".repeat(256).as_bytes()), ssi_orb::Exception::errno(libc::ENAMETOOLONG, "").code);
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert_eq!(code(bad), ssi_orb::Exception::errno(libc::EINVAL, "").code, "{bad:?}");
        }
    }
}
