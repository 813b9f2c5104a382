//! `ssi workload db`: the database workload over a running cluster. A client on every member
//! node (started with `ssi rexec`, so each runs on its node against its own mount of `/db`)
//! runs debit/credit transactions against one SQLite database for a fixed time; then the
//! books are checked. The transactions are `ssi_workloads::db`'s.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::json;
use ssi_workloads::db::{self, ClientReport, Scale};

use crate::bench::quantile;

pub struct DbOptions {
    pub dir: PathBuf,
    pub seconds: f64,
    pub scale: Scale,
    pub json: bool,
}

/// The database, relative to a node's mountpoint.
const DB: &str = "db/bank.db";

/// The running cluster in `dir`: its config, its members, and the first member's mountpoint
/// (where a workload starts from).
fn running(dir: &Path) -> anyhow::Result<(crate::config::Config, Vec<u32>, PathBuf)> {
    let cfg = crate::local::load(dir)?;
    let members = crate::local::status(dir).context("the cluster must be running (ssi up)")?.view_members;
    let first = *members.first().ok_or_else(|| anyhow!("no node of the cluster in {} is up", dir.display()))?;
    let m1 = cfg.node(first).map_err(|e| anyhow!(e))?.mountpoint.clone();
    Ok((cfg, members, m1))
}

/// The clients' reports of one run, the books checked after it.
struct DbRun {
    reports: Vec<ClientReport>,
    committed: u64,
    failed: u64,
    secs: f64,
    tps: f64,
    /// Milliseconds, ascending.
    lat: Vec<f64>,
    inv: db::Invariant,
}

/// Runs one debit/credit client per entry of `nodes` on the database `db` (relative to `cwd`,
/// where the clients start) and checks the books: on the cluster each through `ssi rexec -n N`
/// (`cluster` is its directory; the working directory moves to that node's mount, so each
/// client opens the file through its own node), or, for the baseline, as plain processes here.
fn db_run(cwd: &Path, db: &str, nodes: &[u32], o: &DbOptions, cluster: Option<&Path>) -> anyhow::Result<DbRun> {
    let db_path = cwd.join(db);
    db::init(&db_path, o.scale).with_context(|| format!("creating {}", db_path.display()))?;
    let me = std::env::current_exe()?;
    let mut clients = Vec::new();
    for n in nodes {
        let mut c = Command::new(&me);
        if let Some(dir) = cluster {
            c.args(["rexec", "-n", &n.to_string(), "--"]).arg(&me).env("SSI_DIR", dir).env_remove("SSI_NODE");
        }
        let child = c
            .args(["workload", "db-client", "--db", db, "--node", &n.to_string(), "--seconds", &o.seconds.to_string()])
            .args(["--branches", &o.scale.branches.to_string(), "--accounts", &o.scale.accounts.to_string()])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        clients.push((*n, child));
    }
    let mut reports: Vec<ClientReport> = Vec::new();
    for (n, child) in clients {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("the client {n} failed ({})", out.status);
        }
        reports.push(serde_json::from_slice(&out.stdout).with_context(|| format!("the report of client {n}"))?);
    }
    let inv = db::check(&db_path)?;
    let committed: u64 = reports.iter().map(|r| r.committed).sum();
    let failed: u64 = reports.iter().map(|r| r.failed).sum();
    let secs = reports.iter().map(|r| r.seconds).fold(0.0, f64::max);
    let mut lat: Vec<f64> = reports.iter().flat_map(|r| r.latencies_us.iter().map(|us| *us as f64 / 1e3)).collect();
    lat.sort_by(f64::total_cmp);
    if !inv.holds() || inv.history_rows != committed {
        bail!("the invariant does not hold: {inv:?} (committed {committed})");
    }
    Ok(DbRun { tps: committed as f64 / secs.max(1e-9), reports, committed, failed, secs, lat, inv })
}

