//! Which socket traffic of the traced daemons is an ORB connection between two nodes, told by
//! the connection's addresses: one end is a node's ORB listening address, the other the dialing
//! node's own socket (seen by the recorder too, since every daemon is traced).

use std::collections::HashMap;
use std::net::SocketAddr;

/// A traced daemon: its node, pid and the address its ORB listens on.
#[derive(Clone, Debug)]
pub struct Daemon {
    pub node: u32,
    pub pid: u32,
    pub orb_addr: SocketAddr,
}

/// One connection's traffic in one direction, as the kernel's socket layer counted it.
#[derive(Clone, Copy, Debug)]
pub struct Io {
    pub pid: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub sent: bool,
    pub calls: u64,
    pub bytes: u64,
    /// iovecs the calls passed (recorded with `--syscalls` only).
    pub iovs: u64,
}

/// Each `Io` with the (this node, peer node) pair it belongs to, or None when it is not an
/// ORB connection between traced nodes (bench echo servers, control traffic, ...).
pub fn attribute<'a>(ios: &'a [Io], daemons: &[Daemon]) -> Vec<(&'a Io, Option<(u32, u32)>)> {
    let node_of_pid: HashMap<u32, u32> = daemons.iter().map(|d| (d.pid, d.node)).collect();
    let listen: HashMap<SocketAddr, u32> = daemons.iter().map(|d| (d.orb_addr, d.node)).collect();
    // A dialer's own end: (its local address) → its node.
    let dialer: HashMap<SocketAddr, u32> = ios.iter().filter_map(|io| Some((io.local, *node_of_pid.get(&io.pid)?))).collect();
    ios.iter()
        .map(|io| {
            let me = node_of_pid.get(&io.pid).copied();
            let peer = if let Some(&p) = listen.get(&io.remote) {
                Some(p) // this node dialed the peer's ORB
            } else if me.is_some() && listen.get(&io.local) == me.as_ref() {
                dialer.get(&io.remote).copied() // the peer dialed this node's ORB
            } else {
                None
            };
            let pair = me.zip(peer).filter(|(a, b)| a != b);
            (io, pair)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_of_a_link_are_attributed() {
        let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        let eph: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let daemons = [Daemon { node: 1, pid: 10, orb_addr: a }, Daemon { node: 2, pid: 20, orb_addr: b }];
        let io = |pid, local, remote| Io { pid, local, remote, sent: true, calls: 1, bytes: 1, iovs: 0 };
        // Node 1 dialed node 2 from `eph`; node 2 also talks to some other server.
        let ios = [io(10, eph, b), io(20, b, eph), io(20, "127.0.0.1:41000".parse().unwrap(), other)];
        let got: Vec<_> = attribute(&ios, &daemons).into_iter().map(|(_, p)| p).collect();
        assert_eq!(got, vec![Some((1, 2)), Some((2, 1)), None]);
    }
}
