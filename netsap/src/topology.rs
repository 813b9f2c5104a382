//! The network of a local cluster under `ssi up --netns`: each node in its own
//! network namespace, all of them on one bridge (the interconnect), and an `ext` namespace
//! for external clients that reaches the cluster only through the gateway node — the paper's
//! Figure 2.1 web setup.
//!
//! ```text
//!   PREFIX-n1 ─ eth0 ┐                        PREFIX-ext
//!   PREFIX-n2 ─ eth0 ┼─ br0 (PREFIX-lan)      eth0 192.168.77.2, default via .1
//!   ...              ┘                           │
//!   gateway: ext0 192.168.77.1 (the global address) ─┘
//! ```
//! Nodes are 10.99.0.N/24 on the interconnect. The bridge lives in a namespace of its own,
//! so nothing is added to the host's network. From `ext` the only address of the cluster
//! that answers is the global one: the gateway's dispatcher steers connections for it to the
//! listening nodes, which hold the global address on their loopback and answer directly
//! (their replies are the only traffic the gateway forwards to `ext`). Built with iproute2 (`ip`);
//! `destroy` deletes every namespace the topology made, which takes their links with them.

use std::net::Ipv4Addr;
use std::process::Command;

/// The interconnect's addresses: node N is `INTERCONNECT.N`.
pub const INTERCONNECT: [u8; 3] = [10, 99, 0];
/// The gateways' external side: the global address, and `ext`'s own.
pub const GLOBAL_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
pub const EXT_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);

/// Why the network of a `--netns` cluster could not be made, changed or joined.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("--netns numbers nodes 1..=254 on its interconnect")]
    NodeRange,
    #[error("no gateway")]
    NoGateway,
    #[error("{cmd}: {source} (iproute2 is needed for --netns)")]
    NoIp { cmd: String, source: std::io::Error },
    #[error("{cmd}: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("network namespace {path}: {source}")]
    Namespace { path: String, source: std::io::Error },
    #[error("joining {path}: {errno}")]
    Join { path: String, errno: nix::Error },
}

/// The namespaces of one local cluster, named after a prefix unique to its directory.
#[derive(Clone, Debug)]
pub struct Topology {
    pub prefix: String,
    pub nodes: Vec<u32>,
    pub gateways: Vec<u32>,
}