/// `ssi workload db`: a debit/credit client on every member node against one SQLite database
/// on `/db`, the books checked; then the baseline, same run: as many clients on this machine
/// against a database on its local disk.
pub fn db(o: &DbOptions) -> anyhow::Result<()> {
    let (_, members, m1) = running(&o.dir)?;
    if !o.json {
        eprintln!("setting up {} ({} branches, {} accounts)...", m1.join(DB).display(), o.scale.branches, o.scale.accounts);
    }
    let on_pxfs = db_run(&m1, DB, &members, o, Some(&o.dir))?;
    let local_dir = std::env::temp_dir().join(format!("ssi-db-local-{}", std::process::id()));
    std::fs::create_dir_all(&local_dir)?;
    if !o.json {
        eprintln!("the baseline: {} clients on one database on the local disk ({})...", members.len(), local_dir.display());
    }
    let local = db_run(&local_dir, "bank.db", &members, o, None);
    let _ = std::fs::remove_dir_all(&local_dir);
    let local = local.context("the baseline on the local disk")?;
    let DbRun { reports, committed, failed, secs, tps, lat, inv } = &on_pxfs;
    if o.json {
        println!(
            "{}",
            json!({"workload": "db", "seconds": secs, "committed": committed, "failed": failed, "tps": tps,
                   "p50_ms": quantile(lat, 0.5), "p99_ms": quantile(lat, 0.99),
                   "per_node": reports.iter().map(|r| json!({"node": r.node, "committed": r.committed, "tps": r.committed as f64 / r.seconds, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms})).collect::<Vec<_>>(),
                   "invariant": inv, "invariant_holds": inv.holds(),
                   "local_disk": {"committed": local.committed, "tps": local.tps, "p50_ms": quantile(&local.lat, 0.5), "p99_ms": quantile(&local.lat, 0.99), "invariant_holds": local.inv.holds()},
                   "ratio_to_local": tps / local.tps.max(1e-9)})
        );
    } else {
        println!("ssi workload db — {secs:.1} s, clients on nodes {members:?}, one SQLite database on /db");
        println!(
            "  {committed} transactions committed ({failed} failed): {tps:.1} TPS, p50 {:.2} ms, p99 {:.2} ms",
            quantile(lat, 0.5),
            quantile(lat, 0.99)
        );
        for r in reports {
            println!(
                "  node {}: {} committed, {:.1} TPS, p50 {:.2} ms, p99 {:.2} ms",
                r.node,
                r.committed,
                r.committed as f64 / r.seconds,
                r.p50_ms,
                r.p99_ms
            );
        }
        println!(
            "  books: history {} rows, Σ delta {}; Σ accounts {}, Σ tellers {}, Σ branches {}; integrity_check {} → {}",
            inv.history_rows,
            inv.history_sum,
            inv.accounts_sum,
            inv.tellers_sum,
            inv.branches_sum,
            inv.integrity,
            if inv.holds() { "balanced" } else { "NOT BALANCED" }
        );
        println!(
            "  the same {} clients on one database on the local disk: {:.1} TPS, p50 {:.2} ms, p99 {:.2} ms (books balanced); PXFS / local: {:.2}",
            members.len(),
            local.tps,
            quantile(&local.lat, 0.5),
            quantile(&local.lat, 0.99),
            tps / local.tps.max(1e-9)
        );
    }
    Ok(())
}

/// One client (run by `db` on each node through `ssi rexec`): a JSON report on stdout.
pub fn db_client(db_path: &Path, node: u32, seconds: f64, scale: Scale) -> anyhow::Result<()> {
    let r = db::client(db_path, scale, node, Duration::from_secs_f64(seconds))?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

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
pub fn make(o: &MakeOptions) -> anyhow::Result<()> {
    use crate::buildtree::{fetch_tree, make, objects, spawned, untar, SsiShell};
    let (cfg, members, m1) = running(&o.dir)?;
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
    let count = || crate::tool::on_cluster_network(&cfg, || spawned(&cfg)).ok();
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

/// `ssi workload db --pgbench`: PostgreSQL with its data directory on PXFS (`/db`, through
/// the first node's mount) and the same on this machine's local disk, each initialized with
/// `pgbench -i` and run with `pgbench -T`; TPS and latency side by side.
pub struct PgbenchOptions {
    pub dir: PathBuf,
    pub seconds: f64,
    pub scale: u32,
    pub clients: u32,
    pub json: bool,
}

struct Pg {
    bin: PathBuf,
    uid: u32,
    gid: u32,
}

fn postgres() -> anyhow::Result<Pg> {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| anyhow!("PostgreSQL is not installed (apt-get install postgresql)"))?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists() && b.join("pgbench").exists())
        .collect();
    bins.sort();
    let bin = bins.pop().ok_or_else(|| anyhow!("no PostgreSQL with initdb, pg_ctl and pgbench under /usr/lib/postgresql"))?;
    let u = nix::unistd::User::from_name("postgres")?.ok_or_else(|| anyhow!("no user postgres"))?;
    Ok(Pg { bin, uid: u.uid.as_raw(), gid: u.gid.as_raw() })
}

