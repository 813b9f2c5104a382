//! This node's processes, as the global /proc shows them, read from the kernel's /proc.
//!
//! On a real cluster a node's processes are its machine's. On a local cluster every node
//! runs on one machine, so each node claims its daemon and that daemon's descendants (what
//! it started), and the first node claims the rest of the machine: every process of the
//! machine belongs to exactly one node.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use crate::proto::ProcEntry;
use crate::GPID_STRIDE;

/// Which processes a node claims.
#[derive(Clone, Debug)]
pub enum Claim {
    /// A real cluster: the whole machine.
    Machine,
    /// A local cluster (every daemon on this machine): the subtree of this node's daemon,
    /// plus the unclaimed rest if `first`. The daemons are found by their pid files
    /// (node id, path), read at each listing (a restarted node has a new pid).
    Subtree { first: bool, pid_files: Vec<(u32, std::path::PathBuf)> },
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

fn boot_time_s() -> i64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// The processes `node` claims now.
pub fn list(node: u32, claim: &Claim) -> Vec<ProcEntry> {
    let all: HashMap<u32, Raw> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, raw(pid)?)))
        .collect();
    let owner = |pid: u32, daemons: &HashMap<u32, u32>| -> Option<u32> {
        let mut p = pid;
        for _ in 0..4096 {
            if let Some(n) = daemons.get(&p) {
                return Some(*n);
            }
            p = all.get(&p)?.ppid;
            if p == 0 {
                return None;
            }
        }
        None
    };
    let mine: Box<dyn Fn(u32) -> bool> = match claim {
        Claim::Machine => Box::new(|_| true),
        Claim::Subtree { first, pid_files } => {
            let d = daemons(pid_files);
            let first = *first;
            Box::new(move |pid| match owner(pid, &d) {
                Some(n) => n == node,
                None => first,
            })
        }
    };
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let boot = boot_time_s();
    let mut out: Vec<ProcEntry> = all
        .iter()
        .filter(|(pid, _)| mine(**pid))
        .map(|(pid, r)| ProcEntry { gpid: crate::gpid(node, *pid), uid: r.uid, gid: r.gid, start_s: boot + (r.start_ticks / hz) as i64 })
        .collect();
    out.sort_by_key(|e| e.gpid);
    out
}

/// The parent of `pid` on this node, as a global pid (0 for none).
pub fn ppid(node: u32, pid: u32) -> u64 {
    raw(pid).map(|r| if r.ppid == 0 { 0 } else { crate::gpid(node, r.ppid) }).unwrap_or(0)
}

/// Reads `/proc/PID/NAME` (or a node file when `pid` is 0) with `fsuid`'s rights, on a
/// thread of its own whose filesystem ids alone are changed. Links (cwd, exe) come back as
/// their target's text and a newline.
pub fn read_as(fsuid: u32, fsgid: u32, pid: u32, name: &str) -> io::Result<Vec<u8>> {
    const PROC_FILES: [&str; 6] = ["status", "stat", "cmdline", "environ", "cwd", "exe"];
    const NODE_FILES: [&str; 3] = ["loadavg", "meminfo", "uptime"];
    let path = match pid {
        0 if NODE_FILES.contains(&name) => format!("/proc/{name}"),
        p if p > 0 && PROC_FILES.contains(&name) => format!("/proc/{p}/{name}"),
        _ => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
    };
    let link = matches!(name, "cwd" | "exe");
    std::thread::spawn(move || {
        unsafe {
            libc::syscall(libc::SYS_setfsgid, fsgid);
            libc::syscall(libc::SYS_setfsuid, fsuid);
        }
        if link {
            let t = std::fs::read_link(Path::new(&path))?;
            let mut v = t.as_os_str().as_encoded_bytes().to_vec();
            v.push(b'\n');
            Ok(v)
        } else {
            std::fs::read(&path)
        }
    })
    .join()
    .map_err(|_| io::Error::other("reader thread panicked"))?
}

/// A gpid's node and local pid, if the stride allows it.
pub fn split(gpid: u64) -> (u32, u32) {
    ((gpid / GPID_STRIDE as u64) as u32, (gpid % GPID_STRIDE as u64) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_claim_lists_this_process() {
        let me = std::process::id();
        let l = list(1, &Claim::Machine);
        assert!(l.iter().any(|e| e.gpid == crate::gpid(1, me)));
        // A subtree of a daemon that does not exist claims nothing but the unclaimed rest.
        let none = list(2, &Claim::Subtree { first: false, pid_files: vec![] });
        assert!(none.is_empty());
        let rest = list(1, &Claim::Subtree { first: true, pid_files: vec![] });
        assert!(rest.iter().any(|e| e.gpid == crate::gpid(1, me)));
        // A "daemon" (this test process, by its pid file) claims itself for its node.
        let f = std::env::temp_dir().join(format!("ssi-table-test-{me}"));
        std::fs::write(&f, format!("{me}\n")).unwrap();
        let claim = Claim::Subtree { first: true, pid_files: vec![(3, f.clone())] };
        assert!(list(3, &claim).iter().any(|e| e.gpid == crate::gpid(3, me)));
        assert!(!list(1, &claim).iter().any(|e| e.gpid == crate::gpid(1, me)), "not the first node's any more");
        let _ = std::fs::remove_file(f);
    }

    #[test]
    fn files_are_read_with_the_callers_rights() {
        let me = std::process::id();
        assert!(read_as(0, 0, me, "status").unwrap().starts_with(b"Name:"));
        assert!(read_as(0, 0, me, "cwd").unwrap().ends_with(b"\n"));
        assert_eq!(read_as(0, 0, me, "mem").unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert!(read_as(0, 0, 0, "loadavg").is_ok());
        if nix::unistd::geteuid().is_root() {
            // Another user may not read a root process's environment.
            assert_eq!(read_as(65534, 65534, me, "environ").unwrap_err().raw_os_error(), Some(libc::EACCES));
        }
    }
}
