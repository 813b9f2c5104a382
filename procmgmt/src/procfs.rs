//! The global `/proc`: a synthetic PXFS volume (see `ssi_pxfs::synthetic`) that procmgmt
//! provides on every node, combining every node's processes.
//!
//! ```text
//! /proc/GPID/{status,stat,cmdline,environ,cwd,exe}   one directory per process of the cluster
//! /proc/nodes/N/{loadavg,meminfo,uptime}             one directory per member node
//! ```
//!
//! Files are read on the process's node as the caller (so `environ` is as private as on
//! Linux); `status` gains `Node`, `GPid` and `GPPid` lines (the parent in the cluster: the
//! launching tool for processes started through ssi). `cwd` and `exe` are their targets as
//! text. The list of processes is asked of every member at most every LIST_TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ssi_orb::proto::{Creds, Empty};
use ssi_orb::{CallOptions, Orb, OrbError};
use ssi_pxfs::synthetic::{Caller, SynAttr, Synthetic};

use crate::proto::{FileReq, ProcEntry, ProcMgrStub};

const LIST_TTL: Duration = Duration::from_millis(300);
const CALL_DEADLINE: Duration = Duration::from_secs(5);
const PROC_FILES: [&str; 6] = ["status", "stat", "cmdline", "environ", "cwd", "exe"];
const NODE_FILES: [&str; 3] = ["loadavg", "meminfo", "uptime"];

pub struct ProcFs {
    orb: Orb,
    procmgrs: Arc<crate::ProcMgrs>,
    listing: Mutex<Option<(Instant, Vec<ProcEntry>)>>,
}

fn errno_of(e: &OrbError) -> i32 {
    e.os_errno().unwrap_or(libc::EIO)
}

fn dir(uid: u32, gid: u32, mtime_s: i64) -> SynAttr {
    SynAttr { dir: true, perm: 0o555, uid, gid, mtime_s }
}

fn file(perm: u32, uid: u32, gid: u32, mtime_s: i64) -> SynAttr {
    SynAttr { dir: false, perm, uid, gid, mtime_s }
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl ProcFs {
    pub fn new(orb: &Orb, procmgrs: Arc<crate::ProcMgrs>) -> Self {
        ProcFs { orb: orb.clone(), procmgrs, listing: Mutex::new(None) }
    }

    fn members(&self) -> Vec<u32> {
        self.orb.view().members.iter().map(|m| m.node).collect()
    }

    /// `node`'s ProcMgr, calls bounded by CALL_DEADLINE, acting as `who` when given.
    async fn stub(&self, node: u32, who: Option<&Caller>) -> Result<ProcMgrStub, i32> {
        let mut opts = CallOptions::default().deadline(CALL_DEADLINE);
        if let Some(w) = who {
            opts = opts.creds(Creds { uid: w.uid, gid: w.gid, groups: w.groups.clone() });
        }
        Ok(self.procmgrs.get(node).await.map_err(|e| errno_of(&e))?.with_options(opts))
    }

    /// Every member's processes, at most LIST_TTL old (`fresh`: now).
    async fn all(&self, fresh: bool) -> Vec<ProcEntry> {
        if let Some((at, l)) = self.listing.lock().as_ref() {
            if !fresh && at.elapsed() < LIST_TTL {
                return l.clone();
            }
        }
        let lists = futures_util::future::join_all(self.members().into_iter().map(|n| async move {
            let s = self.stub(n, None).await.ok()?;
            match s.list(Empty {}).await {
                Ok(r) => Some(r.into_inner().procs),
                Err(e) => {
                    self.procmgrs.failed(n, &e);
                    None
                }
            }
        }))
        .await;
        let mut all: Vec<ProcEntry> = lists.into_iter().flatten().flatten().collect();
        all.sort_by_key(|p| p.gpid);
        *self.listing.lock() = Some((Instant::now(), all.clone()));
        all
    }

    async fn process(&self, gpid: u64) -> Option<ProcEntry> {
        // The last listing (sorted by gpid) while it is fresh, without copying it.
        if let Some((_, l)) = self.listing.lock().as_ref().filter(|(at, _)| at.elapsed() < LIST_TTL) {
            if let Ok(i) = l.binary_search_by_key(&gpid, |p| p.gpid) {
                return Some(l[i]);
            }
        }
        // Perhaps started since the last listing.
        self.all(true).await.into_iter().find(|p| p.gpid == gpid)
    }
}

fn parts(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

#[ssi_orb::async_trait]
impl Synthetic for ProcFs {
    async fn attr(&self, path: &str, _who: &Caller) -> Result<SynAttr, i32> {
        let now = now_s();
        match parts(path).as_slice() {
            [] | ["nodes"] => Ok(dir(0, 0, now)),
            ["nodes", n] if n.parse().is_ok_and(|n: u32| self.members().contains(&n)) => Ok(dir(0, 0, now)),
            ["nodes", n, f] if n.parse().is_ok_and(|n: u32| self.members().contains(&n)) && NODE_FILES.contains(f) => {
                Ok(file(0o444, 0, 0, now))
            }
            [g] => {
                let p = self.process(g.parse().map_err(|_| libc::ENOENT)?).await.ok_or(libc::ENOENT)?;
                Ok(dir(p.uid, p.gid, p.start_s))
            }
            [g, f] if PROC_FILES.contains(f) => {
                let p = self.process(g.parse().map_err(|_| libc::ENOENT)?).await.ok_or(libc::ENOENT)?;
                Ok(file(if *f == "environ" { 0o400 } else { 0o444 }, p.uid, p.gid, p.start_s))
            }
            _ => Err(libc::ENOENT),
        }
    }

    async fn list(&self, path: &str, _who: &Caller) -> Result<Vec<(String, bool)>, i32> {
        match parts(path).as_slice() {
            [] => {
                let mut out = vec![("nodes".to_string(), true)];
                out.extend(self.all(true).await.into_iter().map(|p| (p.gpid.to_string(), true)));
                Ok(out)
            }
            ["nodes"] => Ok(self.members().into_iter().map(|n| (n.to_string(), true)).collect()),
            ["nodes", _] => Ok(NODE_FILES.iter().map(|f| (f.to_string(), false)).collect()),
            [_] => Ok(PROC_FILES.iter().map(|f| (f.to_string(), false)).collect()),
            _ => Err(libc::ENOTDIR),
        }
    }

    async fn read(&self, path: &str, who: &Caller) -> Result<Vec<u8>, i32> {
        let (node, req) = match parts(path).as_slice() {
            ["nodes", n, f] => (n.parse().map_err(|_| libc::ENOENT)?, FileReq { gpid: 0, name: f.to_string() }),
            [g, f] => {
                let gpid: u64 = g.parse().map_err(|_| libc::ENOENT)?;
                (crate::node_of(gpid), FileReq { gpid, name: f.to_string() })
            }
            _ => return Err(libc::EISDIR),
        };
        let s = self.stub(node, Some(who)).await?;
        s.read_file(req).await.map(|r| r.into_inner().data.to_vec()).map_err(|e| {
            self.procmgrs.failed(node, &e);
            errno_of(&e)
        })
    }
}
