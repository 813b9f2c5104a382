//! `ProcMgr`, served by every node: starts processes for launchers on other nodes (or this
//! one), feeds their stdin, relays their output and exit to the launcher's `StdioSink`,
//! signals them, and kills any process of the node as its caller could.
//!
//! A process started here whose launcher is gone — the launching node left the view, or
//! the launcher stopped answering — gets SIGHUP, as from a closed terminal, rather than
//! living on unowned.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use ssi_orb::proto::{Creds as OrbCreds, Empty};
use ssi_orb::{CallCtx, CallOptions, Exception, ObjHandle, Orb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proto::*;
use crate::spawn::{self, Creds, Reader, Spec, Writer};
use crate::{gpid, local_pid, node_of};

/// How long the relay waits for output after the process exited (a background child may
/// hold the pipes open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
const CHUNK: usize = 64 << 10;

/// A process started here for a launcher.
struct Proc {
    uid: u32,
    launcher_node: u32,
    /// The launching tool's gpid: this process's parent in the global process tree.
    parent_gpid: u64,
    stdin: Arc<tokio::sync::Mutex<Option<Writer>>>,
    pty: Option<Arc<std::os::fd::OwnedFd>>,
}

#[derive(Clone)]
pub struct ProcServer {
    orb: Orb,
    spawner: Arc<spawn::Spawner>,
    claim: Arc<crate::table::Claim>,
    procs: Arc<Mutex<HashMap<u64, Proc>>>,
    spawned: Arc<std::sync::atomic::AtomicU64>,
    /// Who answers the binds of processes started with interposition (`ssi run`).
    bind_gate: Arc<Mutex<Option<Arc<dyn BindGate>>>>,
}

/// Bind interposition, as the node's networking provides it: the seccomp filter a process
/// installs, and who answers its notifications.
pub trait BindGate: Send + Sync {
    fn filter(&self) -> Arc<Vec<libc::sock_filter>>;
    fn supervise(&self, listener: std::os::fd::OwnedFd, role: &crate::proto::Interpose);
}

fn caller(ctx: &CallCtx) -> Result<Creds, Exception> {
    match &ctx.creds {
        Some(OrbCreds { uid, gid, groups }) => Ok(Creds { uid: *uid, gid: *gid, groups: groups.clone() }),
        None => Err(Exception::errno(libc::EPERM, "no caller credentials")),
    }
}

impl ProcServer {
    pub fn new(orb: &Orb, claim: crate::table::Claim) -> std::io::Result<Self> {
        let spawner = Arc::new(spawn::Spawner::start(tokio::runtime::Handle::current())?);
        Ok(ProcServer {
            orb: orb.clone(),
            spawner,
            claim: Arc::new(claim),
            procs: Arc::new(Mutex::new(HashMap::new())),
            spawned: Default::default(),
            bind_gate: Default::default(),
        })
    }

    /// Enables `ssi run` on this node.
    pub fn set_bind_gate(&self, gate: Arc<dyn BindGate>) {
        *self.bind_gate.lock() = Some(gate);
    }

    /// The daemon is stopping: what it started is hung up (a killed daemon's children get
    /// SIGHUP from the kernel, their parent-death signal).
    pub fn hang_up_all(&self) {
        let all: Vec<u64> = self.procs.lock().keys().copied().collect();
        for g in all {
            hang_up(g);
        }
    }

    fn node(&self) -> u32 {
        self.orb.node()
    }

    /// SIGHUP to the process groups of every process launched from `node`.
    pub fn launcher_node_gone(&self, node: u32) {
        let pids: Vec<u64> = self.procs.lock().iter().filter(|(_, p)| p.launcher_node == node).map(|(g, _)| *g).collect();
        for g in pids {
            hang_up(g);
        }
    }

    /// The processes started here, by gpid, with their launchers' nodes.
    pub fn launched(&self) -> Vec<(u64, u32)> {
        self.procs.lock().iter().map(|(g, p)| (*g, p.launcher_node)).collect()
    }
}

fn hang_up(g: u64) {
    let pid = local_pid(g) as i32;
    // SAFETY: kill takes integers only.
    unsafe {
        libc::kill(-pid, libc::SIGHUP);
        libc::kill(-pid, libc::SIGCONT);
    }
}

/// Copies one output stream to the sink, one chunk at a time (so the stream keeps its
/// order). When the sink is gone the process is hung up and the rest discarded.
async fn relay(mut from: Reader, stream: u32, sink: StdioSinkStub, g: u64) {
    let mut buf = vec![0u8; CHUNK];
    let mut sink_ok = true;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if sink_ok && sink.output(OutputReq { stream, data: Bytes::copy_from_slice(&buf[..n]) }).await.is_err() {
            sink_ok = false;
            hang_up(g);
        }
    }
}

