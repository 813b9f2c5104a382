//! Steering with nftables DNAT, for gateways where the TC program cannot load: each service
//! is a `dnat to numgen inc mod N map {...}` (round robin; weights repeat a node) or
//! `jhash ip saddr mod N` (sticky) rule in a table of our own, replaced whole and atomically by
//! one `nft -f` on every change. Conntrack is the flow table, so the replies must come back
//! through the gateway to be un-NATed (no direct server return). DNATed packets are marked,
//! so the rule that keeps `ext` off the interconnect lets them through.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{DispatchError, Policy, Site, Steering, Table};

const TABLE: &str = "ssi_dispatch";
/// The mark of DNATed packets (`ip rule ... fwmark` lets them onto the interconnect).
pub const MARK: u32 = 0x55;

pub struct Nft {
    site: Site,
}

impl Nft {
    pub fn install(site: &Site) -> Result<Nft, DispatchError> {
        let n = Nft { site: site.clone() };
        n.apply_text(&n.ruleset(&Table::new()))?;
        Ok(n)
    }

    fn ruleset(&self, table: &Table) -> String {
        let g = self.site.global;
        let mut rules = String::new();
        for (&(proto, port), s) in table {
            let l4 = crate::sap::proto_name(proto);
            let n = s.slots.len();
            let pick = if s.policy == Policy::Sticky { format!("jhash ip saddr mod {n}") } else { format!("numgen inc mod {n}") };
            let map: Vec<String> = s.slots.iter().enumerate().map(|(i, a)| format!("{i} : {a}")).collect();
            let to = if n == 1 { s.slots[0].to_string() } else { format!("{pick} map {{ {} }}", map.join(", ")) };
            rules.push_str(&format!("    ip daddr {g} {l4} dport {port} dnat to {to}\n"));
        }
        // "add; delete; add {...}": one transaction that replaces the table whether it existed.
        format!(
            "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n  chain steer {{\n    type nat hook prerouting priority dstnat; policy accept;\n{rules}  }}\n  chain tag {{\n    type filter hook prerouting priority 0; policy accept;\n    ct status dnat meta mark set {MARK}\n  }}\n}}\n"
        )
    }

    fn apply_text(&self, text: &str) -> Result<(), DispatchError> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|source| DispatchError::Io { what: "nft (apt: nftables)".into(), source })?;
        child.stdin.take().expect("piped").write_all(text.as_bytes()).map_err(|source| DispatchError::Io { what: "nft".into(), source })?;
        let out = child.wait_with_output().map_err(|source| DispatchError::Io { what: "nft".into(), source })?;
        if !out.status.success() {
            return Err(DispatchError::Nft(String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("failed").to_string()));
        }
        Ok(())
    }
}

impl Steering for Nft {
    fn name(&self) -> &'static str {
        "nft"
    }
    fn apply(&mut self, table: &Table) -> Result<(), DispatchError> {
        self.apply_text(&self.ruleset(table))
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        let _ = Command::new("nft").args(["delete", "table", "ip", TABLE]).stderr(Stdio::null()).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::{Interface, Steer};
    use std::net::Ipv4Addr;

    #[test]
    fn the_ruleset_maps_slots_and_marks_dnat() {
        let lo = Interface { name: "lo".into(), index: 1 };
        let n = Nft {
            site: Site {
                global: Ipv4Addr::new(192, 168, 77, 1),
                self_addr: Ipv4Addr::new(10, 99, 0, 2),
                external: lo.clone(),
                interconnect: lo,
                nodes: Default::default(),
            },
        };
        let mut t = Table::new();
        t.insert((6, 80), Steer { policy: Policy::RoundRobin, slots: vec![Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 3)] });
        t.insert((17, 53), Steer { policy: Policy::Sticky, slots: vec![Ipv4Addr::new(10, 99, 0, 4)] });
        let r = n.ruleset(&t);
        assert!(r.contains("ip daddr 192.168.77.1 tcp dport 80 dnat to numgen inc mod 2 map { 0 : 10.99.0.1, 1 : 10.99.0.3 }"), "{r}");
        assert!(r.contains("udp dport 53 dnat to 10.99.0.4"), "{r}");
        assert!(r.contains("ct status dnat meta mark set 85"), "{r}");
    }
}
