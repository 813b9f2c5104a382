//! The second layer of bind interposition (DESIGN §6): the cgroup programs of
//! `bpf/bindguard.bpf.c` on a cgroup (v2) of the node's own, which the daemon moves itself into
//! so that every process it starts is in it too — `ssi run`'s, `ssi rexec`'s, and whatever they
//! start. The programs refuse binds to ports the SAP says other nodes hold (the `refused` map,
//! kept in step with the SAP table, which the guard's own thread follows: `SapClient::follow`)
//! and report the binds and releases they let through; reported binds that did not come
//! through the seccomp supervisor are entered in the SAP (`Supervisor::adopt`), and a reported
//! release has that process's ports checked at once (`Supervisor::sweep_pid`).

use std::collections::BTreeSet;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, RingBufferBuilder};

use crate::interpose::Supervisor;
use crate::sap::SapClient;

mod skel {
    #![allow(clippy::all, unused_imports, dead_code, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/bindguard.skel.rs"));
}
use skel::BindguardSkelBuilder;

const EVENT_BIND: u32 = 1;
const EVENT_RELEASE: u32 = 2;

/// Where cgroup v2 is mounted (`/proc/mounts`), if it is.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    })
}

/// The cgroup of the node whose state is in `node_dir`: `ROOT/ssi/<hash of the dir>`, distinct
/// for every node of every local cluster on the machine.
pub fn cgroup_of(node_dir: &Path) -> Option<PathBuf> {
    let canon = std::fs::canonicalize(node_dir).unwrap_or_else(|_| node_dir.to_path_buf());
    let h = canon.as_os_str().as_encoded_bytes().iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    Some(cgroup2_root()?.join("ssi").join(format!("node-{h:016x}")))
}

