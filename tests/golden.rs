//! The `--json` shapes of the benchmarks and workloads no other test runs with `--json`,
//! each run briefly and its output held to `tests/golden/NAME.json` (see
//! `ssi_testkit::golden`). The other commands' shapes are checked where their tests already
//! read their JSON (status, ps, ports, bench fs, workload db/web/in/sdds, trace report).
//! PostgreSQL's run (`workload db --pgbench`) is here too: no other test needs it.
//!
//! Sequential on purpose: each starts a cluster, and two on two CPUs would slow each other
//! past the benchmarks' own bounds.

use ssi_testkit::golden::{assert_shape, documents};
use ssi_testkit::{required, Cluster};
use std::path::Path;

/// Runs `ssi args...`, which must succeed; its `--json` documents.
fn json_of(args: &[&str]) -> Vec<serde_json::Value> {
    let out = ssi_testkit::ssi(args);
    assert!(out.status.success(), "ssi {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let docs = documents(&out.stdout);
    assert!(!docs.is_empty(), "ssi {args:?} printed no JSON: {}", String::from_utf8_lossy(&out.stdout));
    docs
}

#[test]
fn bench_shapes() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    ssi_testkit::assert_clean();
    assert_shape("bench-orb", &json_of(&["bench", "orb", "--json", "--rounds", "1", "--seconds", "0.05", "--payloads", "64"]));
    assert_shape("bench-rexec", &json_of(&["bench", "rexec", "--json", "--runs", "3", "--no-build"]));
    let in_args = ["bench", "in", "--json", "--max-qes", "2", "--seconds", "0.3", "--start-rate", "20000", "--max-rate", "40000"];
    assert_shape("bench-in", &json_of(&in_args));
    if required("bpftrace's kernel support (eBPF)", Path::new("/sys/kernel/btf/vmlinux").exists()) {
        assert_shape("bench-trace", &json_of(&["bench", "trace", "--json", "--rounds", "1", "--seconds", "0.1"]));
    }
    if required("nginx", ssi_node::installed("nginx")) && required("wrk", ssi_node::installed("wrk")) {
        assert_shape("bench-net", &json_of(&["bench", "net", "--json", "--rounds", "1", "--seconds", "1", "--connections", "4"]));
    }
}

#[test]
fn workload_shapes() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("golden-workloads", 4);
    assert_shape("workload-make", &json_of(&["workload", "make", "--json", "--dir", c.dir_str()]));
    if required("PostgreSQL (initdb, pg_ctl, pgbench)", Path::new("/usr/lib/postgresql").exists()) {
        let pg = ["workload", "db", "--pgbench", "--json", "--seconds", "1", "--pg-scale", "1", "--pg-clients", "2", "--dir", c.dir_str()];
        assert_shape("workload-db-pgbench", &json_of(&pg));
    }
}
