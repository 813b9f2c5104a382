//! `ssi bench fs` end to end, briefly: the six cases (ext4, PXFS from the owner, PXFS from
//! another node, sshfs over loopback as mounted by default and with the kernel checking
//! permissions, GlusterFS over two servers in network namespaces) on a fresh ext4 made for
//! the run, every figure measured, nothing of the run left behind.
//! Needs root, /dev/fuse, a loop device, sshfs, sshd and GlusterFS. The figures themselves
//! are for docs/benchmarks.md, not for a test on a shared machine.

use std::path::Path;
use std::process::Command;

use ssi_testkit::{bin, required};

#[test]
fn every_case_measures_every_figure() {
    if !(required("root", nix::unistd::geteuid().is_root())
        && required("/dev/fuse", Path::new("/dev/fuse").exists())
        && required("a loop device", Path::new("/dev/loop-control").exists())
        && required("sshfs", ssi_node::installed("sshfs"))
        && required("sshd", ssi_node::installed("/usr/sbin/sshd"))
        && required("glusterd", ssi_node::installed("/usr/sbin/glusterd")))
    {
        return;
    }
    ssi_testkit::assert_clean();
    let out =
        Command::new(bin()).args(["bench", "fs", "--json", "--rounds", "1", "--seconds", "0.2", "--file-mib", "16"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    ssi_testkit::golden::assert_shape("bench-fs", std::slice::from_ref(&r));
    assert_eq!(r["disk"], "a fresh ext4 (loop device)", "{r}");
    let results = r["results"].as_array().unwrap();
    for case in ["ext4", "pxfs_owner", "pxfs_remote", "sshfs", "sshfs_perm", "glusterfs"] {
        for metric in [
            "create_per_s",
            "stat_per_s",
            "delete_per_s",
            "seq_write_mib_s",
            "seq_read_mib_s",
            "rand_read_iops",
            "write_fsync_iops",
            "sqlite_inserts_per_s",
        ] {
            let v = results
                .iter()
                .find(|x| x["case"] == case && x["metric"] == metric)
                .unwrap_or_else(|| panic!("no {metric} for {case}: {r}"))["value"]
                .as_f64()
                .unwrap();
            assert!(v > 0.0, "{case} {metric} = {v}");
        }
    }
    // Nothing of the run is left: no loop device on the run's image, no FUSE mount of it.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("ssi-benchfs-"), "a mount of the run is left:\n{mounts}");
    let netns = String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
    assert!(!netns.contains("ssigfs-"), "a GlusterFS server's namespace is left:\n{netns}");
    let links = String::from_utf8_lossy(&Command::new("ip").args(["link"]).output().unwrap().stdout).into_owned();
    assert!(!links.contains("ssigfs"), "the GlusterFS bridge is left:\n{links}");
    assert!(!Command::new("pgrep").args(["-f", "ssi-benchfs-"]).status().unwrap().success(), "a process of the run is left");
}
