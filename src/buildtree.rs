//! A real C tree to build on the cluster: the redis 7.0.15 source (`scripts/fetch-redis.sh`),
//! unpacked, its object files listed, and how many processes each node started meanwhile.
//! Used by `ssi bench rexec` and `ssi workload make`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context};

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

pub fn untar(tarball: &Path, into: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(into)?;
    let st = Command::new("tar").arg("xzf").arg(tarball).current_dir(into).status()?;
    if !st.success() {
        bail!("tar xzf {} failed", tarball.display());
    }
    let top = std::fs::read_dir(into)?.flatten().find(|e| e.path().is_dir()).ok_or_else(|| anyhow!("empty tarball"))?;
    Ok(top.path())
}

pub fn fetch_tree() -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-redis.sh");
    let out = Command::new(&script).stderr(Stdio::inherit()).output().with_context(|| format!("{}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed", script.display());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Each node's count of processes its ProcMgr started.
pub async fn spawned(cfg: &crate::config::Config) -> anyhow::Result<Vec<(u32, u64)>> {
    let orb = crate::tool::connect(cfg).await?;
    let mut out = Vec::new();
    for id in cfg.nodes.keys() {
        let h = orb.resolve(*id, ssi_procmgmt::PROCMGR_NAME).await.map_err(|e| anyhow!("node {id}: {e}"))?;
        let s = ssi_procmgmt::proto::ProcMgrStub::new(h).map_err(|e| anyhow!(e))?;
        out.push((*id, s.load(ssi_orb::proto::Empty {}).await.map_err(|e| anyhow!("node {id}: {e}"))?.spawned));
    }
    orb.shutdown();
    Ok(out)
}