#[ssi_orb::async_trait]
impl ProcMgr for ProcServer {
    async fn spawn(&self, ctx: &CallCtx, req: SpawnReq) -> Result<SpawnReply, Exception> {
        let creds = caller(ctx)?;
        let r = req.sink.first().ok_or_else(|| Exception::errno(libc::EINVAL, "no output sink"))?;
        let sink: ObjHandle = ctx.refs.adopt(r).ok_or_else(|| Exception::errno(libc::EINVAL, "the output sink did not arrive counted"))?;
        let sink = StdioSinkStub::new(sink)
            .map_err(|e| Exception::app(e.to_string()))?
            .with_options(CallOptions::default().deadline(Duration::from_secs(3600)));
        let tty = req.tty.then(|| (req.rows.clamp(1, 1000) as u16, req.cols.clamp(1, 1000) as u16));
        // SSI_NODE: the process's own node, so an `ssi` it runs talks to this node's daemon.
        let mut env: Vec<Vec<u8>> = req.env.iter().filter(|e| !e.starts_with(b"SSI_NODE=")).map(|e| e.to_vec()).collect();
        env.push(format!("SSI_NODE={}", self.node()).into_bytes());
        let spec = Spec {
            argv: req.argv.iter().map(|a| a.to_vec()).collect(),
            env,
            cwd: req.cwd.to_vec(),
            umask: req.umask & 0o777,
            creds: creds.clone(),
            tty,
            filter: None,
        };
        let gate = match &req.interpose {
            Some(_) => {
                Some(self.bind_gate.lock().clone().ok_or_else(|| Exception::errno(libc::ENOTSUP, "this node cannot interpose on binds"))?)
            }
            None => None,
        };
        let spec = Spec { filter: gate.as_ref().map(|g| g.filter()), ..spec };
        // Not on the runtime thread: the child's chdir may need this node's own PXFS mount,
        // whose requests this runtime answers, and spawn waits for the child's exec.
        let mut s = self.spawner.spawn(spec).await.map_err(Exception::from_io)?;
        if let (Some(gate), Some(l), Some(i)) = (gate, s.listener.take(), &req.interpose) {
            gate.supervise(l, i);
        }
        let g = gpid(self.node(), s.pid);
        self.spawned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stdin = Arc::new(tokio::sync::Mutex::new(Some(s.stdin)));
        let pty = s.pty.map(Arc::new);
        self.procs.lock().insert(g, Proc { uid: creds.uid, launcher_node: ctx.src, parent_gpid: req.parent_gpid, stdin, pty });
        tracing::debug!(gpid = g, launcher = ctx.src, parent = req.parent_gpid, "spawned");
        let procs = self.procs.clone();
        let (mut child, out, err) = (s.child, s.stdout, s.stderr);
        tokio::spawn(async move {
            let relays = async {
                let o = relay(out, 1, sink.clone(), g);
                match err {
                    Some(e) => {
                        futures_util::future::join(o, relay(e, 2, sink.clone(), g)).await;
                    }
                    None => o.await,
                }
            };
            tokio::pin!(relays);
            let status = tokio::select! {
                _ = &mut relays => child.wait().await,
                st = child.wait() => {
                    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut relays).await;
                    st
                }
            };
            procs.lock().remove(&g);
            use std::os::unix::process::ExitStatusExt;
            let exit = match status {
                Ok(st) => match (st.code(), st.signal()) {
                    (Some(c), _) => ExitReq { code: c, signal: 0 },
                    (None, Some(sig)) => ExitReq { code: -1, signal: sig },
                    _ => ExitReq { code: 255, signal: 0 },
                },
                Err(_) => ExitReq { code: 255, signal: 0 },
            };
            let _ = sink.exited(exit).await;
        });
        Ok(SpawnReply { gpid: g })
    }

    async fn input(&self, ctx: &CallCtx, req: InputReq) -> Result<Empty, Exception> {
        let (uid, stdin) = {
            let p = self.procs.lock();
            let p = p.get(&req.gpid).ok_or_else(|| Exception::errno(libc::ESRCH, "no such process started here"))?;
            (p.uid, p.stdin.clone())
        };
        if caller(ctx)?.uid != uid {
            return Err(Exception::errno(libc::EPERM, "not the process's launcher"));
        }
        let mut w = stdin.lock().await;
        if let Some(pipe) = w.as_mut() {
            // A reader that went away (EPIPE) just stops taking input, as with a local pipe.
            if !req.data.is_empty() && pipe.write_all(&req.data).await.is_err() {
                *w = None;
                return Ok(Empty {});
            }
            if req.eof {
                let _ = pipe.shutdown().await;
                *w = None;
            }
        }
        Ok(Empty {})
    }

    async fn signal(&self, ctx: &CallCtx, req: SignalReq) -> Result<Empty, Exception> {
        let uid =
            self.procs.lock().get(&req.gpid).map(|p| p.uid).ok_or_else(|| Exception::errno(libc::ESRCH, "no such process started here"))?;
        let who = caller(ctx)?;
        if who.uid != uid && who.uid != 0 {
            return Err(Exception::errno(libc::EPERM, "not the process's launcher"));
        }
        // The whole process group, as a terminal does (the process leads its own session).
        // SAFETY: kill takes integers only.
        if unsafe { libc::kill(-(local_pid(req.gpid) as i32), req.signal) } < 0 {
            return Err(Exception::from_io(std::io::Error::last_os_error()));
        }
        Ok(Empty {})
    }

    async fn resize(&self, _ctx: &CallCtx, req: WinSize) -> Result<Empty, Exception> {
        let pty = self.procs.lock().get(&req.gpid).and_then(|p| p.pty.clone());
        if let Some(m) = pty {
            spawn::resize(&m, req.rows.clamp(1, 1000) as u16, req.cols.clamp(1, 1000) as u16).map_err(Exception::from_io)?;
        }
        Ok(Empty {})
    }

    async fn kill(&self, ctx: &CallCtx, req: KillReq) -> Result<Empty, Exception> {
        if node_of(req.gpid) != self.node() {
            return Err(Exception::errno(libc::ESRCH, "that process is not on this node"));
        }
        let who = caller(ctx)?;
        let pid = local_pid(req.gpid) as i32;
        if pid <= 0 || !(0..=64).contains(&req.signal) {
            return Err(Exception::errno(libc::EINVAL, "bad pid or signal"));
        }
        let sig = req.signal;
        tokio::task::spawn_blocking(move || spawn::kill_as(who.uid, pid, sig))
            .await
            .map_err(|e| Exception::app(e.to_string()))?
            .map_err(Exception::from_io)?;
        Ok(Empty {})
    }

    async fn list(&self, _ctx: &CallCtx, _req: Empty) -> Result<ProcList, Exception> {
        let (node, claim) = (self.node(), self.claim.clone());
        let procs =
            tokio::task::spawn_blocking(move || crate::table::list(node, &claim)).await.map_err(|e| Exception::app(e.to_string()))?;
        Ok(ProcList { procs })
    }

    async fn read_file(&self, ctx: &CallCtx, req: FileReq) -> Result<FileData, Exception> {
        let who = caller(ctx)?;
        let node = self.node();
        let pid = if req.gpid == 0 {
            0
        } else if node_of(req.gpid) == node {
            local_pid(req.gpid)
        } else {
            return Err(Exception::errno(libc::ESRCH, "that process is not on this node"));
        };
        let launched_by = self.procs.lock().get(&req.gpid).map(|p| p.parent_gpid);
        let name = req.name.clone();
        let mut data = tokio::task::spawn_blocking(move || crate::table::read_as(who.uid, who.gid, &who.groups, pid, &name))
            .await
            .map_err(|e| Exception::app(e.to_string()))?
            .map_err(Exception::from_io)?;
        if req.name == "status" {
            // Where the process is in the cluster: its node and global pids.
            let gppid = launched_by.unwrap_or_else(|| crate::table::ppid(node, pid, &self.claim));
            data.extend(format!("Node:\t{node}\nGPid:\t{}\nGPPid:\t{gppid}\n", req.gpid).into_bytes());
        }
        Ok(FileData { data: data.into() })
    }

    async fn load(&self, _ctx: &CallCtx, _req: Empty) -> Result<NodeLoad, Exception> {
        let mut l = crate::placement::this_node_load(self.node());
        l.spawned = self.spawned.load(std::sync::atomic::Ordering::Relaxed);
        Ok(l)
    }
}

/// Exports this node's `ProcMgr` and hangs up processes whose launching node is lost (by
/// this node's failure detector: a local decision, needing no quorum).
pub fn serve(orb: &Orb, claim: crate::table::Claim) -> std::io::Result<ProcServer> {
    let server = ProcServer::new(orb, claim)?;
    let h = export_proc_mgr(orb, server.clone());
    orb.register_name(crate::PROCMGR_NAME, &h);
    let s = server.clone();
    tokio::spawn(orb.losses(move |gone| {
        s.launcher_node_gone(gone);
        async {}
    }));
    Ok(server)
}
