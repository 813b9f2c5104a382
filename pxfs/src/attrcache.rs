//! What a node answers for itself, without asking the owner: attributes the kernel dropped
//! but this node still knows to be current.
//!
//! Two things, both held under the owner's cache token for the file (see `cache`), so a
//! change by another node calls this node back and clears them:
//! - **directory attributes after this node's own namespace operations.** The kernel forgets
//!   a directory's attributes after every create, unlink or rename in it, and with
//!   `default_permissions` needs them again at the next path walk through it: without this,
//!   every create or unlink would cost a second round trip (a GETATTR). The owner returns the
//!   directory's attributes with each such operation (NFSv3's post-operation attributes).
//! - **absent extended attributes.** The kernel asks for `security.capability` before every
//!   write (to strip it); nearly every file has none.
//! - **the complete list of names of directories this node made** (empty at mkdir, then
//!   kept up by this node's own creates and removes): a lookup of a name not in it is
//!   answered "absent" here, so creating a file in such a directory is one round trip, not
//!   two. Any callback about the directory drops the list.
//!
//! - **the version of the file data the kernel caches** (size, mtime, ctime as of the open
//!   that let the kernel fill its pages): at the next open, if the owner reports the same
//!   version and no callback came meanwhile, the kernel keeps its pages (FOPEN_KEEP_CACHE)
//!   rather than reading the file again. The version check is NFS's close-to-open rule and
//!   holds even when a callback was lost; the callback makes it hold within the clock's grain.
//!   A compile opens the same headers again and again: without this every open re-read them.
//!
//! A reply can race a callback: the owner revokes while the reply that carried older
//! attributes is still on its way. Every callback bumps a generation; a reply is kept only
//! if no callback came between sending the request and receiving the reply.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::proto::Attr;

/// Bound on anything kept here, also when a callback was lost (the owner gave up on this
/// node for a while): the same as the kernel's own attribute timeout.
const KEEP: Duration = Duration::from_secs(30);

/// Every name of a directory, as bytes.
type KnownNames = HashSet<Vec<u8>>;

#[derive(Default)]
pub struct AttrCache {
    generation: AtomicU64,
    dirs: Mutex<HashMap<u64, (Attr, Instant)>>,
    /// Per inode: names known absent, since when.
    no_xattr: Mutex<HashMap<u64, Vec<(String, Instant)>>>,
    names: Mutex<HashMap<u64, (KnownNames, Instant)>>,
    /// Per inode: the version of the data the kernel holds pages of.
    data: Mutex<HashMap<u64, DataVersion>>,
}

/// What identifies a file's contents at an open: a change by anyone moves ctime or size.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DataVersion {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl From<&Attr> for DataVersion {
    fn from(a: &Attr) -> Self {
        DataVersion { size: a.size, mtime_ns: a.mtime_ns, ctime_ns: a.ctime_ns }
    }
}

/// Taken before a request; a reply is cached only while it is still current.
#[derive(Clone, Copy)]
pub struct Ticket(u64);

impl AttrCache {
    pub fn ticket(&self) -> Ticket {
        Ticket(self.generation.load(SeqCst))
    }

    /// A directory's attributes, if known current.
    pub fn dir(&self, ino: u64) -> Option<Attr> {
        let m = self.dirs.lock();
        m.get(&ino).filter(|(_, at)| at.elapsed() < KEEP).map(|(a, _)| *a)
    }

    /// Keeps `a` as directory `ino`'s attributes unless a callback came after `t`.
    pub fn put_dir(&self, t: Ticket, ino: u64, a: Attr) {
        let mut m = self.dirs.lock();
        if self.generation.load(SeqCst) == t.0 {
            m.insert(ino, (a, Instant::now()));
        } else {
            m.remove(&ino);
        }
    }

    /// Whether extended attribute `name` of `ino` is known absent.
    pub fn xattr_absent(&self, ino: u64, name: &str) -> bool {
        let m = self.no_xattr.lock();
        m.get(&ino).is_some_and(|names| names.iter().any(|(n, at)| n == name && at.elapsed() < KEEP))
    }

    pub fn put_xattr_absent(&self, t: Ticket, ino: u64, name: &str) {
        let mut m = self.no_xattr.lock();
        if self.generation.load(SeqCst) == t.0 {
            let names = m.entry(ino).or_default();
            names.retain(|(n, _)| n != name);
            names.push((name.to_string(), Instant::now()));
        }
    }

    /// Directory `dir` was made by this node just now: it is empty.
    pub fn made_dir(&self, t: Ticket, dir: u64) {
        let mut m = self.names.lock();
        if self.generation.load(SeqCst) == t.0 {
            m.insert(dir, (HashSet::new(), Instant::now()));
        }
    }

    /// Whether `name` is known absent from directory `dir`.
    pub fn name_absent(&self, dir: u64, name: &[u8]) -> bool {
        self.names.lock().get(&dir).is_some_and(|(names, at)| at.elapsed() < KEEP && !names.contains(name))
    }

