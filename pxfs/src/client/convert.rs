//! Between PXFS's messages and the kernel's: attributes, file types and the caller's
//! credentials.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fuser::{FileAttr, FileType, INodeNo, Request};
use ssi_orb::proto::Creds;

use crate::proto::{Attr, Fid};
use crate::synthetic::SynAttr;

pub(super) fn kind_of(mode: u32) -> FileType {
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

pub(super) fn dtype_kind(d: u32) -> FileType {
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

pub(super) fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

pub(super) fn file_attr(ino: u64, a: &Attr) -> FileAttr {
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

/// A synthetic file's answer as FUSE attributes (kernel inode `ino`).
pub(super) fn syn_attr(ino: u64, a: &SynAttr) -> FileAttr {
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

/// The caller's credentials: uid and gid from the request, supplementary groups from /proc.
pub(super) fn creds(req: &Request) -> Creds {
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

pub(super) fn fid(h: &Bytes) -> Option<Fid> {
    Some(Fid { handle: h.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_carry_the_kind_and_the_permission_bits() {
        let a = Attr { mode: libc::S_IFDIR | 0o2755, nlink: 2, uid: 7, gid: 8, size: 4096, blksize: 0, ..Default::default() };
        let f = file_attr(42, &a);
        assert_eq!((f.ino, f.kind, f.perm, f.uid, f.gid), (INodeNo(42), FileType::Directory, 0o2755, 7, 8));
        assert_eq!(f.blksize, 512, "a block size is never below 512");
        for (mode, kind) in [
            (libc::S_IFLNK, FileType::Symlink),
            (libc::S_IFIFO, FileType::NamedPipe),
            (libc::S_IFSOCK, FileType::Socket),
            (libc::S_IFREG | 0o4755, FileType::RegularFile),
        ] {
            assert_eq!(kind_of(mode), kind);
        }
        assert_eq!(dtype_kind(libc::DT_DIR as u32), FileType::Directory);
        assert_eq!(dtype_kind(libc::DT_REG as u32), FileType::RegularFile);
    }

    #[test]
    fn times_before_the_epoch_stay_before_it() {
        assert_eq!(time(-1_500_000_000), UNIX_EPOCH - Duration::from_millis(1500));
        assert_eq!(time(2_000_000_001), UNIX_EPOCH + Duration::from_nanos(2_000_000_001));
    }

    #[test]
    fn synthetic_files_are_read_only_files_or_directories() {
        let f = syn_attr(9, &SynAttr { dir: false, perm: 0o444, uid: 0, gid: 0, mtime_s: 10 });
        assert_eq!((f.kind, f.perm, f.nlink), (FileType::RegularFile, 0o444, 1));
        assert_eq!(f.mtime, UNIX_EPOCH + Duration::from_secs(10));
        let d = syn_attr(9, &SynAttr { dir: true, perm: 0o555, uid: 0, gid: 0, mtime_s: 10 });
        assert_eq!((d.kind, d.nlink), (FileType::Directory, 2));
    }
}
