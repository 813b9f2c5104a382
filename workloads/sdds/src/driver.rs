//! `ssi workload sdds`: the AMOS-SDDS benchmark (Ndiaye, Diène & Litwin, "AMOS-SDDS: A Scalable
//! Distributed Data Manager for Windows Multicomputers") on a running local cluster. For
//! each (tuples, buckets) case: an RP* file of Person(ssn, name, city) pre-split into that
//! many buckets over the cluster's nodes, loaded by inserts, then the self-join "pairs in the
//! same city, ssn < ssn1" as Query 2 (counts) and Query 1 (pairs returned), with the E- and
//! the I-strategy; beside it the join in one SQLite database on one node (the paper's
//! "AMOS-II alone") and the paper's times. Then key searches: a warm client's rate, and a
//! client starting from a one-bucket image with its IAMs counted.

use std::path::PathBuf;
use std::time::Instant;

use crate::client::Client;
use crate::error::{Context, Error, Result};
use crate::person::{expected_pairs, join, person, sqlite_alone};
use crate::proto::{FileSpec, Kind};
use serde_json::json;
use ssi_node::bail;

pub struct SddsOptions {
    pub dir: PathBuf,
    /// (tuples, buckets) cases.
    pub cases: Vec<(u64, u32)>,
    pub strategies: Vec<bool>, // false: E, true: I
    pub q1_max: u64,
    pub i_max: u64,
    pub baseline_max: u64,
    pub chunk: usize,
    pub searches: u64,
    /// Write the Figs 3–4 plots as PREFIX-elapsed.svg and PREFIX-per-tuple.svg.
    pub svg_prefix: Option<PathBuf>,
    /// Redis Cluster (this many masters on loopback) as the key search baseline; 0: none.
    pub redis_masters: u32,
    pub json: bool,
}

/// `N:B,N:B,...`
pub fn parse_cases(s: &str) -> Result<Vec<(u64, u32)>, crate::SddsError> {
    s.split(',')
        .map(|c| {
            let (n, b) = c.split_once(':').ok_or_else(|| crate::SddsError::BadCase(format!("{c:?}")))?;
            let n: u64 = n.parse().map_err(|_| crate::SddsError::BadCase(format!("{c:?}")))?;
            let b: u32 = b.parse().map_err(|_| crate::SddsError::BadCase(format!("{c:?}")))?;
            if n == 0 || b == 0 || b > 1024 || (b as u64) > n {
                return Err(crate::SddsError::BadCase(format!("{c:?}")));
            }
            Ok((n, b))
        })
        .collect()
}

/// The paper's scale-up times (Tables 6–8 of the AMOS-SDDS paper, `reference/amos-sdds-2000.toml`):
/// tuples, Query 1 s, Query 2 s, AMOS-II alone s.
const PAPER_SCALE_UP: [(u64, f64, f64, f64); 7] = [
    (20_000, 61.0, 51.0, 46.0),
    (60_000, 301.0, 185.0, 430.0),
    (100_000, 684.0, 335.0, 1201.0),
    (160_000, 1817.0, 986.0, 3106.0),
    (200_000, 2555.0, 1270.0, 4824.0),
    (240_000, 3901.0, 2022.0, 6979.0),
    (300_000, 5564.0, 2624.0, 10933.0),
];

/// The paper's times for `n` tuples, if it measured that size: (Q1, Q2, alone).
fn paper(n: u64) -> (Option<f64>, Option<f64>, Option<f64>) {
    match PAPER_SCALE_UP.iter().find(|r| r.0 == n) {
        Some(r) => (Some(r.1), Some(r.2), Some(r.3)),
        None => (None, None, None),
    }
}

const SEED: u64 = 2000;

