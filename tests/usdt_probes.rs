//! The ORB's USDT probe, seen by a third-party eBPF tracer: bpftrace lists it, and attaching
//! to it makes every daemon hand over record bundles (whole records: at least one BATCH_OUT
//! record per batch sent). The project's own recorder checks the records' contents against
//! the ORB's counters exactly (tests/trace.rs). Needs root and bpftrace: in CI (`CI=true`) their
//! absence fails the test; elsewhere the test says why it did not run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ssi_orb::proto::diag::{GiveRequest, RefMsg};
use ssi_orb::proto::Empty;
use ssi_testkit::{bin, required, Cluster};

const PROBES: &[&str] = &["records"];

fn environment_ok() -> bool {
    required("root", nix::unistd::geteuid().is_root())
        && required("bpftrace", Command::new("bpftrace").arg("--version").output().is_ok_and(|o| o.status.success()))
}

#[test]
fn bpftrace_lists_the_probes() {
    if !environment_ok() {
        return;
    }
    let bin = bin();
    let out = Command::new("bpftrace").args(["-l", &format!("usdt:{bin}:ssi:*")]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for p in PROBES {
        assert!(text.lines().any(|l| l.ends_with(&format!(":ssi:{p}"))), "probe {p} not listed:\n{text}");
    }
    assert!(!String::from_utf8_lossy(&out.stderr).contains("invalid address"), "every probe site has an address");
}

#[tokio::test(flavor = "current_thread")]
async fn bpftrace_receives_record_bundles_from_every_daemon() {
    if !environment_ok() {
        return;
    }
    let bin = bin();
    let mut bt = Command::new("bpftrace")
        // BEGIN runs once every probe is attached ("Attaching..." is printed before that).
        .args(["-e", &format!("BEGIN {{ printf(\"ready\\n\"); }} usdt:{bin}:ssi:records {{ @n[pid] = count(); @b[pid] = sum(arg1); }}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(bt.stdout.take().unwrap()).lines();
    // Drained as it comes: a full pipe would stall the tracer.
    let mut stderr = bt.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let t0 = Instant::now();
    loop {
        let l = lines.next().expect("bpftrace exited").unwrap();
        if l.trim() == "ready" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30));
    }
    let (pids, finals) = {
        let c = Cluster::up("usdt", 3);
        let orb = ssi_node::tool::connect(&c.config()).await.unwrap();
        // Daemon-to-daemon traffic: node 3 invokes an object of node 2 many times.
        let d2 = ssi_orb::diag::stub(&orb, 2).await.unwrap();
        let d3 = ssi_orb::diag::stub(&orb, 3).await.unwrap();
        let r = d2.spawn(Empty {}).await.unwrap().obj.unwrap();
        d2.give(GiveRequest { obj: Some(r), to: 3 }).await.unwrap();
        for _ in 0..500 {
            d3.invoke_held(RefMsg { obj: Some(r) }).await.unwrap();
        }
        orb.shutdown();
        let cfg = c.config();
        let pids: Vec<(u32, i32)> = (1..=3).map(|n| (n, c.pid(n))).collect();
        ssi_testkit::ok(&["down", "--dir", c.dir_str()]);
        let finals: Vec<(u64, u64)> = (1..=3)
            .map(|n| {
                let nc = cfg.node(n).unwrap();
                let get = |name| ssi_node::local::final_counter(nc, name).expect("final counters logged");
                (get("messages_sent"), get("bytes_sent"))
            })
            .collect();
        (pids, finals)
    };
    // bpftrace checks for SIGINT between waits for events: a signal that lands just before
    // it waits again is seen only at the next event, and with the daemons gone there is
    // none. Ask again until it has exited (it prints its maps on the way out).
    let t1 = Instant::now();
    while bt.try_wait().unwrap().is_none() {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(bt.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
        assert!(t1.elapsed() < Duration::from_secs(30), "bpftrace does not stop");
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut counts = std::collections::HashMap::new();
    let mut printed = Vec::new();
    for l in lines.map_while(Result::ok) {
        printed.push(l.clone());
        // "@m[1234]: 567"
        let Some((map, rest)) = l.split_once('[') else { continue };
        if let Some((p, n)) = rest.split_once("]: ") {
            counts.insert((map.to_string(), p.parse::<i32>().unwrap()), n.trim().parse::<u64>().unwrap());
        }
    }
    let status = bt.wait().unwrap();
    let errors = errors.join().unwrap();
    // Everything the tracer said, for a failure below to be read without a rerun.
    let said = format!("daemons {pids:?}, finals {finals:?}; bpftrace {status}, printed {printed:?}, stderr {errors:?}");
    assert!(finals[2].0 >= 500, "node 3 sent at least the 500 invocations");
    // A BATCH_OUT record is 48 bytes plus 24 per message: the bundles hold at least that
    // for every batch sent while bpftrace listened (it attached before the cluster started).
    for ((node, pid), (msgs, _bytes)) in pids.iter().zip(&finals) {
        let got = |m: &str| counts.get(&(m.to_string(), *pid)).copied().unwrap_or(0);
        assert!(got("@n") > 0, "node {node}: no bundle ({said})");
        assert!(got("@b") >= 24 * msgs, "node {node}: {} bundle bytes for {msgs} messages sent ({said})", got("@b"));
    }
}
