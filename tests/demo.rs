//! `ssi demo`, the README's first command, end to end: a 4-node `--netns` cluster, the tour,
//! the paper's three workloads traced, one HTML report, and nothing left running, mounted or
//! in a namespace afterwards. Needs root, /dev/fuse, BPF, nginx, wrk and the redis source
//! (scripts/fetch-redis.sh); in CI all must be there. Takes a few minutes (the make workload
//! builds the redis tree).

use std::process::Command;

use ssi_testkit::bin;

#[test]
fn the_demo_runs_to_the_end_and_leaves_nothing_behind() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let dir = ssi_testkit::test_dir("demo");
    let out = Command::new(bin()).args(["demo", "--dir", dir.to_str().unwrap()]).env_remove("SSI_DIR").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let cfg = ssi_node::local::load(&dir).ok();
    let result = std::panic::catch_unwind(|| {
        assert!(out.status.success(), "ssi demo failed:\n{text}\n{err}");
        for step in [
            "[1] ssi up --netns",
            "[4] Failure",
            "[5] Rejoin",
            "[6] PXFS",
            "[7] Global processes",
            "[8] Global networking",
            "[9] The study",
            "[10] ssi down",
        ] {
            assert!(text.contains(step), "step {step:?} ran:\n{text}");
        }
        assert!(text.contains("the gateway's dispatcher: ebpf"), "{text}");
        for row in ["make ", "web ", "database "] {
            assert!(text.lines().any(|l| l.trim_start().starts_with(row) && l.contains('|')), "Table 3.1 has {row}:\n{text}");
        }
        assert!(text.contains("books balanced"), "{text}");
        assert!(text.contains("spread within"), "{text}");
        assert!(!text.contains("FAILED"), "{text}");
        let page = std::fs::read_to_string(dir.join("demo-report.html")).unwrap();
        assert_eq!(page.matches("<h2>").count(), 3, "one section per workload");
        assert_eq!(page.matches("<svg").count(), 24, "every figure of every workload is drawn");
    });
    // Nothing left: no daemon, no mount under the directory, no namespace of its cluster.
    if let Some(cfg) = &cfg {
        for n in cfg.nodes.values() {
            assert!(ssi_node::pidfile::node_pid(n).is_none(), "node {} still runs", n.id);
        }
        let prefix = ssi_node::local::topology(&dir, cfg).prefix;
        assert!(ssi_netsap::topology::list().iter().all(|ns| !ns.starts_with(&prefix)), "a namespace of the demo is left");
    }
    assert!(ssi_node::local::mounts_under(&dir).is_empty(), "a mount under the demo's directory is left");
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
