//! `ssi up`, `ssi down`, `ssi status`, config errors: the command-line contract.

use std::path::Path;

use ssi_testkit::{ok, required, ssi, Cluster};

fn sockets_under(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_socket() {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

/// The running daemons of the cluster in `dir`.
fn daemons_with(dir: &Path) -> Vec<i32> {
    ssi_node::local::daemons_of(&ssi_node::local::config_path(dir))
}

#[test]
fn up_status_down_leaves_nothing_behind() {
    let c = Cluster::up("life", 4);
    assert_eq!(daemons_with(&c.dir).len(), 4, "one daemon process per node");
    assert_eq!(sockets_under(&c.dir).len(), 4, "one control socket per node");
    let pids: std::collections::BTreeSet<i32> = (1..=4).map(|n| c.pid(n)).collect();
    assert_eq!(pids.len(), 4, "separate processes");

    let st: serde_json::Value = serde_json::from_str(&ok(&["status", "--json", "--dir", c.dir_str()])).unwrap();
    assert!(st["view"].as_u64().unwrap() >= 1);
    let nodes = st["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["id"], i as u64 + 1);
        assert_eq!(n["state"], "up");
        assert!(n["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(n["mountpoint"].as_str().unwrap().ends_with(&format!("node{}/mnt", i + 1)));
        assert!(n["uptime_s"].as_f64().unwrap() > 0.0);
        assert!(n["incarnation"].as_u64().unwrap() > 0);
    }
    let text = ok(&["status", "--dir", c.dir_str()]);
    assert!(text.contains("members [1, 2, 3, 4]"), "{text}");
    assert_eq!(ok(&["mnt", "3", "--dir", c.dir_str()]).trim(), c.dir.join("node3/mnt").display().to_string());
    // `ssi status | head -0`: the reader gone before the first line, the tool stops as a C
    // tool would on SIGPIPE, without a panic. (The pipe's read end is closed before it starts.)
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = std::process::Command::new(ssi_testkit::bin())
        .args(["status", "--dir", c.dir_str()])
        .stdout(std::process::Stdio::from(write))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A second `up` says so and starts nothing.
    let again = ssi(&["up", "--nodes", "4", "--dir", c.dir_str()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(daemons_with(&c.dir).len(), 4);

    let out = ok(&["down", "--dir", c.dir_str()]);
    assert!(out.contains("stopped 4 node daemons"), "{out}");
    assert!(daemons_with(&c.dir).is_empty(), "no daemon left");
    assert!(sockets_under(&c.dir).is_empty(), "no socket left");
    assert!(ssi_node::local::mounts_under(&c.dir).is_empty(), "nothing mounted");
    let st = ssi(&["status", "--dir", c.dir_str()]);
    assert!(!st.status.success(), "status of a stopped cluster fails");
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(err.lines().count(), 1, "a one-line reason: {err}");
}

#[test]
fn malformed_configs_are_refused_with_file_line_and_reason() {
    let dir = std::env::temp_dir().join(format!("ssi-test-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[cluster]\nname = \"x\"\nkey_file = \"k\"\n\n[[node]]\nid = 1\naddr = \"127.0.0.1:7000\"\ndir = \"n1\"\n\n[[node]]\nid = 1\naddr = \"127.0.0.1:7001\"\ndir = \"n2\"\n").unwrap();
    let out = ssi(&["node", "--config", cfg.to_str().unwrap(), "--id", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:11:6: node id 1 appears twice", cfg.display())), "{err}");
    std::fs::write(
        &cfg,
        "[cluster]\nname = \"x\"\nkey_file = \"k\"\n[[node]]\nid = 1\naddr = \"127.0.0.1:7000\"\ndir = \"n1\"\nbogus = true\n",
    )
    .unwrap();
    let err = String::from_utf8_lossy(&ssi(&["node", "--config", cfg.to_str().unwrap(), "--id", "1"]).stderr).into_owned();
    assert!(err.contains("bad.toml:8:1: unknown field `bogus`"), "{err}");
    // A key file other users can read is refused.
    std::fs::write(&cfg, "[cluster]\nname = \"x\"\nkey_file = \"k\"\n[[node]]\nid = 1\naddr = \"127.0.0.1:7000\"\ndir = \"n1\"\n").unwrap();
    std::fs::write(dir.join("k"), ssi_orb::ClusterKey::generate_hex()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("k"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = String::from_utf8_lossy(&ssi(&["node", "--config", cfg.to_str().unwrap(), "--id", "1"]).stderr).into_owned();
    assert!(err.contains("readable by other users"), "{err}");
    let err = String::from_utf8_lossy(&ssi(&["node", "--config", cfg.to_str().unwrap(), "--id", "9"]).stderr).into_owned();
    assert!(err.contains("node 9 is not in"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run by `control_socket_checks_the_callers_uid` in a child process as uid 65534.
#[test]
#[ignore = "helper: runs as an unprivileged user, started by control_socket_checks_the_callers_uid"]
fn peercred_child() {
    use ssi_node::control::proto::{Empty, PortsRequest, StatusRequest};
    let sock = std::env::var("SSI_TEST_SOCK").expect("SSI_TEST_SOCK");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = ssi_node::control::connect(Path::new(&sock)).await.unwrap();
        c.status(StatusRequest {}).await.expect("status is open to every user");
        let e = c.shutdown(Empty {}).await.expect_err("an ordinary user may not stop the daemon");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("uid 65534"), "{}", e.message());
        let bind = PortsRequest { op: "bind".into(), proto: 6, port: 4444, ..Default::default() };
        let e = c.ports(bind).await.expect_err("nor reserve a port");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // A production daemon serves no benchmark: that is only in daemons started for one.
        let mut b = ssi_bench::servant::connect(Path::new(&sock)).await.unwrap();
        let e = b.serve(ssi_bench::servant::proto::Empty {}).await.expect_err("no benchmark servants here");
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{}", e.message());
    });
}

#[test]
fn control_socket_checks_the_callers_uid() {
    if !required("root (to run a child as another uid)", nix::unistd::geteuid().is_root()) {
        return;
    }
    use std::os::unix::process::CommandExt;
    let c = Cluster::up("peercred", 1);
    let sock = c.config().node(1).unwrap().control_socket.clone();
    let exe = ssi_testkit::UserExe::new("peercred");
    let out = std::process::Command::new(&exe.0)
        .args(["--exact", "peercred_child", "--include-ignored", "--nocapture"])
        .env("SSI_TEST_SOCK", &sock)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    drop(exe);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "child as uid 65534:\n{text}");
    // The daemon is still serving: the refused shutdown did nothing.
    assert!(ok(&["status", "--dir", c.dir_str()]).contains("members [1]"));
}

#[test]
fn down_after_a_crash_leaves_no_mount() {
    if !required("root and /dev/fuse", nix::unistd::geteuid().is_root() && Path::new("/dev/fuse").exists()) {
        return;
    }
    let c = Cluster::up("crash", 3);
    assert_eq!(ssi_node::local::mounts_under(&c.dir).len(), 3, "every node mounts the namespace");
    // `down`'s last resort for a daemon wedged on a FUSE request: aborting its connection.
    // Shown here on node 3's live connection: its mount dies at once, fusectl is left as found.
    let conns = ssi_node::local::fuse_connections_under(&c.dir);
    assert_eq!(conns.len(), 3, "{conns:?}");
    let m3 = c.config().node(3).unwrap().mountpoint.clone();
    let dev3 = std::fs::metadata(&m3).unwrap();
    let id3 = conns.iter().find(|id| **id == libc::minor(std::os::unix::fs::MetadataExt::dev(&dev3)).to_string()).cloned().unwrap();
    let fusectl_before = std::fs::read_to_string("/proc/mounts").unwrap().contains("fusectl");
    ssi_node::local::abort_fuse_connections(&[id3]);
    // (A create must reach the daemon; a stat could be answered from the attribute cache.)
    let e = std::fs::write(m3.join("probe"), b"").unwrap_err().raw_os_error();
    assert!(matches!(e, Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)), "aborted: {e:?}");
    assert_eq!(std::fs::read_to_string("/proc/mounts").unwrap().contains("fusectl"), fusectl_before);
    // A daemon killed with SIGKILL cannot unmount: its mount is left dead.
    c.kill9(2);
    let m2 = c.config().node(2).unwrap().mountpoint.clone();
    let e = std::fs::write(m2.join("probe"), b"").unwrap_err().raw_os_error();
    assert!(matches!(e, Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)), "a dead FUSE mount: {e:?}");
    ok(&["down", "--dir", c.dir_str()]);
    assert!(ssi_node::local::mounts_under(&c.dir).is_empty(), "ssi down removes the dead mount too");
    assert!(daemons_with(&c.dir).is_empty());
}

#[test]
fn crash_kills_every_process_of_the_node_at_once_and_up_starts_a_new_incarnation() {
    if !required("root and /dev/fuse", nix::unistd::geteuid().is_root() && Path::new("/dev/fuse").exists()) {
        return;
    }
    let c = Cluster::up("power-cut", 3);
    let incarnation = |n: usize| {
        let st: serde_json::Value = serde_json::from_str(&ok(&["status", "--json", "--dir", c.dir_str()])).unwrap();
        st["nodes"][n - 1]["incarnation"].as_u64().unwrap()
    };
    let before = incarnation(2);
    let n2 = c.config().node(2).unwrap().clone();
    let cgroup = ssi_netsap::bindguard::cgroup_of(&n2.dir).expect("cgroup v2");
    // Something node 2 started, holding a file open on node 2's own mount.
    let held = n2.mountpoint.join("www/held");
    let command = format!("exec 3>>{}; exec sleep 600", held.display());
    let mut tool = std::process::Command::new(ssi_testkit::bin())
        .args(["rexec", "-n", "2", "--cwd", "/", "--dir", c.dir_str(), "--", "sh", "-c", &command])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !held.exists() || ssi_netsap::bindguard::cgroup_procs(&cgroup).len() < 2 {
        assert!(t0.elapsed().as_secs() < 10, "the remote command did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let out = ok(&["crash", "2", "--dir", c.dir_str()]);
    assert!(out.contains("node 2 crashed"), "{out}");
    let left = ssi_netsap::bindguard::cgroup_procs(&cgroup);
    assert!(left.is_empty(), "every process of node 2 is gone, its daemon and what it started: {left:?}");
    assert!(ssi_node::local::mounts_under(&n2.mountpoint).is_empty(), "no stale mount of node 2");
    assert!(ssi_node::pidfile::node_pid(&n2).is_none());
    // The tool whose command ran there hears of it (its link to node 2 broke).
    let t1 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = tool.try_wait().unwrap() {
            break s;
        }
        assert!(t1.elapsed().as_secs() < 10, "rexec outlived its node by 10 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!status.success(), "a command lost with its node is not a success");
    // The others carry on, and `ssi up` starts node 2 again as a new incarnation.
    let t2 = std::time::Instant::now();
    while !ok(&["status", "--dir", c.dir_str()]).contains("members [1, 3]") {
        assert!(t2.elapsed().as_secs() < 5, "no view without node 2 5 s after its crash");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let up = ok(&["up", "--dir", c.dir_str()]);
    assert!(up.contains("restarted node(s) [2]"), "{up}");
    assert!(incarnation(2) > before, "a new incarnation");
    assert!(std::fs::metadata(n2.mountpoint.join("www")).is_ok(), "node 2 mounts the namespace again");

    ok(&["down", "--dir", c.dir_str()]);
    let e = ssi(&["crash", "2", "--dir", c.dir_str()]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("node 2 is not running"), "{}", String::from_utf8_lossy(&e.stderr));
}

#[test]
fn node_1_is_not_special_it_may_crash_and_the_tools_go_on() {
    if !required("root and /dev/fuse", nix::unistd::geteuid().is_root() && Path::new("/dev/fuse").exists()) {
        return;
    }
    let c = Cluster::up("no-special", 4);
    let d = c.dir_str();
    // The voters change at runtime, through whichever node leads.
    assert!(ok(&["cluster", "remove-node", "4", "--dir", d]).contains("voters [1, 2, 3]"));
    assert!(ok(&["status", "--dir", d]).contains("voters [1, 2, 3]"));
    assert!(ok(&["cluster", "add-node", "4", "--dir", d]).contains("voters [1, 2, 3, 4]"));
    let e = ssi(&["cluster", "add-node", "9", "--dir", d]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("node 9 is not a node of this cluster"));

    let out = ok(&["crash", "1", "--dir", d]);
    assert!(out.contains("node 1 crashed"), "{out}");
    let t0 = std::time::Instant::now();
    // Within 3 s: a view of the rest, and every tool command from the host works.
    while !ok(&["status", "--dir", d]).contains("members [2, 3, 4]") {
        assert!(t0.elapsed().as_secs() < 3, "no view without node 1 3 s after its crash");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let st = ok(&["status", "--dir", d]);
    assert!(st.contains("quorum: leader node"), "{st}");
    let rexec = ssi(&["rexec", "-n", "3", "--cwd", "/", "--dir", d, "--", "true"]);
    assert!(rexec.status.success(), "{}", String::from_utf8_lossy(&rexec.stderr));
    ok(&["ports", "--dir", d]);
    let ps = ok(&["ps", "-ef", "--dir", d]);
    eprintln!("after node 1's crash: view, status, rexec, ports and ps from the host in {:?}", t0.elapsed());
    assert!(t0.elapsed().as_secs() < 3, "the tools took {:?}", t0.elapsed());
    // The global /proc: each live node's daemon once, node 1's nowhere.
    for n in 1..=4 {
        let daemons = ps.lines().filter(|l| l.ends_with(&format!("--config {d}/cluster.toml --id {n}"))).count();
        assert_eq!(daemons, usize::from(n != 1), "node {n}'s daemon in ps -ef:\n{ps}");
    }
    let up = ok(&["up", "--dir", d]);
    assert!(up.contains("restarted node(s) [1]"), "{up}");
    ok(&["down", "--dir", d]);
}

#[test]
fn a_node_down_through_many_log_entries_catches_up_from_the_leaders_snapshot() {
    if !required("root and /dev/fuse", nix::unistd::geteuid().is_root() && Path::new("/dev/fuse").exists()) {
        return;
    }
    let c = Cluster::up("raft-snapshot", 3);
    let d = c.dir_str();
    // A log compacted every 4 entries, so a few voter changes outrun a node that is down.
    ok(&["down", "--dir", d]);
    let toml = c.dir.join("cluster.toml");
    let mut cfg = std::fs::read_to_string(&toml).unwrap();
    assert!(!cfg.contains("[orb]"), "{cfg}");
    cfg.push_str("\n[orb]\nquorum_compact_after = 4\n");
    std::fs::write(&toml, cfg).unwrap();
    // `--config`: the same nodes again, their dirs kept (a bare `up` would start afresh).
    let config = toml.to_str().unwrap();
    ok(&["up", "--config", config, "--dir", d]);
    let status =
        |n: u32| -> serde_json::Value { serde_json::from_str(&ok(&["status", "--json", "-n", &n.to_string(), "--dir", d])).unwrap() };
    let role = |st: &serde_json::Value, name: &str| -> (u64, u64) {
        let r = st["roles"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no role {name}: {st}"));
        (r["node"].as_u64().unwrap(), r["epoch"].as_u64().unwrap())
    };
    let wait_members = |members: &str| {
        let t0 = std::time::Instant::now();
        while !ok(&["status", "--dir", d]).contains(members) {
            assert!(t0.elapsed().as_secs() < 10, "no view with {members} in 10 s");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait_members("members [1, 2, 3]");
    // Each SAP shard's serving copy is a role of the view, held by one of its two copies
    // (which one depends on the order the nodes joined in: roles do not move back).
    let st = status(1);
    for (name, copies) in [("sap/0", [1, 2]), ("sap/1", [2, 3]), ("sap/2", [3, 1])] {
        assert!(copies.contains(&role(&st, name).0), "{name}: {st}");
    }
    let (before, view_before) = (role(&st, "sap/2"), st["view"].as_u64().unwrap());

    ok(&["crash", "3", "--dir", d]);
    wait_members("members [1, 2]");
    let st = status(1);
    let (holder, epoch) = role(&st, "sap/2");
    assert_eq!(holder, 1, "shard 2 is on its other copy once node 3 is gone: {st}");
    if before.0 == 3 {
        assert!(epoch > view_before, "moved by a view after the crash, its number the epoch: {st}");
    } else {
        assert_eq!((holder, epoch), before, "a holder that stayed keeps its epoch: {st}");
    }
    for _ in 0..4 {
        assert!(ok(&["cluster", "remove-node", "3", "--dir", d]).contains("voters [1, 2]"));
        assert!(ok(&["cluster", "add-node", "3", "--dir", d]).contains("voters [1, 2, 3]"));
    }
    let st = status(1);
    let (snapshot, last) = (st["quorum_log"]["snapshot"].as_u64().unwrap(), st["quorum_log"]["last"].as_u64().unwrap());
    assert!(snapshot >= 8 && last - snapshot < 4 + 4, "the leader's log is compacted: {st}");

    // Node 3 restarts with a log that ends before the leader's snapshot: it gets the snapshot.
    let up = ok(&["up", "--dir", d]);
    assert!(up.contains("restarted node(s) [3]"), "{up}");
    wait_members("members [1, 2, 3]");
    let log = std::fs::read_to_string(c.config().node(3).unwrap().dir.join("log")).unwrap();
    assert!(log.contains("quorum state taken from the leader's snapshot"), "{log}");
    let st3 = status(3);
    assert_eq!(st3["voters"], serde_json::json!([1, 2, 3]), "{st3}");
    assert!(st3["quorum"].as_bool().unwrap(), "{st3}");
    assert!(st3["quorum_log"]["snapshot"].as_u64().unwrap() >= snapshot, "{st3}");
    // The role stays where it went: a move back would cost a hand-over for nothing.
    assert_eq!(role(&st3, "sap/2"), (holder, epoch), "{st3}");

    // A whole cluster restarts from compacted logs, numbering views on from the last.
    let before = status(1)["view"].as_u64().unwrap();
    ok(&["down", "--dir", d]);
    ok(&["up", "--config", config, "--dir", d]);
    wait_members("members [1, 2, 3]");
    let st = status(2);
    assert!(st["quorum"].as_bool().unwrap(), "{st}");
    assert!(st["view"].as_u64().unwrap() > before, "view numbers never start over: {st}");
    ok(&["down", "--dir", d]);
}
