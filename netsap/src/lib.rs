//! ssi-netsap: global networking (DESIGN §6) — the distributed SAP server owning the
//! cluster's port namespace, bind interposition, packet steering on gateway nodes.
//!
//! - `sap`: the SAP server, sharded by port, each shard on a primary and a backup;
//! - `interpose`: bind interposition for programs started with `ssi run` (seccomp user
//!   notification asking the SAP);
//! - `bindguard`: its second layer, cgroup BPF programs that refuse binds to ports other
//!   nodes hold and report binds and releases, whatever way a process binds;
//! - `dispatch`: the gateway's packet dispatcher steering connections for the global address
//!   to the listening nodes (TC eBPF, nftables DNAT, or a user-space proxy);
//! - `topology`: the local cluster's network (a namespace per node on one bridge, and an
//!   external namespace behind the gateway).

pub mod proto {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ssi.netsap.rs"));
}
pub mod bindguard;
pub mod dispatch;
pub mod interpose;
pub mod sap;
pub mod topology;

/// What this crate can do today.
pub const STATUS: &str =
    "netsap: the sharded SAP server (ssi ports), bind interposition (ssi run; seccomp, and cgroup BPF as a second layer), the gateway dispatcher (TC eBPF / nft / proxy), network namespaces per node (ssi up --netns, ssi ext)";
