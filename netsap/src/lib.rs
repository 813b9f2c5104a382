//! ssi-netsap: global networking (DESIGN §6) — the distributed SAP server owning the
//! cluster's port namespace, bind interposition, packet steering on gateway nodes.
//!
//! Today: the SAP server (`sap`: sharded by port, each shard on a primary and a backup) and
//! the local cluster's network topology (`topology`: a namespace per node on one bridge, and
//! an external namespace behind the gateway). Bind interposition and the packet filter are
//! not built yet (issue "Global networking").

pub mod proto {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ssi.netsap.rs"));
}
pub mod interpose;
pub mod sap;
pub mod topology;

/// What this crate can do today.
pub const STATUS: &str =
    "netsap: the sharded SAP server (ssi ports) and network namespaces per node (ssi up --netns, ssi ext); no bind interposition or packet filter yet";
