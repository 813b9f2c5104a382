//! Volumes whose contents another subsystem makes up on demand — the global `/proc` of
//! procmgmt — mounted in the namespace like any volume, served in the node's own process.
//!
//! Read-only; nothing is cached (attributes and entries expire at once, reads bypass the page
//! cache): the contents change under the reader all the time. A file's contents are taken
//! whole at open, so one open reads one consistent snapshot.

use std::sync::Arc;

/// The caller of an operation (what the provider checks permissions against).
#[derive(Clone, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynAttr {
    pub dir: bool,
    /// Permission bits.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_s: i64,
}

/// What a provider answers; errors are errnos.
#[ssi_orb::async_trait]
pub trait Synthetic: Send + Sync {
    /// Attributes of `path` ("/" is the volume's root; no trailing slash).
    async fn attr(&self, path: &str, who: &Caller) -> Result<SynAttr, i32>;
    /// Names in directory `path`, with whether each is a directory.
    async fn list(&self, path: &str, who: &Caller) -> Result<Vec<(String, bool)>, i32>;
    /// The whole contents of file `path`.
    async fn read(&self, path: &str, who: &Caller) -> Result<Vec<u8>, i32>;
}

/// A synthetic volume: where it is mounted, and who provides it.
#[derive(Clone)]
pub struct SyntheticVolume {
    pub path: String,
    pub provider: Arc<dyn Synthetic>,
}

/// `dir` joined with `name` inside a synthetic volume.
pub fn child(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}
