//! `ssi workload db` on a real 4-node cluster: clients on every node (through `ssi rexec`),
//! one SQLite database on `/db`, the books balanced at the end. Needs root and /dev/fuse.

use std::process::Command;

use ssi_testkit::{bin, Cluster};

#[test]
fn debit_credit_from_every_node_keeps_the_books() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("workload-db", 4);
    let out = Command::new(bin())
        .args(["workload", "db", "--seconds", "2", "--accounts", "1000", "--json", "--dir", c.dir_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    ssi_testkit::golden::assert_shape("workload-db", std::slice::from_ref(&r));
    assert_eq!(r["invariant_holds"], true, "{r}");
    assert_eq!(r["invariant"]["integrity"], "ok");
    assert_eq!(r["invariant"]["history_rows"], r["committed"]);
    let per_node = r["per_node"].as_array().unwrap();
    assert_eq!(per_node.len(), 4);
    for n in per_node {
        assert!(n["committed"].as_u64().unwrap() > 0, "every node commits: {r}");
    }
    // The baseline of the same run: as many clients on a database on the local disk.
    assert_eq!(r["local_disk"]["invariant_holds"], true, "{r}");
    assert!(r["local_disk"]["tps"].as_f64().unwrap() > 0.0, "{r}");
}
