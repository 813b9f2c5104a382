//! `ssi bench fs`: PXFS against a local disk, sshfs and GlusterFS, in one run.
//!
//! Cases: `ext4` (a directory on the local disk), `pxfs_owner` (node 1's mount, a file
//! of node 1's own volume), `pxfs_remote` (node 1's mount, a file of node 2's volume),
//! `sshfs` (sshfs over loopback to a throwaway sshd), `sshfs_perm` (the same with the kernel
//! checking permissions, `-o default_permissions`, as PXFS does), `glusterfs` (a distributed
//! volume of two servers in network namespaces, see `gluster`). A case that cannot run
//! fails the run, with the reason. The remote cases work at the root of
//! what is remote (node 2's volume root `/www`; a `www` directory at the sshfs export's
//! root), with paths of the same depth. The workload is ours, the same for all:
//! file create/stat/delete rates, sequential write (1 MiB blocks, then fsync) and read
//! (page cache dropped first), 4 KiB random reads, 4 KiB write+fsync, SQLite autocommit
//! inserts (the sqlite3 CLI). Ratios are to ext4, sshfs and sshfs_perm measured in the same
//! run. All cases keep their files on one fresh ext4 made for the run (`scratch_ext4`).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::sshd::Sshd;
use crate::error::{Context, Error, Result};
use ssi_node::bail;
use ssi_node::local::{self, UpOptions};
use ssi_trace::stats::median;

pub struct Options {
    pub json: bool,
    pub rounds: u32,
    pub seconds: f64,
    pub file_mib: u64,
    /// Keep every case's files in the temp directory's own file system instead of a fresh
    /// ext4 on a loop device.
    pub on_temp_dir: bool,
}

const METRICS: &[(&str, &str)] = &[
    ("create_per_s", "1/s"),
    ("stat_per_s", "1/s"),
    ("delete_per_s", "1/s"),
    ("seq_write_mib_s", "MiB/s"),
    ("seq_read_mib_s", "MiB/s"),
    ("rand_read_iops", "1/s"),
    ("write_fsync_iops", "1/s"),
    ("sqlite_inserts_per_s", "1/s"),
];

/// How many files the stat phase cycles through, in every case.
const STAT_FILES: u64 = 256;

fn drop_caches() {
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Runs the workload in `dir`; one value per METRICS entry (None when it could not run).
fn workload(dir: &Path, o: &Options) -> Result<Vec<Option<f64>>> {
    fs::create_dir_all(dir)?;
    let budget = Duration::from_secs_f64(o.seconds);
    let mut out = Vec::new();
    // create / stat / delete
    let files = dir.join("many");
    fs::create_dir_all(&files)?;
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < budget {
        fs::File::create(files.join(format!("f{n}")))?;
        n += 1;
    }
    out.push(Some(n as f64 / t.elapsed().as_secs_f64()));
    // The same files for every case (fio's `nrfiles`): a faster create must not give its
    // case a bigger working set to stat (more dentries and inodes, fewer CPU cache hits).
    for i in n..STAT_FILES {
        fs::File::create(files.join(format!("f{i}")))?;
    }
    let n = n.max(STAT_FILES);
    let t = Instant::now();
    let mut s = 0u64;
    while t.elapsed() < budget {
        fs::metadata(files.join(format!("f{}", s % STAT_FILES)))?;
        s += 1;
    }
    out.push(Some(s as f64 / t.elapsed().as_secs_f64()));
    let t = Instant::now();
    for i in 0..n {
        fs::remove_file(files.join(format!("f{i}")))?;
    }
    out.push(Some(n as f64 / t.elapsed().as_secs_f64()));
    // Every round starts from a new directory, as the first one did.
    fs::remove_dir(&files)?;
    // sequential write, then read
    let big = dir.join("big");
    let block = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    {
        let mut f = fs::File::create(&big)?;
        for _ in 0..o.file_mib {
            f.write_all(&block)?;
        }
        f.sync_all()?;
    }
    out.push(Some(o.file_mib as f64 / t.elapsed().as_secs_f64()));
    drop_caches();
    let t = Instant::now();
    {
        let mut f = fs::File::open(&big)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                break;
            }
            total += k as u64;
        }
        if total != o.file_mib << 20 {
            bail!("read back {total} bytes of {}", o.file_mib << 20);
        }
    }
    out.push(Some(o.file_mib as f64 / t.elapsed().as_secs_f64()));
    // 4 KiB random reads
    drop_caches();
    let f = fs::File::open(&big)?;
    let blocks = (o.file_mib << 20) / 4096;
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut buf = vec![0u8; 4096];
    let t = Instant::now();
    let mut r = 0u64;
    while t.elapsed() < budget {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        f.read_exact_at(&mut buf, (x % blocks) * 4096)?;
        r += 1;
    }
    out.push(Some(r as f64 / t.elapsed().as_secs_f64()));
    // 4 KiB write + fsync
    let f = fs::OpenOptions::new().write(true).create(true).truncate(true).open(dir.join("sync"))?;
    let t = Instant::now();
    let mut w = 0u64;
    while t.elapsed() < budget {
        f.write_all_at(&buf, (w % 256) * 4096)?;
        f.sync_data()?;
        w += 1;
    }
    out.push(Some(w as f64 / t.elapsed().as_secs_f64()));
    // SQLite autocommit inserts
    out.push(Some(sqlite_inserts(&dir.join("bench.db"), budget)?));
    let _ = fs::remove_file(&big);
    Ok(out)
}