impl Pg {
    fn run(&self, prog: &str, args: &[&str]) -> anyhow::Result<String> {
        use std::os::unix::process::CommandExt;
        let out =
            Command::new(self.bin.join(prog)).args(args).uid(self.uid).gid(self.gid).current_dir("/").stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!("{prog} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    }

    fn own(&self, dir: &Path, mode: u32) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)?;
        std::os::unix::fs::chown(dir, Some(self.uid), Some(self.gid))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// initdb, start, pgbench -i, pgbench -T, stop: (tps, latency ms).
    fn bench(&self, data: &Path, sock: &Path, o: &PgbenchOptions) -> anyhow::Result<(f64, f64)> {
        let _ = std::fs::remove_dir_all(data);
        self.own(data, 0o700)?;
        self.own(sock, 0o755)?;
        let d = data.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
        let s = sock.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
        self.run("initdb", &["-D", d, "--no-instructions"])?;
        let port = ssi_orb::ports::pick(std::net::Ipv4Addr::LOCALHOST.into(), &Default::default())?.to_string();
        let opts = format!("-k {s} -p {port} -c listen_addresses=");
        self.run("pg_ctl", &["-D", d, "-l", &format!("{d}/server.log"), "-o", &opts, "-w", "start"])?;
        let result = (|| -> anyhow::Result<(f64, f64)> {
            self.run("pgbench", &["-h", s, "-p", &port, "-i", "-q", "-s", &o.scale.to_string(), "postgres"])?;
            let t = format!("{}", o.seconds.ceil() as u64);
            let out = self.run("pgbench", &["-h", s, "-p", &port, "-c", &o.clients.to_string(), "-T", &t, "postgres"])?;
            let num =
                |key: &str| out.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
            Ok((num("tps = ").ok_or_else(|| anyhow!("pgbench printed no tps: {out}"))?, num("latency average = ").unwrap_or(0.0)))
        })();
        let _ = self.run("pg_ctl", &["-D", d, "-m", "fast", "-w", "stop"]);
        result
    }
}

pub fn pgbench(o: &PgbenchOptions) -> anyhow::Result<()> {
    let pg = postgres()?;
    let (_, members, m1) = running(&o.dir)?;
    let first = members[0];
    let scratch = std::env::temp_dir().join(format!("ssi-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    if !o.json {
        eprintln!("PostgreSQL ({}) on PXFS /db...", pg.bin.display());
    }
    let on_pxfs = pg.bench(&m1.join("db/pgdata"), &scratch.join("sock-pxfs"), o);
    let _ = std::fs::remove_dir_all(m1.join("db/pgdata"));
    if !o.json {
        eprintln!("PostgreSQL on the local disk...");
    }
    let on_disk = pg.bench(&scratch.join("pgdata"), &scratch.join("sock-local"), o);
    let _ = std::fs::remove_dir_all(&scratch);
    let ((pt, pl), (lt, ll)) = (on_pxfs.context("on PXFS")?, on_disk.context("on the local disk")?);
    if o.json {
        println!(
            "{}",
            json!({"workload": "db-pgbench", "scale": o.scale, "clients": o.clients, "seconds": o.seconds,
                   "pxfs": {"tps": pt, "latency_ms": pl}, "local": {"tps": lt, "latency_ms": ll}, "ratio": pt / lt})
        );
    } else {
        println!("ssi workload db --pgbench — pgbench -s {} -c {} -T {}", o.scale, o.clients, o.seconds.ceil());
        println!("  data on PXFS /db (via node {first}):  {pt:>9.1} TPS, latency {pl:.3} ms");
        println!("  data on the local disk:          {lt:>9.1} TPS, latency {ll:.3} ms");
        println!("  PXFS / local: {:.2}", pt / lt);
    }
    Ok(())
}
