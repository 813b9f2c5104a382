//! Starting a process for a user: their credentials, environment, umask and directory, in a
//! session of its own, with pipes or a pseudo-terminal for its standard streams.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;

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
    match pty {
        Some(master) => {
            let r = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
            let w = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
            Ok(Spawned { child, pid, stdin: Box::new(w), stdout: Box::new(r), stderr: None, pty: Some(master) })
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
            })
        }
    }
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
        if unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        kill()
    })
    .join()
    .map_err(|_| io::Error::other("kill thread panicked"))?
}
