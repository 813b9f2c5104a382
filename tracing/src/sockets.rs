//! Which of a daemon's file descriptors are ORB connections, and to which node: read from
//! /proc (the fd's socket inode, then the TCP table), matched against the nodes' ORB addresses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A traced daemon: its node, pid and the address its ORB listens on.
#[derive(Clone, Debug)]
pub struct Daemon {
    pub node: u32,
    pub pid: u32,
    pub orb_addr: SocketAddr,
}

/// (pid, fd) → peer node, for every ORB connection between traced daemons found now.
pub fn resolve(daemons: &[Daemon]) -> HashMap<(u32, u32), u32> {
    // Every daemon's TCP sockets: (pid, fd, local, remote).
    let mut socks = Vec::new();
    for d in daemons {
        let table = tcp_table(d.pid);
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", d.pid)) else { continue };
        for e in fds.flatten() {
            let Ok(fd) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(target) = std::fs::read_link(e.path()) else { continue };
            let t = target.to_string_lossy();
            let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).and_then(|i| i.parse::<u64>().ok()) else {
                continue;
            };
            if let Some(&(local, remote)) = table.get(&inode) {
                socks.push((d.node, d.pid, fd, local, remote));
            }
        }
    }
    let listen: HashMap<SocketAddr, u32> = daemons.iter().map(|d| (d.orb_addr, d.node)).collect();
    let by_local: HashMap<SocketAddr, u32> = socks.iter().map(|s| (s.3, s.0)).collect();
    let mut out = HashMap::new();
    for &(node, pid, fd, local, remote) in &socks {
        let peer = if let Some(&p) = listen.get(&remote) {
            Some(p) // we dialed it
        } else if listen.get(&local) == Some(&node) {
            by_local.get(&remote).copied() // it dialed us: find whose socket that is
        } else {
            None
        };
        if let Some(p) = peer.filter(|&p| p != node) {
            out.insert((pid, fd), p);
        }
    }
    out
}

/// inode → (local, remote) from /proc/PID/net/tcp and tcp6 (the daemon's network namespace).
fn tcp_table(pid: u32) -> HashMap<u64, (SocketAddr, SocketAddr)> {
    let mut m = HashMap::new();
    for (f, v6) in [("tcp", false), ("tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")) else { continue };
        for line in text.lines().skip(1) {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() < 10 {
                continue;
            }
            let (Some(l), Some(r), Ok(inode)) = (parse_addr(w[1], v6), parse_addr(w[2], v6), w[9].parse::<u64>()) else { continue };
            m.insert(inode, (l, r));
        }
    }
    m
}

/// "0100007F:1F90" (IPv4, host-order hex words) or the 32-digit IPv6 form.
fn parse_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let ip = if !v6 {
        IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(a, 16).ok()?.swap_bytes()))
    } else {
        if a.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for i in 0..4 {
            let w = u32::from_str_radix(&a[i * 8..i * 8 + 8], 16).ok()?.swap_bytes();
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        let v6 = Ipv6Addr::from(b);
        v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_addresses_parse() {
        assert_eq!(parse_addr("0100007F:1F90", false), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(parse_addr("0000000000000000FFFF00000100007F:0050", true), Some("127.0.0.1:80".parse().unwrap()));
        assert_eq!(parse_addr("00000000000000000000000001000000:0016", true), Some("[::1]:22".parse().unwrap()));
        assert_eq!(parse_addr("zz:1", false), None);
    }
}
