//! The packet dispatcher of gateway nodes(the paper's §2.1 packet filter): the
//! gateway owns the cluster's global address, and each connection (or UDP flow) that arrives
//! for it is steered to a node listening on its port, as the SAP table says.
//!
//! The SAP table is turned into a steering [`Table`] — for every (protocol, port), the
//! interconnect addresses of the listening nodes as slots, weighted, and a policy — and given
//! to one of three steering mechanisms, the best this node can run:
//! - [`ebpf`]: a TC program on the external interface; flow table in a BPF map, packets
//!   forwarded unchanged at layer 2, direct server return (the nodes answer the client
//!   themselves; they hold the global address on their loopback);
//! - [`nft`]: nftables DNAT with `numgen`/`jhash` maps (conntrack is the flow table; replies
//!   come back through the gateway to be un-NATed);
//! - [`proxy`]: a user-space TCP forwarder, the last resort (the nodes see the gateway as the
//!   client).
//!
//! [`spawn`] keeps the mechanism in step with the SAP: it follows the table
//! ([`SapClient::follow`]), so a listener that appears or dies is steered to (or away from) as
//! soon as the SAP knows; a mechanism that failed to apply a table is retried every
//! [`RETRY_EVERY`].

pub mod ebpf;
pub mod nft;
pub mod proxy;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::proto::Entry;
use crate::sap::SapClient;

/// How often a table the mechanism refused is tried again (and the stop flag looked at).
pub const RETRY_EVERY: Duration = Duration::from_millis(200);
/// The most slots (weighted listeners) one service may have in the steering table.
pub const MAX_SLOTS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Slot after slot (weights repeat a node's slot).
    RoundRobin,
    /// The client's address picks the slot: one client, one node.
    Sticky,
}

/// Where one (protocol, port) is steered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Steer {
    pub policy: Policy,
    /// Interconnect addresses, a node as many times as its weight, interleaved.
    pub slots: Vec<Ipv4Addr>,
}

/// (protocol, port) → where its connections go.
pub type Table = BTreeMap<(u32, u16), Steer>;

/// The steering table for the SAP's `entries`; `addrs` maps node ids to interconnect
/// addresses (listeners on unknown nodes are left out).
pub fn table(entries: &[Entry], addrs: &BTreeMap<u32, Ipv4Addr>) -> Table {
    let mut t = Table::new();
    for e in entries {
        let Ok(port) = u16::try_from(e.port) else { continue };
        // One backend per node: several listening processes of a node are one destination.
        let mut weights: BTreeMap<Ipv4Addr, u32> = BTreeMap::new();
        for l in &e.listeners {
            if let Some(&a) = addrs.get(&l.node) {
                let w = if e.policy == "weighted" { l.weight.max(1) } else { 1 };
                let cur = weights.entry(a).or_insert(0);
                *cur = (*cur).max(w);
            }
        }
        if weights.is_empty() {
            continue;
        }
        let policy = if e.policy == "sticky" { Policy::Sticky } else { Policy::RoundRobin };
        t.insert((e.proto, port), Steer { policy, slots: interleave(&weights) });
    }
    t
}

/// Smooth weighted round robin over `weights` (nginx's: each turn, every node gains its weight,
/// the richest is picked and pays the total), scaled down to at most [`MAX_SLOTS`]: the
/// sequence of one full turn, with a heavy node's slots spread out rather than bunched.
fn interleave(weights: &BTreeMap<Ipv4Addr, u32>) -> Vec<Ipv4Addr> {
    let g = weights.values().fold(0, |g, &w| gcd(g, w));
    let mut w: Vec<(Ipv4Addr, i64)> = weights.iter().map(|(&a, &x)| (a, (x / g.max(1)) as i64)).collect();
    let total: i64 = w.iter().map(|x| x.1).sum();
    if total > MAX_SLOTS as i64 {
        // Keep the proportions roughly; every node keeps at least one slot.
        let budget = MAX_SLOTS as i64 - w.len() as i64;
        for x in &mut w {
            x.1 = 1 + x.1 * budget.max(0) / total;
        }
    }
    let total: i64 = w.iter().map(|x| x.1).sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, x) in current.iter_mut().zip(&w) {
            *c += x.1;
        }
        let best = (0..w.len()).max_by_key(|&i| (current[i], std::cmp::Reverse(i))).expect("a node");
        current[best] -= total;
        out.push(w[best].0);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// What the dispatcher needs to know about the gateway it runs on.
#[derive(Clone, Debug)]
pub struct Site {
    /// The cluster's global address, on the external interface.
    pub global: Ipv4Addr,
    /// This gateway's own interconnect address (its ORB address).
    pub self_addr: Ipv4Addr,
    /// The interface that carries the global address, and the interconnect's.
    pub external: Interface,
    pub interconnect: Interface,
    /// Every node's interconnect address (their ephemeral ranges are steered back to them).
    pub nodes: BTreeMap<u32, Ipv4Addr>,
}

