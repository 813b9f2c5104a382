//! The FUSE file system every node mounts: the whole global namespace.
//!
//! Kernel inode numbers are this node's own; each maps to (volume, kernel file handle on the
//! volume's owner). A directory's global path is kept to find namespace crossings: looking
//! up `www` in `/` yields the root of the `/www` volume, wherever it lives.
//!
//! Coherence is by server-granted tokens (see `cache`): the kernel caches attributes and
//! entries (30 s) and file pages; before an owner completes a change that makes this node's
//! cache wrong it calls this node's `CacheManager`, which has the kernel drop what is stale
//! (fuser's Notifier, from a dedicated thread: never from a FUSE handler or the ORB runtime,
//! where waiting for an inode lock held by an in-flight request would deadlock). Cached pages
//! are also dropped at every open (close-to-open holds even for a missed callback).
//!
//! Handlers run on fuser's threads and block on ORB invocations; a blocking lock request
//! (F_SETLKW) is answered from a task instead, so it never holds a FUSE thread.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::{Mutex, RwLock};
use ssi_orb::proto::{Creds, Empty};
use ssi_orb::{error::code, CallOptions, Orb, OrbError, Received};

use crate::attrcache::AttrCache;
use crate::holder::{Buffered, Holder, Owners};
use crate::locks::{Lock, SetError};
use crate::proto::*;
use crate::synthetic::{Caller, SynAttr, SyntheticVolume};
use crate::VolumeSpec;

/// The value of a `Result<_, Errno>`, or the request answered with the errno.
macro_rules! or_reply {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(x) => x,
            Err(e) => return $reply.error(e),
        }
    };
}

/// Attributes and entries are cached this long, or until the owner revokes them.
const TTL: Duration = Duration::from_secs(30);
/// How long a `CacheManager` call waits for the kernel to drop a cache before answering.
const INVALIDATE_WAIT: Duration = Duration::from_millis(500);
const ROOT: u64 = 1;
/// Synthetic volumes (see `synthetic`) get ids from here on.
const SYNTHETIC_BASE: u32 = 1 << 20;
/// How long one invocation may take before the caller sees EIO (a down node fails sooner).
const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// How long a blocking lock request waits before it answers EINTR.
const LOCK_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct INode {
    vol: u32,
    /// Empty for a volume root until its handle is known.
    handle: Bytes,
    /// Path in the global namespace.
    path: String,
    nlookup: u64,
}

/// A directory listing: (name, kind, inode number on the owner).
type Listing = Vec<(String, FileType, u64)>;

/// An open directory: listed at the first readdir (opening a directory to fsync it, as
/// SQLite does after creating a journal, needs no listing).
enum OpenDir {
    Unlisted(u64),
    Listed(Arc<Listing>),
}

struct Inodes {
    by_ino: HashMap<u64, INode>,
    by_fid: HashMap<(u32, Bytes), u64>,
    next_ino: u64,
}

impl Inodes {
    /// Registers a looked-up entry: its kernel inode number (one more lookup of it).
    fn remember(&mut self, vol: u32, handle: Bytes, path: String) -> u64 {
        if let Some(&ino) = self.by_fid.get(&(vol, handle.clone())) {
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.nlookup += 1;
                n.path = path;
            }
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_fid.insert((vol, handle.clone()), ino);
        self.by_ino.insert(ino, INode { vol, handle, path, nlookup: 1 });
        ino
    }
}

/// Answers a lookup-like request with the entry, registering its inode (returned).
fn reply_entry(inodes: &RwLock<Inodes>, vol: u32, path: String, e: Entry, reply: ReplyEntry) -> Option<u64> {
    match (e.fid, e.attr) {
        (Some(f), Some(a)) => {
            let ino = inodes.write().remember(vol, f.handle, path);
            reply.entry(&TTL, &file_attr(ino, &a), Generation(0));
            Some(ino)
        }
        _ => {
            reply.error(Errno::EIO);
            None
        }
    }
}

/// A negative entry: the name is absent (cached by the kernel under the directory's token).
fn reply_absent(reply: ReplyEntry) {
    reply.entry(&TTL, &file_attr(0, &Attr::default()), Generation(0))
}

