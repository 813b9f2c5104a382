//! The ORB between real node daemons (separate processes started by `ssi up`). The test
//! process joins as an authenticated cluster tool and drives the daemons' `diag` objects;
//! the invocations under test go from daemon to daemon.

use std::time::{Duration, Instant};

use ssi_orb::proto::diag::{Blob, DiagStub, GiveRequest, RefMsg, SleepRequest};
use ssi_orb::proto::{Empty, Kind};
use ssi_orb::rawpeer::{self, RawPeer};
use ssi_orb::{ClusterKey, Orb, OrbError};
use ssi_testkit::{eventually, Cluster};

async fn diag(orb: &Orb, node: u32) -> DiagStub {
    ssi_orb::diag::stub(orb, node).await.unwrap()
}

fn refmsg(r: &ssi_orb::ObjRef) -> RefMsg {
    RefMsg { obj: Some(*r) }
}

#[tokio::test(flavor = "current_thread")]
async fn invocations_references_and_unreferenced_between_daemons() {
    let c = Cluster::up("refs", 4);
    let orb = ssi_node::tool::connect(&c.config()).await.unwrap();
    let (d1, d2, d3) = (diag(&orb, 1).await, diag(&orb, 2).await, diag(&orb, 3).await);

    // Two-way across nodes, both payload sizes; one-way delivery, counted by the receiver.
    for n in 1..=4 {
        let r = diag(&orb, n).await.echo(Blob { data: vec![n as u8; 4096].into() }).await.unwrap();
        assert_eq!(r.data.as_ref(), &vec![n as u8; 4096][..]);
    }
    for _ in 0..5000 {
        d2.sink(Blob { data: vec![0u8; 128].into() }).await.unwrap();
    }
    eventually(Duration::from_secs(5), "5000 one-ways counted on node 2", async || d2.sink_count(Empty {}).await.unwrap().n == 5000).await;

    // Node 2 creates an object; 2 passes it to 1 (owner → holder), 1 passes it to 3 (a third
    // party: node 1 is not the owner). Nodes 1 and 2 drop theirs; 3 invokes it on node 2.
    let r = d2.spawn(Empty {}).await.unwrap().obj.unwrap();
    assert_eq!(r.node, 2);
    d2.give(GiveRequest { obj: Some(r), to: 1 }).await.unwrap();
    d1.give(GiveRequest { obj: Some(r), to: 3 }).await.unwrap();
    d1.drop_ref(refmsg(&r)).await.unwrap();
    d2.drop_ref(refmsg(&r)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!d2.unreferenced_log(Empty {}).await.unwrap().objects.contains(&r.object), "node 3 still holds it");
    assert_eq!(d3.invoke_held(refmsg(&r)).await.unwrap().n, 1);
    assert_eq!(d3.invoke_held(refmsg(&r)).await.unwrap().n, 2);
    // The last reference anywhere is dropped: unreferenced() on node 2.
    d3.drop_ref(refmsg(&r)).await.unwrap();
    eventually(Duration::from_secs(5), "unreferenced() after the last drop", async || {
        d2.unreferenced_log(Empty {}).await.unwrap().objects.contains(&r.object)
    })
    .await;

    // A holder node is killed: its references are released.
    let r2 = d2.spawn(Empty {}).await.unwrap().obj.unwrap();
    d2.give(GiveRequest { obj: Some(r2), to: 4 }).await.unwrap();
    d2.drop_ref(refmsg(&r2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!d2.unreferenced_log(Empty {}).await.unwrap().objects.contains(&r2.object), "node 4 still holds it");
    let killed = Instant::now();
    c.kill9(4);
    eventually(Duration::from_secs(5), "unreferenced() after the holder's death", async || {
        d2.unreferenced_log(Empty {}).await.unwrap().objects.contains(&r2.object)
    })
    .await;
    eprintln!("unreferenced() {:.0} ms after kill -9 of the holder", killed.elapsed().as_secs_f64() * 1e3);
}

#[tokio::test(flavor = "current_thread")]
async fn node_down_is_prompt_and_a_killed_node_rejoins_as_a_new_incarnation() {
    let c = Cluster::up("down", 3);
    let orb = ssi_node::tool::connect(&c.config()).await.unwrap();
    let d1 = diag(&orb, 1).await;
    let d3 = diag(&orb, 3).await;
    let view_before = orb.view();
    let inc_before = view_before.members.iter().find(|m| m.node == 3).unwrap().incarnation;
    // Node 1 holds an object it will try to pass to node 3 after node 3 dies.
    let r = d1.spawn(Empty {}).await.unwrap().obj.unwrap();

    let stalled = tokio::spawn(async move { d3.sleep(SleepRequest { ms: 60_000 }).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    c.kill9(3);
    let res = tokio::time::timeout(Duration::from_secs(2), stalled).await.expect("caller hung past 2 s").unwrap();
    let took = t0.elapsed();
    assert!(matches!(res, Err(OrbError::NodeDown { node: 3, .. })), "{res:?}");
    assert!(took < Duration::from_secs(2), "NodeDown after {took:?}");
    eprintln!("NodeDown {:.1} ms after kill -9", took.as_secs_f64() * 1e3);

    // Daemon to daemon: node 1's call to the dead node fails fast too, it does not hang.
    let t1 = Instant::now();
    let e = d1.give(GiveRequest { obj: Some(r), to: 3 }).await.unwrap_err();
    assert!(t1.elapsed() < Duration::from_secs(2), "node 1's call to dead node 3 took {:?}", t1.elapsed());
    assert!(e.to_string().contains("down"), "{e}");

    // The view without node 3, then node 3 restarted: a new incarnation and a new view.
    eventually(Duration::from_secs(5), "a view without node 3", async || orb.view().members.iter().all(|m| m.node != 3)).await;
    let view_without = orb.view().number;
    assert!(view_without > view_before.number);
    let out = ssi_testkit::ok(&["up", "--dir", c.dir_str()]);
    assert!(out.contains("restarted node(s) [3]"), "{out}");
    eventually(Duration::from_secs(5), "node 3 back in the view", async || orb.view().members.iter().any(|m| m.node == 3)).await;
    let v = orb.view();
    assert!(v.number > view_without, "a new view number: {} after {view_without}", v.number);
    let inc_after = v.members.iter().find(|m| m.node == 3).unwrap().incarnation;
    assert!(inc_after > inc_before, "a new incarnation: {inc_after:x} after {inc_before:x}");
    // Every node saw the same sequence: node 1's own record of views agrees.
    let views = d1.views(Empty {}).await.unwrap();
    let last = views.views.last().unwrap();
    assert_eq!(last.number, v.number);
    assert_eq!(last.nodes, vec![1, 2, 3]);
    assert!(views.views.iter().any(|x| x.number == view_without && x.nodes == vec![1, 2]));
    assert_eq!(diag(&orb, 3).await.echo(Blob { data: b"back".to_vec().into() }).await.unwrap().data.as_ref(), b"back");
}

#[tokio::test(flavor = "current_thread")]
async fn unauthenticated_peers_invoke_nothing_and_malformed_frames_get_an_error() {
    let c = Cluster::up("auth", 2);
    let addr = c.addr(1);
    let key = c.key();
    let orb = ssi_node::tool::connect(&c.config()).await.unwrap();
    let d1 = diag(&orb, 1).await;
    let sink = orb.resolve(1, "diag").await.unwrap().objref().object;

    // A peer with the wrong key: the daemon's challenge does not verify...
    let wrong = ClusterKey::parse(&ClusterKey::generate_hex()).unwrap();
    let e = RawPeer::connect(&addr, "local", &wrong).await.err().expect("refused");
    assert!(matches!(e, ssi_orb::LinkError::Unverified(_)), "{e}");
    // ...and if it presses on, its proof is refused and what it sent never runs.
    let mut imp = RawPeer::connect_unverified(&addr, "local", &wrong).await.unwrap();
    imp.send(rawpeer::request(Kind::Oneway, 1, 1, sink, 1, Default::default()));
    let m = imp.recv(Duration::from_secs(2)).await.unwrap();
    assert_eq!(m.header.kind, Kind::Error as i32);
    assert!(m.header.message.contains("authentication failed"), "{}", m.header.message);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(d1.sink_count(Empty {}).await.unwrap().n, 0, "the impostor's invocation must not run");

    // An authenticated peer sends a malformed frame: an ERROR naming the problem.
    let mut p = RawPeer::connect(&addr, "local", &key).await.unwrap();
    p.send_raw(bytes::Bytes::from_static(b"\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00short")).await.unwrap();
    let m = p.recv(Duration::from_secs(2)).await.unwrap();
    assert_eq!(m.header.kind, Kind::Error as i32);
    assert!(m.header.message.contains("malformed frame"), "{}", m.header.message);
    // A frame with an undecodable header.
    let mut p = RawPeer::connect(&addr, "local", &key).await.unwrap();
    p.send_raw(bytes::Bytes::from_static(b"\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff")).await.unwrap();
    let m = p.recv(Duration::from_secs(2)).await.unwrap();
    assert!(m.header.message.contains("undecodable header"), "{}", m.header.message);

    // The daemon still serves, over the ORB and its control socket.
    assert_eq!(d1.echo(Blob { data: b"still here".to_vec().into() }).await.unwrap().data.as_ref(), b"still here");
    let st = ssi_testkit::ok(&["status", "--json", "--dir", c.dir_str()]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    ssi_testkit::golden::assert_shape("status", std::slice::from_ref(&v));
    assert_eq!(v["nodes"][0]["state"], "up");
    assert_eq!(v["nodes"][1]["state"], "up");
}