fn sqlite_inserts(db: &Path, budget: Duration) -> Result<f64> {
    let _ = fs::remove_file(db);
    let made =
        Command::new("sqlite3").arg(db).arg("CREATE TABLE t(k INTEGER, v TEXT);").status().context("sqlite3 (apt-get install sqlite3)")?;
    if !made.success() {
        bail!("sqlite3 could not create a table in {}", db.display());
    }
    // Autocommit inserts for about the time budget, in batches.
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < budget {
        let script: String = (0..50).map(|i| format!("INSERT INTO t VALUES({}, 'value');\n", n + i)).collect();
        let mut ch = Command::new("sqlite3").arg(db).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().context("sqlite3")?;
        ch.stdin.take().context("sqlite3's stdin")?.write_all(script.as_bytes())?;
        if !ch.wait()?.success() {
            bail!("sqlite3 failed inserting into {}", db.display());
        }
        n += 50;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// sshfs over loopback to a throwaway sshd under `dir`, mounted twice: as sshfs mounts by
/// default (`mnt`: no permission checks in the kernel), and with `-o default_permissions`
/// (`mnt_perm`: checked in the kernel on every path component, as PXFS must). Unmounted
/// (then sshd stopped) on drop.
struct Sshfs {
    mnt: PathBuf,
    mnt_perm: PathBuf,
    sshd: Sshd,
}

impl Drop for Sshfs {
    fn drop(&mut self) {
        for m in [&self.mnt, &self.mnt_perm] {
            let _ = Command::new("fusermount3").arg("-u").arg(m).status();
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn start_sshfs(dir: &Path) -> Result<Sshfs> {
    if !ssi_node::installed("sshfs") {
        bail!("sshfs is not installed (apt-get install sshfs)");
    }
    let d = dir.join("sshfs");
    let sshd = Sshd::start(&d)?;
    // Mounted as deep as node 1's PXFS mount, and used one directory down (as PXFS's `/www`):
    // a cached stat walks as many path components, as many of them on FUSE, in both.
    // The two mounts work in directories of their own (`www`, `wwp`): each sshfs caches
    // what it saw for 20 s and would not notice the other's changes.
    let (export, mnt, mnt_perm) = (d.join("export"), d.join("node1/mnt"), d.join("node1/mnp"));
    fs::create_dir_all(export.join("www"))?;
    fs::create_dir_all(export.join("wwp"))?;
    mount_sshfs(&sshd, &export, &mnt, None)?;
    // From here on, a failure unmounts what is mounted (drop).
    let s = Sshfs { mnt, mnt_perm, sshd };
    mount_sshfs(&s.sshd, &export, &s.mnt_perm, Some("default_permissions"))?;
    Ok(s)
}

fn mount_sshfs(sshd: &Sshd, export: &Path, at: &Path, extra: Option<&str>) -> Result<()> {
    fs::create_dir_all(at)?;
    let mut cmd = Command::new("sshfs");
    cmd.arg(format!("{}@127.0.0.1:{}", sshd.user, export.display()))
        .arg(at)
        .args(["-p", &sshd.port.to_string(), "-o"])
        .arg(sshd.client_options());
    if let Some(o) = extra {
        cmd.args(["-o", o]);
    }
    if !cmd.status()?.success() {
        bail!("sshfs could not mount over loopback");
    }
    Ok(())
}

pub fn run(o: &Options) -> Result<()> {
    let why = "FUSE mounts, volume servers, dropping the page cache, a loop device";
    if o.on_temp_dir {
        return super::in_scratch_dir("fs", why, |dir| run_in(dir, o));
    }
    // Every case on one new disk: the ext4 case's directory, both nodes' volumes, the sshfs
    // export. Room for the big file several times over, and for the rest.
    super::in_scratch_disk("fs", why, (o.file_mib * 4).max(2048), |dir| run_in(dir, o))
}

fn run_in(dir: &Path, o: &Options) -> Result<()> {
    let cdir = dir.join("cluster");
    let cfg = local::up(&UpOptions::new(cdir.clone(), 2))?.config();
    let m1 = cfg.node(1)?.mountpoint.clone();
    if !local::mounts_under(&m1).contains(&m1) {
        bail!("node 1 did not mount PXFS (see {}/node1/log)", cdir.display());
    }
    let sshfs = start_sshfs(dir).context("case sshfs")?;
    let gluster = super::gluster::Gluster::start(&dir.join("gluster")).context("case glusterfs")?;
    let cases: Vec<(&str, PathBuf)> = vec![
        ("ext4", dir.join("ext4")),
        ("pxfs_owner", m1.join("bench-owner")),
        ("pxfs_remote", m1.join("www")),
        ("sshfs", sshfs.mnt.join("www")),
        ("sshfs_perm", sshfs.mnt_perm.join("wwp")),
        ("glusterfs", gluster.mnt.join("www")),
    ];
    // Rounds interleave the cases, so a slow spell of the machine hits them all alike.
    let mut rounds: Vec<Vec<Vec<Option<f64>>>> = vec![Vec::new(); cases.len()];
    for round in 1..=o.rounds {
        for (i, (name, path)) in cases.iter().enumerate() {
            if !o.json {
                eprint!("\rround {round}/{}: {name}...                 ", o.rounds);
            }
            rounds[i].push(workload(path, o).with_context(|| format!("case {name}"))?);
        }
    }
    if !o.json {
        eprint!("\r{:50}\r", "");
    }
    drop(sshfs);
    drop(gluster);
    let results: Vec<(&str, Vec<Option<f64>>)> = cases
        .iter()
        .zip(&rounds)
        .map(|((name, _), runs)| {
            let per_metric = (0..METRICS.len())
                .map(|m| {
                    let v: Vec<f64> = runs.iter().filter_map(|r| r[m]).collect();
                    (!v.is_empty()).then(|| median(&v))
                })
                .collect();
            (*name, per_metric)
        })
        .collect();
    report(o, &results);
    Ok(())
}

/// Where every case keeps its files.
fn disk(o: &Options) -> &'static str {
    if o.on_temp_dir {
        "the temp directory's file system"
    } else {
        "a fresh ext4 (loop device)"
    }
}

fn report(o: &Options, results: &[(&str, Vec<Option<f64>>)]) {
    let base = |name: &str, i: usize| results.iter().find(|r| r.0 == name).and_then(|r| r.1[i]);
    if o.json {
        let mut out = Vec::new();
        for (case, vals) in results {
            for (i, (metric, unit)) in METRICS.iter().enumerate() {
                if let Some(v) = vals[i] {
                    out.push(json!({"case": case, "metric": metric, "value": v, "unit": unit}));
                }
            }
        }
        println!(
            "{}",
            json!({"bench": "fs", "rounds": o.rounds, "seconds_per_metric": o.seconds, "file_mib": o.file_mib, "disk": disk(o), "results": out})
        );
        return;
    }
    println!(
        "ssi bench fs — medians of {} rounds, {} s per metric, {} MiB file, files on {}; ratios to the same run's baselines",
        o.rounds,
        o.seconds,
        o.file_mib,
        disk(o)
    );
    print!("{:<22}", "metric");
    for (case, _) in results {
        print!("{:>14}", case);
    }
    println!("   pxfs_owner vs ext4 | pxfs_remote vs ext4 / sshfs / sshfs_perm / glusterfs");
    for (i, (metric, _)) in METRICS.iter().enumerate() {
        print!("{:<22}", metric);
        for (_, vals) in results {
            match vals[i] {
                Some(v) => print!("{:>14.1}", v),
                None => print!("{:>14}", "-"),
            }
        }
        let ratio = |case: &str, to: &str| match (base(case, i), base(to, i)) {
            (Some(r), Some(b)) if b > 0.0 => format!("{:.2}", r / b),
            _ => "-".into(),
        };
        let remote: Vec<String> = ["ext4", "sshfs", "sshfs_perm", "glusterfs"].iter().map(|to| ratio("pxfs_remote", to)).collect();
        println!("   {:>18} | {}", ratio("pxfs_owner", "ext4"), remote.join(" / "));
    }
}
