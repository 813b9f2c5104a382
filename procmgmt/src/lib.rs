//! ssi-procmgmt: global processes (DESIGN §5) — global pids, remote exec, signals and exit
//! across nodes.
//!
//! - `server`: `ProcMgr`, served by every node (spawn as the caller, stdin, signals, kill).
//! - `launch`: the launching daemon's side (placement, working directory, stdio relay).
//! - `placement`: the policies (round-robin, least-loaded).
//! - `spawn`: starting a process as a user; kill(2) as a user.
//!
//! - `table`, `procfs`: the node's processes and the global `/proc` volume they make.

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
