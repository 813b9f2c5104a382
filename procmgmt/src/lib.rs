//! ssi-procmgmt: global processes — global pids, remote exec, signals and exit
//! across nodes.
//!
//! # Modules
//!
//! - `proto/procmgmt.proto` — `ProcMgr` (every node, name `procmgmt`: Spawn, Input, Signal,
//!   Resize, Kill, Load) and `StdioSink` (exported by the launching node per process: Output,
//!   Exited). A gpid is node × 4194304 + pid.
//! - `server.rs` — `ProcMgr`: spawns as the ORB call's creds (on a blocking thread: the
//!   child's chdir may need this node's own mount), feeds stdin, relays stdout and stderr to
//!   the sink one chunk at a time per stream, then the exit; signals the process group; kills
//!   any process as the caller's kill(2) would; hangs up processes whose launching node left.
//! - `lib.rs` — gpids; `ProcMgrs`, every node's `ProcMgr` stub resolved once, shared by the
//!   launcher and the global /proc.
//! - `launch.rs` — `Launcher`, in every daemon, for its local tools: placement, working
//!   directory translation between mountpoints, the sink, stdin/signals/resizes in order,
//!   SIGHUP when the tool goes away.
//! - `placement.rs` — the `Placement` trait; round-robin and least-loaded (run queue or load
//!   average, plus this launcher's own running placements; on one machine only the latter).
//! - `spawn.rs` — fork/exec as a user (groups, gid, uid, umask, setsid, pipes or a pty,
//!   SIGHUP as parent-death signal) from the `Spawner` thread; `kill_as`; a caller's groups
//!   from /proc.
//! - `table.rs` — the node's processes for the global /proc (a real cluster: the machine's; a
//!   local cluster: each daemon's subtree — daemons found by their pid files — the first node
//!   the rest), `/proc/PID/*` and node
//!   files read with the caller's filesystem ids (PXFS's `AsUser`).
//! - `procfs.rs` — the global `/proc`, a synthetic PXFS volume: `GPID/{status,stat,cmdline,
//!   environ,cwd,exe}` and `nodes/N/{loadavg,meminfo,uptime}`, from every member's
//!   `ProcMgr.List`/`ReadFile`.
//!
//! # Invariants
//!
//! - **Processes started through ssi run as their caller.** The launching daemon takes uid,
//!   gid and pid from SO_PEERCRED and groups from /proc/PID/status — never from the tool's
//!   word — and sends them in the ORB header; the target forks, sets groups, gid, uid, and
//!   execs. `ssi kill` runs kill(2) on a thread whose real and effective uid are the
//!   caller's, so the kernel applies its own rule (and root's CAP_KILL only for root).
//! - **No unowned remote processes.** A process started for a tool is hung up (SIGHUP to its
//!   process group) when the tool's control stream closes, when the sink stops answering, or
//!   when the launching node leaves the view; and when the daemon that started it stops (on
//!   the way out) or dies (the kernel sends its parent-death signal: processes are forked from
//!   one `procmgmt-spawn` thread that lives as long as the daemon). A tool whose target node
//!   dies hears so and exits 255.
//! - **Every process of the cluster once.** The global /proc lists what each member claims;
//!   on a local cluster (all nodes on loopback addresses) a process belongs to the node whose
//!   daemon it descends from, else to the first node, so the machine's processes are each
//!   listed once. Processes started through ssi have the launching tool's gpid as parent.
//! - **Streams keep their order.** stdin chunks, and each of stdout and stderr, travel as one
//!   invocation at a time; a slow reader holds back the writer all the way to the pipe.

pub mod launch;
pub mod placement;
pub mod procfs;
pub mod server;
pub mod spawn;
pub mod table;

pub mod proto {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ssi.procmgmt.rs"));
}

/// A global pid: `node × 4194304 + local pid` (node ids 1..=511), so it fits a `pid_t`.
pub const GPID_STRIDE: u32 = 4_194_304;

/// The ORB name of every node's `ProcMgr`.
pub const PROCMGR_NAME: &str = "procmgmt";

pub fn gpid(node: u32, pid: u32) -> u64 {
    node as u64 * GPID_STRIDE as u64 + pid as u64
}

pub fn node_of(gpid: u64) -> u32 {
    (gpid / GPID_STRIDE as u64) as u32
}

pub fn local_pid(gpid: u64) -> u32 {
    (gpid % GPID_STRIDE as u64) as u32
}

/// Every node's `ProcMgr`, resolved once per node and shared by this node's launcher and
/// its global /proc (again after a failure that was not the callee's own).
pub struct ProcMgrs {
    orb: ssi_orb::Orb,
    stubs: parking_lot::Mutex<std::collections::HashMap<u32, proto::ProcMgrStub>>,
}

impl ProcMgrs {
    pub fn new(orb: &ssi_orb::Orb) -> Self {
        ProcMgrs { orb: orb.clone(), stubs: Default::default() }
    }

    pub async fn get(&self, node: u32) -> Result<proto::ProcMgrStub, ssi_orb::OrbError> {
        if let Some(s) = self.stubs.lock().get(&node) {
            return Ok(s.clone());
        }
        let s = proto::ProcMgrStub::new(self.orb.resolve(node, PROCMGR_NAME).await?)?;
        self.stubs.lock().insert(node, s.clone());
        Ok(s)
    }

    /// A call to `node` failed: unless its ProcMgr answered with an errno, resolve it again
    /// next time (it may have restarted or gone).
    pub fn failed(&self, node: u32, e: &ssi_orb::OrbError) {
        if e.os_errno().is_none() {
            self.stubs.lock().remove(&node);
        }
    }
}

/// What this crate can do today.
pub const STATUS: &str = "procmgmt: global pids, remote exec, signals, kill, the global /proc, ssi ps";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpids_name_node_and_pid() {
        let g = gpid(3, 4_194_303);
        assert_eq!((node_of(g), local_pid(g)), (3, 4_194_303));
        assert_eq!(gpid(2, 17), 8_388_625);
    }
}
