//! This node's kernel inode numbers: each names (volume, file handle on the owner) and the
//! file's path in the global namespace, counted by the kernel's lookups.
//!
//! A file's number is the file's own, the same on every node and for the file's life
//! ([`stable_ino`]: its volume and its inode number on the owner's disk), since the kernel
//! reports the number FUSE gives it as `st_ino` and tools compare them across runs and
//! hosts (git's index, `find -inum`, tar and rsync finding hard links). Synthetic files
//! (the global /proc) have no disk: they are counted from 2, below every stable number.

use std::collections::HashMap;

use bytes::Bytes;

use super::ROOT;

#[derive(Clone)]
pub(super) struct INode {
    pub(super) vol: u32,
    /// Empty for a volume root until its handle is known.
    pub(super) handle: Bytes,
    /// Path in the global namespace.
    pub(super) path: Vec<u8>,
    pub(super) nlookup: u64,
}

pub(super) struct Inodes {
    pub(super) by_ino: HashMap<u64, INode>,
    pub(super) by_fid: HashMap<(u32, Bytes), u64>,
    pub(super) next_ino: u64,
}

impl Inodes {
    /// The table of a fresh mount: inode 1 is the root of volume `root_vol`.
    pub(super) fn new(root_vol: u32) -> Inodes {
        let mut t = Inodes { by_ino: HashMap::new(), by_fid: HashMap::new(), next_ino: ROOT + 1 };
        t.by_ino.insert(ROOT, INode { vol: root_vol, handle: Bytes::new(), path: "/".into(), nlookup: 1 });
        t
    }

    /// The kernel forgot `n` lookups of `ino`: the inode's (volume, handle) when that was the
    /// last, and it is gone from the table. The root is never forgotten.
    pub(super) fn forget(&mut self, ino: u64, n: u64) -> Option<(u32, Bytes)> {
        if ino == ROOT {
            return None;
        }
        let node = self.by_ino.get_mut(&ino)?;
        node.nlookup = node.nlookup.saturating_sub(n);
        if node.nlookup > 0 {
            return None;
        }
        let gone = (node.vol, node.handle.clone());
        self.by_ino.remove(&ino);
        self.by_fid.remove(&gone);
        Some(gone)
    }

    /// Registers a looked-up entry: its kernel inode number (one more lookup of it). `disk_ino`
    /// is its inode number on the owner's disk (`None` for a synthetic file).
    pub(super) fn remember(&mut self, vol: u32, handle: Bytes, path: Vec<u8>, disk_ino: Option<u64>) -> u64 {
        if let Some(&ino) = self.by_fid.get(&(vol, handle.clone())) {
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.nlookup += 1;
                n.path = path;
            }
            return ino;
        }
        let ino = match disk_ino {
            Some(d) => stable_ino(vol, d),
            None => {
                self.next_ino += 1;
                self.next_ino - 1
            }
        };
        if let Some(old) = self.by_ino.get_mut(&ino) {
            // The disk reused the inode number of a file that is gone (a new handle: another
            // generation) while the kernel still counts lookups of the number: the number
            // now names the new file, and the kernel's count goes on.
            let gone = std::mem::replace(&mut old.handle, handle.clone());
            old.nlookup += 1;
            old.path = path;
            self.by_fid.remove(&(vol, gone));
            self.by_fid.insert((vol, handle), ino);
            return ino;
        }
        self.by_fid.insert((vol, handle.clone()), ino);
        self.by_ino.insert(ino, INode { vol, handle, path, nlookup: 1 });
        ino
    }
}

