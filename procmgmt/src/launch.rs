//! The launching side: what a node's daemon does for a local `ssi rexec` / `ssi sh`.
//!
//! It picks the node (or takes the one asked for), translates the working directory between
//! the two nodes' mountpoints, exports a `StdioSink` for the process's output and exit, asks
//! the target's `ProcMgr` to spawn, then feeds stdin, signals and window sizes through, one
//! at a time (so they arrive in order and a slow reader holds back the writer). If the
//! local tool goes away before the process ends, the process gets SIGHUP.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use ssi_orb::proto::{Creds as OrbCreds, Empty};
use ssi_orb::{CallCtx, CallOptions, Exception, Orb, OrbError};
use tokio::sync::{mpsc, oneshot};

use crate::placement::{Candidate, Placement};
use crate::proto::*;
use crate::spawn::Creds;

/// Loads older than this are sampled again before a placement.
const LOAD_TTL: Duration = Duration::from_millis(500);
const LOAD_DEADLINE: Duration = Duration::from_millis(300);
/// Calls carrying stdin wait as long as the process takes to read it.
const INPUT_DEADLINE: Duration = Duration::from_secs(3600);

/// What the local tool asked for.
pub struct ExecSpec {
    pub argv: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    /// The tool was given its directory explicitly (`--cwd`): used as is on the target.
    pub cwd_given: bool,
    pub umask: u32,
    /// None: the placement policy picks.
    pub node: Option<u32>,
    pub tty: Option<(u32, u32)>,
    pub creds: Creds,
    pub parent_gpid: u64,
    /// Its binds go through the SAP server (`ssi run`), with this role.
    pub interpose: Option<crate::proto::Interpose>,
}

/// From the local tool, while its process runs.
pub enum ToProcess {
    Stdin(Bytes),
    Eof,
    Signal(i32),
    Resize(u32, u32),
}

/// To the local tool.
#[derive(Debug)]
pub enum FromProcess {
    Started { gpid: u64, node: u32 },
    Stdout(Bytes),
    Stderr(Bytes),
    Exited { code: i32, signal: i32 },
}

pub struct Launcher {
    orb: Orb,
    /// Each node's mountpoint of the global namespace.
    mountpoints: BTreeMap<u32, PathBuf>,
    policy: Box<dyn Placement>,
    /// All nodes run on one machine (a local cluster): they report one machine's load, so
    /// only the placements of this launcher tell them apart.
    one_machine: bool,
    loads: Mutex<HashMap<u32, (NodeLoad, Instant)>>,
    placed: Arc<Mutex<HashMap<u32, u32>>>,
    procmgrs: Arc<crate::ProcMgrs>,
}

/// Why a remote command could not run, or could not be followed to its end.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("node {0} is not in the cluster config")]
    UnknownNode(u32),
    #[error("the working directory {} is not in the global namespace (under {}); give --cwd DIR for the remote side", cwd.display(), root.display())]
    OutsideNamespace { cwd: PathBuf, root: PathBuf },
    #[error("no node answered a load query")]
    NoCandidate,
    #[error("node {node}: {}", orb_text(source))]
    Node { node: u32, source: OrbError },
    #[error("node {0} went down while running the command")]
    WentDown(u32),
    #[error("no placement on another node: {0}")]
    Fenced(String),
    #[error("gpid {gpid} (node {node}, pid {pid}): {}", orb_text(source))]
    Kill { gpid: u64, node: u32, pid: u32, source: OrbError },
}

/// The working directory `cwd` of a tool on node `from`, as a path on node `to`.
pub fn translate_cwd(mountpoints: &BTreeMap<u32, PathBuf>, cwd: &Path, from: u32, to: u32) -> Result<PathBuf, LaunchError> {
    let (Some(mf), Some(mt)) = (mountpoints.get(&from), mountpoints.get(&to)) else {
        return Err(LaunchError::UnknownNode(to));
    };
    match cwd.strip_prefix(mf) {
        Ok(rel) => Ok(mt.join(rel)),
        Err(_) => Err(LaunchError::OutsideNamespace { cwd: cwd.to_path_buf(), root: mf.clone() }),
    }
}

/// Counts a process placed on a node while it runs.
struct Placed {
    node: u32,
    table: Arc<Mutex<HashMap<u32, u32>>>,
}

impl Drop for Placed {
    fn drop(&mut self) {
        if let Some(n) = self.table.lock().get_mut(&self.node) {
            *n = n.saturating_sub(1);
        }
    }
}

fn orb_text(e: &OrbError) -> String {
    match e.os_errno() {
        Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
        None => e.to_string(),
    }
}

