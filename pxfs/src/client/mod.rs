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
//! Layers: `kernel` is the fuser adapter (a request's arguments in, the reply out); the
//! operations are in `names`, `files` and `attrs`, with no fuser type: plain arguments in, an
//! [`Answer`] out, and every caching decision theirs; the servers' stubs are `crate::owners`;
//! `inodes` and `namespace` are this node's tables; `callbacks` is its `CacheManager`.
//!
//! Operations run on fuser's threads and block on ORB invocations; one that ends with an
//! invocation (and a blocking lock request, F_SETLKW) is answered from the runtime instead.

/// The value of a `Result<_, Errno>`, or the operation answers the errno now.
// Defined before the submodules: they use it.
macro_rules! now_or {
    ($e:expr) => {
        match $e {
            Ok(x) => x,
            Err(e) => return Answer::Now(Err(e)),
        }
    };
}

mod attrs;
mod callbacks;
mod convert;
mod files;
mod inodes;
mod kernel;
mod names;
mod namespace;
mod passthrough;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use ssi_orb::proto::{Creds, Empty};
use ssi_orb::{Orb, OrbError, Received};

use crate::attrcache::AttrCache;
use crate::errno::Errno;
use crate::holder::Holder;
use crate::owners::{errno_of, invoke, Owners, SYNTHETIC_BASE};
use crate::proto::*;
use crate::server::LocalVolumes;
use crate::synthetic::{Caller, SynAttr, SyntheticVolume};
use crate::VolumeSpec;
use inodes::Inodes;
use namespace::Mounts;

/// Attributes and entries are cached this long, or until the owner revokes them.
const TTL: Duration = Duration::from_secs(30);
const ROOT: u64 = 1;
/// How long a blocking lock request waits before it answers EINTR.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// A directory listing: (name, `DT_*` type, inode number on the owner).
type Listing = Vec<(Bytes, u32, u64)>;

/// How an operation ends: now, or from the runtime once an invocation returns (the FUSE
/// thread does not wait for it; see `kernel`).
pub(super) enum Answer<T> {
    Now(Result<T, Errno>),
    Later(BoxFuture<'static, Result<T, Errno>>),
}

impl<T> From<Result<T, Errno>> for Answer<T> {
    fn from(r: Result<T, Errno>) -> Answer<T> {
        Answer::Now(r)
    }
}

/// An operation that could not even start (a name that is not UTF-8) answers at once.
impl<T> From<Result<Answer<T>, Errno>> for Answer<T> {
    fn from(r: Result<Answer<T>, Errno>) -> Answer<T> {
        r.unwrap_or_else(|e| Answer::Now(Err(e)))
    }
}

/// A file's attributes: a volume's (cached by the kernel under a token) or a synthetic
/// file's (made up at each call, never cached).
pub(super) enum Attrs {
    Volume(Attr),
    Synthetic(SynAttr),
}

/// What a lookup or a create found: the name's kernel inode, or that the name is absent.
pub(super) enum Found {
    Entry { ino: u64, attrs: Attrs },
    Absent,
}

/// An open file: its handle, and whether the kernel keeps the pages it has (the data's
/// version is the one they were read at) or must not cache at all (synthetic files).
pub(super) struct Opened {
    fh: u64,
    keep_cache: bool,
    direct_io: bool,
    /// Through passthrough: the file on this node's disk to back it.
    backing: Option<Backing>,
}

/// The backing file for a passthrough open of `ino`, and the table that registers it.
pub(super) struct Backing {
    ino: u64,
    file: std::os::fd::OwnedFd,
    table: Arc<passthrough::Passthrough>,
}

/// What the owner answered a getxattr or listxattr with: the size asked about, or the data.
pub(super) enum XattrAnswer {
    Size(u32),
    Data(Bytes),
}

/// The credentials a synthetic volume's provider checks, from the caller's.
fn caller_of(c: &Creds) -> Caller {
    Caller { uid: c.uid, gid: c.gid, groups: c.groups.clone() }
}

/// An open directory: listed at the first readdir (opening a directory to fsync it, as
/// SQLite does after creating a journal, needs no listing).
enum OpenDir {
    Unlisted(u64),
    Listed(Arc<Listing>),
}

pub struct Client {
    rt: tokio::runtime::Handle,
    orb: Orb,
    volumes: BTreeMap<u32, VolumeSpec>,
    owners: Arc<Owners>,
    holder: Arc<Holder>,
    roots: Mutex<HashMap<u32, Bytes>>,
    /// The namespace root's last attributes: answered when its owner cannot be reached, so
    /// that walks into the volumes mounted below it (and the global /proc) go on while the
    /// root volume is unavailable (until volumes are replicated).
    last_root_attr: Arc<Mutex<Option<crate::proto::Attr>>>,
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
    /// Where the volumes are in the namespace.
    mounts: Mounts,
    /// The volume servers of this process.
    local: LocalVolumes,
    /// Opens backed by this node's disk.
    passthrough: Arc<passthrough::Passthrough>,
}

impl Client {
    /// The client of this node: `volumes` make the namespace, `local` are the servers this
    /// process runs (read without an invocation), `synthetic` the volumes made up here.
    pub fn new(
        orb: Orb,
        rt: tokio::runtime::Handle,
        volumes: Vec<VolumeSpec>,
        local: LocalVolumes,
        synthetic: Vec<SyntheticVolume>,
    ) -> io::Result<Client> {
        let root = volumes.iter().find(|v| v.path == "/").ok_or_else(|| io::Error::other("the namespace has no volume at /"))?;
        let inodes = Inodes::new(root.id);
        let mounts = Mounts::new(
            volumes
                .iter()
                .map(|v| (v.path.clone(), v.id))
                .chain(synthetic.iter().enumerate().map(|(i, v)| (v.path.clone(), SYNTHETIC_BASE + i as u32))),
        );
        let owners = Arc::new(Owners::new(orb.clone(), volumes.iter().map(|v| (v.id, v.node)).collect()));
        Ok(Client {
            rt,
            holder: Arc::new(Holder::new(orb.node(), owners.clone())),
            owners,
            orb,
            volumes: volumes.into_iter().map(|v| (v.id, v)).collect(),
            roots: Mutex::new(HashMap::new()),
            last_root_attr: Arc::new(Mutex::new(None)),
            inodes: Arc::new(RwLock::new(inodes)),
            dirs: Mutex::new(HashMap::new()),
            next_dh: AtomicU64::new(1),
            cache: Arc::new(AttrCache::default()),
            synthetic: synthetic.into_iter().enumerate().map(|(i, v)| (SYNTHETIC_BASE + i as u32, v)).collect(),
            syn_files: Mutex::new(HashMap::new()),
            locked: Mutex::new(HashSet::new()),
            mounts,
            local,
            passthrough: Arc::default(),
        })
    }

