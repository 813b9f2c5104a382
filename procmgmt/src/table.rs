//! This node's processes, as the global /proc shows them, read from the kernel's /proc.
//!
//! On a real cluster a node's processes are its machine's. On a local cluster every node
//! runs on one machine, so each node claims its daemon and that daemon's descendants (what
//! it started): every process of a node belongs to exactly one node, and the host's other
//! processes (a shell, an `ssi` tool) to none — no node stands for the machine, so none is
//! special (a parent outside every node is numbered as node 0's, the host's).

use std::collections::HashMap;
use std::io;
use std::path::Path;

use crate::proto::ProcEntry;

/// Which processes a node claims.
#[derive(Clone, Debug)]
pub enum Claim {
    /// A real cluster: the whole machine.
    Machine,
    /// A local cluster (every daemon on this machine): the subtree of each node's daemon.
    /// The daemons are found by their pid files (node id, path), read at each listing (a
    /// restarted node has a new pid).
    Subtree { pid_files: Vec<(u32, std::path::PathBuf)> },
}

struct Raw {
    ppid: u32,
    uid: u32,
    gid: u32,
    start_ticks: u64,
}

fn raw(pid: u32) -> Option<Raw> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.split_whitespace().collect::<Vec<_>>());
    let ppid = field("PPid:")?.first()?.parse().ok()?;
    let uid = field("Uid:")?.first()?.parse().ok()?;
    let gid = field("Gid:")?.first()?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and parentheses.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let start_ticks = rest.get(19)?.parse().ok()?;
    Some(Raw { ppid, uid, gid, start_ticks })
}

/// The cluster's daemons now: pid → node id.
fn daemons(pid_files: &[(u32, std::path::PathBuf)]) -> HashMap<u32, u32> {
    pid_files.iter().filter_map(|(node, f)| Some((std::fs::read_to_string(f).ok()?.trim().parse().ok()?, *node))).collect()
}

/// When the machine booted, seconds since the epoch (process start times count from it).
pub fn boot_time_s() -> i64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn all_processes() -> HashMap<u32, Raw> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, raw(pid)?)))
        .collect()
}

/// Which node claims each process: a snapshot of the machine's process tree under `claim`.
struct Claims {
    /// None: a real cluster, where this node claims everything.
    daemons: Option<HashMap<u32, u32>>,
}

impl Claims {
    fn new(claim: &Claim) -> Self {
        match claim {
            Claim::Machine => Claims { daemons: None },
            Claim::Subtree { pid_files } => Claims { daemons: Some(daemons(pid_files)) },
        }
    }

    /// The node claiming `pid` (`here` on a real cluster; none for a process outside every
    /// node's subtree), walking up its ancestors with `parent` (a snapshot of the machine's
    /// processes, or /proc itself).
    fn of(&self, pid: u32, here: u32, parent: impl Fn(u32) -> Option<u32>) -> Option<u32> {
        let Some(daemons) = &self.daemons else { return Some(here) };
        let mut p = pid;
        for _ in 0..4096 {
            if let Some(n) = daemons.get(&p) {
                return Some(*n);
            }
            match parent(p) {
                Some(pp) if pp != 0 => p = pp,
                _ => break,
            }
        }
        None
    }
}

/// Clock ticks per second (the unit of /proc's times).
pub fn ticks_per_s() -> u64 {
    // SAFETY: sysconf takes an integer and reads a constant.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64
}

/// The processes `node` claims now.
pub fn list(node: u32, claim: &Claim) -> Vec<ProcEntry> {
    let all = all_processes();
    let claims = Claims::new(claim);
    let (hz, boot) = (ticks_per_s(), boot_time_s());
    let mut out: Vec<ProcEntry> = all
        .iter()
        .filter(|(pid, _)| claims.of(**pid, node, |p| all.get(&p).map(|r| r.ppid)) == Some(node))
        .map(|(pid, r)| ProcEntry { gpid: crate::gpid(node, *pid), uid: r.uid, gid: r.gid, start_s: boot + (r.start_ticks / hz) as i64 })
        .collect();
    out.sort_by_key(|e| e.gpid);
    out
}

