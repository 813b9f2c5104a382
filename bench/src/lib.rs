//! Side-by-side benchmarks (`ssi bench ...`). Each prints the baseline it measured in the same
//! run and the ratio to it.
//!
//! `ssi bench orb` runs every case between the same two daemon processes of a 2-node local
//! cluster, each pinned to its own CPU: the baselines (raw TCP ping-pong, plain tonic unary)
//! are served by node 2 and driven by node 1 exactly like the ORB cases.

use crate::error::{Context, Error, Result};
use ssi_node::bail;

pub mod error;
pub mod fs;
pub mod gluster;
pub mod incop;
pub mod net;
pub mod orb;
pub mod rexec;
pub mod scratch_ext4;
pub mod servant;
pub mod sshd;
pub mod trace;

/// Runs a cluster benchmark: needs root (`why` says for what), warns about debug builds,
/// gives `body` a scratch directory, and takes down the local cluster it may have started
/// under `DIR/cluster` and the directory, whatever `body` returned.
pub fn in_scratch_dir(name: &str, why: &str, body: impl FnOnce(&std::path::Path) -> Result<()>) -> Result<()> {
    in_scratch(name, why, None, body)
}

/// As [`in_scratch_dir`], the directory being a fresh ext4 of `size_mib` made for the run
/// ([`scratch_ext4`]), unmounted after the cluster on it is down.
pub fn in_scratch_disk(name: &str, why: &str, size_mib: u64, body: impl FnOnce(&std::path::Path) -> Result<()>) -> Result<()> {
    in_scratch(name, why, Some(size_mib), body)
}

fn in_scratch(name: &str, why: &str, disk_mib: Option<u64>, body: impl FnOnce(&std::path::Path) -> Result<()>) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("ssi bench {name} needs root ({why})");
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build of ssi; its numbers say little (cargo build --release)");
    }
    let dir = std::env::temp_dir().join(format!("ssi-bench{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let disk = match disk_mib.map(|mib| scratch_ext4::ScratchExt4::mount(&dir, mib).context("a fresh ext4 for the run")).transpose() {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let res = body(&dir);
    let _ = ssi_node::local::down(&dir.join("cluster"));
    // The cluster kept its volumes on the disk: unmounted only now.
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
    res
}
