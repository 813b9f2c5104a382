//! `ssi workload history`, the Jepsen-style checker, on a 5-node `--netns` cluster of its
//! own: 20 faults (cuts majority/minority, one node alone, one way, crashes) with agents on
//! every node binding ports and changing files; the checker finds nothing. The negative
//! control — the same with fencing off — must make it find anomalies, or the checker
//! proves nothing. Needs root, /dev/fuse and network namespaces: in CI their absence fails.

use std::process::Command;

use ssi_testkit::bin;

/// One run at a time: two 5-node clusters under faults at once would load the two cores
/// past what the timing bounds of the checker assume.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn history(name: &str, args: &[&str]) -> serde_json::Value {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = ssi_testkit::test_dir(name);
    let mut all = vec!["workload", "history", "--json", "--dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = Command::new(bin()).args(&all).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("no report ({e}): exit {:?}\n{stdout}\n{stderr}", out.status.code()));
    // The run takes its cluster down; nothing of it may stay.
    assert!(ssi_node::local::mounts_under(&dir).is_empty(), "mounts left under {}", dir.display());
    eprintln!("{name}: {}", serde_json::to_string(&r).unwrap());
    r
}

fn count(r: &serde_json::Value, what: &str, kind: &str) -> u64 {
    r[what][kind].as_u64().unwrap_or(0)
}

#[test]
fn twenty_faults_and_the_history_has_no_anomaly() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let r = history("history", &["--faults", "20", "--seed", "7"]);
    let anomalies = r["anomalies"].as_array().unwrap();
    assert!(anomalies.is_empty(), "{} anomalies: {:#}", anomalies.len(), r["anomalies"]);
    assert_eq!(r["fencing"], true);
    // Every kind of fault, five of each (the nemesis takes them in turn).
    for kind in ["partition", "isolated", "oneway", "crash"] {
        assert_eq!(r["faults"][kind], 5, "{kind}: {}", r["faults"]);
    }
    // The agents did work across the faults, and each kind of operation was acknowledged
    // often enough for its check to mean something.
    for (kind, at_least) in [("bind", 50), ("release", 50), ("append", 50), ("create", 50), ("rename", 20), ("remove", 20)] {
        assert!(
            count(&r, "acked", kind) >= at_least,
            "{kind}: {} acknowledged, {} asked",
            count(&r, "acked", kind),
            count(&r, "asked", kind)
        );
    }
    // Faults were felt: operations refused, views installed well beyond the first.
    let refused: u64 = ["bind", "append", "create", "rename", "remove"].iter().map(|k| count(&r, "asked", k) - count(&r, "acked", k)).sum();
    assert!(refused > 0, "no operation was refused under 20 faults");
    assert!(r["views"].as_u64().unwrap() >= 20, "views: {}", r["views"]);
    assert!(r["agents"].as_u64().unwrap() > 5, "crashed nodes' agents were started again");
}

#[test]
fn without_fencing_the_checker_finds_anomalies() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    // Cuts held 3–5 s, past the 2 s within which a cut-off node must stop granting.
    let r = history("history-nofence", &["--faults", "4", "--seed", "7", "--hold", "3..5", "--no-fencing"]);
    assert_eq!(r["fencing"], false);
    let anomalies = r["anomalies"].as_array().unwrap();
    assert!(anomalies.iter().any(|a| a["check"] == "quorum"), "no mutation acknowledged without quorum was found: {:#}", r["anomalies"]);
}
