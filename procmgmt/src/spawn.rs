//! Starting a process for a user: their credentials, environment, umask and directory, in a
//! session of its own, with pipes or a pseudo-terminal for its standard streams.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::{Child, Command};

/// Who a process runs as.
#[derive(Clone, Debug)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

pub struct Spec {
    pub argv: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    pub umask: u32,
    pub creds: Creds,
    /// Rows and columns of a pseudo-terminal; None: pipes.
    pub tty: Option<(u16, u16)>,
    /// A seccomp filter (classic BPF) the process installs before it runs, with a user
    /// notification listener (bind interposition): the listener comes back in `Spawned`.
    pub filter: Option<Arc<Vec<libc::sock_filter>>>,
}

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    pub stdin: Writer,
    pub stdout: Reader,
    /// None with a terminal (its output is all on stdout, as with `ssh -t`).
    pub stderr: Option<Reader>,
    /// The terminal's master side, for window size changes.
    pub pty: Option<OwnedFd>,
    /// The seccomp notification listener of `Spec::filter`.
    pub listener: Option<OwnedFd>,
}

/// Starts `spec`. The process leads a new session (so the launcher's signals can go to its
/// whole process group), runs as `spec.creds` from its first instruction, and gets SIGHUP
/// when the thread that started it ends — call this from a thread that lives as long as the
/// daemon (`Spawner`), so that is when the daemon dies.
pub fn spawn(spec: &Spec) -> io::Result<Spawned> {
    let (prog, args) = spec.argv.split_first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(OsStr::from_bytes(prog));
    cmd.args(args.iter().map(|a| OsStr::from_bytes(a)));
    cmd.env_clear();
    for kv in &spec.env {
        if let Some(eq) = kv.iter().position(|b| *b == b'=') {
            cmd.env(OsStr::from_bytes(&kv[..eq]), OsStr::from_bytes(&kv[eq + 1..]));
        }
    }
    cmd.current_dir(OsStr::from_bytes(&spec.cwd));
    cmd.kill_on_drop(false);
    let pty = match spec.tty {
        Some((rows, cols)) => {
            let ws = nix::pty::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
            let p = nix::pty::openpty(Some(&ws), None).map_err(io::Error::from)?;
            cmd.stdin(Stdio::from(p.slave.try_clone()?));
            cmd.stdout(Stdio::from(p.slave.try_clone()?));
            cmd.stderr(Stdio::from(p.slave));
            Some(p.master)
        }
        None => {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        }
    };
    let (creds, umask, tty) = (spec.creds.clone(), spec.umask, pty.is_some());
    let parent = std::process::id() as libc::pid_t;
    // The child sends its seccomp listener back over this pair.
    let pair = match &spec.filter {
        Some(_) => Some(nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )?),
        None => None,
    };
    let child_end = pair.as_ref().map(|(_, c)| c.as_raw_fd());
    let filter = spec.filter.clone();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::umask(umask as libc::mode_t);
            // Still root here (no no_new_privs needed), and nothing after it binds.
            if let (Some(f), Some(end)) = (&filter, child_end) {
                install_filter(f, end)?;
            }
            if libc::setgroups(creds.groups.len(), creds.groups.as_ptr()) < 0 || libc::setgid(creds.gid) < 0 || libc::setuid(creds.uid) < 0
            {
                return Err(io::Error::last_os_error());
            }
            // Hung up when the daemon dies (the forking thread lives as long as it does).
            // After setuid, which would clear it; and if the daemon died already, give up.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGHUP) < 0 || libc::getppid() != parent {
                return Err(io::Error::other("the node daemon died"));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id().ok_or_else(|| io::Error::other("the child has no pid"))?;
    let listener = match pair {
        Some((ours, theirs)) => {
            drop(theirs);
            Some(receive_fd(&ours)?)
        }
        None => None,
    };
    match pty {
        Some(master) => {
            let r = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
            let w = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
            Ok(Spawned { child, pid, stdin: Box::new(w), stdout: Box::new(r), stderr: None, pty: Some(master), listener })
        }
        None => {
            let (i, o, e) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
            let missing = || io::Error::other("a standard stream of the child is missing");
            Ok(Spawned {
                child,
                pid,
                stdin: Box::new(i.ok_or_else(missing)?),
                stdout: Box::new(o.ok_or_else(missing)?),
                stderr: Some(Box::new(e.ok_or_else(missing)?)),
                pty: None,
                listener,
            })
        }
    }
}