    /// The synthetic volume `vol` and the path of `handle` in it, if `vol` is one.
    fn syn(&self, vol: u32, handle: &Bytes) -> Option<(&SyntheticVolume, String)> {
        let v = self.synthetic.get(&vol)?;
        Some((v, String::from_utf8_lossy(handle).into_owned()))
    }

    /// One invocation on volume `vol`'s server as `who`, waited for on this FUSE thread.
    fn call<T, F, Fut>(&self, vol: u32, who: Option<Creds>, f: F) -> Result<T, Errno>
    where
        F: Fn(VolumeStub) -> Fut,
        Fut: std::future::Future<Output = Result<Received<T>, OrbError>>,
    {
        self.rt.block_on(invoke(&self.owners, vol, who, f))
    }

    /// (volume, handle, path) of a kernel inode; a volume root's handle is fetched once.
    fn node(&self, ino: u64) -> Result<(u32, Bytes, Vec<u8>), Errno> {
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
}

/// Mounts the global namespace at `mountpoint` (clearing a stale mount a crashed daemon left)
/// and serves this node's `CacheManager`.
pub fn mount(client: Client, mountpoint: &Path) -> io::Result<fuser::BackgroundSession> {
    let (orb, inodes, cache, holder) = (client.orb.clone(), client.inodes.clone(), client.cache.clone(), client.holder.clone());
    let client_rt = client.rt.clone();
    let session = mount_fs(client, mountpoint)?;
    let tx = callbacks::start_invalidator(session.notifier())?;
    set_readahead(mountpoint, 1024);
    let h = holder.clone();
    client_rt.spawn(orb.departures(move |gone| {
        let h = h.clone();
        async move { h.owner_gone(gone).await }
    }));
    let cm = export_cache_manager(&orb, callbacks::CacheManagerServant { inodes, cache, holder, queue: Mutex::new(tx) });
    orb.register_name(crate::cache::CACHE_MANAGER_NAME, &cm);
    Ok(session)
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
