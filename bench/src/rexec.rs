//! `ssi bench rexec`: the cost of running a command elsewhere, and a parallel build spread
//! over the cluster, each next to its baseline measured in the same run.
//!
//! Latency: `ssi rexec -n 2 -- true` against `sh -c true` run here and `ssh` to a throwaway
//! sshd on loopback (key login), and the parallel null execution on all four nodes
//! (`ssi rexec --all -- true`, the Millennium sort's Catapult launch: 180 ms on one node,
//! 220 ms on 16), interleaved, medians and 99th percentiles. Build: the redis
//! 7.0.15 tree (`scripts/fetch-redis.sh`) built with `make -jN SHELL='ssi sh'` on PXFS `/src`
//! from node 1 of a 4-node cluster, against `make -jN` of the same tree on the local disk;
//! the object files must be the same set, and each node's count of started processes shows
//! where the compiles ran.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::json;

use super::sshd::Sshd;
use crate::error::{Error, Result};
use ssi_make::buildtree::{fetch_tree, make, objects, spawned, untar, SsiShell};
use ssi_node::bail;
use ssi_node::local::{self, UpOptions};
use ssi_trace::stats::quantile;

pub struct Options {
    pub json: bool,
    /// Runs of each command for the latency figures.
    pub runs: usize,
    /// The tarball to build; None: scripts/fetch-redis.sh's; Some("") skips the build.
    pub tree: Option<PathBuf>,
    pub jobs: u32,
}

fn timed(mut c: Command) -> Result<f64> {
    let t = Instant::now();
    let st = c.stdin(Stdio::null()).stdout(Stdio::null()).status()?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !st.success() {
        bail!("{c:?} failed: {st}");
    }
    Ok(ms)
}

pub fn run(o: &Options) -> Result<()> {
    super::in_scratch_dir("rexec", "a local cluster with FUSE mounts, a throwaway sshd", |dir| run_in(dir, o))
}

fn run_in(dir: &Path, o: &Options) -> Result<()> {
    let cdir = dir.join("cluster");
    let cfg = local::up(&UpOptions::new(cdir.clone(), 4))?.config();
    let m1 = cfg.node(1)?.mountpoint.clone();
    let me = std::env::current_exe()?;
    let sshd = Sshd::start(&dir.join("sshd"))?;
    let ssi_cmd = |args: &[&str]| {
        let mut c = Command::new(&me);
        c.args(args).env("SSI_DIR", &cdir).env_remove("SSI_NODE").current_dir(&m1);
        c
    };
    // Latency, interleaved so a slow spell hits every case alike.
    let names = ["sh -c true (here)", "ssi rexec -n 2 -- true", "ssh localhost true", "ssi rexec --all -- true"];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for i in 0..o.runs {
        if !o.json && i % 20 == 0 {
            eprint!("\rlatency: run {i}/{}   ", o.runs);
        }
        let mut sh = Command::new("sh");
        sh.args(["-c", "true"]);
        samples[0].push(timed(sh)?);
        samples[1].push(timed(ssi_cmd(&["rexec", "-n", "2", "--", "true"]))?);
        samples[2].push(timed(sshd.ssh(&["true"]))?);
        samples[3].push(timed(ssi_cmd(&["rexec", "--all", "--", "true"]))?);
    }
    for s in &mut samples {
        s.sort_by(|a, b| a.total_cmp(b));
    }
    let lat: Vec<(f64, f64)> = samples.iter().map(|s| (quantile(s, 0.5), quantile(s, 0.99))).collect();
    // The build.
    let tarball = match &o.tree {
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) => Some(p.clone()),
        None => Some(fetch_tree()?),
    };
    let mut build = None;
    if let Some(tarball) = tarball {
        if !o.json {
            eprint!("\rbuild: on the local disk...          ");
        }
        let local_tree = untar(&tarball, &dir.join("local"))?;
        let local_s = make(&local_tree, o.jobs, None, Stdio::null())?;
        if !o.json {
            eprint!("\rbuild: on PXFS with SHELL='ssi sh'...");
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let before = rt.block_on(spawned(&cfg))?;
        let pxfs_tree = untar(&tarball, &m1.join("src/bench-build"))?;
        let pxfs_s = make(&pxfs_tree, o.jobs, Some(SsiShell { exe: &me, dir: &cdir, node: None }), Stdio::null())?;
        let after = rt.block_on(spawned(&cfg))?;
        let per_node: Vec<(u32, u64)> = after.iter().zip(&before).map(|((n, a), (_, b))| (*n, a - b)).collect();
        let (lo, po) = (objects(&local_tree), objects(&pxfs_tree));
        if lo != po {
            bail!("the builds differ: {} object files locally, {} on PXFS", lo.len(), po.len());
        }
        build = Some((local_s, pxfs_s, per_node, lo.len()));
    }
    if !o.json {
        eprint!("\r{:50}\r", "");
    }
    if o.json {
        let mut v = json!({
            "bench": "rexec", "runs": o.runs,
            "latency_ms": names.iter().zip(&lat).map(|(n, (p50, p99))| json!({"case": n, "p50": p50, "p99": p99})).collect::<Vec<_>>(),
        });
        if let Some((l, p, per_node, objs)) = &build {
            v["build"] = json!({"jobs": o.jobs, "local_s": l, "pxfs_ssi_sh_s": p, "objects": objs,
                "processes_per_node": per_node.iter().map(|(n, c)| json!({"node": n, "processes": c})).collect::<Vec<_>>()});
        }
        println!("{v}");
        return Ok(());
    }
    println!("ssi bench rexec — {} runs per command, interleaved; p50 and p99 in ms", o.runs);
    for (n, (p50, p99)) in names.iter().zip(&lat) {
        println!("  {n:<26} p50 {p50:>8.2}   p99 {p99:>8.2}");
    }
    println!("  ssi rexec p50: {:.2}× local sh, ssh / ssi rexec = {:.1}×", lat[1].0 / lat[0].0, lat[2].0 / lat[1].0);
    println!("  on all 4 nodes at once / on one: {:.2}× (Catapult: 220 ms on 16 / 180 ms on 1 = 1.22×)", lat[3].0 / lat[1].0);
    if let Some((l, p, per_node, objs)) = build {
        println!("build of the redis 7.0.15 tree, make -j{} ({objs} object files, the same set in both):", o.jobs);
        println!("  local disk, local make        {l:>7.1} s");
        println!("  PXFS /src, SHELL='ssi sh'     {p:>7.1} s   ({:.2}× local)", p / l);
        let spread: Vec<String> = per_node.iter().map(|(n, c)| format!("node {n}: {c}")).collect();
        println!("  processes started per node:   {}", spread.join(", "));
    }
    Ok(())
}
