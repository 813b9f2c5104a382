//! A real C tree to build on the cluster: the redis 7.0.15 source (`scripts/fetch-redis.sh`),
//! unpacked, its object files listed, and how many processes each node started meanwhile.
//! Used by `ssi bench rexec` and `ssi workload make`.

use crate::error::{Context, Error, Result};
use ssi_node::{bail, failed};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Every `*.o` under `dir`, relative.
pub fn objects(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "o") {
                out.insert(p.strip_prefix(dir).unwrap_or(&p).to_path_buf());
            }
        }
    }
    out
}

/// Where a build's recipes run: `ssi sh` of the cluster in `dir`, from node `node` (None: the
/// node whose mountpoint holds the tree).
pub struct SsiShell<'a> {
    pub exe: &'a Path,
    pub dir: &'a Path,
    pub node: Option<u32>,
}

/// `make -jJOBS MALLOC=libc` in `tree` (the redis tree, without jemalloc), its recipes through
/// `shell` if given, else run here; stdout discarded, stderr to `stderr`. The wall time in
/// seconds, or an error when make fails.
pub fn make(tree: &Path, jobs: u32, shell: Option<SsiShell>, stderr: Stdio) -> Result<f64> {
    let mut c = Command::new("make");
    c.arg(format!("-j{jobs}")).arg("MALLOC=libc").current_dir(tree).stdout(Stdio::null()).stderr(stderr);
    if let Some(s) = &shell {
        c.arg(format!("SHELL={} sh", s.exe.display())).env("SSI_DIR", s.dir);
        match s.node {
            Some(n) => c.env("SSI_NODE", n.to_string()),
            None => c.env_remove("SSI_NODE"),
        };
    }
    let t = std::time::Instant::now();
    let st = c.status().context("make")?;
    let secs = t.elapsed().as_secs_f64();
    if !st.success() {
        bail!("make -j{jobs}{} in {} failed ({st})", if shell.is_some() { " SHELL='ssi sh'" } else { "" }, tree.display());
    }
    Ok(secs)
}

pub fn untar(tarball: &Path, into: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(into)?;
    let st = Command::new("tar").arg("xzf").arg(tarball).current_dir(into).status()?;
    if !st.success() {
        bail!("tar xzf {} failed", tarball.display());
    }
    let top = std::fs::read_dir(into)?.flatten().find(|e| e.path().is_dir()).ok_or_else(|| failed!("empty tarball"))?;
    Ok(top.path())
}

pub fn fetch_tree() -> Result<PathBuf> {
    // The workspace's script, two levels above this crate.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-redis.sh");
    let out = Command::new(&script).stderr(Stdio::inherit()).output().with_context(|| format!("{}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed", script.display());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Each node's count of processes its ProcMgr started.
pub async fn spawned(cfg: &ssi_node::config::Config) -> Result<Vec<(u32, u64)>> {
    let orb = ssi_node::tool::connect(cfg).await?;
    let mut out = Vec::new();
    for id in cfg.nodes.keys() {
        let h = orb.resolve(*id, ssi_procmgmt::PROCMGR_NAME).await.map_err(|e| failed!("node {id}: {e}"))?;
        let s = ssi_procmgmt::proto::ProcMgrStub::new(h)?;
        out.push((*id, s.load(ssi_orb::proto::Empty {}).await.map_err(|e| failed!("node {id}: {e}"))?.spawned));
    }
    orb.shutdown();
    Ok(out)
}
