//! ssi-pxfs: the proxy file system (DESIGN §4). One namespace mounted on every node; files
//! live on the disk of the node that owns their volume; every access goes through the ORB to
//! that volume's server.
//!
//! - `server`: the volume server (a `Volume` object per volume) and its open files.
//! - `locks`: cluster-wide byte-range locks, arbitrated by the owning server.
//! - `cache`: cache tokens on the server side (who caches what; callbacks before changes).
//! - `client`: the FUSE file system every node mounts (fuser), mapping kernel inodes to
//!   (volume, file handle) and namespace crossings to volume roots.
//! - `sys`: the system calls underneath (file handles, per-thread credentials).

pub mod attrcache;
pub mod cache;
pub mod client;
pub mod exclusive;
pub mod holder;
pub mod locks;
pub mod openfiles;
pub mod server;
pub mod synthetic;
pub mod sys;

pub mod proto {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ssi.pxfs.rs"));
}

/// What this crate can do today.
pub const STATUS: &str = "pxfs: volumes served and mounted on every node, coherent caching under server tokens";

/// A volume of the global namespace.
#[derive(Clone, Debug)]
pub struct VolumeSpec {
    /// Index in the cluster config: the same on every node.
    pub id: u32,
    /// Path in the global namespace ("/", "/www", ...).
    pub path: String,
    pub node: u32,
    pub dir: std::path::PathBuf,
}
