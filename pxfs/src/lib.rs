//! ssi-pxfs: the proxy file system. One namespace mounted on every node; files
//! live on the disk of the node that owns their volume; every access goes through the ORB to
//! that volume's server.
//!
//! # Modules
//!
//! - `proto/pxfs.proto` — the `Volume` interface; errors are errno exceptions (ssi-orb's
//!   `code::ERRNO_BASE` + errno, `Exception::errno`/`from_io`, `OrbError::os_errno`; procmgmt
//!   uses the same).
//! - `server.rs` — `VolumeServer`: one per volume on its owner, exported as
//!   `pxfs.volume.<index in the config>`. Files are named by kernel file handles
//!   (`name_to_handle_at`: inode + generation, stable across renames and server restarts);
//!   each call opens its handles as root, then runs as the caller: metadata operations inline
//!   on the runtime thread, data I/O (read, write, fsync, truncation, listings) on the
//!   blocking pool. Keeps open files (per client node; `openfiles.rs` indexes them per file
//!   too), locks and cache tokens; drops a departed node's on a view change. Namespace operations return the directory's post-operation attributes.
//!   `LocalVolumes`: the servers of this process, handed to its client, which reads through
//!   their descriptors without an invocation.
//! - `cache.rs` — cache tokens, server side: holders per file handle, revocation callbacks,
//!   recalls of exclusive tokens; a file's entry goes when its last name and last open do.
//! - `openfiles.rs` — the files a volume server holds open for nodes, by number and per file
//!   (which nodes have it open) without a walk over all of them. `Volume.State` counts what a
//!   server keeps (open files, cached files, named directories, exclusive tokens, locked
//!   files); `ssi status` shows it per volume.
//! - `exclusive.rs` — exclusive tokens, owner side: grants (epoch-numbered) to the only node
//!   that has a file open, ended by recall, surrender, or the holder's death.
//! - `locks.rs` — POSIX byte-range locks per file, owner = (node, kernel lock owner);
//!   F_SETLKW waits on the server, bounded by the call's deadline. The same table arbitrates
//!   on an exclusive holder.
//! - `client/` — the fuser file system mounted at every node's mountpoint: `kernel.rs` the
//!   `Filesystem` trait, answering attributes, xattrs and renames itself and handing the
//!   rest to `names.rs` (lookups, listings, create, link, unlink) and `files.rs` (open,
//!   read, write, close, locks); `inodes.rs` kernel inode ↔ (volume, handle); `namespace.rs` the crossings
//!   (`/www` → the `/www` volume's root); `convert.rs` messages ↔ kernel attributes;
//!   `callbacks.rs` the node's `CacheManager` (`pxfs.cache`: invalidate, recall) and its
//!   invalidation thread. One ORB invocation per operation with the caller's creds, most of
//!   them answered to the kernel from the runtime (`answer`).
//! - `owners.rs` — the volume servers' stubs (`Owners`, resolved once, again after a
//!   restart) and `invoke`, one invocation with the caller's credentials.
//! - `holder.rs` — exclusive tokens, holder side: buffered small writes (written back at
//!   fsync, close, a read or stat of the file, 8 MiB, or recall), locally arbitrated locks,
//!   tombstones of given-up epochs (expired from a queue in burial order: one is buried per
//!   closed file, so nothing may sweep them per operation).
//! - `attrcache.rs` — what a node answers without asking: directories' attributes after its
//!   own namespace operations, absent extended attributes, the data version its kernel holds
//!   pages of (kept across opens while the owner reports the same); under the tokens,
//!   generation-checked against callbacks.
//! - `synthetic.rs` — volumes another subsystem makes up in the node's own process (the
//!   global `/proc`): read-only, nothing cached (TTL 0, direct I/O), contents taken at open.
//! - `sys.rs` — the system calls (handles, per-thread fsuid/fsgid/groups, `/proc/self/fd`).
//!
//! # Invariants
//!
//! - **PXFS acts as the caller.** Every file operation runs with the calling process's uid,
//!   gid and supplementary groups (fsuid/fsgid/groups of a server thread; the kernel checks),
//!   also on the owner; mounts use `default_permissions` and `allow_other`. Root on one node
//!   is root on the namespace (as in Solaris MC); no other user gains anything.
//! - **PXFS coherence is by server-granted tokens.** A node caches attributes, entries (30 s)
//!   and file pages of what the owner has sent it; the owner records it as a holder. Before
//!   the owner completes a change (write, setattr, create/unlink/rename in a directory,
//!   xattrs) it calls back every other holder (`CacheManager.Invalidate`, two-way, 1 s bound)
//!   and they drop the stale state through fuser's Notifier on a dedicated thread — never on
//!   a FUSE thread or the ORB runtime (an inode lock held by an in-flight request would
//!   deadlock it); the callback answers once the kernel has dropped it, or after 500 ms (which
//!   breaks a cycle between two nodes writing one file). At an open, pages are kept only if the
//!   owner reports the data at the version (size, mtime, ctime) they were read at and no
//!   callback came since; otherwise dropped (close-to-open even for a missed callback, NFS's
//!   rule; a compile opens the same headers again and again). Known window: a read reply in flight while a
//!   callback runs can repopulate a page; programs that share a file under fcntl locks
//!   (SQLite) never meet it. Tests show the tokens matter: without callbacks, the coherence
//!   and SQLite tests fail. Entries include negative ones (a name looked up and absent).
//!   What the client keeps in user space (`attrcache`) is dropped by the same callbacks; a
//!   reply that raced a callback is not kept (generation check). The server forgets a file's
//!   holders once the file has no name and no open anywhere (unlink, rmdir, or rename over
//!   it, else its last close): no node can reach it again, and a volume that makes and removes
//!   files all day must not grow a token per file it ever had. Per-operation work on this
//!   state is O(1) in the number of files (indexes, queues in time order), never a sweep.
//! - **Exclusive tokens (Sprite's "not write-shared", NFSv4 delegations).** The only node with
//!   a file open may buffer its small writes and arbitrate its locks. Anything another node
//!   does with the file — lookup, stat, open, truncate, locks — first recalls the token: the
//!   holder writes back, hands its locks to the owner's table, and only then does the other
//!   node's operation run. An open registers itself as an opener before it checks for a
//!   holder, and a grant checks for other openers under the grant table's lock, so the two
//!   cannot miss each other. Epochs and tombstones keep a recall that overtakes its grant's
//!   reply from resurrecting the grant. Buffered writes are the application's until fsync or
//!   close, as on a local disk: lost if the writing node dies first; the holder's death ends
//!   its tokens and its locks. A lock request that must wait hands the token back first
//!   (waiting is the owner's job).
//! - **Replies to the kernel may come from the runtime.** A FUSE reply is a write to
//!   `/dev/fuse` and never waits on the mount, so most operations are finished by a task on
//!   the runtime (`Client::answer`): the FUSE thread goes back to the kernel at once and one
//!   thread wake per request is saved. Such tasks must not block (tokio mutexes are taken with
//!   `.await` or `try_lock` there, `blocking_lock` only on FUSE threads).
//! - **Nothing on the ORB runtime thread may touch a PXFS mount.** FUSE requests are answered
//!   by threads that need that runtime; a stat of the mountpoint from it deadlocks the node
//!   (found and fixed: the readahead setting reads /proc/self/mountinfo instead).
//! - **PXFS never hangs on a dead owner.** Calls to a down node fail at once (EIO); blocking
//!   lock waits run in a task, not a FUSE thread; `ssi down` detaches dead mounts. When an
//!   owner leaves the view, its volumes' exclusive tokens on every other node are void.

pub mod attrcache;
pub mod cache;
pub mod client;
pub mod errno;
pub mod exclusive;
pub mod holder;
pub mod locks;
pub mod openfiles;
pub mod owners;
pub mod server;
pub mod synthetic;
pub mod sys;

pub mod proto {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ssi.pxfs.rs"));
}

/// What this crate can do today.
pub const STATUS: &str = "pxfs: volumes served and mounted on every node, coherent caching under server tokens";

/// A volume of the global namespace.
#[derive(Clone, Debug)]
pub struct VolumeSpec {
    /// Index in the cluster config: the same on every node.
    pub id: u32,
    /// Path in the global namespace ("/", "/www", ...).
    pub path: String,
    pub node: u32,
    pub dir: std::path::PathBuf,
}