impl Launcher {
    pub fn new(
        orb: &Orb,
        procmgrs: Arc<crate::ProcMgrs>,
        mountpoints: BTreeMap<u32, PathBuf>,
        policy: Box<dyn Placement>,
        one_machine: bool,
    ) -> Self {
        Launcher {
            orb: orb.clone(),
            mountpoints,
            policy,
            one_machine,
            loads: Mutex::new(HashMap::new()),
            placed: Default::default(),
            procmgrs,
        }
    }

    pub fn policy(&self) -> &'static str {
        self.policy.name()
    }

    async fn stub(&self, node: u32) -> Result<ProcMgrStub, LaunchError> {
        self.procmgrs.get(node).await.map_err(|source| LaunchError::Node { node, source })
    }

    /// The members' loads, sampled again where older than LOAD_TTL.
    async fn candidates(&self) -> Vec<Candidate> {
        let members: Vec<u32> = self.orb.view().members.iter().map(|m| m.node).filter(|n| self.mountpoints.contains_key(n)).collect();
        let stale: Vec<u32> =
            { members.iter().copied().filter(|n| self.loads.lock().get(n).is_none_or(|(_, at)| at.elapsed() > LOAD_TTL)).collect() };
        let fresh = futures_util::future::join_all(stale.into_iter().map(|n| async move {
            let s = self.stub(n).await.ok()?.with_options(CallOptions::default().deadline(LOAD_DEADLINE));
            Some(s.load(Empty {}).await.ok()?.into_inner())
        }))
        .await;
        let mut loads = self.loads.lock();
        for l in fresh.into_iter().flatten() {
            loads.insert(l.node, (l, Instant::now()));
        }
        let placed = self.placed.lock();
        members
            .into_iter()
            .filter_map(|n| {
                let mut load = loads.get(&n)?.0;
                if self.one_machine {
                    (load.loadavg1, load.running) = (0.0, 0);
                }
                Some(Candidate { node: n, load, placed: placed.get(&n).copied().unwrap_or(0) })
            })
            .collect()
    }

    /// Runs `spec` to its end: events to `to_tool`, input from `from_tool` (closed = the tool
    /// is gone). Errors before the process started are returned; after, they end as an exit.
    pub async fn exec(
        &self,
        spec: ExecSpec,
        to_tool: mpsc::Sender<FromProcess>,
        mut from_tool: mpsc::Receiver<ToProcess>,
    ) -> Result<(), LaunchError> {
        let me = self.orb.node();
        let node = match spec.node {
            Some(n) => n,
            None => {
                let c = self.candidates().await;
                if c.is_empty() {
                    return Err(LaunchError::NoCandidate);
                }
                self.policy.pick(&c)
            }
        };
        if !self.mountpoints.contains_key(&node) {
            return Err(LaunchError::UnknownNode(node));
        }
        // Cut off from a majority, this node may not know whether `node` is still in the
        // cluster's view: it starts processes only on itself.
        if node != me {
            if let Some(why) = self.orb.fenced() {
                return Err(LaunchError::Fenced(why));
            }
        }
        let cwd_path = Path::new(std::ffi::OsStr::from_bytes(&spec.cwd));
        let cwd = if spec.cwd_given { cwd_path.to_path_buf() } else { translate_cwd(&self.mountpoints, cwd_path, me, node)? };
        *self.placed.lock().entry(node).or_default() += 1;
        let _placed = Placed { node, table: self.placed.clone() };
        let opts = CallOptions::default().creds(OrbCreds { uid: spec.creds.uid, gid: spec.creds.gid, groups: spec.creds.groups.clone() });
        let (exited_tx, mut exited) = oneshot::channel();
        let sink = export_stdio_sink(&self.orb, Sink { to_tool: to_tool.clone(), exited: Mutex::new(Some(exited_tx)) });
        let (rows, cols) = spec.tty.unwrap_or((0, 0));
        let req = SpawnReq {
            argv: spec.argv.into_iter().map(Bytes::from).collect(),
            env: spec.env.into_iter().map(Bytes::from).collect(),
            cwd: Bytes::copy_from_slice(cwd.as_os_str().as_bytes()),
            umask: spec.umask,
            parent_gpid: spec.parent_gpid,
            sink: vec![*sink.objref()],
            tty: spec.tty.is_some(),
            rows,
            cols,
            interpose: spec.interpose.clone(),
        };
        // A stub from before the target restarted is refused (stale reference): resolve again.
        let mut attempt = 0;
        let (target, gpid) = loop {
            let target = self.stub(node).await?.with_options(opts.clone());
            match target.spawn(req.clone()).await {
                Ok(r) => break (target, r.into_inner().gpid),
                Err(e) => {
                    self.procmgrs.failed(node, &e);
                    attempt += 1;
                    if attempt == 2 || e.is_node_down() || e.os_errno().is_some() {
                        return Err(LaunchError::Node { node, source: e });
                    }
                }
            }
        };
        let _ = to_tool.send(FromProcess::Started { gpid, node }).await;
        let input = target.with_options(opts.deadline(INPUT_DEADLINE));
        let mut tool_gone = false;
        // The target's death ends the wait too (its process died with it: parent-death signal).
        // Its loss by this node's failure detector also counts: a node without quorum sees no
        // new view, yet the caller must not wait forever.
        let mut views = self.orb.subscribe_views();
        let mut check = tokio::time::interval(Duration::from_millis(100));
        let incarnation = self.orb.peer_incarnation(node);
        loop {
            tokio::select! {
                biased;
                ex = &mut exited => {
                    let (code, signal) = ex.unwrap_or((255, 0));
                    let _ = to_tool.send(FromProcess::Exited { code, signal }).await;
                    return Ok(());
                }
                changed = views.changed() => {
                    if changed.is_err() || !views.borrow().has_node(node) {
                        return Err(LaunchError::WentDown(node));
                    }
                }
                _ = check.tick() => {
                    if self.orb.liveness(node) == ssi_orb::Liveness::Down || self.orb.peer_incarnation(node) != incarnation {
                        return Err(LaunchError::WentDown(node));
                    }
                }
                msg = from_tool.recv(), if !tool_gone => {
                    let r = match msg {
                        Some(ToProcess::Stdin(data)) => input.input(InputReq { gpid, data, eof: false }).await.map(|_| ()),
                        Some(ToProcess::Eof) => input.input(InputReq { gpid, data: Bytes::new(), eof: true }).await.map(|_| ()),
                        Some(ToProcess::Signal(signal)) => input.signal(SignalReq { gpid, signal }).await.map(|_| ()),
                        Some(ToProcess::Resize(rows, cols)) => input.resize(WinSize { gpid, rows, cols }).await.map(|_| ()),
                        None => {
                            // The tool went away: hang up, as a closed terminal would.
                            tool_gone = true;
                            input.signal(SignalReq { gpid, signal: libc::SIGHUP }).await.map(|_| ())
                        }
                    };
                    if let Err(e) = r {
                        if e.is_node_down() {
                            let _ = to_tool.send(FromProcess::Exited { code: 255, signal: 0 }).await;
                            return Err(LaunchError::WentDown(node));
                        }
                    }
                }
            }
        }
    }

    /// `ssi kill`: signal `gpid` as `creds` would.
    pub async fn kill(&self, creds: &Creds, gpid: u64, signal: i32) -> Result<(), LaunchError> {
        let node = crate::node_of(gpid);
        let s = self.stub(node).await?;
        let s = s.with_options(CallOptions::default().creds(OrbCreds { uid: creds.uid, gid: creds.gid, groups: creds.groups.clone() }));
        s.kill(KillReq { gpid, signal }).await.map(|_| ()).map_err(|e| {
            self.procmgrs.failed(node, &e);
            LaunchError::Kill { gpid, node, pid: crate::local_pid(gpid), source: e }
        })
    }
}

