//! FUSE passthrough on the owner's node: an open of a file of a volume this node serves is
//! backed by the file on this node's disk, so its reads and writes (and mmap) go from the
//! kernel straight to the disk's file system, not through this process.
//!
//! The kernel's rules, which this table keeps: an inode is either in cached mode (ordinary
//! opens through the page cache) or in passthrough mode, never both at once (an open that
//! would mix them fails with ETXTBSY), and every passthrough open of an inode must name the
//! same backing file. So an open goes through passthrough only while this node has no
//! ordinary open of the file; the backing file (opened read-write, as the daemon: the
//! opener's rights were checked by the server's open) lives from the inode's first
//! passthrough open to its last close.
//!
//! Other nodes stay coherent through the server: a writable passthrough open marks the file
//! `uncached` for every other node (see `OpenReq.passthrough` in pxfs.proto).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use fuser::BackingId;
use parking_lot::Mutex;

/// One inode's opens on this node, by mode.
#[derive(Default)]
struct Modes {
    passthrough: u32,
    cached: u32,
    /// The registered backing file, and the file itself (fsync goes to it directly).
    backing: Option<(Arc<BackingId>, Arc<OwnedFd>)>,
}

impl Modes {
    /// One passthrough open counted as an ordinary one instead.
    fn demote(&mut self) {
        self.passthrough = self.passthrough.saturating_sub(1);
        self.cached += 1;
    }
}

#[derive(Default)]
pub(super) struct Passthrough {
    /// Whether the kernel agreed to passthrough at mount, and backing files can be made.
    enabled: AtomicBool,
    by_ino: Mutex<HashMap<u64, Modes>>,
    /// The passthrough opens by file handle (a release names the handle, not the mode).
    fhs: Mutex<HashMap<u64, u64>>,
}

impl Passthrough {
    pub(super) fn enable(&self) {
        self.enabled.store(true, Relaxed);
    }

    /// Backing files cannot be made (no CAP_SYS_ADMIN): ordinary opens from now on.
    pub(super) fn disable(&self, why: &std::io::Error) {
        if self.enabled.swap(false, Relaxed) {
            tracing::warn!("FUSE passthrough off: a backing file could not be registered ({why})");
        }
    }

    /// Registers an open of `ino` about to be made; whether it goes through passthrough
    /// (`eligible`: the file is on a volume this node serves).
    pub(super) fn begin(&self, ino: u64, eligible: bool) -> bool {
        let mut t = self.by_ino.lock();
        let m = t.entry(ino).or_default();
        let pt = eligible && self.enabled.load(Relaxed) && m.cached == 0;
        if pt {
            m.passthrough += 1;
        } else {
            m.cached += 1;
        }
        pt
    }

    /// The backing file of `ino`'s passthrough opens: the one already registered, or `file`
    /// as `register` makes it one. None when it could not: the open is an ordinary one instead.
    pub(super) fn backing(
        &self,
        ino: u64,
        file: OwnedFd,
        register: impl FnOnce(&OwnedFd) -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let mut t = self.by_ino.lock();
        let m = t.entry(ino).or_default();
        if let Some((b, _)) = &m.backing {
            return Some(b.clone());
        }
        match register(&file) {
            Ok(b) => Some(m.backing.insert((Arc::new(b), Arc::new(file))).0.clone()),
            Err(e) => {
                self.disable(&e);
                m.demote();
                None
            }
        }
    }

    /// An open `begin` chose for passthrough is an ordinary one after all.
    pub(super) fn demote(&self, ino: u64) {
        self.by_ino.lock().entry(ino).or_default().demote();
    }

    /// The attributes of `ino` from its file on this node's disk, while it is open through
    /// passthrough here (the kernel asks again after each write through it).
    pub(super) fn attr(&self, ino: u64) -> Option<std::io::Result<crate::proto::Attr>> {
        let file = self.by_ino.lock().get(&ino)?.backing.as_ref()?.1.clone();
        Some(crate::sys::stat_fd(std::os::fd::AsRawFd::as_raw_fd(&*file)).map(|st| crate::server::attr_of(&st)))
    }

    /// Whether `ino` is open through passthrough here.
    pub(super) fn is_open(&self, ino: u64) -> bool {
        self.by_ino.lock().get(&ino).is_some_and(|m| m.passthrough > 0)
    }

    /// The file on this node's disk behind passthrough open `fh`, if it is one.
    pub(super) fn file(&self, fh: u64) -> Option<Arc<OwnedFd>> {
        let ino = *self.fhs.lock().get(&fh)?;
        self.by_ino.lock().get(&ino)?.backing.as_ref().map(|(_, f)| f.clone())
    }

    /// The passthrough open `fh` of `ino` is made.
    pub(super) fn opened(&self, ino: u64, fh: u64) {
        self.fhs.lock().insert(fh, ino);
    }

    /// An open registered by `begin` ended (closed, or failed before it was made); whether
    /// it was the inode's last passthrough open.
    pub(super) fn end(&self, ino: u64, passthrough: bool) -> bool {
        let mut t = self.by_ino.lock();
        let Some(m) = t.get_mut(&ino) else { return false };
        let mut last = false;
        if passthrough {
            m.passthrough = m.passthrough.saturating_sub(1);
            if m.passthrough == 0 {
                // The kernel let go of it with the last passthrough file.
                last = m.backing.take().is_some();
            }
        } else {
            m.cached = m.cached.saturating_sub(1);
        }
        if m.passthrough == 0 && m.cached == 0 {
            t.remove(&ino);
        }
        last
    }

    /// The release of `fh` of `ino`, whichever mode it was opened in; whether it was the
    /// inode's last passthrough open.
    pub(super) fn released(&self, ino: u64, fh: u64) -> bool {
        let passthrough = self.fhs.lock().remove(&fh).is_some();
        self.end(ino, passthrough)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inode_is_in_one_mode_at_a_time() {
        let p = Passthrough::default();
        assert!(!p.begin(7, true), "off until the kernel agrees");
        p.end(7, false);
        p.enable();
        assert!(p.begin(7, true));
        assert!(p.begin(7, true), "more passthrough opens join the first");
        assert!(!p.begin(8, false), "not served here: an ordinary open");
        p.end(7, true);
        p.end(7, true);
        assert!(p.by_ino.lock().get(&7).is_none(), "nothing left of 7");
        assert!(!p.begin(8, true), "8 has an ordinary open: no passthrough beside it");
        p.end(8, false);
        p.end(8, false);
        assert!(p.begin(8, true), "its ordinary opens closed");
    }

    #[test]
    fn a_backing_file_that_cannot_be_made_turns_passthrough_off() {
        let p = Passthrough::default();
        p.enable();
        assert!(p.begin(7, true));
        let file = std::fs::File::open("/dev/null").unwrap().into();
        assert!(p.backing(7, file, |_| Err(std::io::Error::from_raw_os_error(libc::EPERM))).is_none());
        let modes = p.by_ino.lock().get(&7).map(|m| (m.passthrough, m.cached));
        assert_eq!(modes, Some((0, 1)), "the open counts as an ordinary one");
        assert!(!p.begin(9, true), "off for later opens");
    }
}