#[derive(Clone, Debug)]
pub struct Interface {
    pub name: String,
    pub index: u32,
}

impl Site {
    /// Finds the interfaces that carry `global` and `self_addr` in this network namespace.
    pub fn discover(global: Ipv4Addr, self_addr: Ipv4Addr, nodes: BTreeMap<u32, Ipv4Addr>) -> Result<Site, DispatchError> {
        let find = |a: Ipv4Addr, what: &'static str| -> Result<Interface, DispatchError> {
            let addrs = nix::ifaddrs::getifaddrs().map_err(|errno| DispatchError::Interfaces { what: "getifaddrs".into(), errno })?;
            for i in addrs {
                if i.address.as_ref().and_then(|s| s.as_sockaddr_in()).is_some_and(|s| s.ip() == a) {
                    let index = nix::net::if_::if_nametoindex(i.interface_name.as_str())
                        .map_err(|errno| DispatchError::Interfaces { what: i.interface_name.clone(), errno })?;
                    return Ok(Interface { name: i.interface_name, index });
                }
            }
            Err(DispatchError::NoInterface { what, addr: a })
        };
        Ok(Site {
            global,
            self_addr,
            external: find(global, "global address")?,
            interconnect: find(self_addr, "interconnect address")?,
            nodes,
        })
    }
}

/// A way of steering packets that can be told the table.
pub trait Steering {
    /// "ebpf", "nft" or "proxy".
    fn name(&self) -> &'static str;
    /// Steers by `table` from now on (the whole table each time).
    fn apply(&mut self, table: &Table) -> Result<(), DispatchError>;
}

/// Which mechanism a gateway uses (`[cluster] dispatch` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// The best that works here: eBPF, else nftables, else the proxy.
    #[default]
    Auto,
    Ebpf,
    Nft,
    Proxy,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Ebpf => "ebpf",
            Mode::Nft => "nft",
            Mode::Proxy => "proxy",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Mode, UnknownMode> {
        match s {
            "auto" => Ok(Mode::Auto),
            "ebpf" => Ok(Mode::Ebpf),
            "nft" => Ok(Mode::Nft),
            "proxy" => Ok(Mode::Proxy),
            _ => Err(UnknownMode(s.to_string())),
        }
    }
}

/// A dispatcher name that is none of them.
#[derive(Debug, thiserror::Error)]
#[error("dispatch {0:?}: expected auto, ebpf, nft or proxy")]
pub struct UnknownMode(pub String);

