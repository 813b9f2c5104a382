//! The SAP server on real daemons: one port namespace for the cluster (a port held on one
//! node is refused on another, UDP apart, scalable services joined), concurrent binds from
//! two nodes never both granted, and a shard's primary killed without losing a binding.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ssi_node::control::proto::PortsRequest;
use ssi_testkit::{ok, ssi, Cluster};

fn bind(c: &Cluster, node: u32, port: u32, pid: u32) -> i32 {
    let out = ssi(&["ports", "bind", &port.to_string(), "-n", &node.to_string(), "--pid", &pid.to_string(), "--dir", c.dir_str()]);
    out.status.code().unwrap_or(-1)
}

/// A bind straight through node `node`'s control socket: granted or not.
fn bind_rpc(sock: &std::path::Path, port: u32, pid: u32, start: &Barrier) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = ssi_node::control::connect(sock).await.unwrap();
        start.wait();
        let r = c.ports(PortsRequest { op: "bind".into(), proto: 6, port, pid, ..Default::default() }).await.unwrap().into_inner();
        r.ok
    })
}

#[test]
fn one_port_namespace_for_the_cluster() {
    let c = Cluster::up("sap", 3);
    assert_eq!(bind(&c, 3, 8080, 111), 0);
    assert_eq!(bind(&c, 2, 8080, 222), 98, "held on node 3: EADDRINUSE on node 2");
    let out = ssi(&["ports", "bind", "8080", "--udp", "-n", "2", "--pid", "222", "--dir", c.dir_str()]);
    assert!(out.status.success(), "UDP 8080 is another port");
    assert_eq!(bind(&c, 2, 8081, 222), 0, "TCP 8081 is free");
    for n in [1, 3] {
        ok(&["ports", "bind", "80", "-n", &n.to_string(), "--service", "web", "--dir", c.dir_str()]);
    }
    let list: serde_json::Value = serde_json::from_str(&ok(&["ports", "--json", "--dir", c.dir_str()])).unwrap();
    ssi_testkit::golden::assert_shape("ports", std::slice::from_ref(&list));
    let ports = list["ports"].as_array().unwrap();
    let web = ports.iter().find(|p| p["port"] == 80).unwrap();
    assert_eq!(web["service"], "web");
    assert_eq!(web["listeners"].as_array().unwrap().len(), 2, "one service, two listeners");
    assert_eq!(ports.len(), 4, "{list}");

    // Two nodes binding the same fresh port at the same moment: exactly one wins, 200 times.
    let cfg = c.config();
    let s2 = cfg.node(2).unwrap().control_socket.clone();
    let s3 = cfg.node(3).unwrap().control_socket.clone();
    for round in 0..200u32 {
        let port = 20000 + round;
        let start = Arc::new(Barrier::new(2));
        let (a, b) = (s2.clone(), start.clone());
        let t = std::thread::spawn(move || bind_rpc(&a, port, 2, &b));
        let got3 = bind_rpc(&s3, port, 3, &start);
        let got2 = t.join().unwrap();
        assert!(got2 ^ got3, "round {round}: port {port} granted to node 2: {got2}, node 3: {got3}");
    }
}

#[test]
fn a_shards_primary_dies_and_no_binding_is_lost() {
    let c = Cluster::up("sap-fail", 3);
    // Port 8083: shard 8083 mod 3 = 1, primary node 2, backup node 3; held by node 1.
    let port = 8083;
    assert_eq!(ssi_netsap::sap::shard_nodes(&[1, 2, 3], port), (2, 3));
    assert_eq!(bind(&c, 1, port, 4242), 0);
    c.kill9(2);
    // Node 3 asks while node 2 is down (or being declared down): the backup answers.
    let t0 = Instant::now();
    loop {
        let code = bind(&c, 3, port, 99);
        if code == 98 {
            break;
        }
        assert_ne!(code, 0, "the binding was lost with its shard's primary");
        assert!(t0.elapsed() < Duration::from_secs(10), "no answer while the primary is down (exit {code})");
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = ok(&["ports", "--dir", c.dir_str()]);
    assert!(list.lines().any(|l| l.contains("8083") && l.contains("1:4242")), "{list}");
    // The primary comes back empty: it learns the binding from the backup before granting.
    ok(&["up", "--dir", c.dir_str()]);
    assert_eq!(bind(&c, 3, port, 99), 98, "a restarted primary still refuses");
}

/// The followers of the table (dispatcher, bind guards) hold a long poll on every copy: a bind
/// or a release reaches them as it happens, well before the poll's own timeout would have
/// answered; a node killed and restarted (versions start afresh) is followed again.
#[test]
fn followers_hear_of_each_change_at_once() {
    let c = Cluster::up("sap-follow", 3);
    let cfg = c.config();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let orb = rt.block_on(ssi_node::tool::connect(&cfg)).unwrap();
    let sap = ssi_netsap::sap::SapClient::new(&orb, cfg.nodes.keys().copied().collect());
    let mut table = sap.follow(rt.handle());
    let mut until = |what: &str, want: &dyn Fn(&[ssi_netsap::proto::Entry]) -> bool| {
        let t0 = Instant::now();
        // Far below WATCH_WAIT: only a notification can be this quick.
        let bound = ssi_netsap::sap::WATCH_WAIT / 3;
        while !want(&table.borrow_and_update()) {
            let left = bound.checked_sub(t0.elapsed()).unwrap_or_else(|| panic!("{what}: not heard of within {bound:?}"));
            let _ = rt.block_on(async { tokio::time::timeout(left, table.changed()).await });
        }
    };
    let has = |port: u32, node: u32| {
        move |t: &[ssi_netsap::proto::Entry]| t.iter().any(|e| e.port == port && e.listeners.iter().any(|l| l.node == node))
    };
    until("the first table", &|_: &[ssi_netsap::proto::Entry]| true);
    assert_eq!(bind(&c, 3, 8090, 333), 0);
    until("a bind on node 3", &has(8090, 3));
    assert_eq!(bind(&c, 1, 8091, 111), 0);
    until("a bind on node 1", &has(8091, 1));
    ok(&["ports", "release", "8090", "-n", "3", "--pid", "333", "--dir", c.dir_str()]);
    until("a release", &|t: &[ssi_netsap::proto::Entry]| !t.iter().any(|e| e.port == 8090));
    // Node 2 killed and back: the cluster lets node 2's listeners go; its server starts empty
    // with versions ahead of the old ones, and is followed again.
    assert_eq!(bind(&c, 2, 8092, 222), 0);
    until("a bind on node 2", &has(8092, 2));
    c.kill9(2);
    ok(&["up", "--dir", c.dir_str()]);
    assert_eq!(bind(&c, 2, 8093, 223), 0);
    until("a bind on the restarted node 2", &has(8093, 2));
    orb.shutdown();
}
