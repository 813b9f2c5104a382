//! Listen ports for the nodes of a local cluster (and for tests).
//!
//! A port found by binding port 0 and closing again is in the kernel's ephemeral range, where
//! any other process binding port 0 may be handed it before the node binds it. Ports are
//! therefore drawn at random *below* the ephemeral range, where port-0 binds never land, and
//! checked by binding.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, TcpListener};

const LOWEST: u16 = 10_000;

fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768)
}

/// A free port on `ip`, not in `avoid`, outside the ephemeral range when there is room.
pub fn pick(ip: IpAddr, avoid: &BTreeSet<u16>) -> io::Result<u16> {
    let top = ephemeral_start();
    if top > LOWEST + 100 {
        for _ in 0..2000 {
            let mut b = [0u8; 2];
            getrandom::fill(&mut b).map_err(|e| io::Error::other(e.to_string()))?;
            let port = LOWEST + u16::from_le_bytes(b) % (top - LOWEST);
            if !avoid.contains(&port) && TcpListener::bind((ip, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}
