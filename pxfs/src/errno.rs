//! The POSIX error a file operation ends with: what the owner's system call returned, or
//! what the client decided (EXDEV across volumes, EIO for a dead owner). The fuser adapter
//! turns it into the kernel's reply; nothing else in PXFS knows fuser's own type.

/// An `errno` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const EINTR: Errno = Errno(libc::EINTR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const EROFS: Errno = Errno(libc::EROFS);
    pub const ESTALE: Errno = Errno(libc::ESTALE);
    pub const EXDEV: Errno = Errno(libc::EXDEV);

    pub fn from_i32(n: i32) -> Errno {
        Errno(n)
    }
}

/// A system call's error as the caller's errno (EIO when it carries none).
impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}