/// One invocation on volume `vol`'s server as `who`. A reference to a server that has
/// restarted is refused before it runs (StaleReference), so it is resolved again and retried.
async fn invoke<T, F, Fut>(owners: &Owners, vol: u32, who: Option<Creds>, f: F) -> Result<T, Errno>
where
    F: Fn(VolumeStub) -> Fut,
    Fut: std::future::Future<Output = Result<Received<T>, OrbError>>,
{
    if vol >= SYNTHETIC_BASE {
        // Synthetic volumes answer reads in the client; everything that reaches here changes.
        return Err(Errno::EROFS);
    }
    let mut opts = CallOptions::default().deadline(CALL_DEADLINE);
    opts.creds = who;
    let mut last = OrbError::Shutdown;
    for _ in 0..2 {
        let stub = match owners.stub(vol).await {
            Ok(s) => s.with_options(opts.clone()),
            Err(e) => return Err(errno_of(&e)),
        };
        match f(stub).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(e @ OrbError::Exception(_)) if matches!(e.exception_code(), Some(code::STALE_REFERENCE) | Some(code::OBJECT_NOT_EXIST)) => {
                owners.drop_stub(vol);
                last = e;
            }
            Err(e) => {
                if e.is_node_down() {
                    owners.drop_stub(vol);
                }
                return Err(errno_of(&e));
            }
        }
    }
    Err(errno_of(&last))
}

/// What the notifier thread is asked to drop.
enum Inval {
    Inode(u64),
    Entry(u64, String),
}

type InvalQueue = std::sync::mpsc::Sender<(Vec<Inval>, tokio::sync::oneshot::Sender<()>)>;

pub struct Client {
    rt: tokio::runtime::Handle,
    orb: Orb,
    volumes: BTreeMap<u32, VolumeSpec>,
    owners: Arc<Owners>,
    holder: Arc<Holder>,
    roots: Mutex<HashMap<u32, Bytes>>,
    inodes: Arc<RwLock<Inodes>>,
    dirs: Mutex<HashMap<u64, OpenDir>>,
    next_dh: AtomicU64,
    cache: Arc<AttrCache>,
    synthetic: BTreeMap<u32, SyntheticVolume>,
    /// Open files of synthetic volumes: their contents, taken at open.
    syn_files: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    /// Files this node has asked the owner to lock: only their closes must reach the owner
    /// (a close releases the closing process's locks; nothing else is left to do at close,
    /// writes having gone through already).
    locked: Mutex<HashSet<u64>>,
}

