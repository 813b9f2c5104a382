//! The gateway's packet dispatcher on a `--netns` cluster (4 nodes, node 2 the gateway): real
//! namespaces, the real TC eBPF program (or nftables, or the user-space proxy), unmodified
//! servers started with `ssi run`, clients in `ext` that reach the cluster only at its global
//! address. Needs root; in CI (`CI=true`) its absence fails the tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ssi_testkit::{bin, ok, required, ssi, NetCluster};
use ssi_web::nginx::{Nginx, Site};

/// HTTP clients in `ext`, one new connection per request to the global address: `count N`
/// requests, or `for SECONDS` (to port 80, or the third argument). One line per request: `unix-time status node` or
/// `unix-time ERR class`.
const CLIENT: &str = r#"
import http.client, sys, time
mode, arg = sys.argv[1], float(sys.argv[2])
port = int(sys.argv[3]) if len(sys.argv) > 3 else 80
end = time.time() + arg if mode == 'for' else None
n = 0
while (end is not None and time.time() < end) or (end is None and n < arg):
    t = time.time()
    try:
        c = http.client.HTTPConnection('192.168.77.1', port, timeout=5)
        c.request('GET', '/', headers={'Connection': 'close'})
        r = c.getresponse(); r.read()
        print(f"{t:.4f} {r.status} {r.getheader('X-Node')}")
        c.close()
    except Exception as e:
        print(f"{t:.4f} ERR {type(e).__name__}")
    n += 1
"#;

#[derive(Debug)]
struct Answer {
    at: f64,
    node: Option<u32>,
    /// The status, or the class of the error.
    what: String,
}

fn answers(out: &str) -> Vec<Answer> {
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Answer { at: f[0].parse().unwrap(), node: (f[1] == "200").then(|| f[2].parse().unwrap()), what: f[1..].join(" ") }
        })
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The file at `path` once it holds `what` (or after 5 s, as it is then).
fn wait_for_line(path: &Path, what: &str) -> String {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) || t0.elapsed() > Duration::from_secs(5) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// nginx on node `n` as a member of the service "web" on port 80, serving `root`.
fn web_member(c: &NetCluster, n: u32, root: &Path) -> Nginx {
    Nginx::start(Path::new(bin()), &c.dir, &c.dir.join(format!("nginx{n}")), &Site { node: n, port: 80, root, service: Some("web") })
        .unwrap()
}

fn doc_root(dir: &Path) -> PathBuf {
    let root = dir.join("www");
    ssi_web::nginx::paper_document(&root).unwrap();
    root
}

