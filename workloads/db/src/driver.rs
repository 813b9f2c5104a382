//! `ssi workload db`: the database workload over a running cluster. A client on every member
//! node (started with `ssi rexec`, so each runs on its node against its own mount of `/db`)
//! runs debit/credit transactions against one SQLite database for a fixed time; then the
//! books are checked. The transactions are [`crate::bank`]'s.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bank::{self as db, ClientReport, Scale};
use serde_json::json;

use crate::error::{Context, Error, Result};
use ssi_node::bail;
use ssi_trace::stats::quantile;

pub struct DbOptions {
    pub dir: PathBuf,
    pub seconds: f64,
    pub scale: Scale,
    pub json: bool,
}

/// The database, relative to a node's mountpoint.
const DB: &str = "db/bank.db";

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
fn db_run(cwd: &Path, db: &str, nodes: &[u32], o: &DbOptions, cluster: Option<&Path>) -> Result<DbRun> {
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
pub fn db(o: &DbOptions) -> Result<()> {
    let (_, members, m1) = ssi_node::local::running(&o.dir)?;
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
pub fn db_client(db_path: &Path, node: u32, seconds: f64, scale: Scale) -> Result<()> {
    let r = db::client(db_path, scale, node, Duration::from_secs_f64(seconds))?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
