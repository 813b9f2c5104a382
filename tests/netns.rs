//! `ssi up --netns`: every node daemon in its own network namespace on one bridge, an `ext`
//! namespace that reaches the cluster only through the gateway (node 2), and `ssi down`
//! leaving no namespace behind. Real namespaces, veths and a bridge (iproute2); needs root:
//! in CI (`CI=true`) its absence fails the test.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ssi_testkit::{bin, ok, required, ssi};

fn namespaces_with(prefix: &str) -> Vec<String> {
    ssi_netsap::topology::list().into_iter().filter(|n| n.starts_with(prefix)).collect()
}

/// A Python one-liner run in `ext`: fetch `url`, print the HTTP status or the error's class.
fn fetch_from_ext(dir: &str, url: &str) -> String {
    let code = format!(
        "import urllib.request,sys\ntry:\n print(urllib.request.urlopen('{url}', timeout=2).status)\nexcept Exception as e:\n print(type(e).__name__)"
    );
    String::from_utf8_lossy(&ssi(&["ext", "--dir", dir, "--", "python3", "-c", &code]).stdout).trim().to_string()
}

#[test]
fn nodes_in_namespaces_behind_a_gateway() {
    if !required("root", nix::unistd::geteuid().is_root()) {
        return;
    }
    let dir = ssi_testkit::test_dir("netns");
    let d = dir.to_str().unwrap();
    let out = ok(&["up", "--netns", "--nodes", "3", "--dir", d]);
    let cfg = ssi_node::local::load(&dir).unwrap();
    let prefix = ssi_node::local::topology(&dir, &cfg).prefix;
    let result = std::panic::catch_unwind(|| {
        for n in 1..=3 {
            assert!(out.contains(&format!("10.99.0.{n}:7100")), "node {n} on the interconnect:\n{out}");
        }
        assert_eq!(namespaces_with(&prefix).len(), 5, "three nodes, the bridge's, ext");

        // A process started on a node lives in that node's network.
        let addr = ok(&["rexec", "--dir", d, "-n", "3", "--cwd", "/", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(addr.contains("10.99.0.3/24"), "{addr}");

        // PXFS works over the interconnect.
        let m1 = ok(&["mnt", "1", "--dir", d]).trim().to_string();
        let m3 = ok(&["mnt", "3", "--dir", d]).trim().to_string();
        std::fs::write(format!("{m1}/netns-file"), b"across the bridge").unwrap();
        assert_eq!(std::fs::read(format!("{m3}/netns-file")).unwrap(), b"across the bridge");

        // A web server on the gateway answers ext at the global address; node 1 is out of
        // ext's reach (the gateway does not forward).
        let mut server = Command::new(bin())
            .args(["rexec", "--dir", d, "-n", "2", "--cwd", "/", "--", "python3", "-m", "http.server", "8080"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let mut got = String::new();
        while t0.elapsed() < Duration::from_secs(10) {
            got = fetch_from_ext(d, "http://192.168.77.1:8080/");
            if got == "200" {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = server.kill();
        let _ = server.wait();
        assert_eq!(got, "200", "ext reaches the gateway's global address");
        let blocked = fetch_from_ext(d, "http://10.99.0.1:7100/");
        assert_ne!(blocked, "200");
        assert!(!blocked.is_empty(), "the fetch ran and failed ({blocked})");
    });
    let down = ok(&["down", "--dir", d]);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(down.contains("removed 5 network namespaces"), "{down}");
    assert!(namespaces_with(&prefix).is_empty(), "ssi down leaves no namespace");
}

fn bind_script(kind: &str, port: u16) -> String {
    format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.{kind})\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', {port}))\nprint('bound')"
    )
}

/// The SAP table's TCP listeners of `port`, as (node, pid).
fn holders(dir: &str, port: u64) -> Vec<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(&ok(&["ports", "--json", "--dir", dir])).unwrap();
    v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["port"] == port && p["proto"] == "tcp")
        .flat_map(|p| p["listeners"].as_array().unwrap().iter().map(|l| (l["node"].as_u64().unwrap(), l["pid"].as_u64().unwrap())))
        .collect()
}

#[test]
fn binds_of_programs_started_with_ssi_run_go_through_the_sap() {
    if !required("root", nix::unistd::geteuid().is_root()) {
        return;
    }
    let dir = ssi_testkit::test_dir("netns-run");
    let d = dir.to_str().unwrap();
    ok(&["up", "--netns", "--nodes", "3", "--dir", d]);
    let result = std::panic::catch_unwind(|| {
        // An unmodified server on node 3 holds 8080 (each node has its own network: only the
        // SAP can tell node 2 that the port is taken).
        let log = dir.join("server.log");
        let mut server = Command::new(bin())
            .args(["run", "--dir", d, "-n", "3", "--cwd", "/", "--", "python3", "-m", "http.server", "8080"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while holders(d, 8080).is_empty() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the server never bound 8080: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (node, pid) = holders(d, 8080)[0];
        assert_eq!(node, 3);

        let out = ssi(&["run", "--dir", d, "-n", "2", "--cwd", "/", "--", "python3", "-m", "http.server", "8080"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("[Errno 98] Address already in use"), "EADDRINUSE on node 2: {err}");
        // nginx likewise.
        let root = dir.join("www");
        ssi_web::nginx::paper_document(&root).unwrap();
        let site = ssi_web::nginx::Site { node: 2, port: 8080, root: &root, service: None };
        let refused = ssi_web::nginx::Nginx::start(std::path::Path::new(bin()), &dir, &dir.join("nginx2"), &site)
            .err()
            .expect("nginx on node 2 must not get 8080");
        assert!(refused.to_string().contains("(98: Address already in use)"), "{refused}");
        for (kind, port) in [("SOCK_DGRAM", 8080), ("SOCK_STREAM", 8081)] {
            let out = ssi(&["run", "--dir", d, "-n", "2", "--cwd", "/", "--", "python3", "-c", &bind_script(kind, port)]);
            assert!(out.status.success(), "{kind} {port}: {}", String::from_utf8_lossy(&out.stderr));
        }

        // The second layer (cgroup BPF on each node's daemon and all it starts): a process
        // started without `ssi run` (no seccomp filter) is refused too ...
        for n in 1..=3 {
            let log = std::fs::read_to_string(dir.join(format!("node{n}/log"))).unwrap();
            assert!(log.contains("bind guard: attached"), "node {n} runs the bind guard:\n{log}");
        }
        let out = ssi(&["rexec", "--dir", d, "-n", "2", "--cwd", "/", "--", "python3", "-c", &bind_script("SOCK_STREAM", 8080)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("[Errno 98] Address already in use"), "a bind outside ssi run is refused: {err}");
        // ... and its binds of free ports are entered in the SAP, and given back when it exits.
        let hold = format!("{}\nimport time; time.sleep(2)", bind_script("SOCK_STREAM", 8090));
        let mut outside = Command::new(bin())
            .args(["rexec", "--dir", d, "-n", "1", "--cwd", "/", "--", "python3", "-c", &hold])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while holders(d, 8090).is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(2), "the bind of 8090 outside ssi run was never reported");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(holders(d, 8090)[0].0, 1);
        let _ = outside.wait();
        let t1 = Instant::now();
        while !holders(d, 8090).is_empty() {
            assert!(t1.elapsed() < Duration::from_secs(1), "8090 still held 1 s after its process exited");
            std::thread::sleep(Duration::from_millis(20));
        }

        // kill -9 of the holder gives the port back.
        let t1 = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        while !holders(d, 8080).is_empty() {
            assert!(t1.elapsed() < Duration::from_secs(1), "8080 still held 1 s after kill -9 of its holder");
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("8080 released {:?} after kill -9 of its holder", t1.elapsed());
        let _ = server.wait();
        let out = ssi(&["run", "--dir", d, "-n", "2", "--cwd", "/", "--", "python3", "-c", &bind_script("SOCK_STREAM", 8080)]);
        assert!(out.status.success(), "8080 is free again: {}", String::from_utf8_lossy(&out.stderr));
    });
    let _ = ssi(&["down", "--dir", d]);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// The members of the view node `n` is in, asked of its own daemon (control sockets are on
/// the host: a partition of the interconnect does not cut them).
fn view_of(dir: &std::path::Path, n: u32) -> Vec<u32> {
    status_of(dir, n).view_members
}

/// Waits (up to `within`) until node `n`'s view has exactly `want`; how long that took.
fn await_view(dir: &std::path::Path, n: u32, want: &[u32], within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let v = view_of(dir, n);
        if v == want {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "node {n}: view {v:?}, not {want:?}, after {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_of(dir: &std::path::Path, n: u32) -> ssi_node::control::proto::StatusReply {
    let cfg = ssi_node::local::load(dir).unwrap();
    let sock = cfg.node(n).unwrap().control_socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(ssi_node::local::status_of(&sock)).unwrap()
}

/// Waits (up to `within`) until node `n` has (or has lost) its quorum; how long that took.
fn await_quorum(dir: &std::path::Path, n: u32, quorum: bool, within: Duration) -> Duration {
    let t0 = Instant::now();
    while status_of(dir, n).quorum != quorum {
        assert!(t0.elapsed() < within, "node {n}: quorum still {} after {within:?}", !quorum);
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

/// Right after a cut: how long until the first node of `majority` has a view of exactly
/// those nodes, and until each node of `minority` has lost its quorum — all within 2 s
/// of the cut (the bound). Each node is watched from a thread of its own (a status
/// call to a node cut off from others waits out the deadline of its calls to them).
fn after_cut(dir: &std::path::Path, majority: &[u32], minority: &[u32]) -> (Duration, Vec<Duration>) {
    let t0 = Instant::now();
    let until = |what: String, f: Box<dyn Fn() -> bool + Send>| {
        std::thread::spawn(move || loop {
            // A daemon reads its view and quorum as a status request arrives, then asks the
            // other nodes for theirs: what it answers held when the request was sent.
            let asked = t0.elapsed();
            if f() {
                return Ok(asked);
            }
            if t0.elapsed() > Duration::from_secs(2) {
                return Err(what);
            }
            std::thread::sleep(Duration::from_millis(10));
        })
    };
    let (d, m) = (dir.to_path_buf(), majority.to_vec());
    let view = until(format!("node {}: a view of {majority:?}", m[0]), Box::new(move || view_of(&d, m[0]) == m));
    let fenced: Vec<_> = minority
        .iter()
        .map(|n| {
            let (d, n) = (dir.to_path_buf(), *n);
            until(format!("node {n}: no quorum"), Box::new(move || !status_of(&d, n).quorum))
        })
        .collect();
    let view = view.join().unwrap();
    let fenced: Vec<_> = fenced.into_iter().map(|t| t.join().unwrap()).collect();
    let late: Vec<&String> = std::iter::once(&view).chain(&fenced).filter_map(|r| r.as_ref().err()).collect();
    assert!(late.is_empty(), "not within 2 s of the cut: {late:?} (in time: {view:?} {fenced:?})");
    (view.unwrap(), fenced.into_iter().map(Result::unwrap).collect())
}

#[test]
fn a_partition_fences_the_minority_and_the_majority_carries_on() {
    if !required("root", nix::unistd::geteuid().is_root()) || !required("nft", ssi_node::installed("nft")) {
        return;
    }
    let dir = ssi_testkit::test_dir("partition");
    let d = dir.to_str().unwrap();
    ok(&["up", "--netns", "--nodes", "5", "--dir", d]);
    let cfg = ssi_node::local::load(&dir).unwrap();
    let mnt = |n: u32| cfg.node(n).unwrap().mountpoint.display().to_string();
    // A Python one-liner on node `n`: what it printed, or the exception's text.
    let py = |n: u32, code: &str| {
        let code = format!("import os,socket,sys\ntry:\n {code}\n print('ok')\nexcept Exception as e:\n print(e)");
        // Through node `n` itself (a node cut off places nothing elsewhere).
        let out = Command::new(bin())
            .env("SSI_NODE", n.to_string())
            .args(["rexec", "--dir", d, "-n", &n.to_string(), "--cwd", "/", "--", "python3", "-c", &code])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let bind = |n: u32, port: u32, pid: u32| {
        let out = ssi(&["ports", "bind", &port.to_string(), "-n", &n.to_string(), "--pid", &pid.to_string(), "--dir", d]);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let result = std::panic::catch_unwind(|| {
        for n in 1..=5 {
            await_quorum(&dir, n, true, Duration::from_secs(10));
        }
        let before = status_of(&dir, 3).view;
        // Port 8086's shard is node 2's and node 3's, like 8081's: held by node 4 before the
        // cut, released during it (by node 3's copy alone).
        assert!(bind(4, 8086, 444).0);
        let out = ok(&["partition", "1,2", "/", "3,4,5", "--dir", d]);
        assert!(out.contains("partitioned [1, 2] / [3, 4, 5]"), "{out}");
        // Nothing crosses: node 1 cannot reach node 3; inside a side, everything flows.
        let ping = |from: u32, to: &str| py(from, &format!("socket.create_connection(('{to}', 7100), timeout=1)")) == "ok";
        let (majority, fenced) = after_cut(&dir, &[3, 4, 5], &[1, 2]);
        eprintln!("partition 1,2 / 3,4,5: majority view after {majority:?}, minority fenced after {fenced:?}");
        assert!(!ping(1, "10.99.0.3"), "the cut holds");
        assert!(ping(1, "10.99.0.2"), "inside a side, traffic flows");
        let s1 = status_of(&dir, 1);
        assert!(ssi_node::status::quorum_line(&s1).starts_with("no quorum"), "{}", ssi_node::status::quorum_line(&s1));
        assert!(s1.view <= before, "the minority installed view {} (before: {before})", s1.view);
        // Port 8081's shard: primary node 2 (minority), backup node 3 (majority). The
        // majority grants it; the minority, whose copy would also say "free", refuses.
        assert_eq!(ssi_netsap::sap::shard_nodes(&[1, 2, 3, 4, 5], 8081), (2, 3));
        let (granted, e) = bind(3, 8081, 333);
        assert!(granted, "the majority grants binds: {e}");
        let (granted, e) = bind(1, 8081, 111);
        assert!(!granted && e.contains("no quorum"), "the minority refuses binds: {e}");
        ok(&["ports", "release", "8086", "-n", "4", "--pid", "444", "--dir", d]);
        // PXFS: node 1 serves `/`; cut off, it refuses changes and still serves reads.
        let w = py(1, &format!("open('{}/fenced', 'w')", mnt(1)));
        assert!(w.contains("Read-only file system"), "a minority's volume refuses mutations: {w}");
        assert_eq!(py(1, &format!("os.listdir('{}')", mnt(1))), "ok", "reads go on");
        // (`/` is node 1's only copy: until volumes are replicated, the majority's walks
        // through it fail too, so its own volumes are not checked here.)
        // `ssi status` through a minority node says so.
        let st = ok(&["status", "--dir", d, "-n", "1"]);
        assert!(st.contains("no quorum"), "{st}");

        let t0 = Instant::now();
        let out = ok(&["heal", "--dir", d]);
        assert!(out.contains("healed"), "{out}");
        for n in 1..=5 {
            await_view(&dir, n, &[1, 2, 3, 4, 5], Duration::from_secs(5) - t0.elapsed().min(Duration::from_secs(4)));
        }
        for n in 1..=5 {
            await_quorum(&dir, n, true, Duration::from_secs(5) - t0.elapsed().min(Duration::from_secs(4)));
        }
        eprintln!("healed: one view of five, every node in quorum, after {:?}", t0.elapsed());
        assert!(ping(1, "10.99.0.3"), "whole again");
        let (granted, e) = bind(1, 8082, 111);
        assert!(granted, "healed, node 1 grants again: {e}");
        // No divergent state: node 2's copy of 8081's shard, stale since the cut, was
        // replaced by node 3's, which holds the majority's binding.
        let (granted, e) = bind(1, 8081, 111);
        assert!(!granted, "8081 was granted to node 3 during the cut; healed, node 1 must not get it: {e}");
        let (granted, e) = bind(1, 8086, 111);
        assert!(granted, "8086 was released during the cut; node 2's stale copy must not refuse it: {e}");
        assert!(ok(&["heal", "--dir", d]).contains("there was no partition"));

        // One node alone, one way: 3 cannot send to the others; they still reach it... and
        // since every link needs both ways, node 3 ends up alone, and fenced.
        let out = ok(&["partition", "3", "--oneway", "--dir", d]);
        assert!(out.contains("partitioned [3] -> [1, 2, 4, 5]"), "{out}");
        let (majority, fenced) = after_cut(&dir, &[1, 2, 4, 5], &[3]);
        eprintln!("3 cut off one way: majority view after {majority:?}, node 3 fenced after {fenced:?}");
        ok(&["heal", "--dir", d]);
        await_view(&dir, 3, &[1, 2, 3, 4, 5], Duration::from_secs(5));

        // One node alone, both ways.
        let out = ok(&["partition", "5", "--dir", d]);
        assert!(out.contains("[5]"), "{out}");
        let (majority, fenced) = after_cut(&dir, &[1, 2, 3, 4], &[5]);
        eprintln!("5 isolated: majority view after {majority:?}, node 5 fenced after {fenced:?}");
        ok(&["heal", "--dir", d]);
        await_view(&dir, 5, &[1, 2, 3, 4, 5], Duration::from_secs(5));

        // A node the cluster does not have is refused, with the reason.
        let e = ssi(&["partition", "1", "/", "9", "--dir", d]);
        assert!(!e.status.success());
        assert!(String::from_utf8_lossy(&e.stderr).contains("node 9 is not a node of this cluster"));
    });
    ok(&["down", "--dir", d]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