/// In the child, between fork and exec (async-signal-safe syscalls only): installs the
/// filter with a notification listener and sends the listener over `end`.
fn install_filter(f: &[libc::sock_filter], end: RawFd) -> io::Result<()> {
    let prog = libc::sock_fprog { len: f.len() as u16, filter: f.as_ptr() as *mut libc::sock_filter };
    // Every argument as a full register: syscall() is variadic.
    let (mode, flags) = (1 as libc::c_ulong /* SECCOMP_SET_MODE_FILTER */, (1 << 3) as libc::c_ulong /* FLAG_NEW_LISTENER */);
    // SAFETY: the program outlives the call; the kernel copies it.
    let fd = unsafe { libc::syscall(libc::SYS_seccomp, mode, flags, &prog as *const libc::sock_fprog) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = fd as RawFd;
    // CMSG_SPACE(sizeof(int)) on 64-bit, aligned as a cmsghdr must be.
    let mut cmsg = [0u64; 3];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr() as *mut libc::c_void, iov_len: 1 };
    // SAFETY: msghdr and its control buffer are set up for one SCM_RIGHTS fd.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&cmsg);
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
        let sent = libc::sendmsg(end, &msg, 0);
        libc::close(fd);
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The parent's side of `install_filter`: the listener the child sent.
fn receive_fd(sock: &OwnedFd) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = nix::sys::socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the fd was just received and is ours alone.
                return Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
            }
        }
    }
    Err(io::Error::other("the child sent no seccomp listener (the filter could not be installed)"))
}

/// The thread processes are started from: one for the daemon's lifetime, since a child's
/// parent-death signal follows the thread that forked it.
pub struct Spawner {
    tx: std::sync::mpsc::Sender<(Spec, tokio::sync::oneshot::Sender<io::Result<Spawned>>)>,
}

impl Spawner {
    /// Starts the thread; `rt` is the runtime the children's pipes and exits are driven by.
    pub fn start(rt: tokio::runtime::Handle) -> io::Result<Spawner> {
        let (tx, rx) = std::sync::mpsc::channel::<(Spec, tokio::sync::oneshot::Sender<io::Result<Spawned>>)>();
        std::thread::Builder::new().name("procmgmt-spawn".into()).spawn(move || {
            let _rt = rt.enter();
            for (spec, done) in rx {
                let _ = done.send(spawn(&spec));
            }
        })?;
        Ok(Spawner { tx })
    }

    pub async fn spawn(&self, spec: Spec) -> io::Result<Spawned> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.tx.send((spec, done)).map_err(|_| io::Error::other("the spawner thread is gone"))?;
        result.await.map_err(|_| io::Error::other("the spawner thread is gone"))?
    }
}

/// Sets a terminal's window size.
pub fn resize(master: &OwnedFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from ws, a live local.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The supplementary groups of process `pid` (from /proc; SO_PEERCRED has none).
pub fn groups_of(pid: u32) -> io::Result<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("Groups:")).unwrap_or("Groups:");
    Ok(line["Groups:".len()..].split_whitespace().filter_map(|g| g.parse().ok()).collect())
}

/// kill(2) as `uid` would do it: the kernel's own permission check (real or effective uid
/// matching the target's real or saved uid, or CAP_KILL for root). Runs on a thread of its
/// own, whose uids alone are changed (a raw syscall: glibc's would change every thread's).
pub fn kill_as(uid: u32, pid: i32, signal: i32) -> io::Result<()> {
    let kill = move || -> io::Result<()> {
        // SAFETY: kill takes integers only.
        if unsafe { libc::kill(pid, signal) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    if uid == 0 {
        return kill();
    }
    std::thread::spawn(move || {
        // Saved uid stays 0 so the thread could return; it ends instead.
        // SAFETY: setresuid takes integers; the raw system call changes this thread only, which ends after the kill.
        if unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        kill()
    })
    .join()
    .map_err(|_| io::Error::other("kill thread panicked"))?
}
