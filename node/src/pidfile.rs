//! A node's pid file (`DIR/pid`) and what it says: whether that node's daemon runs.

use std::path::Path;

use crate::config::NodeConfig;

/// Whether `pid` exists and has not exited (a zombie has).
pub fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
}

/// The pid of node `n`'s daemon when it is running.
pub fn node_pid(nc: &NodeConfig) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(nc.dir.join("pid")).ok()?.trim().parse().ok()?;
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
    let is_node = args.iter().any(|a| *a == b"node") && args.windows(2).any(|w| w[0] == b"--id" && w[1] == nc.id.to_string().as_bytes());
    (is_node && is_running(pid)).then_some(pid)
}

/// Writes `DIR/pid` atomically (temp file + rename): the launcher and the daemon both write
/// it, and a reader must never see it empty.
pub fn write_pid_file(dir: &Path, pid: u32) -> std::io::Result<()> {
    // Named after the writer, not the pid written: the launcher and the daemon write the same
    // pid, and one's rename must not take the other's temp file away.
    let tmp = dir.join(format!("pid.tmp.{}", std::process::id()));
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, dir.join("pid"))
}