/// Figs 3–4: elapsed time and time per tuple against the file size, ours beside the paper's
/// (the last case of each size).
fn write_plots(prefix: &std::path::Path, rows: &[serde_json::Value]) -> Result<()> {
    let by_n: std::collections::BTreeMap<u64, &serde_json::Value> = rows.iter().map(|r| (r["tuples"].as_u64().unwrap_or(0), r)).collect();
    let series = |name: &str, key: &str| -> crate::plot::Series {
        (name.to_string(), by_n.iter().filter_map(|(n, r)| r[key].as_f64().map(|t| (*n as f64, t))).collect())
    };
    let all = [
        series("ssi Query 2, E-strategy", "q2_e_s"),
        series("ssi Query 2, I-strategy", "q2_i_s"),
        series("ssi Query 1, E-strategy", "q1_e_s"),
        series("SQLite alone, Query 2", "sqlite_alone_q2_s"),
        series("paper Query 2 (AMOS-SDDS)", "paper_q2_s"),
        series("paper AMOS-II alone", "paper_alone_s"),
    ];
    for (suffix, per, title) in [
        ("elapsed", false, "Person self-join: elapsed time vs tuples (cf. AMOS-SDDS Fig. 3)"),
        ("per-tuple", true, "Person self-join: time per tuple (cf. AMOS-SDDS Fig. 4)"),
    ] {
        let svg = crate::plot::svg(title, &all, per)?;
        let path = std::path::PathBuf::from(format!("{}-{suffix}.svg", prefix.display()));
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

pub fn workload(o: &SddsOptions) -> Result<()> {
    let cfg = ssi_node::local::load(&o.dir)?;
    let members = ssi_node::local::status(&o.dir).context("the cluster must be running (ssi up)")?.view_members;
    let mut rows = Vec::new();
    let mut keys: Option<serde_json::Value> = None;
    // The tool ORB runs inside node 1's network when the cluster has namespaces.
    ssi_node::tool::on_cluster_network(&cfg, || async {
        let orb = ssi_node::tool::connect(&cfg).await?;
        for (k, &(n, b)) in o.cases.iter().enumerate() {
            let spec = FileSpec {
                name: format!("person-{n}-{b}-{}", std::process::id()),
                kind: Kind::Rp as i32,
                capacity: n + 1, // the benchmark fixes the buckets: no splits
                nodes: members.clone(),
                initial_buckets: b,
                key_space: n,
            };
            let mut c = Client::create(&orb, spec).await?;
            let t = Instant::now();
            for lo in (1..=n).step_by(100_000) {
                let batch: Vec<_> = (lo..=(lo + 99_999).min(n)).map(|s| person(s, SEED)).collect();
                c.insert(batch).await?;
            }
            let load_s = t.elapsed().as_secs_f64();
            let want = expected_pairs(n, SEED);
            // The loading client started from a one-bucket image: its IAMs are the stale
            // image's cost on inserts.
            let mut row = json!({"tuples": n, "buckets": b, "load_s": load_s, "inserts_per_s": n as f64 / load_s.max(1e-9),
                                 "load_iams": c.iams, "load_forwarded": c.forwarded, "result_tuples": want});
            for &i in &o.strategies {
                if i && n > o.i_max {
                    continue;
                }
                let s = if i { "i" } else { "e" };
                if !o.json {
                    eprintln!("  {n} tuples, {b} buckets, {}-strategy: Query 2...", s.to_uppercase());
                }
                let q2 = join(&mut c, false, i, o.chunk).await?;
                if q2.result != want || !q2.complete {
                    bail!("Query 2 on {n} tuples, {b} buckets ({s}): {} pairs (want {want}), complete: {}", q2.result, q2.complete);
                }
                row[format!("q2_{s}_s")] = json!(q2.seconds);
                if n <= o.q1_max {
                    if !o.json {
                        eprintln!("  {n} tuples, {b} buckets, {}-strategy: Query 1...", s.to_uppercase());
                    }
                    let q1 = join(&mut c, true, i, o.chunk).await?;
                    if q1.result != want || !q1.complete {
                        bail!("Query 1 on {n} tuples, {b} buckets ({s}): {} pairs (want {want})", q1.result);
                    }
                    row[format!("q1_{s}_s")] = json!(q1.seconds);
                }
            }
            // Key searches on the last case: a warm image against a fresh one-bucket image.
            if k + 1 == o.cases.len() && o.searches > 0 {
                let ks: Vec<u64> = (0..o.searches).map(|i| 1 + crate::addr::mix(i ^ 77) % n).collect();
                let t = Instant::now();
                let found = c.search(&ks).await?;
                let warm = ks.len() as f64 / t.elapsed().as_secs_f64();
                let mut fresh = Client::new(&orb, c.spec.clone());
                let t = Instant::now();
                let found2 = fresh.search(&ks).await?;
                let cold = ks.len() as f64 / t.elapsed().as_secs_f64();
                if found.len() != ks.len() || found2.len() != ks.len() {
                    bail!("key search found {} and {} of {} keys", found.len(), found2.len(), ks.len());
                }
                keys = Some(json!({"tuples": n, "buckets": b, "searches": ks.len(), "warm_keys_per_s": warm, "fresh_keys_per_s": cold,
                                   "fresh_iams": fresh.iams, "fresh_forwarded": fresh.forwarded, "fresh_image_buckets": fresh.image.buckets().len()}));
            }
            c.drop_file().await?;
            if n <= o.baseline_max {
                if !o.json {
                    eprintln!("  {n} tuples: the join in one SQLite database...");
                }
                let (s2, r2) = tokio::task::spawn_blocking(move || sqlite_alone(n, SEED, false)).await??;
                if r2 != want {
                    bail!("SQLite counted {r2} pairs, want {want}");
                }
                row["sqlite_alone_q2_s"] = json!(s2);
            }
            let (p1, p2, pa) = paper(n);
            row["paper_q1_s"] = json!(p1);
            row["paper_q2_s"] = json!(p2);
            row["paper_alone_s"] = json!(pa);
            rows.push(row);
        }
        Ok::<_, Error>(())
    })?;
    if let (Some(k), true) = (keys.as_mut(), o.redis_masters > 0) {
        let searches = k["searches"].as_u64().unwrap_or(0);
        if !o.json {
            eprintln!("  Redis Cluster of {} masters: the same number of GETs...", o.redis_masters);
        }
        match crate::redis_cluster::get_rate(o.redis_masters, searches, k["tuples"].as_u64().unwrap_or(1)) {
            Ok(r) => {
                k["redis_cluster_gets_per_s"] = json!(r);
                k["warm_over_redis"] = json!(k["warm_keys_per_s"].as_f64().unwrap_or(0.0) / r);
            }
            Err(e) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    bail!("the Redis Cluster baseline: {e}");
                }
                eprintln!("ssi workload sdds: no Redis Cluster baseline: {e}");
            }
        }
    }
    if let Some(prefix) = &o.svg_prefix {
        write_plots(prefix, &rows)?;
    }
    if o.json {
        println!("{}", json!({"workload": "sdds", "kind": "RP*", "cases": rows, "key_search": keys}));
        return Ok(());
    }
    let f = |v: &serde_json::Value| v.as_f64().map(|x| format!("{x:.2}")).unwrap_or("—".into());
    println!("ssi workload sdds — Person(ssn, name, city) in an RP* file, the self-join in the same city with ssn < ssn1");
    println!(
        "  {:>8} {:>4} {:>7} {:>12} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "tuples", "bkts", "load s", "result", "Q2 E s", "Q2 I s", "Q1 E s", "Q1 I s", "SQLite s", "paper Q2", "paper Q1"
    );
    for r in &rows {
        println!(
            "  {:>8} {:>4} {:>7} {:>12} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
            r["tuples"].to_string(),
            r["buckets"].to_string(),
            f(&r["load_s"]),
            r["result_tuples"].to_string(),
            f(&r["q2_e_s"]),
            f(&r["q2_i_s"]),
            f(&r["q1_e_s"]),
            f(&r["q1_i_s"]),
            f(&r["sqlite_alone_q2_s"]),
            f(&r["paper_q2_s"]),
            f(&r["paper_q1_s"])
        );
    }
    if let Some(k) = &keys {
        if let Some(r) = k["redis_cluster_gets_per_s"].as_f64() {
            println!(
                "  Redis Cluster ({} masters on loopback, redis-benchmark GET, 50 clients, pipeline 64): {r:.0} GETs/s; the warm SDDS image does {:.2}× that",
                o.redis_masters,
                k["warm_over_redis"].as_f64().unwrap_or(0.0)
            );
        }
        println!(
            "  key search ({} keys, {} tuples on {} buckets): warm image {:.0} keys/s; one-bucket image {:.0} keys/s with {} IAMs ({} keys forwarded), after which its image knows {} buckets",
            k["searches"], k["tuples"], k["buckets"], k["warm_keys_per_s"].as_f64().unwrap_or(0.0), k["fresh_keys_per_s"].as_f64().unwrap_or(0.0), k["fresh_iams"], k["fresh_forwarded"], k["fresh_image_buckets"]
        );
    }
    Ok(())
}
