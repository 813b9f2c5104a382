//! ssi-pxfs: the proxy file system (DESIGN §4) — volume servers, the FUSE client mounted on
//! every node, coherent caching, cluster-wide byte-range locks.
//!
//! **Skeleton.** Nothing is implemented yet (issue "PXFS"). The daemon mounts nothing; the
//! volumes in a cluster config are validated and shown, not served.

/// What this crate can do today.
pub const STATUS: &str = "pxfs: not implemented yet — no file system is served or mounted";