fn errno_of(e: &OrbError) -> Errno {
    if let Some(n) = e.os_errno() {
        return Errno::from_i32(n);
    }
    match e {
        OrbError::Exception(x) if x.code == code::BAD_REQUEST => Errno::EINVAL,
        OrbError::Exception(x) if x.code == code::PERMISSION_DENIED => Errno::EACCES,
        _ => Errno::EIO,
    }
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn dtype_kind(d: u32) -> FileType {
    match d as u8 {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn file_attr(ino: u64, a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.blocks,
        atime: time(a.atime_ns),
        mtime: time(a.mtime_ns),
        ctime: time(a.ctime_ns),
        crtime: UNIX_EPOCH,
        kind: kind_of(a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize.max(512),
        flags: 0,
    }
}

/// The caller's credentials: uid and gid from the request, supplementary groups from /proc.
fn caller(req: &Request) -> Caller {
    let c = creds(req);
    Caller { uid: c.uid, gid: c.gid, groups: c.groups }
}

fn creds(req: &Request) -> Creds {
    let mut groups = Vec::new();
    if req.uid() != 0 {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{}/status", req.pid())) {
            if let Some(l) = s.lines().find(|l| l.starts_with("Groups:")) {
                groups = l[7..].split_whitespace().filter_map(|g| g.parse().ok()).collect();
            }
        }
    }
    Creds { uid: req.uid(), gid: req.gid(), groups }
}

/// Answers an operation whose reply carries nothing but success or an errno.
fn reply_empty<T>(reply: ReplyEmpty, r: Result<T, Errno>) {
    match r {
        Ok(_) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn fid(h: &Bytes) -> Option<Fid> {
    Some(Fid { handle: h.clone() })
}

impl Client {
    pub fn new(orb: Orb, rt: tokio::runtime::Handle, volumes: Vec<VolumeSpec>, synthetic: Vec<SyntheticVolume>) -> io::Result<Client> {
        let root = volumes.iter().find(|v| v.path == "/").ok_or_else(|| io::Error::other("the namespace has no volume at /"))?;
        let mut inodes = Inodes { by_ino: HashMap::new(), by_fid: HashMap::new(), next_ino: ROOT + 1 };
        inodes.by_ino.insert(ROOT, INode { vol: root.id, handle: Bytes::new(), path: "/".into(), nlookup: 1 });
        let owners = Arc::new(Owners::new(orb.clone(), volumes.iter().map(|v| (v.id, v.node)).collect()));
        Ok(Client {
            rt,
            holder: Arc::new(Holder::new(orb.node(), owners.clone())),
            owners,
            orb,
            volumes: volumes.into_iter().map(|v| (v.id, v)).collect(),
            roots: Mutex::new(HashMap::new()),
            inodes: Arc::new(RwLock::new(inodes)),
            dirs: Mutex::new(HashMap::new()),
            next_dh: AtomicU64::new(1),
            cache: Arc::new(AttrCache::default()),
            synthetic: synthetic.into_iter().enumerate().map(|(i, v)| (SYNTHETIC_BASE + i as u32, v)).collect(),
            syn_files: Mutex::new(HashMap::new()),
            locked: Mutex::new(HashSet::new()),
        })
    }

    /// The volume mounted exactly at `path`, other than the root volume.
    fn crossing(&self, path: &str) -> Option<u32> {
        self.mounts().find(|(p, _)| *p != "/" && *p == path).map(|(_, id)| id)
    }

    /// Every volume's mount path in the namespace, with its id.
    fn mounts(&self) -> impl Iterator<Item = (&str, u32)> {
        self.volumes.values().map(|v| (v.path.as_str(), v.id)).chain(self.synthetic.iter().map(|(id, v)| (v.path.as_str(), *id)))
    }

    /// Volumes mounted directly below `path`: (name, volume).
    fn crossings_below(&self, path: &str) -> Vec<(String, u32)> {
        self.mounts()
            .filter(|(p, _)| *p != "/")
            .filter_map(|(p, id)| {
                let (parent, name) = p.rsplit_once('/')?;
                let parent = if parent.is_empty() { "/" } else { parent };
                (parent == path).then(|| (name.to_string(), id))
            })
            .collect()
    }

    /// The synthetic volume `vol` and the path of `handle` in it, if `vol` is one.
    fn syn(&self, vol: u32, handle: &Bytes) -> Option<(&SyntheticVolume, String)> {
        let v = self.synthetic.get(&vol)?;
        Some((v, String::from_utf8_lossy(handle).into_owned()))
    }

    /// A synthetic file's answer as FUSE attributes (kernel inode `ino`).
    fn syn_attr(ino: u64, a: &SynAttr) -> FileAttr {
        let mode = if a.dir { libc::S_IFDIR | a.perm } else { libc::S_IFREG | a.perm };
        let t = a.mtime_s * 1_000_000_000;
        let at = Attr {
            ino,
            mode,
            nlink: if a.dir { 2 } else { 1 },
            uid: a.uid,
            gid: a.gid,
            atime_ns: t,
            mtime_ns: t,
            ctime_ns: t,
            blksize: 4096,
            ..Default::default()
        };
        file_attr(ino, &at)
    }

    /// Answers a lookup of `path` in synthetic volume `vol` (registering its inode).
    fn syn_entry(&self, vol: u32, v: &SyntheticVolume, spath: String, global: String, who: &Caller, reply: ReplyEntry) {
        match self.rt.block_on(v.provider.attr(&spath, who)) {
            Ok(a) => {
                let ino = self.inodes.write().remember(vol, Bytes::from(spath.into_bytes()), global);
                reply.entry(&Duration::ZERO, &Self::syn_attr(ino, &a), Generation(0))
            }
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    /// One invocation on volume `vol`'s server as `who`, waited for on this FUSE thread.
    fn call<T, F, Fut>(&self, vol: u32, who: Option<Creds>, f: F) -> Result<T, Errno>
    where
        F: Fn(VolumeStub) -> Fut,
        Fut: std::future::Future<Output = Result<Received<T>, OrbError>>,
    {
        self.rt.block_on(invoke(&self.owners, vol, who, f))
    }

    /// Finishes a request on the runtime instead of this FUSE thread: `answer` runs the
    /// invocation and replies to the kernel from the runtime thread that received the result,
    /// sparing a FUSE thread's wake per request (a reply is a write to /dev/fuse; it never
    /// waits on the mount, so the runtime may make it). `answer` must not block.
    fn answer(&self, answer: impl std::future::Future<Output = ()> + Send + 'static) {
        self.rt.spawn(answer);
    }

    /// (volume, handle, path) of a kernel inode; a volume root's handle is fetched once.
    fn node(&self, ino: u64) -> Result<(u32, Bytes, String), Errno> {
        let n = self.inodes.read().by_ino.get(&ino).cloned().ok_or(Errno::ESTALE)?;
        if !n.handle.is_empty() {
            return Ok((n.vol, n.handle, n.path));
        }
        Ok((n.vol, self.root_handle(n.vol)?, n.path))
    }

    fn root_handle(&self, vol: u32) -> Result<Bytes, Errno> {
        if let Some(h) = self.roots.lock().get(&vol) {
            return Ok(h.clone());
        }
        let e: Entry = self.call(vol, None, |s| async move { s.root(Empty {}).await })?;
        let h = e.fid.map(|f| f.handle).ok_or(Errno::EIO)?;
        self.roots.lock().insert(vol, h.clone());
        // The namespace root is inode 1; let callbacks naming its handle find it.
        if self.inodes.read().by_ino.get(&ROOT).is_some_and(|n| n.vol == vol) {
            self.inodes.write().by_fid.insert((vol, h.clone()), ROOT);
        }
        Ok(h)
    }

    /// A create-like operation (mknod, mkdir when `dir`, symlink, link) of `name` in `parent`.
    fn new_entry<F, Fut>(&self, req: &Request, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEntry, f: F)
    where
        F: Fn(VolumeStub, Option<Fid>, String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Received<Entry>, OrbError>> + Send,
    {
        let Some(name) = name.to_str() else { return reply.error(Errno::EINVAL) };
        let (vol, h, path) = or_reply!(reply, self.node(parent.0));
        let child = join(&path, name);
        if self.crossing(&child).is_some() {
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

    /// What this node buffered of the file reaches the owner (before anything that reads
    /// the owner's copy of the file).
    fn settle(&self, vol: u32, h: &Bytes) -> Result<(), Errno> {
        self.rt.block_on(self.holder.settle(vol, h, None)).map(|_| ()).map_err(|e| errno_of(&e))
    }

    /// This node is about to change directory `ino`: what it cached of it is void.
    fn changing_dir(&self, ino: u64) -> crate::attrcache::Ticket {
        self.cache.forget(ino);
        self.cache.ticket()
    }

    /// The owner's word on directory `ino` after this node changed it.
    fn dir_changed(&self, t: crate::attrcache::Ticket, ino: u64, attr: Option<Attr>) {
        if let Some(a) = attr {
            self.cache.put_dir(t, ino, a);
        }
    }

    fn unlink_like(&self, req: &Request, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let Some(name) = name.to_str() else { return reply.error(Errno::EINVAL) };
        let (vol, h, path) = or_reply!(reply, self.node(parent.0));
        if self.crossing(&join(&path, name)).is_some() {
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
}

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
        let Some(name) = name.to_str() else { return reply.error(Errno::ENOENT) };
        let (vol, h, path) = or_reply!(reply, self.node(parent.0));
        let child = join(&path, name);
        if let Some((sv, spath)) = self.syn(vol, &h) {
            return self.syn_entry(vol, sv, crate::synthetic::child(&spath, name), child, &caller(req), reply);
        }
        if self.cache.name_absent(parent.0, name) && self.crossing(&child).is_none() {
            return reply_absent(reply);
        }
        if let Some(v) = self.crossing(&child) {
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

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino.0 == ROOT {
            return;
        }
        let mut t = self.inodes.write();
        let gone = match t.by_ino.get_mut(&ino.0) {
            Some(n) => {
                n.nlookup = n.nlookup.saturating_sub(nlookup);
                (n.nlookup == 0).then(|| (n.vol, n.handle.clone()))
            }
            None => None,
        };
        if let Some(k) = gone {
            t.by_ino.remove(&ino.0);
            t.by_fid.remove(&k);
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
                Ok(a) => reply.attr(&Duration::ZERO, &Self::syn_attr(ino.0, &a)),
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
        if self.crossing(&join(&p1, name)).is_some() || self.crossing(&join(&p2, newname)).is_some() {
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

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let Some(name) = name.to_str() else { return reply.error(Errno::EINVAL) };
        let (vol, h, path) = or_reply!(reply, self.node(parent.0));
        let child = join(&path, name);
        if self.crossing(&child).is_some() {
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
        if let Some(d) = self.syn_files.lock().get(&fh.0) {
            let start = (offset as usize).min(d.len());
            return reply.data(&d[start..(start + size as usize).min(d.len())]);
        }
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        or_reply!(reply, self.settle(vol, &h));
        if self.volumes.get(&vol).is_some_and(|v| v.node == self.orb.node()) {
            match crate::server::read_local(vol, fh.0, self.orb.node(), offset, size) {
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

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
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

    fn readdir(&self, req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
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
                for (name, _) in self.crossings_below(&path) {
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

/// Mounts the global namespace at `mountpoint` (clearing a stale mount a crashed daemon left)
/// and serves this node's `CacheManager`.
pub fn mount(client: Client, mountpoint: &Path) -> io::Result<fuser::BackgroundSession> {
    let (orb, inodes, cache, holder) = (client.orb.clone(), client.inodes.clone(), client.cache.clone(), client.holder.clone());
    let client_rt = client.rt.clone();
    let session = mount_fs(client, mountpoint)?;
    let notifier = session.notifier();
    let (tx, rx) = std::sync::mpsc::channel::<(Vec<Inval>, tokio::sync::oneshot::Sender<()>)>();
    std::thread::Builder::new().name("pxfs-inval".into()).spawn(move || {
        for (work, done) in rx {
            for w in work {
                // ENOENT: the kernel no longer has it cached; nothing to drop.
                let _ = match w {
                    Inval::Inode(ino) => notifier.inval_inode(INodeNo(ino), 0, 0),
                    Inval::Entry(parent, name) => notifier.inval_entry(INodeNo(parent), OsStr::new(&name)),
                };
            }
            let _ = done.send(());
        }
    })?;
    set_readahead(mountpoint, 1024);
    let h = holder.clone();
    client_rt.spawn(orb.departures(move |gone| {
        let h = h.clone();
        async move { h.owner_gone(gone).await }
    }));
    let cm = export_cache_manager(&orb, CacheManagerServant { inodes, cache, holder, queue: Mutex::new(tx) });
    orb.register_name(crate::cache::CACHE_MANAGER_NAME, &cm);
    Ok(session)
}

/// This node's answer to an owner's revocation: drop what the kernel caches of those files
/// and names, then say so (or after INVALIDATE_WAIT, whichever is first).
struct CacheManagerServant {
    inodes: Arc<RwLock<Inodes>>,
    cache: Arc<AttrCache>,
    holder: Arc<Holder>,
    queue: Mutex<InvalQueue>,
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

/// Sets the readahead of the mount's backing device (FUSE's default is 128 KiB). The device
/// number comes from /proc/self/mountinfo: a stat of the mountpoint would be a FUSE request,
/// and this runs on the thread that must answer it.
fn set_readahead(mountpoint: &Path, kb: u32) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let want = mountpoint.to_string_lossy();
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() > 4 && f[4] == want {
            let _ = std::fs::write(format!("/sys/class/bdi/{}/read_ahead_kb", f[2]), kb.to_string());
        }
    }
}

fn mount_fs(client: Client, mountpoint: &Path) -> io::Result<fuser::BackgroundSession> {
    if let Err(e) = std::fs::metadata(mountpoint) {
        // A dead FUSE mount answers ENOTCONN or ECONNABORTED.
        if matches!(e.raw_os_error(), Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)) {
            let _ = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    std::fs::create_dir_all(mountpoint)?;
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName("ssi-pxfs".into()),
        fuser::MountOption::Subtype("pxfs".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    cfg.acl = fuser::SessionACL::All;
    cfg.n_threads = Some(4);
    cfg.clone_fd = true;
    fuser::spawn_mount(client, mountpoint, &cfg)
}