/// The cluster-wide number of the file with inode number `disk_ino` on volume `vol`'s disk:
/// the volume in the top 24 bits (plus one, so every such number is above the synthetic
/// ones), the disk's number in the low 40 (ext4's are 32-bit).
pub(super) fn stable_ino(vol: u32, disk_ino: u64) -> u64 {
    ((vol as u64 + 1) & 0xff_ffff) << 40 | (disk_ino & ((1 << 40) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: &[u8]) -> Bytes {
        Bytes::copy_from_slice(b)
    }

    #[test]
    fn a_file_gets_one_number_and_every_lookup_counts() {
        let mut t = Inodes::new(0);
        let a = t.remember(0, h(b"a"), "/a".into(), Some(12));
        assert_eq!(t.remember(0, h(b"a"), "/a".into(), Some(12)), a, "the same file, the same number");
        assert_eq!(t.by_ino[&a].nlookup, 2);
        assert_ne!(t.remember(0, h(b"b"), "/b".into(), Some(13)), a);
        assert_ne!(a, ROOT);
    }

    #[test]
    fn the_same_handle_on_another_volume_is_another_file() {
        let mut t = Inodes::new(0);
        assert_ne!(t.remember(0, h(b"x"), "/x".into(), Some(12)), t.remember(1, h(b"x"), "/v/x".into(), Some(12)));
    }

    #[test]
    fn a_file_goes_when_the_kernel_forgets_its_last_lookup() {
        let mut t = Inodes::new(0);
        let a = t.remember(0, h(b"a"), "/a".into(), Some(12));
        t.remember(0, h(b"a"), "/a".into(), Some(12));
        assert_eq!(t.forget(a, 1), None, "one lookup left");
        assert!(t.by_ino.contains_key(&a));
        assert_eq!(t.forget(a, 1), Some((0, h(b"a"))));
        assert!(!t.by_ino.contains_key(&a) && !t.by_fid.contains_key(&(0, h(b"a"))), "gone from both maps");
        assert_eq!(t.forget(a, 1), None, "forgetting an unknown number is harmless");
        assert_eq!(t.remember(0, h(b"a"), "/a".into(), Some(12)), a, "the file's number is the file's, looked up again");
    }

    #[test]
    fn numbers_are_the_disks_per_volume_and_synthetic_files_count_below_them() {
        let mut t = Inodes::new(0);
        let a = t.remember(2, h(b"a"), "/v/a".into(), Some(12));
        assert_eq!(a, stable_ino(2, 12));
        assert_eq!(t.remember(2, h(b"a"), "/v/b".into(), Some(12)), a, "a hard link shares it");
        let p = t.remember(0, h(b"proc/1"), "/proc/1".into(), None);
        assert!(p > ROOT && p < stable_ino(0, 0));
        assert_ne!(t.remember(0, h(b"proc/2"), "/proc/2".into(), None), p);
    }

    #[test]
    fn a_reused_disk_number_names_the_new_file_and_keeps_the_kernels_count() {
        let mut t = Inodes::new(0);
        let a = t.remember(0, h(b"old"), "/a".into(), Some(12));
        assert_eq!(t.remember(0, h(b"new"), "/b".into(), Some(12)), a);
        assert_eq!((t.by_ino[&a].handle.clone(), t.by_ino[&a].nlookup), (h(b"new"), 2));
        assert!(!t.by_fid.contains_key(&(0, h(b"old"))));
        assert_eq!(t.forget(a, 2), Some((0, h(b"new"))));
    }

    #[test]
    fn the_root_is_never_forgotten() {
        let mut t = Inodes::new(3);
        assert_eq!(t.forget(ROOT, 1000), None);
        assert_eq!(t.by_ino[&ROOT].vol, 3);
        assert_eq!(t.by_ino[&ROOT].path, b"/");
    }

    #[test]
    fn a_renamed_file_keeps_its_number_under_its_new_path() {
        let mut t = Inodes::new(0);
        let a = t.remember(0, h(b"a"), "/d/a".into(), Some(12));
        assert_eq!(t.remember(0, h(b"a"), "/e/b".into(), Some(12)), a);
        assert_eq!(t.by_ino[&a].path, b"/e/b");
    }
}
