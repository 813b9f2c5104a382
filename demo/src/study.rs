//! The demo's study: the paper's three workloads — make, web, database — each run on the
//! demo's `--netns` cluster under `ssi trace record`, one HTML report with all three, and a
//! terminal summary beside the paper's Table 3.1 and Table 4.1.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Context, Error, Result};
use ssi_node::failed;
use ssi_trace::analysis::Analysis;
use ssi_trace::reference::Paper;

/// One workload of the study: its name in the paper's tables, and how long to run it.
struct Workload {
    /// "make", "web", "database" (the paper's names).
    name: &'static str,
    /// `ssi workload ...` arguments (without --dir and --json).
    args: Vec<String>,
    /// What the terminal says while it runs.
    doing: String,
}

/// What one traced workload gave.
pub struct Outcome {
    pub name: &'static str,
    pub seconds: f64,
    /// The workload's own JSON report.
    pub result: serde_json::Value,
    pub analysis: Analysis,
}

fn workloads(full: bool) -> Vec<Workload> {
    // Short: a few seconds each (make builds the whole tree either way); full: the paper's
    // lengths (its web and database runs took 241 and 243 s).
    let (web_s, db_s) = if full { (241, 243) } else { (8, 8) };
    vec![
        Workload {
            name: "make",
            args: vec!["make".into()],
            doing: "the redis 7.0.15 tree on /src (node 3) built from node 1 with make -j8 SHELL='ssi sh', then on the local disk (≈ 1.5 min)".into(),
        },
        Workload {
            name: "web",
            args: vec!["web".into(), "--seconds".into(), web_s.to_string()],
            doing: format!("nginx on every node as one service serving /www (node 2), wrk from ext through the gateway, {web_s} s (and {web_s} s of one node alone)"),
        },
        Workload {
            name: "database",
            args: vec!["db".into(), "--seconds".into(), db_s.to_string()],
            doing: format!("debit/credit from every node on one SQLite database on /db (node 4), {db_s} s"),
        },
    ]
}

/// Runs the three workloads traced, each into `dir/trace-NAME`; a workload that fails is
/// reported and the others still run. Returns what ran and what failed.
pub fn run(dir: &Path, full: bool) -> (Vec<Outcome>, Vec<String>) {
    let me = std::env::current_exe().expect("own path");
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (i, w) in workloads(full).into_iter().enumerate() {
        println!("    ({}/3) {}: {}", i + 1, w.name, w.doing);
        let t0 = Instant::now();
        match traced(dir, &me, &w) {
            Ok(o) => {
                println!("          done in {:.0} s: {}", t0.elapsed().as_secs_f64(), headline(&o));
                done.push(o);
            }
            Err(e) => {
                println!("          FAILED after {:.0} s: {e:#}", t0.elapsed().as_secs_f64());
                failed.push(format!("{}: {e:#}", w.name));
            }
        }
    }
    (done, failed)
}

fn traced(dir: &Path, me: &Path, w: &Workload) -> Result<Outcome> {
    let out = dir.join(format!("trace-{}", w.name));
    let result_file = dir.join(format!("{}.json", w.name));
    // Through sh so the workload's JSON lands in a file while the recorder holds stdout.
    let mut cmd = format!("{} workload", shell_quote(&me.display().to_string()));
    for a in &w.args {
        cmd.push(' ');
        cmd.push_str(&shell_quote(a));
    }
    cmd.push_str(&format!(
        " --json --dir {} > {}",
        shell_quote(&dir.display().to_string()),
        shell_quote(&result_file.display().to_string())
    ));
    let t0 = Instant::now();
    let analysis = ssi_node::trace::record_and_report(&out, dir, vec!["sh".into(), "-c".into(), cmd], true, w.name)?;
    let seconds = t0.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&result_file).with_context(|| result_file.display().to_string())?;
    let result = serde_json::from_str(&text).with_context(|| format!("the {} workload's report", w.name))?;
    Ok(Outcome { name: w.name, seconds, result, analysis })
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The workload's rate, in the unit of the paper's Table 3.1.
fn rate(o: &Outcome) -> String {
    let r = &o.result;
    match o.name {
        "make" => format!("{:.2} compiles/s", num(&r["compiles_per_s"])),
        "web" => format!("{:.0} HTTP ops/s", num(&r["cluster"]["per_sec"])),
        _ => format!("{:.1} TPS", num(&r["tps"])),
    }
}

