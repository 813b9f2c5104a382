//! ssi-netsap: global networking (DESIGN §6) — the distributed SAP server owning the
//! cluster's port namespace, bind interposition, packet steering on gateway nodes.
//!
//! **Skeleton.** Nothing is implemented yet (issue "Global networking").

/// What this crate can do today.
pub const STATUS: &str = "netsap: not implemented yet — no SAP server, no interposition, no packet filter";