    /// This node made (`present`) or removed `name` in `dir`.
    pub fn name_changed(&self, dir: u64, name: &[u8], present: bool) {
        if let Some((names, _)) = self.names.lock().get_mut(&dir) {
            if present {
                names.insert(name.to_vec());
            } else {
                names.remove(name);
            }
        }
    }

    /// An open of `ino` found its data at version `v`: whether the kernel may keep the pages
    /// it has (they were read at that same version, with no callback since). Otherwise `v`
    /// is remembered for the next open (unless a callback came after `t`) and the kernel
    /// drops its pages.
    pub fn keep_data(&self, t: Ticket, ino: u64, v: DataVersion) -> bool {
        let mut m = self.data.lock();
        if self.generation.load(SeqCst) != t.0 {
            m.remove(&ino);
            return false;
        }
        if m.get(&ino) == Some(&v) {
            return true;
        }
        m.insert(ino, v);
        false
    }

    /// This node is about to change `ino` itself (the reply brings the new state, if any).
    pub fn forget(&self, ino: u64) {
        self.dirs.lock().remove(&ino);
        self.no_xattr.lock().remove(&ino);
        self.data.lock().remove(&ino);
    }

    /// This node is about to change `ino`'s attributes but not its extended attributes.
    pub fn forget_dir(&self, ino: u64) {
        self.dirs.lock().remove(&ino);
    }

    /// The kernel forgot inode `ino`: so does this cache.
    pub fn drop_inode(&self, ino: u64) {
        self.forget(ino);
        self.names.lock().remove(&ino);
    }

    /// Forgets everything (an operation whose effects are not all known here, like rename).
    pub fn clear(&self) {
        self.generation.fetch_add(1, SeqCst);
        self.dirs.lock().clear();
        self.no_xattr.lock().clear();
        self.names.lock().clear();
        self.data.lock().clear();
    }

    /// An owner's callback: `inos` changed elsewhere.
    pub fn revoke(&self, inos: &HashSet<u64>) {
        // Bumped first: a reply racing this callback must not be kept.
        self.generation.fetch_add(1, SeqCst);
        let (mut dirs, mut no_xattr, mut names, mut data) = (self.dirs.lock(), self.no_xattr.lock(), self.names.lock(), self.data.lock());
        for i in inos {
            dirs.remove(i);
            no_xattr.remove(i);
            names.remove(i);
            data.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_older_than_a_callback_is_not_kept() {
        let c = AttrCache::default();
        let t = c.ticket();
        c.revoke(&HashSet::from([7]));
        c.put_dir(t, 7, Attr { ino: 7, ..Default::default() });
        assert!(c.dir(7).is_none());
        c.put_xattr_absent(t, 7, "security.capability");
        assert!(!c.xattr_absent(7, "security.capability"));
        let t = c.ticket();
        c.put_dir(t, 7, Attr { ino: 7, ..Default::default() });
        c.put_xattr_absent(t, 7, "security.capability");
        assert_eq!(c.dir(7).map(|a| a.ino), Some(7));
        assert!(c.xattr_absent(7, "security.capability"));
        c.revoke(&HashSet::from([7]));
        assert!(c.dir(7).is_none() && !c.xattr_absent(7, "security.capability"));
    }

    #[test]
    fn pages_are_kept_only_at_the_version_they_were_read_and_without_a_callback() {
        let c = AttrCache::default();
        let a = Attr { size: 10, mtime_ns: 5, ctime_ns: 5, ..Default::default() };
        let v = DataVersion::from(&a);
        assert!(!c.keep_data(c.ticket(), 3, v), "first open: nothing read yet");
        assert!(c.keep_data(c.ticket(), 3, v), "same version, no callback");
        let changed = DataVersion::from(&Attr { ctime_ns: 6, ..a });
        assert!(!c.keep_data(c.ticket(), 3, changed), "written elsewhere, callback lost");
        assert!(c.keep_data(c.ticket(), 3, changed));
        c.revoke(&HashSet::from([3]));
        assert!(!c.keep_data(c.ticket(), 3, changed), "a callback drops the pages");
        // A callback between the request and its reply: neither kept nor remembered.
        let t = c.ticket();
        c.revoke(&HashSet::from([4]));
        assert!(!c.keep_data(t, 3, changed));
        assert!(!c.keep_data(c.ticket(), 3, changed));
        assert!(c.keep_data(c.ticket(), 3, changed));
        c.forget(3);
        assert!(!c.keep_data(c.ticket(), 3, changed), "changed here: dropped");
    }

    #[test]
    fn a_directory_made_here_knows_its_names_until_a_callback() {
        let c = AttrCache::default();
        let t = c.ticket();
        c.made_dir(t, 9);
        assert!(c.name_absent(9, b"a"));
        c.name_changed(9, b"a", true);
        assert!(!c.name_absent(9, b"a") && c.name_absent(9, b"b"));
        c.name_changed(9, b"a", false);
        assert!(c.name_absent(9, b"a"));
        c.revoke(&HashSet::from([9]));
        assert!(!c.name_absent(9, b"b"), "unknown after a callback");
        assert!(!c.name_absent(10, b"x"), "unknown for a directory not made here");
    }
}