/// One line of what the workload did (its own figures).
fn headline(o: &Outcome) -> String {
    let r = &o.result;
    match o.name {
        "make" => format!(
            "{} object files in {:.1} s, {} (the local disk: {:.1} s, {:.2}×)",
            r["objects"],
            num(&r["build_s"]),
            rate(o),
            num(&r["local_build_s"]),
            num(&r["ratio_to_local"])
        ),
        "web" => format!(
            "{} through the gateway (nginx on node 3 alone: {:.0}), spread within {:.1}% of even",
            rate(o),
            num(&r["baseline_node3_direct"]["per_sec"]),
            100.0 * num(&r["spread"])
        ),
        _ => format!("{}, books {}", rate(o), if r["invariant_holds"] == true { "balanced" } else { "NOT balanced" }),
    }
}

/// The summary beside the paper: Table 3.1 (each workload's time and rate) and Table 4.1
/// (messages between node pairs).
pub fn summary(done: &[Outcome]) -> String {
    use std::fmt::Write;
    let p = Paper::load();
    let mut o = String::new();
    let _ = writeln!(o, "    Table 3.1 — the workloads (ours traced, on one 2-vCPU machine | the paper's, untraced, 4 machines)");
    let _ = writeln!(o, "    {:<10} {:>10} {:>22} | {:>8} {:>16}", "workload", "time", "rate", "time", "rate");
    for d in done {
        let rate = rate(d);
        let paper_time = p.num(&["table_3_1", d.name, "time_s"]).map(|t| format!("{t:.0} s")).unwrap_or_default();
        let paper_rate = match (p.num(&["table_3_1", d.name, "rate"]), d.name) {
            (Some(x), "make") => format!("{x} compiles/s"),
            (Some(x), _) => format!("{x} HTTP ops/s"),
            (None, _) => "-".into(),
        };
        let _ = writeln!(o, "    {:<10} {:>8.0} s {:>22} | {:>8} {:>16}", d.name, d.seconds, rate, paper_time, paper_rate);
    }
    let _ = writeln!(o, "\n    Table 4.1 — messages sent from node to node (ours | the paper's)");
    let pairs: Vec<(u32, u32)> = (1..=4).flat_map(|s| (1..=4).filter(move |&d| d != s).map(move |d| (s, d))).collect();
    let _ = write!(o, "    {:<6}", "from:to");
    for d in done {
        let _ = write!(o, " {:>20}", d.name);
    }
    let _ = writeln!(o);
    for (s, t) in pairs {
        let _ = write!(o, "    {:<6}", format!("{s}:{t}"));
        for d in done {
            let ours = d.analysis.sent.get(&ssi_trace::analysis::pair(s, t)).map(|x| x.messages).unwrap_or(0);
            let theirs = p.table_4_1(d.name, s, t).map(|(m, _)| m as u64).unwrap_or(0);
            let _ = write!(o, " {:>20}", format!("{ours} | {theirs}"));
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(
        o,
        "    The hub is the node with the workload's volume in both: make /src (node 3), web /www (node 2, also the gateway), database /db (node 4)."
    );
    o
}

/// Writes one HTML page with every traced workload; returns its path.
pub fn report(dir: &Path, done: &[Outcome]) -> Result<PathBuf> {
    let page = dir.join("demo-report.html");
    let traces: Vec<(String, &Analysis)> = done.iter().map(|d| (format!("{} workload", d.name), &d.analysis)).collect();
    if traces.is_empty() {
        return Err(failed!("no workload ran"));
    }
    ssi_trace::report::write_html(&page, &traces)?;
    Ok(page)
}