/// One remote process's output and exit, forwarded to the local tool's stream.
struct Sink {
    to_tool: mpsc::Sender<FromProcess>,
    exited: Mutex<Option<oneshot::Sender<(i32, i32)>>>,
}

#[ssi_orb::async_trait]
impl StdioSink for Sink {
    async fn output(&self, _ctx: &CallCtx, req: OutputReq) -> Result<Empty, Exception> {
        let ev = if req.stream == 2 { FromProcess::Stderr(req.data) } else { FromProcess::Stdout(req.data) };
        // Waits while the tool is slow to take output: the process's pipe fills and it waits.
        self.to_tool.send(ev).await.map_err(|_| Exception::app("the launching tool is gone"))?;
        Ok(Empty {})
    }
    async fn exited(&self, _ctx: &CallCtx, req: ExitReq) -> Result<Empty, Exception> {
        if let Some(tx) = self.exited.lock().take() {
            let _ = tx.send((req.code, req.signal));
        }
        Ok(Empty {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_directories_move_between_mountpoints() {
        let m: BTreeMap<u32, PathBuf> = [(1, PathBuf::from("/c/node1/mnt")), (2, PathBuf::from("/c/node2/mnt"))].into();
        assert_eq!(translate_cwd(&m, Path::new("/c/node1/mnt/src/a"), 1, 2).unwrap(), PathBuf::from("/c/node2/mnt/src/a"));
        assert_eq!(translate_cwd(&m, Path::new("/c/node1/mnt"), 1, 2).unwrap(), PathBuf::from("/c/node2/mnt"));
        assert!(translate_cwd(&m, Path::new("/home/x"), 1, 2).unwrap_err().to_string().contains("--cwd"));
        assert!(translate_cwd(&m, Path::new("/c/node1/mnt"), 1, 9).is_err());
    }
}
