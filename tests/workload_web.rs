//! `ssi workload web` on a real 4-node `--netns` cluster: nginx on every node as one service
//! serving `/www` from PXFS, wrk in `ext` through the gateway's dispatcher, beside nginx on
//! node 3 reached directly. Needs root, /dev/fuse, nginx and wrk (in CI all must be there).

use std::path::Path;
use std::process::Command;

use ssi_testkit::{bin, required, NetCluster};

fn have(tool: &str) -> bool {
    Command::new(tool).arg("-v").output().is_ok()
}

#[test]
fn web_requests_through_the_gateway_spread_over_every_node() {
    if !(required("root", nix::unistd::geteuid().is_root())
        && required("/dev/fuse", Path::new("/dev/fuse").exists())
        && required("nginx", have("nginx"))
        && required("wrk", have("wrk")))
    {
        return;
    }
    let c = NetCluster::up("workload-web", "auto");
    let d = c.d();
    for documents in ["paper", "mix"] {
        let out = Command::new(bin())
            .args(["workload", "web", "--seconds", "3", "--connections", "16", "--documents", documents, "--json", "--dir", d])
            .output()
            .unwrap();
        assert!(out.status.success(), "{documents}: {}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ssi_testkit::golden::assert_shape(&format!("workload-web-{documents}"), std::slice::from_ref(&r));
        eprintln!(
            "{documents}: cluster {} req/s, node 3 direct {} req/s, per node {}",
            r["cluster"]["per_sec"], r["baseline_node3_direct"]["per_sec"], r["per_node"]
        );
        assert_eq!(r["dispatcher"], "ebpf");
        for side in ["cluster", "baseline_node3_direct"] {
            assert_eq!(r[side]["socket_errors"], 0, "{side}: {r}");
            assert_eq!(r[side]["non_2xx"], 0, "{side}: {r}");
            assert!(r[side]["requests"].as_u64().unwrap() > 50, "{side} served: {r}");
        }
        let per_node = r["per_node"].as_object().unwrap();
        assert_eq!(per_node.len(), 4, "every node serves: {r}");
        assert!(per_node.values().all(|v| v.as_u64().unwrap() > 0), "every node serves: {r}");
        // Round robin hands out connections evenly; what a node has *finished* when wrk
        // stops differs by what was in flight — with the mix's 900 KiB files over a short
        // debug-build run that is a few percent more.
        let bound = if documents == "paper" { 0.10 } else { 0.25 };
        assert!(r["spread"].as_f64().unwrap() <= bound, "{documents}: within ±{bound} of even: {r}");
    }
}
