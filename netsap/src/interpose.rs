//! Bind interposition for unmodified programs: a process started with `ssi run`
//! carries a seccomp filter that sends each `bind()` to this node's daemon (seccomp user
//! notification). The supervisor reads the address from the process, asks the SAP server,
//! and answers EADDRINUSE when another node holds the port, or lets the call go on. Ports it
//! granted are given back when their socket is gone from the node's network or the process
//! has died (checked every 250 ms, so a `kill -9` leaks nothing for long). A node cut off
//! from the majority kills the processes holding its granted ports (failfast): the
//! majority gives those ports away once the node's lease is over.
//!
//! The filter is built once here (libseccomp) and exported as a classic BPF program; the
//! child installs it itself between fork and exec with the raw `seccomp()` call, which is
//! async-signal-safe (`procmgmt::spawn`), and passes the listener fd back over a socketpair.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use libseccomp::{ScmpAction, ScmpFilterContext, ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags, ScmpSyscall};
use parking_lot::Mutex;

use crate::proto::{Binding, Listener};
use crate::sap::{SapClient, TCP, UDP};

/// Why bind interposition cannot run on this node.
#[derive(Debug, thiserror::Error)]
pub enum InterposeError {
    #[error("seccomp {step}: {source}")]
    Seccomp { step: &'static str, source: libseccomp::error::SeccompError },
    #[error("{step}: {source}")]
    Io { step: &'static str, source: std::io::Error },
}

/// The classic BPF program of the filter: notify on bind, allow everything else.
pub fn bind_filter() -> Result<Vec<libc::sock_filter>, InterposeError> {
    let seccomp = |step| move |source| InterposeError::Seccomp { step, source };
    let mut f = ScmpFilterContext::new(ScmpAction::Allow).map_err(seccomp("filter"))?;
    let bind = ScmpSyscall::from_name("bind").map_err(seccomp("syscall name"))?;
    f.add_rule(ScmpAction::Notify, bind).map_err(seccomp("rule"))?;
    // Exported through a memory file (libseccomp 2.5 writes the program to an fd).
    let bytes = {
        use std::io::{Read, Seek};
        // SAFETY: memfd_create returns a new fd we own.
        let fd = unsafe { libc::memfd_create(c"ssi-bind-filter".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(InterposeError::Io { step: "memfd", source: std::io::Error::last_os_error() });
        }
        // SAFETY: fd is ours (just created).
        let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        f.export_bpf(&file).map_err(seccomp("export"))?;
        let mut v = Vec::new();
        file.rewind().and_then(|_| file.read_to_end(&mut v)).map_err(|source| InterposeError::Io { step: "seccomp export", source })?;
        v
    };
    Ok(bytes
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// A granted port: (pid, proto, port).
type GrantKey = (u32, u32, u32);

/// What is known of a granted port's socket, to tell when it is gone. A TCP socket that is
/// bound but not yet listening is in no table of `/proc/net`, so the port alone cannot say.
#[derive(Clone, Copy, Debug)]
struct Grant {
    /// The socket's inode, when the grant came with the socket (the seccomp path).
    inode: Option<u64>,
    since: Instant,
}

/// How long a bind reported after the fact (no socket known) is kept before a listener or a
/// connection must show it in `/proc/net`.
const ADOPTED_GRACE: Duration = Duration::from_secs(5);

/// What a supervised process asked to be: a plain listener, or part of a scalable service.
#[derive(Clone, Debug, Default)]
pub struct Role {
    pub service: String,
    pub policy: String,
    /// Its share of a `weighted` service.
    pub weight: u32,
}

/// Supervises the binds of processes on this node.
#[derive(Clone)]
pub struct Supervisor {
    filter: Arc<Vec<libc::sock_filter>>,
    sap: SapClient,
    node: u32,
    rt: tokio::runtime::Handle,
    /// Granted: (pid, proto, port), until the socket or the process is gone.
    granted: Arc<Mutex<BTreeMap<GrantKey, Grant>>>,
    /// Held across each SAP bind and each give-back: a process that closes a port and binds
    /// it again at once must not have its new grant given back for its old socket.
    sap_calls: Arc<Mutex<()>>,
    /// The bind guard's map of ports refused on this node (`bindguard`), if it runs: a port
    /// granted here leaves it at once, before the guard's next look at the SAP table.
    refused: Arc<std::sync::OnceLock<libbpf_rs::MapHandle>>,
}

impl Supervisor {
    pub fn start(sap: SapClient, node: u32, rt: tokio::runtime::Handle) -> Result<Supervisor, InterposeError> {
        let s = Supervisor {
            filter: Arc::new(bind_filter()?),
            sap,
            node,
            rt,
            granted: Default::default(),
            sap_calls: Default::default(),
            refused: Default::default(),
        };
        let s2 = s.clone();
        std::thread::Builder::new()
            .name("netsap-release".into())
            .spawn(move || s2.release_loop())
            .map_err(|source| InterposeError::Io { step: "release thread", source })?;
        Ok(s)
    }

    pub fn filter(&self) -> Arc<Vec<libc::sock_filter>> {
        self.filter.clone()
    }

    /// Answers the binds of the process tree behind `listener` (its seccomp notification
    /// fd) on a thread of its own, until every process holding the filter has exited.
    pub fn supervise(&self, listener: OwnedFd, role: Role) {
        let s = self.clone();
        let _ = std::thread::Builder::new().name("netsap-bind".into()).spawn(move || s.serve(listener, role));
    }

    fn serve(&self, listener: OwnedFd, role: Role) {
        let fd = listener.as_raw_fd();
        loop {
            let req = match ScmpNotifReq::receive(fd) {
                Ok(r) => r,
                Err(_) => return, // no process holds the filter any more
            };
            let verdict = self.decide(req.pid, req.data.args, &role);
            if libseccomp::notify_id_valid(fd, req.id).is_err() {
                continue; // the process died meanwhile
            }
            let resp = match verdict {
                Ok(()) => ScmpNotifResp::new_continue(req.id, ScmpNotifRespFlags::CONTINUE),
                Err(errno) => ScmpNotifResp::new_error(req.id, -errno, ScmpNotifRespFlags::empty()),
            };
            let _ = resp.respond(fd);
        }
    }

    /// Ok: let the bind proceed. Err(errno): fail it.
    fn decide(&self, pid: u32, args: [u64; 6], role: &Role) -> Result<(), i32> {
        let Some(port) = read_port(pid, args[1], args[2]) else { return Ok(()) }; // not IP, or unreadable: the kernel decides
        if port == 0 {
            return Ok(()); // an ephemeral port: this node's range is its own
        }
        let proto = match socket_type(pid, args[0] as i32) {
            Some(libc::SOCK_STREAM) => TCP,
            Some(libc::SOCK_DGRAM) => UDP,
            _ => return Ok(()),
        };
        match self.claim(pid, proto, port, role, socket_inode(pid, args[0] as i32)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(libc::EADDRINUSE),
            // The SAP cannot be asked: refuse rather than risk two holders.
            Err(_) => Err(libc::EAGAIN),
        }
    }

    /// Asks the SAP for (proto, port) for process `pid` in `role`; when granted, records the
    /// grant (with the bound socket's inode, when known) and clears the port from the bind
    /// guard's refused map. Ok(false): another node holds it.
    fn claim(&self, pid: u32, proto: u32, port: u32, role: &Role, inode: Option<u64>) -> Result<bool, ssi_orb::OrbError> {
        let b = Binding {
            proto,
            port,
            who: Some(Listener { node: self.node, pid, weight: role.weight.max(1), incarnation: self.sap.incarnation() }),
            service: role.service.clone(),
            policy: role.policy.clone(),
        };
        let sap = self.sap.clone();
        let _one = self.sap_calls.lock();
        let granted = self.rt.block_on(async move { sap.bind(b).await })?.ok;
        if granted {
            self.granted.lock().insert((pid, proto, port), Grant { inode, since: Instant::now() });
            if let Some(m) = self.refused.get() {
                use libbpf_rs::MapCore;
                let _ = m.delete(&crate::sap::port_key(proto, port).to_ne_bytes());
            }
        }
        Ok(granted)
    }

    /// Has the bind guard's refused map kept clear of the ports granted here.
    pub fn set_refused_map(&self, m: libbpf_rs::MapHandle) {
        let _ = self.refused.set(m);
    }

    /// A bind the bind guard saw that did not come through here (a process not started with
    /// `ssi run`, an io_uring bind): entered in the SAP as this node's, and given back like
    /// the others. Refused if another node got the port meanwhile (then only logged: the
    /// bind has happened).
    pub fn adopt(&self, pid: u32, proto: u32, port: u32) {
        if self.granted.lock().contains_key(&(pid, proto, port)) {
            return;
        }
        match self.claim(pid, proto, port, &Role::default(), None) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "pid {pid} bound {}/{port}, which another node holds (a bind outside ssi run)",
                crate::sap::proto_name(proto)
            ),
            Err(e) => tracing::warn!("pid {pid} bound {}/{port}; the SAP could not be told: {e}", crate::sap::proto_name(proto)),
        }
    }

    fn release_loop(&self) {
        let mut cut_since: Option<Instant> = None;
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let orb = self.sap.orb();
            cut_since = if orb.cut_off() { cut_since.or(Some(Instant::now())) } else { None };
            if cut_since.is_some_and(|t| t.elapsed() >= orb.fail_timeout()) {
                self.failfast();
            }
            self.sweep(None);
        }
    }

    /// Cut off from the majority for a `fail_timeout`: the majority will give this node's
    /// ports to others once its lease runs out (`sap::departed_lease`), so the processes
    /// holding them die now, as a node that lost its quorum would halt. Only those: the
    /// node's other processes carry on.
    fn failfast(&self) {
        let pids: std::collections::BTreeSet<u32> = self.granted.lock().keys().map(|(pid, _, _)| *pid).collect();
        for pid in pids {
            if alive(pid) {
                tracing::warn!(pid, "cut off from the majority: the holder of a cluster port is killed (failfast)");
                // SAFETY: kill takes integers only.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }

    /// Gives back process `pid`'s granted ports that are gone.
    pub fn sweep_pid(&self, pid: u32) {
        self.sweep(Some(pid));
    }

    /// Gives back the granted ports (of every process, or only of `only`) whose socket is gone
    /// from the node's network or whose process has died.
    fn sweep(&self, only: Option<u32>) {
        let held: Vec<((u32, u32, u32), Grant)> =
            self.granted.lock().iter().map(|(k, g)| (*k, *g)).filter(|((p, _, _), _)| only.is_none_or(|o| o == *p)).collect();
        for ((pid, proto, port), grant) in held {
            let _one = self.sap_calls.lock();
            // Granted again since the look above (the same process bound the port anew)?
            if self.granted.lock().get(&(pid, proto, port)).is_none_or(|g| g.since != grant.since) {
                continue;
            }
            let alive = alive(pid);
            // Held: a listener or connection shows the port (also one children inherited),
            // or the process still has the very socket it bound (bound, not listening yet),
            // or a bind reported after the fact is young.
            let held = alive
                && (port_in_use(proto, port)
                    || grant.inode.is_some_and(|i| has_socket(pid, i))
                    || (grant.inode.is_none() && grant.since.elapsed() < ADOPTED_GRACE));
            if held {
                continue;
            }
            let sap = self.sap.clone();
            let who = Listener { node: self.node, pid, weight: 0, incarnation: 0 };
            if self.rt.block_on(async move { sap.release(proto, port, who).await }).is_ok() {
                self.granted.lock().remove(&(pid, proto, port));
            }
        }
    }
}

/// Whether process `pid` exists (a zombie counts: its sockets are closed already).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The port of the sockaddr at `addr` (`len` bytes) in process `pid`, for AF_INET/AF_INET6.
fn read_port(pid: u32, addr: u64, len: u64) -> Option<u32> {
    let mut buf = [0u8; 28];
    let n = (len as usize).min(buf.len());
    if n < 4 {
        return None;
    }
    let local = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: n };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: n };
    // SAFETY: reads `n` bytes of the other process into our buffer.
    let got = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if got < 4 {
        return None;
    }
    let family = u16::from_ne_bytes([buf[0], buf[1]]) as i32;
    (family == libc::AF_INET || family == libc::AF_INET6).then(|| u16::from_be_bytes([buf[2], buf[3]]) as u32)
}

/// The inode of the socket behind fd `fd` of process `pid` (`socket:[INODE]`).
fn socket_inode(pid: u32, fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Whether process `pid` has an fd on the socket with inode `inode`.
fn has_socket(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str())))
        .unwrap_or(false)
}

/// SO_TYPE of the process's fd (a copy of it, through a pidfd).
fn socket_type(pid: u32, fd: i32) -> Option<i32> {
    // SAFETY: plain syscalls; the fds they return are closed here.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) as i32;
        if pidfd < 0 {
            return None;
        }
        let sock = libc::syscall(libc::SYS_pidfd_getfd, pidfd as libc::c_long, fd as libc::c_long, 0 as libc::c_long) as i32;
        libc::close(pidfd);
        if sock < 0 {
            return None;
        }
        let mut ty: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let r = libc::getsockopt(sock, libc::SOL_SOCKET, libc::SO_TYPE, &mut ty as *mut _ as *mut libc::c_void, &mut len);
        libc::close(sock);
        (r == 0).then_some(ty)
    }
}

/// Whether any socket of this node's network holds local port `port` (/proc/net tables:
/// this daemon's network namespace is its processes').
fn port_in_use(proto: u32, port: u32) -> bool {
    let files: &[&str] = if proto == TCP { &["/proc/net/tcp", "/proc/net/tcp6"] } else { &["/proc/net/udp", "/proc/net/udp6"] };
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                l.split_whitespace().nth(1).and_then(|a| a.rsplit_once(':')).and_then(|(_, p)| u32::from_str_radix(p, 16).ok())
                    == Some(port)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filter_exports() {
        let p = super::bind_filter().unwrap();
        assert!(p.len() > 3, "a real program");
    }
}