/// The parent of `pid` (a process of `node`) as a global pid: numbered by the node that
/// claims the parent, as node 0's (the host's) when none does (0 for no parent).
pub fn ppid(node: u32, pid: u32, claim: &Claim) -> u64 {
    let parent = |p: u32| raw(p).map(|r| r.ppid);
    match parent(pid) {
        Some(pp) if pp != 0 => crate::gpid(Claims::new(claim).of(pp, node, parent).unwrap_or(0), pp),
        _ => 0,
    }
}

/// Reads `/proc/PID/NAME` (or a node file when `pid` is 0) with the filesystem rights of
/// `uid`, `gid` and `groups` (this thread's alone, restored after: PXFS's `AsUser`; call it
/// on a blocking thread). Links (cwd, exe) come back as their target's text and a newline.
pub fn read_as(uid: u32, gid: u32, groups: &[u32], pid: u32, name: &str) -> io::Result<Vec<u8>> {
    const PROC_FILES: [&str; 6] = ["status", "stat", "cmdline", "environ", "cwd", "exe"];
    const NODE_FILES: [&str; 3] = ["loadavg", "meminfo", "uptime"];
    let path = match pid {
        0 if NODE_FILES.contains(&name) => format!("/proc/{name}"),
        p if p > 0 && PROC_FILES.contains(&name) => format!("/proc/{p}/{name}"),
        _ => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
    };
    let _as = ssi_pxfs::sys::AsUser::new(uid, gid, groups)?;
    if matches!(name, "cwd" | "exe") {
        let mut v = std::fs::read_link(Path::new(&path))?.into_os_string().into_encoded_bytes();
        v.push(b'\n');
        Ok(v)
    } else {
        std::fs::read(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_machine_claim_lists_this_process() {
        let me = std::process::id();
        let l = list(1, &Claim::Machine);
        assert!(l.iter().any(|e| e.gpid == crate::gpid(1, me)));
        // A subtree of a daemon that does not exist claims nothing. A "daemon" of node 3
        // (this test process, by its pid file) claims itself; nobody claims the rest of the
        // machine, this process's parent among them (node 1 is not special).
        let f = std::env::temp_dir().join(format!("ssi-table-test-{me}"));
        std::fs::write(&f, format!("{me}\n")).unwrap();
        let claim = Claim::Subtree { pid_files: vec![(1, PathBuf::from("/nonexistent")), (3, f.clone())] };
        assert!(list(3, &claim).iter().any(|e| e.gpid == crate::gpid(3, me)));
        assert!(list(1, &claim).is_empty(), "node 1 has no daemon here: nothing, not the rest of the machine");
        assert!(list(2, &claim).is_empty(), "node 2 has no daemon here: nothing");
        let parent = std::os::unix::process::parent_id();
        assert_eq!(ppid(3, me, &claim), crate::gpid(0, parent), "a parent outside every node: the host's");
        let _ = std::fs::remove_file(f);
    }

    #[test]
    fn files_are_read_with_the_callers_rights() {
        let me = std::process::id();
        assert!(read_as(0, 0, &[], me, "status").unwrap().starts_with(b"Name:"));
        assert!(read_as(0, 0, &[], me, "cwd").unwrap().ends_with(b"\n"));
        assert_eq!(read_as(0, 0, &[], me, "mem").unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert!(read_as(0, 0, &[], 0, "loadavg").is_ok());
        if nix::unistd::geteuid().is_root() {
            // Another user may not read a root process's environment.
            assert_eq!(read_as(65534, 65534, &[], me, "environ").unwrap_err().raw_os_error(), Some(libc::EACCES));
        }
    }
}
