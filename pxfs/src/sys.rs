//! The system calls the volume server is made of, kept in one place: kernel file handles,
//! per-thread credentials, and the `/proc/self/fd/N` path of an O_PATH descriptor.
//!
//! Credentials: `setfsuid`, `setfsgid` and the raw `setgroups` syscall act on the calling
//! thread only (glibc's `setgroups` would change every thread). Switching the fsuid away
//! from 0 drops the file capabilities (CAP_DAC_READ_SEARCH, CAP_DAC_OVERRIDE, ...) of the
//! thread, so the kernel checks permissions as for the caller; switching back restores them.
//! Handles are therefore opened first, as root, and the operation runs as the caller.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// The longest name a directory entry may have (ext4's, and Linux's NAME_MAX).
pub const NAME_MAX: usize = 255;

const MAX_HANDLE_SZ: usize = 128;

/// A name or path as the kernel takes it: any bytes but NUL.
fn cstr<S: AsRef<[u8]> + ?Sized>(s: &S) -> io::Result<CString> {
    CString::new(s.as_ref()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The kernel file handle of `name` in `dir` (not following a final symlink), encoded as
/// `handle_type (i32 LE) ‖ f_handle`. It names the file by inode and generation.
pub fn handle_at(dir: RawFd, name: &[u8]) -> io::Result<Vec<u8>> {
    #[repr(C)]
    struct FileHandle {
        handle_bytes: u32,
        handle_type: i32,
        f_handle: [u8; MAX_HANDLE_SZ],
    }
    let mut fh = FileHandle { handle_bytes: MAX_HANDLE_SZ as u32, handle_type: 0, f_handle: [0; MAX_HANDLE_SZ] };
    let mut mount_id: libc::c_int = 0;
    let c = cstr(name)?;
    let flags = if name.is_empty() { libc::AT_EMPTY_PATH } else { 0 };
    // SAFETY: c is NUL-terminated and outlives the call; fh and mount_id are live locals, fh laid out as
    // struct file_handle with handle_bytes = the size of f_handle.
    let r = unsafe {
        libc::syscall(libc::SYS_name_to_handle_at, dir, c.as_ptr(), &mut fh as *mut FileHandle, &mut mount_id as *mut libc::c_int, flags)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (fh.handle_bytes as usize).min(MAX_HANDLE_SZ);
    let mut out = Vec::with_capacity(4 + n);
    out.extend_from_slice(&fh.handle_type.to_le_bytes());
    out.extend_from_slice(&fh.f_handle[..n]);
    Ok(out)
}

/// Opens the file a handle names (needs CAP_DAC_READ_SEARCH: call as root).
pub fn open_handle(mount_fd: RawFd, handle: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    if handle.len() < 5 || handle.len() > 4 + MAX_HANDLE_SZ {
        return Err(io::Error::from_raw_os_error(libc::ESTALE));
    }
    #[repr(C)]
    struct FileHandle {
        handle_bytes: u32,
        handle_type: i32,
        f_handle: [u8; MAX_HANDLE_SZ],
    }
    let mut fh = FileHandle {
        handle_bytes: (handle.len() - 4) as u32,
        handle_type: i32::from_le_bytes(handle[..4].try_into().unwrap()),
        f_handle: [0; MAX_HANDLE_SZ],
    };
    fh.f_handle[..handle.len() - 4].copy_from_slice(&handle[4..]);
    // SAFETY: fh is a live local laid out as struct file_handle; handle_bytes is at most the size of
    // f_handle.
    let r = unsafe { libc::syscall(libc::SYS_open_by_handle_at, mount_fd, &mut fh as *mut FileHandle, flags | libc::O_CLOEXEC) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// Runs with the given credentials on this thread until dropped.
pub struct AsUser {
    switched: bool,
}

impl AsUser {
    /// Takes `uid`, `gid` and `groups` as this thread's file-system credentials, or fails:
    /// an operation must never run with the daemon's own credentials in place of a
    /// caller's. `uid` 0 keeps the thread as it is (root, or the daemon's user).
    pub fn new(uid: u32, gid: u32, groups: &[u32]) -> io::Result<AsUser> {
        if uid == 0 {
            return Ok(AsUser { switched: false });
        }
        // From here a failure drops `me`, giving the thread back root's ids.
        let me = AsUser { switched: true };
        // SAFETY: setgroups reads gs.len() gids from gs, which lives across the call; setfsgid and setfsuid
        // take integers and change only this thread.
        unsafe {
            let gs: Vec<libc::gid_t> = groups.to_vec();
            if libc::syscall(libc::SYS_setgroups, gs.len(), gs.as_ptr()) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::syscall(libc::SYS_setfsgid, gid);
            libc::syscall(libc::SYS_setfsuid, uid);
        }
        // setfsuid and setfsgid report no failure (without CAP_SETUID they leave the ids as
        // they were): read the ids back.
        if fs_ids() != (uid, gid) {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(me)
    }
}

/// This thread's file-system uid and gid.
pub fn fs_ids() -> (u32, u32) {
    // SAFETY: an invalid id (-1) changes nothing; the calls only return the current one.
    unsafe { (libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32, libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32) }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        if self.switched {
            // SAFETY: integer-only system calls giving this thread back root's fs ids; setgroups with no
            // entries reads nothing.
            unsafe {
                libc::syscall(libc::SYS_setfsuid, 0);
                libc::syscall(libc::SYS_setfsgid, 0);
                libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>());
            }
        }
    }
}

/// `/proc/self/fd/N`: reopening through it checks permissions as the current fsuid.
pub fn fd_path(fd: RawFd) -> String {
    format!("/proc/self/fd/{fd}")
}

pub fn stat_fd(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: a plain C struct of integers, for which all zeros is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let empty = cstr("")?;
    // SAFETY: the name is a NUL-terminated CString that outlives the call; st is a live, writable stat.
    check(unsafe { libc::fstatat(fd, empty.as_ptr(), &mut st, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

pub fn stat_at(dir: RawFd, name: &[u8]) -> io::Result<libc::stat> {
    // SAFETY: a plain C struct of integers, for which all zeros is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let c = cstr(name)?;
    // SAFETY: the name is a NUL-terminated CString that outlives the call; st is a live, writable stat.
    check(unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

pub fn open_path(p: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(p.to_str().ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reopens an O_PATH descriptor for I/O, with permission checks as the current fsuid.
/// O_NOFOLLOW is dropped: the client's kernel resolved the path already, and the
/// `/proc/self/fd` link we open through is itself a symlink.
pub fn reopen(fd: RawFd, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(&fd_path(fd))?;
    let drop = libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_NOFOLLOW;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let r = check(unsafe { libc::open(c.as_ptr(), (flags & !drop) | libc::O_CLOEXEC) })?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

pub fn open_at(dir: RawFd, name: &[u8], flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let r = check(unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

pub fn mkdir_at(dir: RawFd, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: the path arguments are NUL-terminated CStrings that outlive the call; the rest are plain
    // integers.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode) }).map(|_| ())
}

pub fn mknod_at(dir: RawFd, name: &[u8], mode: u32, rdev: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: the path arguments are NUL-terminated CStrings that outlive the call; the rest are plain
    // integers.
    check(unsafe { libc::mknodat(dir, c.as_ptr(), mode, rdev as libc::dev_t) }).map(|_| ())
}

pub fn symlink_at(target: &[u8], dir: RawFd, name: &[u8]) -> io::Result<()> {
    let (t, c) = (cstr(target)?, cstr(name)?);
    // SAFETY: the path arguments are NUL-terminated CStrings that outlive the call; the rest are plain
    // integers.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) }).map(|_| ())
}

/// A hard link to the file behind `fd`, without CAP_DAC_READ_SEARCH (through /proc).
pub fn link_fd(fd: RawFd, dir: RawFd, name: &[u8]) -> io::Result<()> {
    let (p, c) = (cstr(&fd_path(fd))?, cstr(name)?);
    // SAFETY: the path arguments are NUL-terminated CStrings that outlive the call; the rest are plain
    // integers.
    check(unsafe { libc::linkat(libc::AT_FDCWD, p.as_ptr(), dir, c.as_ptr(), libc::AT_SYMLINK_FOLLOW) }).map(|_| ())
}

pub fn unlink_at(dir: RawFd, name: &[u8], rmdir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: the path arguments are NUL-terminated CStrings that outlive the call; the rest are plain
    // integers.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), if rmdir { libc::AT_REMOVEDIR } else { 0 }) }).map(|_| ())
}

pub fn rename_at(d1: RawFd, n1: &[u8], d2: RawFd, n2: &[u8], flags: u32) -> io::Result<()> {
    let (a, b) = (cstr(n1)?, cstr(n2)?);
    // SAFETY: the path arguments are NUL-terminated CStrings that outlive the call; the rest are plain
    // integers.
    let r = unsafe { libc::syscall(libc::SYS_renameat2, d1, a.as_ptr(), d2, b.as_ptr(), flags) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn readlink_fd(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    let empty = cstr("")?;
    // SAFETY: the kernel writes at most buf.len() bytes into buf, which lives across the call.
    let n = unsafe { libc::readlinkat(fd, empty.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub fn chmod_fd(fd: RawFd, mode: u32) -> io::Result<()> {
    let p = cstr(&fd_path(fd))?;
    // SAFETY: the path arguments are NUL-terminated CStrings that outlive the call; the rest are plain
    // integers.
    check(unsafe { libc::fchmodat(libc::AT_FDCWD, p.as_ptr(), mode, 0) }).map(|_| ())
}

/// `chmod_fd` with root's file-system ids on this thread for the call, then the caller's
/// again. Only for clearing set-user-ID and set-group-ID bits, which the kernel's own file
/// systems do for anyone who writes, truncates or chowns (a loss of privilege, never a gain).
pub fn chmod_fd_as_root(fd: RawFd, mode: u32) -> io::Result<()> {
    let (uid, gid) = fs_ids();
    // SAFETY: integer-only system calls changing this thread's fs ids.
    unsafe {
        libc::syscall(libc::SYS_setfsuid, 0);
        libc::syscall(libc::SYS_setfsgid, 0);
    }
    let r = chmod_fd(fd, mode);
    // SAFETY: as above, back to the ids this thread had.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
    }
    r
}

pub fn chown_fd(fd: RawFd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let empty = cstr("")?;
    let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
    // SAFETY: the path arguments are NUL-terminated CStrings that outlive the call; the rest are plain
    // integers.
    check(unsafe { libc::fchownat(fd, empty.as_ptr(), u, g, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) }).map(|_| ())
}

pub fn truncate_fd(fd: RawFd, size: u64) -> io::Result<()> {
    let p = cstr(&fd_path(fd))?;
    // SAFETY: the path arguments are NUL-terminated CStrings that outlive the call; the rest are plain
    // integers.
    check(unsafe { libc::truncate(p.as_ptr(), size as libc::off_t) }).map(|_| ())
}

pub fn ftruncate(fd: RawFd, size: u64) -> io::Result<()> {
    // SAFETY: ftruncate takes a descriptor number and a length only.
    check(unsafe { libc::ftruncate(fd, size as libc::off_t) }).map(|_| ())
}

/// `None` leaves a time as it is; `Some(None)` sets it to now.
pub fn utimens_fd(fd: RawFd, atime: Option<Option<i64>>, mtime: Option<Option<i64>>) -> io::Result<()> {
    let ts = |t: Option<Option<i64>>| match t {
        None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        Some(None) => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        Some(Some(ns)) => libc::timespec { tv_sec: ns.div_euclid(1_000_000_000), tv_nsec: ns.rem_euclid(1_000_000_000) },
    };
    let times = [ts(atime), ts(mtime)];
    let p = cstr(&fd_path(fd))?;
    // SAFETY: p is a NUL-terminated CString and times an array of two timespecs, both live for the call.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) }).map(|_| ())
}

pub fn access_fd(fd: RawFd, mask: i32) -> io::Result<()> {
    let p = cstr(&fd_path(fd))?;
    // Checked against the fsuid/fsgid this thread runs with (faccessat without AT_EACCESS
    // would use the real uid, which stays root).
    // SAFETY: the path arguments are NUL-terminated CStrings that outlive the call; the rest are plain
    // integers.
    check(unsafe { libc::faccessat(libc::AT_FDCWD, p.as_ptr(), mask, libc::AT_EACCESS) }).map(|_| ())
}

pub fn pread(fd: RawFd, size: usize, offset: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size];
    let mut done = 0;
    while done < size {
        let n =
            // SAFETY: the pointer and length stay within buf[done..], which lives across the call.
            unsafe { libc::pread(fd, buf[done..].as_mut_ptr() as *mut libc::c_void, size - done, (offset + done as u64) as libc::off_t) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    buf.truncate(done);
    Ok(buf)
}

pub fn pwrite(fd: RawFd, data: &[u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        // SAFETY: the pointer and length stay within data[done..], which lives across the call.
        let n = unsafe {
            libc::pwrite(fd, data[done..].as_ptr() as *const libc::c_void, data.len() - done, (offset + done as u64) as libc::off_t)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(done)
}

pub fn fsync(fd: RawFd, datasync: bool) -> io::Result<()> {
    // SAFETY: fsync and fdatasync take a descriptor number only.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }
    })
    .map(|_| ())
}

pub fn statvfs_fd(fd: RawFd) -> io::Result<libc::statvfs> {
    // SAFETY: a plain C struct of integers, for which all zeros is a valid value.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: s is a live, writable statvfs.
    check(unsafe { libc::fstatvfs(fd, &mut s) })?;
    Ok(s)
}

/// Directory entries of the directory behind `fd` (opened for reading as the caller).
pub fn read_dir(fd: RawFd) -> io::Result<Vec<(Vec<u8>, u8, u64)>> {
    let dfd = reopen(fd, libc::O_RDONLY | libc::O_DIRECTORY)?;
    // SAFETY: dfd is an open directory descriptor; on success the DIR stream owns it (forgotten below).
    let dir = unsafe { libc::fdopendir(dfd.as_raw_fd()) };
    if dir.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(dfd); // owned by the DIR stream now
    let mut out = Vec::new();
    loop {
        // SAFETY: errno is this thread's; readdir reports an error only through it.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: dir is the open DIR stream from fdopendir above, used by this thread only.
        let ent = unsafe { libc::readdir64(dir) };
        if ent.is_null() {
            // SAFETY: errno is this thread's, set by the readdir just above.
            let err = unsafe { *libc::__errno_location() };
            // SAFETY: dir is open and closed once, here; nothing uses it afterwards.
            unsafe { libc::closedir(dir) };
            if err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
            return Ok(out);
        }
        // SAFETY: a non-null entry from readdir stays valid until the next readdir or closedir on dir.
        let e = unsafe { &*ent };
        // SAFETY: d_name is NUL-terminated within the entry, which is valid here.
        let name = unsafe { std::ffi::CStr::from_ptr(e.d_name.as_ptr()) }.to_bytes().to_vec();
        out.push((name, e.d_type, e.d_ino));
    }
}

fn xattr_result(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `size == 0` asks for the value's size only.
pub fn getxattr_fd(fd: RawFd, name: &str, size: usize) -> io::Result<(Vec<u8>, usize)> {
    let (p, n) = (cstr(&fd_path(fd))?, cstr(name)?);
    let mut buf = vec![0u8; size];
    // SAFETY: the names are NUL-terminated CStrings; the kernel writes at most `size` bytes into buf, which
    // has that many.
    let r = xattr_result(unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr() as *mut libc::c_void, size) })?;
    buf.truncate(if size == 0 { 0 } else { r });
    Ok((buf, r))
}

pub fn listxattr_fd(fd: RawFd, size: usize) -> io::Result<(Vec<u8>, usize)> {
    let p = cstr(&fd_path(fd))?;
    let mut buf = vec![0u8; size];
    // SAFETY: p is a NUL-terminated CString; the kernel writes at most `size` bytes into buf, which has that
    // many.
    let r = xattr_result(unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, size) })?;
    buf.truncate(if size == 0 { 0 } else { r });
    Ok((buf, r))
}

pub fn setxattr_fd(fd: RawFd, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let (p, n) = (cstr(&fd_path(fd))?, cstr(name)?);
    // SAFETY: the names are NUL-terminated CStrings; the value pointer and length describe `value`, live for
    // the call.
    check(unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr() as *const libc::c_void, value.len(), flags) }).map(|_| ())
}

pub fn removexattr_fd(fd: RawFd, name: &str) -> io::Result<()> {
    let (p, n) = (cstr(&fd_path(fd))?, cstr(name)?);
    // SAFETY: the path arguments are NUL-terminated CStrings that outlive the call; the rest are plain
    // integers.
    check(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) }).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The act-as-caller rule at its root: an operation runs with the caller's ids or not at
    /// all. As root the ids are taken and a root-only file is closed to the thread; as
    /// another user (e.g. `setpriv --reuid 65534`) the switch is refused, not skipped.
    #[test]
    fn an_operation_runs_as_the_caller_or_not_at_all() {
        let (me, my_gid) = fs_ids();
        let (other, other_gid) = if me == 4242 { (4343, 4343) } else { (4242, 4242) };
        // A file only its owner (this process's user) may read, made before any switch.
        let dir = std::env::temp_dir().join(format!("pxfs-asuser-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, b"owner only").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        match AsUser::new(other, other_gid, &[other_gid]) {
            Ok(held) => {
                assert_eq!(me, 0, "only root may act as another user");
                assert_eq!(fs_ids(), (other, other_gid), "the caller's ids while the operation runs");
                let open = std::fs::File::open(&secret).map(|_| ()).map_err(|e| e.raw_os_error());
                drop(held);
                assert_eq!(open, Err(Some(libc::EACCES)), "a root-only file is closed to the caller");
                assert_eq!(fs_ids(), (0, 0), "root's ids back once the operation is done");
            }
            Err(e) => {
                assert_ne!(me, 0, "root can always act as a user: {e}");
                assert_eq!(e.raw_os_error(), Some(libc::EPERM), "refused with EPERM");
                assert_eq!(fs_ids(), (me, my_gid), "nothing changed");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn uid_0_keeps_the_thread_as_it_is() {
        let before = fs_ids();
        let held = AsUser::new(0, 0, &[]).expect("never refused");
        assert_eq!(fs_ids(), before, "no switch: a non-root daemon does not become root by being asked");
        drop(held);
        assert_eq!(fs_ids(), before);
    }
}
