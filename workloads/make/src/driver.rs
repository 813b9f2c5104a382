//! `ssi workload make`: a real C tree built across the cluster, beside the same build on the
//! local disk.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::{Context, Error, Result};
use serde_json::json;
use ssi_node::bail;

pub struct MakeOptions {
    pub dir: PathBuf,
    pub jobs: u32,
    /// The source tarball (default: scripts/fetch-redis.sh's redis 7.0.15).
    pub tree: Option<PathBuf>,
    pub json: bool,
}

/// `ssi workload make`: the redis tree unpacked on `/src` and built from the first node with
/// `make -jN SHELL='ssi sh'`, so the recipes spread over the nodes; then the same tree built
/// with plain `make -jN` on the local disk (the baseline, same run); then the built server is
/// run on another node.
pub fn make(o: &MakeOptions) -> Result<()> {
    use crate::buildtree::{fetch_tree, make, objects, spawned, untar, SsiShell};
    let (cfg, members, m1) = ssi_node::local::running(&o.dir)?;
    let first = members[0];
    let tarball = match &o.tree {
        Some(t) => t.clone(),
        None => fetch_tree()?,
    };
    let build_dir = m1.join("src/make-workload");
    let _ = std::fs::remove_dir_all(&build_dir);
    if !o.json {
        eprintln!("unpacking {} into {}...", tarball.display(), build_dir.display());
    }
    let t = std::time::Instant::now();
    let tree = untar(&tarball, &build_dir)?;
    let untar_s = t.elapsed().as_secs_f64();
    // Per-node counts need the cluster key (root); without it the build still runs.
    let count = || ssi_node::tool::on_cluster_network(&cfg, || spawned(&cfg)).ok();
    let before = count();
    let me = std::env::current_exe()?;
    if !o.json {
        eprintln!("make -j{} SHELL='ssi sh' from node {first}...", o.jobs);
    }
    let log = build_dir.join("make.log");
    let shell = SsiShell { exe: &me, dir: &o.dir, node: Some(first) };
    let build_s =
        make(&tree, o.jobs, Some(shell), std::fs::File::create(&log)?.into()).with_context(|| format!("see {}", log.display()))?;
    let after = count();
    let per_node: Option<Vec<(u32, u64)>> = before.zip(after).map(|(b, a)| a.iter().zip(&b).map(|((n, x), (_, y))| (*n, x - y)).collect());
    let objs = objects(&tree).len();
    // The baseline, in the same run: the same tree on this machine's local disk, plain make.
    let local_dir = std::env::temp_dir().join(format!("ssi-make-local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&local_dir);
    if !o.json {
        eprintln!("the baseline: make -j{} of the same tree on the local disk ({})...", o.jobs, local_dir.display());
    }
    let local_tree = untar(&tarball, &local_dir)?;
    let local_s = make(&local_tree, o.jobs, None, Stdio::null());
    let local_objs = objects(&local_tree).len();
    let _ = std::fs::remove_dir_all(&local_dir);
    let local_s = local_s.context("the baseline on the local disk")?;
    // The product runs, on another node than the one that built it.
    let other = members.iter().copied().find(|n| *n != first).unwrap_or(first);
    let v = Command::new(&me)
        .args(["rexec", "-n", &other.to_string(), "--", "src/redis-server", "--version"])
        .env("SSI_DIR", &o.dir)
        .env("SSI_NODE", first.to_string())
        .current_dir(&tree)
        .output()?;
    let version = String::from_utf8_lossy(&v.stdout).trim().to_string();
    if !v.status.success() || !version.starts_with("Redis server v=7.0.15") {
        bail!("the built redis-server does not run on node {other}: {version} {}", String::from_utf8_lossy(&v.stderr));
    }
    if o.json {
        println!(
            "{}",
            json!({"workload": "make", "jobs": o.jobs, "untar_s": untar_s, "build_s": build_s, "objects": objs,
                   "compiles_per_s": objs as f64 / build_s, "version_on_node": other, "version": version,
                   "local_build_s": local_s, "local_objects": local_objs, "ratio_to_local": build_s / local_s,
                   "processes_per_node": per_node.as_ref().map(|v| v.iter().map(|(n, c)| json!({"node": n, "processes": c})).collect::<Vec<_>>())})
        );
    } else {
        println!("ssi workload make — redis 7.0.15 on /src, make -j{} SHELL='ssi sh' from node {first}", o.jobs);
        println!("  unpacked in {untar_s:.1} s; built in {build_s:.1} s: {objs} object files, {:.2} compiles/s", objs as f64 / build_s);
        println!(
            "  the same tree on the local disk, make -j{}: {local_s:.1} s ({local_objs} object files); the cluster took {:.2}× as long",
            o.jobs,
            build_s / local_s
        );
        match &per_node {
            Some(v) => {
                println!("  processes started per node: {}", v.iter().map(|(n, c)| format!("node {n}: {c}")).collect::<Vec<_>>().join(", "))
            }
            None => println!("  (processes per node: needs the cluster key, i.e. root)"),
        }
        println!("  node {other} runs the result: {version}");
    }
    Ok(())
}