/// Why a dispatcher could not start or steer.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no interface of this node has the {what} {addr}")]
    NoInterface { what: &'static str, addr: Ipv4Addr },
    #[error("{what}: {errno}")]
    Interfaces { what: String, errno: nix::Error },
    #[error("{what}: {source}")]
    Bpf { what: String, source: libbpf_rs::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("nft: {0}")]
    Nft(String),
    #[error("the {0} thread is gone")]
    ThreadDied(&'static str),
}

/// Starts the mechanism `mode` asks for on `site`; in `Auto`, says in `fallbacks` why each
/// better one could not be used.
pub fn start(mode: Mode, site: &Site, fallbacks: &mut Vec<String>) -> Result<Box<dyn Steering>, DispatchError> {
    if matches!(mode, Mode::Auto | Mode::Ebpf) {
        match ebpf::Ebpf::attach(site) {
            Ok(s) => return Ok(Box::new(s)),
            Err(e) if mode == Mode::Ebpf => return Err(e),
            Err(e) => fallbacks.push(format!("ebpf: {e}")),
        }
    }
    if matches!(mode, Mode::Auto | Mode::Nft) {
        match nft::Nft::install(site) {
            Ok(s) => return Ok(Box::new(s)),
            Err(e) if mode == Mode::Nft => return Err(e),
            Err(e) => fallbacks.push(format!("nft: {e}")),
        }
    }
    Ok(Box::new(proxy::Proxy::start(site)?))
}

/// A running dispatcher: stopping it takes its steering away (the TC program detached, the
/// nftables table deleted, the proxy closed), so a stopped gateway steers nothing stale.
pub struct Dispatcher {
    pub mechanism: &'static str,
    /// Why better mechanisms were passed over.
    pub passed_over: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Dispatcher {
    /// Stops following the SAP and removes the steering; waits up to a second for it.
    pub fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.done.recv_timeout(Duration::from_secs(1));
    }
}

/// Runs the dispatcher of this gateway on a thread of its own (the BPF skeleton is not
/// `Send`): starts the mechanism `mode` asks for, then keeps it in step with the SAP table
/// until stopped, asking the SAP through the daemon's runtime `rt`.
pub fn spawn(mode: Mode, site: Site, sap: SapClient, rt: tokio::runtime::Handle) -> Result<Dispatcher, DispatchError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done) = std::sync::mpsc::channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    std::thread::Builder::new()
        .name("netsap-dispatch".into())
        .spawn(move || {
            let mut fallbacks = Vec::new();
            match start(mode, &site, &mut fallbacks) {
                Ok(steering) => {
                    let _ = tx.send(Ok((steering.name(), fallbacks)));
                    follow(&rt, &sap, &site.nodes, steering, &stopping);
                    let _ = done_tx.send(());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
        .map_err(|source| DispatchError::Io { what: "dispatcher thread".into(), source })?;
    let (mechanism, passed_over) = rx.recv().map_err(|_| DispatchError::ThreadDied("dispatcher"))??;
    Ok(Dispatcher { mechanism, passed_over, stop, done })
}

/// Keeps `steering` in step with the SAP table until `stop`; then drops it (which removes it).
fn follow(
    rt: &tokio::runtime::Handle,
    sap: &SapClient,
    addrs: &BTreeMap<u32, Ipv4Addr>,
    mut steering: Box<dyn Steering>,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut current: Option<Table> = None;
    let mut sap_table = sap.follow(rt);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = table(&sap_table.borrow_and_update().clone(), addrs);
        if current.as_ref() != Some(&t) {
            match steering.apply(&t) {
                Ok(()) => {
                    tracing::info!(mechanism = steering.name(), "dispatcher steers {}", describe(&t));
                    current = Some(t);
                }
                Err(e) => tracing::warn!(mechanism = steering.name(), "dispatcher: {e}"),
            }
        }
        let changed = rt.block_on(async { tokio::time::timeout(RETRY_EVERY, sap_table.changed()).await });
        if matches!(changed, Ok(Err(_))) {
            std::thread::sleep(RETRY_EVERY);
        }
    }
    drop(steering);
}

/// One line for the log: `tcp/80 rr [10.99.0.1 10.99.0.3], ...`.
pub fn describe(t: &Table) -> String {
    if t.is_empty() {
        return "nothing".into();
    }
    t.iter()
        .map(|((proto, port), s)| {
            let slots: Vec<String> = s.slots.iter().map(|a| a.to_string()).collect();
            format!(
                "{}/{port} {} [{}]",
                crate::sap::proto_name(*proto),
                if s.policy == Policy::Sticky { "sticky" } else { "rr" },
                slots.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Listener;

    fn entry(port: u32, policy: &str, listeners: &[(u32, u32)]) -> Entry {
        Entry {
            proto: crate::sap::TCP,
            port,
            service: "web".into(),
            policy: policy.into(),
            listeners: listeners.iter().map(|&(node, weight)| Listener { node, pid: node * 100, weight, incarnation: 1 }).collect(),
        }
    }

    fn addrs() -> BTreeMap<u32, Ipv4Addr> {
        (1..=4).map(|n| (n, Ipv4Addr::new(10, 99, 0, n as u8))).collect()
    }

    #[test]
    fn round_robin_gives_each_node_one_slot_whatever_its_weight() {
        let t = table(&[entry(80, "rr", &[(1, 5), (3, 1), (3, 1), (9, 1)])], &addrs());
        let s = &t[&(crate::sap::TCP, 80)];
        assert_eq!(s.policy, Policy::RoundRobin);
        assert_eq!(s.slots, vec![Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 3)], "node 9 is unknown; node 3 once");
    }

    #[test]
    fn weights_are_reduced_and_spread() {
        let t = table(&[entry(80, "weighted", &[(1, 4), (2, 2), (3, 2)])], &addrs());
        let s = &t[&(crate::sap::TCP, 80)].slots;
        assert_eq!(s.len(), 4, "4:2:2 is 2:1:1");
        assert_eq!(s.iter().filter(|a| a.octets()[3] == 1).count(), 2);
        assert_ne!(s[0], s[1], "the heavy node's slots are not bunched");
        let big = table(&[entry(80, "weighted", &[(1, 1000), (2, 1)])], &addrs());
        let s = &big[&(crate::sap::TCP, 80)].slots;
        assert!(s.len() <= MAX_SLOTS && s.contains(&Ipv4Addr::new(10, 99, 0, 2)), "capped, and the light node keeps a slot");
    }

    #[test]
    fn sticky_and_empty_entries() {
        let t = table(&[entry(80, "sticky", &[(2, 1)]), entry(81, "rr", &[(7, 1)])], &addrs());
        assert_eq!(t[&(crate::sap::TCP, 80)].policy, Policy::Sticky);
        assert!(!t.contains_key(&(crate::sap::TCP, 81)), "no known node listens");
        assert_eq!(describe(&t), "tcp/80 sticky [10.99.0.2]");
    }

    #[test]
    fn modes_parse() {
        assert_eq!("ebpf".parse::<Mode>().unwrap(), Mode::Ebpf);
        assert!("ipvs".parse::<Mode>().unwrap_err().to_string().contains("expected auto"));
    }
}