impl Topology {
    pub fn new(prefix: &str, nodes: &[u32], gateways: &[u32]) -> Topology {
        Topology { prefix: prefix.to_string(), nodes: nodes.to_vec(), gateways: gateways.to_vec() }
    }
    pub fn node_ns(&self, n: u32) -> String {
        format!("{}-n{n}", self.prefix)
    }
    pub fn lan_ns(&self) -> String {
        format!("{}-lan", self.prefix)
    }
    pub fn ext_ns(&self) -> String {
        format!("{}-ext", self.prefix)
    }
    pub fn node_ip(n: u32) -> Ipv4Addr {
        Ipv4Addr::new(INTERCONNECT[0], INTERCONNECT[1], INTERCONNECT[2], n as u8)
    }
    /// Every namespace this topology makes.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.iter().map(|&n| self.node_ns(n)).collect();
        v.push(self.lan_ns());
        v.push(self.ext_ns());
        v
    }

    /// Makes the namespaces, links and addresses. On failure, what was made is removed.
    pub fn create(&self) -> Result<(), TopologyError> {
        if self.nodes.iter().any(|&n| n == 0 || n > 254) {
            return Err(TopologyError::NodeRange);
        }
        let r = self.create_inner();
        if r.is_err() {
            self.destroy();
        }
        r
    }

    fn create_inner(&self) -> Result<(), TopologyError> {
        let lan = self.lan_ns();
        for ns in self.namespaces() {
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lan, "link", "set", "br0", "up"])?;
        for &n in &self.nodes {
            let ns = self.node_ns(n);
            let port = format!("n{n}");
            ip(&["-n", &lan, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &lan, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &lan, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", Self::node_ip(n)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        // The external side: one link from `ext` to the first gateway, which holds the
        // cluster's global address.
        if let Some(&g) = self.gateways.first() {
            let ext = self.ext_ns();
            let gw = self.node_ns(g);
            ip(&["-n", &ext, "link", "add", "eth0", "type", "veth", "peer", "name", "ext0", "netns", &gw])?;
            ip(&["-n", &gw, "addr", "add", &format!("{GLOBAL_ADDRESS}/24"), "dev", "ext0"])?;
            ip(&["-n", &gw, "link", "set", "ext0", "up"])?;
            ip(&["-n", &ext, "addr", "add", &format!("{EXT_ADDRESS}/24"), "dev", "eth0"])?;
            ip(&["-n", &ext, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ext, "route", "add", "default", "via", &GLOBAL_ADDRESS.to_string()])?;
            self.direct_server_return(g)?;
        }
        Ok(())
    }

    /// What the dispatcher on gateway `g` needs (see `dispatch`): every other node holds the
    /// global address on its loopback (so a steered packet is its own) without answering ARP
    /// for it, and sends its replies to the gateway, which forwards them to `ext` — packets
    /// whose source is the gateway's own global address, hence `accept_local`. Forwarding is
    /// only for those replies and for what the dispatcher steers: `ext` may not reach the
    /// interconnect by routing (except packets nftables DNATed, which it marks).
    fn direct_server_return(&self, g: u32) -> Result<(), TopologyError> {
        let gw = self.node_ns(g);
        for &n in self.nodes.iter().filter(|&&n| n != g) {
            let ns = self.node_ns(n);
            sysctl(&ns, "net/ipv4/conf/all/arp_ignore", "1")?;
            sysctl(&ns, "net/ipv4/conf/all/arp_announce", "2")?;
            ip(&["-n", &ns, "addr", "add", &format!("{GLOBAL_ADDRESS}/32"), "dev", "lo"])?;
            // From the global address: the cluster has one network identity, and the
            // dispatcher sends answers to a node's ephemeral ports back to it.
            ip(&["-n", &ns, "route", "add", "default", "via", &Self::node_ip(g).to_string(), "src", &GLOBAL_ADDRESS.to_string()])?;
        }
        sysctl(&gw, "net/ipv4/ip_forward", "1")?;
        for conf in ["all", "default", "eth0", "ext0"] {
            sysctl(&gw, &format!("net/ipv4/conf/{conf}/rp_filter"), "0")?;
            sysctl(&gw, &format!("net/ipv4/conf/{conf}/accept_local"), "1")?;
        }
        let lan = format!("{}.{}.{}.0/24", INTERCONNECT[0], INTERCONNECT[1], INTERCONNECT[2]);
        let mark = format!("{:#x}", crate::dispatch::nft::MARK);
        ip(&["-n", &gw, "rule", "add", "priority", "100", "iif", "ext0", "fwmark", &mark, "lookup", "main"])?;
        ip(&["-n", &gw, "rule", "add", "priority", "101", "iif", "ext0", "to", &lan, "prohibit"])?;
        Ok(())
    }

    /// Lets `ext` reach node `n`'s own interconnect address through the gateway as a plain
    /// router (`open`), or not any more — the baseline of `ssi bench net`: the same path,
    /// without the dispatcher.
    pub fn route_ext_to(&self, n: u32, open: bool) -> Result<(), TopologyError> {
        let Some(&g) = self.gateways.first() else { return Err(TopologyError::NoGateway) };
        ip(&[
            "-n",
            &self.node_ns(g),
            "rule",
            if open { "add" } else { "del" },
            "priority",
            "99",
            "iif",
            "ext0",
            "to",
            &Self::node_ip(n).to_string(),
            "lookup",
            "main",
        ])
    }

    /// Deletes every namespace of the topology that exists (links and addresses go with
    /// them). Safe to call for a half-made or already-removed topology.
    pub fn destroy(&self) -> usize {
        let existing = list();
        let mut n = 0;
        for ns in self.namespaces() {
            if existing.contains(&ns) && ip(&["netns", "del", &ns]).is_ok() {
                n += 1;
            }
        }
        n
    }
}

/// Where the nodes' ephemeral ranges start, and how many ports each has (the gateway's TC
/// program numbers the ranges the same way).
pub const EPHEMERAL_BASE: u32 = 40000;
pub const EPHEMERAL_SPAN: u32 = 400;

/// Which of the ephemeral ranges is node `n`'s.
pub fn ephemeral_index(n: u32) -> u32 {
    n.saturating_sub(1) % 63
}

/// Node `n`'s ephemeral port range (`ip_local_port_range` of its namespace): 400 ports per
/// node from 40000, disjoint between nodes, so implicit binds never collide.
pub fn ephemeral_range(n: u32) -> (u32, u32) {
    let lo = EPHEMERAL_BASE + ephemeral_index(n) * EPHEMERAL_SPAN;
    (lo, lo + EPHEMERAL_SPAN - 1)
}

/// The named network namespaces (`ip netns list`).
pub fn list() -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.split_whitespace().next().map(String::from)).collect())
        .unwrap_or_default()
}

fn ip(args: &[&str]) -> Result<(), TopologyError> {
    let cmd = || format!("ip {}", args.join(" "));
    let out = Command::new("ip").args(args).output().map_err(|source| TopologyError::NoIp { cmd: cmd(), source })?;
    if !out.status.success() {
        return Err(TopologyError::Failed { cmd: cmd(), stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(())
}

/// Sets `/proc/sys/KEY` (e.g. `net/ipv4/ip_forward`) inside namespace `ns`: the net sysctls
/// are those of the namespace of the process that writes them.
fn sysctl(ns: &str, key: &str, value: &str) -> Result<(), TopologyError> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", &format!("echo {value} > /proc/sys/{key}")])
        .output()
        .map_err(|source| TopologyError::NoIp { cmd: format!("sysctl {key} in {ns}"), source })?;
    if !out.status.success() {
        return Err(TopologyError::Failed {
            cmd: format!("sysctl {key} in {ns}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Joins network namespace `name` (`/run/netns/NAME`) for the calling thread — and so for
/// every thread it starts afterwards. The daemon calls it before it starts any.
pub fn enter(name: &str) -> Result<(), TopologyError> {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).map_err(|source| TopologyError::Namespace { path: path.clone(), source })?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| TopologyError::Join { path, errno: e })
}