/// The processes in `cgroup` (none when it does not exist).
pub fn cgroup_procs(cgroup: &Path) -> Vec<i32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills every process in `cgroup` at once (`cgroup.kill`, Linux 5.14+) and waits up to
/// `within` for it to be empty. Returns how many were in it; an error when some outlive the
/// wait (a process in uninterruptible sleep, such as one blocked on a dead FUSE mount).
pub fn kill_cgroup(cgroup: &Path, within: std::time::Duration) -> std::io::Result<usize> {
    let n = cgroup_procs(cgroup).len();
    if n == 0 {
        return Ok(0);
    }
    std::fs::write(cgroup.join("cgroup.kill"), "1")?;
    let t0 = std::time::Instant::now();
    while !cgroup_procs(cgroup).is_empty() {
        if t0.elapsed() > within {
            let left = cgroup_procs(cgroup);
            return Err(std::io::Error::other(format!("{} process(es) outlived cgroup.kill: {left:?}", left.len())));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(n)
}

/// Removes every node cgroup on the machine that nothing is in any more (their daemons
/// stopped or died; a live daemon is always in its own, so it is never touched), and `ssi/`
/// itself when it is empty. Returns how many went.
pub fn remove_empty_cgroups() -> usize {
    let Some(root) = cgroup2_root().map(|r| r.join("ssi")) else { return 0 };
    let Ok(entries) = std::fs::read_dir(&root) else { return 0 };
    let removed =
        entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("node-") && std::fs::remove_dir(e.path()).is_ok()).count();
    let _ = std::fs::remove_dir(&root);
    removed
}

/// Moves this process into `cgroup` (made if missing), loads and attaches the programs there,
/// and runs the guard on a thread of its own for the life of the process.
pub fn start(cgroup: &Path, node: u32, sap: SapClient, sup: Supervisor, rt: tokio::runtime::Handle) -> Result<(), String> {
    std::fs::create_dir_all(cgroup).map_err(|e| format!("cgroup {}: {e}", cgroup.display()))?;
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .map_err(|e| format!("joining cgroup {}: {e}", cgroup.display()))?;
    let cg = std::fs::File::open(cgroup).map_err(|e| format!("cgroup {}: {e}", cgroup.display()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("netsap-bindguard".into())
        .spawn(move || {
            if std::env::var_os("SSI_BPF_DEBUG").is_none() {
                libbpf_rs::set_print(None);
            }
            // The skeleton borrows its storage for as long as it is loaded: the process's life.
            let storage = Box::leak(Box::new(MaybeUninit::uninit()));
            let loaded = BindguardSkelBuilder::default()
                .open(storage)
                .map_err(|e| format!("cannot open the BPF object: {e}"))
                .and_then(|o| o.load().map_err(|e| format!("cannot load the cgroup programs: {e}")));
            let skel = match loaded {
                Ok(s) => s,
                Err(e) => return drop(tx.send(Err(e))),
            };
            let setup = || -> Result<Vec<libbpf_rs::Link>, String> {
                skel.maps
                    .daemon
                    .update(&0u32.to_ne_bytes(), &std::process::id().to_ne_bytes(), MapFlags::ANY)
                    .map_err(|e| format!("daemon map: {e}"))?;
                let p = &skel.progs;
                let mut links = Vec::new();
                for (name, prog) in [
                    ("bind4", &p.bind4),
                    ("bind6", &p.bind6),
                    ("post_bind4", &p.post_bind4),
                    ("post_bind6", &p.post_bind6),
                    ("sock_release", &p.release),
                ] {
                    links.push(prog.attach_cgroup(cg.as_raw_fd()).map_err(|e| format!("attaching {name}: {e}"))?);
                }
                Ok(links)
            };
            let _links = match setup() {
                Ok(l) => l,
                Err(e) => return drop(tx.send(Err(e))),
            };
            let refused = match MapHandle::try_from(&skel.maps.refused) {
                Ok(m) => m,
                Err(e) => return drop(tx.send(Err(format!("refused map: {e}")))),
            };
            if let Ok(m) = MapHandle::try_from(&skel.maps.refused) {
                sup.set_refused_map(m);
            }
            let _ = tx.send(Ok(()));
            run(&skel.maps.events, &refused, node, &sap, &sup, &rt);
        })
        .map_err(|e| format!("bind guard thread: {e}"))?;
    rx.recv().map_err(|_| "the bind guard thread died".to_string())?
}

/// An implicit bind's port (connect, or bind to port 0): the node's own range, no SAP entry.
fn in_ephemeral_range(node: u32, port: u32) -> bool {
    let (lo, hi) = crate::topology::ephemeral_range(node);
    (lo..=hi).contains(&port)
}

/// Drains the reports and keeps `refused` in step with the SAP, forever.
fn run(events: &libbpf_rs::Map, refused: &MapHandle, node: u32, sap: &SapClient, sup: &Supervisor, rt: &tokio::runtime::Handle) {
    let reports = std::cell::RefCell::new(Vec::new());
    let mut rb = RingBufferBuilder::new();
    let built = rb
        .add(events, |data: &[u8]| {
            if data.len() >= 16 {
                let w = |i: usize| u32::from_ne_bytes(data[i..i + 4].try_into().expect("4 bytes"));
                reports.borrow_mut().push((w(0), w(4), w(8), w(12)));
            }
            0
        })
        .map(|_| ())
        .and_then(|_| rb.build());
    let ring = match built {
        Ok(r) => r,
        Err(e) => return tracing::warn!("bind guard: no reports ({e}); refusals only"),
    };
    let mut current: BTreeSet<u32> = BTreeSet::new();
    // Starts empty, as the refused map does; each table that arrives is applied.
    let mut sap_table = sap.follow(rt);
    loop {
        let _ = ring.poll(Duration::from_millis(50));
        // Releases of one process in one drain are checked once.
        let mut closing: BTreeSet<u32> = BTreeSet::new();
        for (kind, pid, proto, port) in reports.borrow_mut().drain(..) {
            match kind {
                EVENT_BIND if !in_ephemeral_range(node, port) => sup.adopt(pid, proto, port),
                EVENT_RELEASE => {
                    closing.insert(pid);
                }
                _ => {}
            }
        }
        for pid in closing {
            sup.sweep_pid(pid);
        }
        if sap_table.has_changed().unwrap_or(false) {
            // Ports held by other nodes alone: a scalable service may be joined (the seccomp
            // supervisor decides that, knowing the process's role).
            let want: BTreeSet<u32> = sap_table
                .borrow_and_update()
                .iter()
                .filter(|e| e.service.is_empty() && !e.listeners.is_empty() && e.listeners.iter().all(|l| l.node != node))
                .map(|e| crate::sap::port_key(e.proto, e.port))
                .collect();
            for k in want.difference(&current) {
                let _ = refused.update(&k.to_ne_bytes(), &[1u8], MapFlags::ANY);
            }
            for k in current.difference(&want) {
                let _ = refused.delete(&k.to_ne_bytes());
            }
            current = want;
        }
    }
}
