//! ssi-netsap: global networking (DESIGN §6) — the distributed SAP server owning the
//! cluster's port namespace, bind interposition, packet steering on gateway nodes.
//!
//! Today: the local cluster's network topology (`topology`: a namespace per node on one
//! bridge, and an external namespace behind the gateway). The SAP server, interposition and
//! the packet filter are not built yet (issue "Global networking").

pub mod topology;

/// What this crate can do today.
pub const STATUS: &str = "netsap: network namespaces per node (ssi up --netns, ssi ext); no SAP server, interposition or packet filter yet";