/// A scalable service of nginx on the three nodes that are not the gateway: 3,000
/// connections from `ext` spread evenly; one node's nginx killed stops getting connections
/// within a second, and no request fails after that second.
#[test]
fn connections_to_the_global_address_spread_over_a_service_and_follow_its_listeners() {
    if !required("root", nix::unistd::geteuid().is_root()) {
        return;
    }
    let c = NetCluster::up("dispatch", "ebpf");
    assert_eq!(c.mechanism(), "ebpf", "the TC program loads here");
    let root = doc_root(&c.dir);
    let mut servers: BTreeMap<u32, Nginx> = [1u32, 3, 4].into_iter().map(|n| (n, web_member(&c, n, &root))).collect();
    c.wait_steering("tcp/80 rr [10.99.0.1 10.99.0.3 10.99.0.4]");

    let got = answers(&c.ext_python(CLIENT, &["count", "3000"]));
    assert_eq!(got.len(), 3000);
    let mut per_node: BTreeMap<u32, u64> = BTreeMap::new();
    for a in &got {
        *per_node.entry(a.node.expect("every request answered")).or_default() += 1;
    }
    eprintln!(
        "3,000 connections through the gateway: {per_node:?} (answers), logs {:?}",
        servers.values().map(|s| (s.node, s.requests())).collect::<Vec<_>>()
    );
    for (n, s) in &servers {
        let logged = s.requests();
        assert_eq!(logged, per_node[n], "node {n}'s own log agrees with the answers");
        assert!((950..=1050).contains(&logged), "node {n} served {logged} of 3,000: not within ±5% of even");
    }

    // Kill node 4's nginx while clients keep connecting.
    let client = Command::new(bin())
        .args(["ext", "--dir", c.d(), "--", "python3", "-c", CLIENT, "for", "5"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let killed_at = unix_now();
    servers.get_mut(&4).unwrap().kill().unwrap();
    let out = client.wait_with_output().unwrap();
    let got = answers(&String::from_utf8_lossy(&out.stdout));
    let failed: Vec<f64> = got.iter().filter(|a| a.node.is_none()).map(|a| a.at - killed_at).collect();
    let last_from_4 = got.iter().filter(|a| a.node == Some(4)).map(|a| a.at - killed_at).fold(f64::MIN, f64::max);
    let after: Vec<&Answer> = got.iter().filter(|a| a.at > killed_at + 1.0).collect();
    eprintln!(
        "kill of node 4's nginx: {} requests, {} failed ({:?}), the last {:.3} s after the kill; last answer from node 4 at {last_from_4:.3} s; {} requests after the first second",
        got.len(),
        failed.len(),
        got.iter().filter(|a| a.node.is_none()).map(|a| a.what.as_str()).collect::<std::collections::BTreeSet<_>>(),
        failed.iter().copied().fold(0.0, f64::max),
        after.len()
    );
    // A request under way on node 4 when it is killed may fail (reset): it started at most a
    // request's time before the kill. Nothing started earlier fails.
    let early: Vec<&Answer> = got.iter().filter(|a| a.at < killed_at - 0.5 && a.node.is_none()).collect();
    assert!(early.is_empty(), "no failure before the kill: {early:?} (kill at {killed_at})");
    assert!(failed.iter().all(|&t| t < 1.0), "a request failed more than 1 s after the kill: {failed:?}");
    assert!(after.len() > 100, "clients kept going after the kill");
    assert!(after.iter().all(|a| matches!(a.node, Some(1) | Some(3))), "after the first second, only nodes 1 and 3 answer");
}

/// A listener on a node that is not the gateway is reached at the global address, answers
/// the client directly (it sees the client's own address), TCP and UDP; and a node's own
/// outgoing connection to `ext` comes from the global address and gets its answers.
#[test]
fn the_global_address_reaches_listeners_on_any_node_and_nodes_speak_from_it() {
    if !required("root", nix::unistd::geteuid().is_root()) {
        return;
    }
    let c = NetCluster::up("dispatch-dsr", "ebpf");
    assert_eq!(c.mechanism(), "ebpf");
    let log = c.dir.join("http.log");
    let mut server = Command::new(bin())
        .args(["run", "--dir", c.d(), "-n", "3", "--cwd", "/", "--", "python3", "-m", "http.server", "8080"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let udp = "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 5300))\nwhile True:\n d,a=s.recvfrom(100)\n s.sendto(b'node4 '+d, a)";
    let mut echo = Command::new(bin())
        .args(["run", "--dir", c.d(), "-n", "4", "--cwd", "/", "--", "python3", "-c", udp])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    c.wait_steering("tcp/8080 rr [10.99.0.3]");
    c.wait_steering("udp/5300 rr [10.99.0.4]");

    let curl =
        ok(&["ext", "--dir", c.d(), "--", "curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", "http://192.168.77.1:8080/"]);
    assert_eq!(curl.trim(), "200", "curl from ext reaches node 3 at the global address");
    // The server's log comes back through `ssi run`'s relay of its stderr: a moment later.
    let seen = wait_for_line(&log, "192.168.77.2 - -");
    assert!(seen.contains("192.168.77.2 - -"), "node 3 sees the client's own address (no NAT, no proxy): {seen}");

    // A connected UDP socket takes answers only from the address it sent to.
    let ask = "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\ns.connect(('192.168.77.1', 5300))\ns.send(b'ping')\nprint(s.recv(100).decode())";
    assert_eq!(c.ext_python(ask, &[]).trim(), "node4 ping");

    // Outgoing: node 1 fetches from a server in ext, which sees the global address.
    let ext_log = c.dir.join("ext-http.log");
    let mut ext_server = Command::new(bin())
        .args(["ext", "--dir", c.d(), "--", "python3", "-m", "http.server", "9000"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&ext_log).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let code = loop {
        let out = ssi(&[
            "rexec",
            "--dir",
            c.d(),
            "-n",
            "1",
            "--cwd",
            "/",
            "--",
            "curl",
            "-s",
            "-m",
            "3",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://192.168.77.2:9000/",
        ]);
        let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if code == "200" || t0.elapsed() > Duration::from_secs(10) {
            break code;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = ext_server.kill();
    let _ = ext_server.wait();
    assert_eq!(code, "200", "node 1 reaches ext, and the answers find their way back to it");
    let seen = wait_for_line(&ext_log, "192.168.77.1 - -");
    assert!(seen.contains("192.168.77.1 - -"), "ext sees the cluster's global address: {seen}");

    for p in [&mut server, &mut echo] {
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// The fallbacks steer too: nftables DNAT and the user-space proxy each take connections from
/// `ext` to a service on two nodes, alternately.
#[test]
fn the_nftables_and_proxy_fallbacks_steer_a_service() {
    if !required("root", nix::unistd::geteuid().is_root()) || !required("nft", Command::new("nft").arg("--version").output().is_ok()) {
        return;
    }
    for mode in ["nft", "proxy"] {
        let c = NetCluster::up(&format!("dispatch-{mode}"), mode);
        assert_eq!(c.mechanism(), mode);
        let root = doc_root(&c.dir);
        let _servers: Vec<Nginx> = [1u32, 3].into_iter().map(|n| web_member(&c, n, &root)).collect();
        c.wait_steering("tcp/80 rr [10.99.0.1 10.99.0.3]");
        let got = answers(&c.ext_python(CLIENT, &["count", "200"]));
        let from = |n| got.iter().filter(|a| a.node == Some(n)).count();
        eprintln!("{mode}: 200 connections: node 1 {}, node 3 {}", from(1), from(3));
        assert_eq!(from(1) + from(3), 200, "{mode}: every request answered");
        assert!((90..=110).contains(&from(1)), "{mode}: round robin over two nodes");
    }
}

/// A tiny HTTP server that answers with the node it runs on (header X-Node).
fn node_server(port: u16) -> String {
    format!(
        "import http.server,os\nclass H(http.server.BaseHTTPRequestHandler):\n def do_GET(s):\n  b=os.environ['SSI_NODE'].encode()\n  s.send_response(200); s.send_header('X-Node', os.environ['SSI_NODE']); s.send_header('Content-Length', str(len(b))); s.end_headers(); s.wfile.write(b)\n def log_message(s, *a): pass\nhttp.server.HTTPServer(('0.0.0.0', {port}), H).serve_forever()"
    )
}

/// The other two policies: `weighted` hands out connections in proportion to the weights
/// given to `ssi run --weight`; `sticky` keeps a client on one node.
#[test]
fn weighted_and_sticky_services() {
    if !required("root", nix::unistd::geteuid().is_root()) {
        return;
    }
    let c = NetCluster::up("dispatch-policies", "ebpf");
    let mut servers = Vec::new();
    for (n, port, policy, weight) in
        [(1u32, 81u16, "weighted", "3"), (3, 81, "weighted", "1"), (1, 82, "sticky", "1"), (3, 82, "sticky", "1"), (4, 82, "sticky", "1")]
    {
        let code = node_server(port);
        let svc = format!("svc{port}");
        let args = [
            "run",
            "--dir",
            c.d(),
            "-n",
            &n.to_string(),
            "--service",
            svc.as_str(),
            "--policy",
            policy,
            "--weight",
            weight,
            "--cwd",
            "/",
            "--",
            "python3",
            "-c",
            code.as_str(),
        ];
        servers.push(Command::new(bin()).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    }
    c.wait_steering("tcp/81 rr [10.99.0.1 10.99.0.1 10.99.0.3 10.99.0.1]");
    c.wait_steering("tcp/82 sticky [10.99.0.1 10.99.0.3 10.99.0.4]");
    let got = answers(&c.ext_python(CLIENT, &["count", "400", "81"]));
    let from = |n| got.iter().filter(|a| a.node == Some(n)).count();
    eprintln!("weighted 3:1 over 400 connections: node 1 {}, node 3 {}", from(1), from(3));
    assert_eq!((from(1), from(3)), (300, 100), "weights 3 and 1");
    let got = answers(&c.ext_python(CLIENT, &["count", "100", "82"]));
    let nodes: std::collections::BTreeSet<Option<u32>> = got.iter().map(|a| a.node).collect();
    eprintln!("sticky: 100 connections from one client went to {nodes:?}");
    assert_eq!(nodes.len(), 1, "one client, one node: {nodes:?}");
    assert!(nodes.iter().all(|n| n.is_some()), "answered: {nodes:?}");
    for mut p in servers {
        let _ = p.kill();
        let _ = p.wait();
    }
}
