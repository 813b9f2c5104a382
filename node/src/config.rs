//! The cluster configuration file (TOML).
//!
//! ```toml
//! [cluster]
//! name = "lab"
//! key_file = "cluster.key"          # relative paths are relative to this file
//! global_address = "10.0.0.100"     # optional: the cluster's address on gateway nodes
//! gateways = [2]
//! dispatch = "auto"                 # optional: how gateways steer connections for the
//!                                   # global address: auto | ebpf | nft | proxy
//!
//! [orb]                             # optional tuning
//! heartbeat_ms = 200
//! fail_timeout_ms = 1000
//! max_concurrent = 256
//! fencing = true                    # false only for the history checker's negative control:
//!                                   # a node without quorum then goes on granting
//! quorum_compact_after = 1000       # applied entries after which the quorum's Raft log
//!                                   # is compacted into a snapshot
//!
//! [[node]]
//! id = 1                            # 1..=511
//! addr = "10.0.0.1:7100"            # where its ORB listens (IP:port)
//! dir = "/var/lib/ssi"              # its disk: volumes, state
//! mountpoint = "/ssi"               # optional; default <dir>/mnt
//! control_socket = "/run/ssi.sock"  # optional; default <dir>/ctl.sock
//! netns = "ssi-n1"                  # optional: the daemon joins this network namespace
//!                                   # (/run/netns/NAME) first — `ssi up --netns` sets it
//!
//! [[volume]]
//! path = "/src"                     # in the global namespace
//! node = 3                          # the node whose disk holds it
//! dir = "disk/src"                  # relative to that node's dir
//! ```
//!
//! A malformed file is refused as `FILE:LINE:COL: reason`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub cluster: String,
    pub key_file: PathBuf,
    pub global_address: Option<std::net::Ipv4Addr>,
    pub gateways: Vec<u32>,
    /// How gateways steer connections for the global address.
    pub dispatch: ssi_netsap::dispatch::Mode,
    pub heartbeat: Duration,
    pub fail_timeout: Duration,
    /// Whether a node without quorum refuses to grant (see `OrbConfig::fencing`).
    pub fencing: bool,
    /// Applied entries after which the quorum's log is compacted (`OrbConfig::compact_after`).
    pub compact_after: u64,
    pub max_concurrent: usize,
    pub nodes: BTreeMap<u32, NodeConfig>,
    pub volumes: Vec<Volume>,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u32,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub mountpoint: PathBuf,
    pub control_socket: PathBuf,
    /// The network namespace the daemon runs in (`/run/netns/NAME`), if any.
    pub netns: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub path: String,
    pub node: u32,
    pub dir: PathBuf,
}

#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col, self.reason)
        }
    }
}
impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster: RawCluster,
    #[serde(default)]
    orb: RawOrb,
    #[serde(default, rename = "node")]
    nodes: Vec<Spanned<RawNode>>,
    #[serde(default, rename = "volume")]
    volumes: Vec<Spanned<RawVolume>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Spanned<String>,
    key_file: Spanned<String>,
    global_address: Option<Spanned<String>>,
    #[serde(default)]
    gateways: Vec<Spanned<u32>>,
    dispatch: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOrb {
    heartbeat_ms: Option<Spanned<u64>>,
    fail_timeout_ms: Option<Spanned<u64>>,
    max_concurrent: Option<Spanned<usize>>,
    fencing: Option<bool>,
    quorum_compact_after: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: Spanned<u32>,
    addr: Spanned<String>,
    dir: Spanned<String>,
    mountpoint: Option<String>,
    control_socket: Option<String>,
    netns: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVolume {
    path: Spanned<String>,
    node: Spanned<u32>,
    dir: Spanned<String>,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| before.len() - i).unwrap_or(before.len() + 1);
    (line, col)
}

/// A node id the config does not have.
#[derive(Debug, thiserror::Error)]
#[error("node {id} is not in {}", config.display())]
pub struct UnknownNode {
    pub id: u32,
    pub config: PathBuf,
}

/// Why a volume's path in the namespace is refused.
#[derive(Debug, thiserror::Error)]
pub enum VolumePathError {
    #[error("volume path {0:?} must be absolute")]
    Relative(String),
    #[error("volume path {0:?} may not contain '.' or '..'")]
    Dots(String),
}

/// Normalises a global-namespace path: absolute, no `.`/`..`, no trailing slash.
pub fn normalize_volume_path(p: &str) -> Result<String, VolumePathError> {
    if !p.starts_with('/') {
        return Err(VolumePathError::Relative(p.to_string()));
    }
    let mut parts = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => parts.push(s.to_string_lossy().to_string()),
            _ => return Err(VolumePathError::Dots(p.to_string())),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

impl Config {
    /// Whether the cluster runs in network namespaces (every node has one).
    pub fn uses_netns(&self) -> bool {
        self.nodes.values().all(|n| n.netns.is_some())
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let err_at = |span: Range<usize>, reason: String| {
            let (line, col) = line_col(text, span.start);
            ConfigError { file: path.to_path_buf(), line, col, reason }
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let reason = e.message().trim().to_string();
            match e.span() {
                Some(s) => err_at(s, reason),
                None => ConfigError { file: path.to_path_buf(), line: 0, col: 0, reason },
            }
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p) };

        let name = raw.cluster.name.get_ref();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
            return Err(err_at(
                raw.cluster.name.span(),
                format!("cluster name {name:?} must be non-empty letters, digits, '-', '_' or '.'"),
            ));
        }
        if raw.nodes.is_empty() {
            return Err(ConfigError {
                file: path.to_path_buf(),
                line: 0,
                col: 0,
                reason: "no [[node]] entries: a cluster has at least one node".into(),
            });
        }
        let mut nodes = BTreeMap::new();
        let mut addrs = BTreeSet::new();
        for n in &raw.nodes {
            let n = n.get_ref();
            let id = *n.id.get_ref();
            if id == 0 || id > ssi_orb::MAX_NODE {
                return Err(err_at(n.id.span(), format!("node id {id} out of range 1..={}", ssi_orb::MAX_NODE)));
            }
            if nodes.contains_key(&id) {
                return Err(err_at(n.id.span(), format!("node id {id} appears twice")));
            }
            let addr: SocketAddr =
                n.addr.get_ref().parse().map_err(|_| err_at(n.addr.span(), format!("addr {:?} is not IP:port", n.addr.get_ref())))?;
            if addr.port() == 0 {
                return Err(err_at(n.addr.span(), "addr needs a port other than 0".into()));
            }
            if !addrs.insert(addr) {
                return Err(err_at(n.addr.span(), format!("addr {addr} is used by two nodes")));
            }
            if n.dir.get_ref().is_empty() {
                return Err(err_at(n.dir.span(), "dir must not be empty".into()));
            }
            let dir = resolve(n.dir.get_ref());
            let mountpoint = n.mountpoint.as_deref().map(resolve).unwrap_or_else(|| dir.join("mnt"));
            let control_socket = n.control_socket.as_deref().map(resolve).unwrap_or_else(|| dir.join("ctl.sock"));
            let netns = match &n.netns {
                Some(ns) if ns.get_ref().is_empty() || ns.get_ref().contains('/') || ns.get_ref().len() > 64 => {
                    return Err(err_at(ns.span(), format!("netns {:?} is not a namespace name", ns.get_ref())));
                }
                Some(ns) => Some(ns.get_ref().clone()),
                None => None,
            };
            nodes.insert(id, NodeConfig { id, addr, dir, mountpoint, control_socket, netns });
        }
        let mut gateways = Vec::new();
        for g in &raw.cluster.gateways {
            if !nodes.contains_key(g.get_ref()) {
                return Err(err_at(g.span(), format!("gateway {} is not a configured node", g.get_ref())));
            }
            gateways.push(*g.get_ref());
        }
        let global_address = match &raw.cluster.global_address {
            None => None,
            Some(a) => Some(
                a.get_ref().parse().map_err(|_| err_at(a.span(), format!("global_address {:?} is not an IPv4 address", a.get_ref())))?,
            ),
        };
        let dispatch = match &raw.cluster.dispatch {
            None => ssi_netsap::dispatch::Mode::Auto,
            Some(d) => d.get_ref().parse().map_err(|e: ssi_netsap::dispatch::UnknownMode| err_at(d.span(), e.to_string()))?,
        };
        let mut volumes: Vec<Volume> = Vec::new();
        for v in &raw.volumes {
            let v = v.get_ref();
            let p = normalize_volume_path(v.path.get_ref()).map_err(|e| err_at(v.path.span(), e.to_string()))?;
            if volumes.iter().any(|x| x.path == p) {
                return Err(err_at(v.path.span(), format!("volume {p} is defined twice")));
            }
            let node = *v.node.get_ref();
            let Some(nc) = nodes.get(&node) else {
                return Err(err_at(v.node.span(), format!("volume {p} is on node {node}, which is not configured")));
            };
            let d = Path::new(v.dir.get_ref());
            if d.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(err_at(v.dir.span(), "volume dir may not contain '..'".into()));
            }
            let dir = if d.is_absolute() { d.to_path_buf() } else { nc.dir.join(d) };
            volumes.push(Volume { path: p, node, dir });
        }
        let ms = |v: &Option<Spanned<u64>>, default: u64, what: &str| -> Result<Duration, ConfigError> {
            match v {
                None => Ok(Duration::from_millis(default)),
                Some(s) if *s.get_ref() == 0 || *s.get_ref() > 600_000 => Err(err_at(s.span(), format!("{what} must be 1..=600000 ms"))),
                Some(s) => Ok(Duration::from_millis(*s.get_ref())),
            }
        };
        let heartbeat = ms(&raw.orb.heartbeat_ms, 200, "heartbeat_ms")?;
        let fail_timeout = ms(&raw.orb.fail_timeout_ms, 1000, "fail_timeout_ms")?;
        if fail_timeout < heartbeat * 2 {
            let span = raw.orb.fail_timeout_ms.as_ref().map(|s| s.span()).unwrap_or(0..0);
            return Err(err_at(span, "fail_timeout_ms must be at least twice heartbeat_ms".into()));
        }
        let max_concurrent = match &raw.orb.max_concurrent {
            None => 256,
            Some(s) if *s.get_ref() == 0 => return Err(err_at(s.span(), "max_concurrent must be at least 1".into())),
            Some(s) => *s.get_ref(),
        };
        let compact_after = match &raw.orb.quorum_compact_after {
            None => 1000,
            Some(s) if *s.get_ref() == 0 => return Err(err_at(s.span(), "quorum_compact_after must be at least 1".into())),
            Some(s) => *s.get_ref(),
        };
        Ok(Config {
            path: path.to_path_buf(),
            cluster: name.clone(),
            key_file: resolve(raw.cluster.key_file.get_ref()),
            global_address,
            gateways,
            dispatch,
            heartbeat,
            fail_timeout,
            max_concurrent,
            fencing: raw.orb.fencing.unwrap_or(true),
            compact_after,
            nodes,
            volumes,
        })
    }

    pub fn node(&self, id: u32) -> Result<&NodeConfig, UnknownNode> {
        self.nodes.get(&id).ok_or_else(|| UnknownNode { id, config: self.path.clone() })
    }
}

/// The paper's Figure 2.1 namespace, folded onto the nodes that exist:
/// `/` on node 1, `/www` on node 2, `/src` on node 3, `/db` on node 4.
pub fn default_volumes(nodes: u32) -> Vec<(String, u32)> {
    let fold = |n: u32| ((n - 1) % nodes.max(1)) + 1;
    vec![("/".into(), 1), ("/www".into(), fold(2)), ("/src".into(), fold(3)), ("/db".into(), fold(4))]
}

/// Reads the cluster key, refusing a file other users can read.
pub fn read_key(path: &Path) -> crate::Result<ssi_orb::ClusterKey> {
    use crate::{bail, failed, Context, Error};
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).with_context(|| format!("cluster key {}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        bail!("cluster key {} is readable by other users (mode {:o}); chmod 600 it", path.display(), meta.mode() & 0o777);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cluster key {}", path.display()))?;
    ssi_orb::ClusterKey::parse(&text).map_err(|e| failed!("cluster key {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[cluster]
name = "t"
key_file = "k"
gateways = [2]

[[node]]
id = 1
addr = "127.0.0.1:7001"
dir = "n1"

[[node]]
id = 2
addr = "127.0.0.1:7002"
dir = "/abs/n2"

[[volume]]
path = "/www/"
node = 2
dir = "disk/www"
"#;

    fn err(text: &str) -> String {
        Config::parse(Path::new("/etc/c.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn a_good_config_resolves_paths() {
        let c = Config::parse(Path::new("/etc/ssi/c.toml"), GOOD).unwrap();
        assert_eq!(c.nodes[&1].dir, PathBuf::from("/etc/ssi/n1"));
        assert_eq!(c.nodes[&1].control_socket, PathBuf::from("/etc/ssi/n1/ctl.sock"));
        assert_eq!(c.key_file, PathBuf::from("/etc/ssi/k"));
        assert_eq!(c.volumes[0], Volume { path: "/www".into(), node: 2, dir: "/abs/n2/disk/www".into() });
        assert_eq!(c.fail_timeout, Duration::from_millis(1000));
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        assert_eq!(err(&GOOD.replace("id = 2", "id = 1")), "/etc/c.toml:13:6: node id 1 appears twice");
        assert_eq!(err(&GOOD.replace("id = 2", "id = 600")), "/etc/c.toml:13:6: node id 600 out of range 1..=511");
        assert!(err(&GOOD.replace("127.0.0.1:7002", "nowhere")).starts_with("/etc/c.toml:14:8: addr \"nowhere\" is not IP:port"));
        assert!(err(&GOOD.replace("gateways = [2]", "gateways = [9]")).starts_with("/etc/c.toml:5:13: gateway 9"));
        assert!(err(&GOOD.replace("gateways = [2]", "gateways = [2]\nglobal_address = \"10.0.0\"")).contains("not an IPv4 address"));
        assert!(err(&GOOD.replace("gateways = [2]", "gateways = [2]\ndispatch = \"ipvs\"")).contains("expected auto, ebpf, nft or proxy"));
        assert!(err(&GOOD.replace("node = 2\n", "node = 7\n")).contains(":19:8: volume /www is on node 7"));
        assert!(err(&GOOD.replace("path = \"/www/\"", "path = \"www\"")).contains(":18:8: volume path \"www\" must be absolute"));
        assert!(err(&GOOD.replace("dir = \"n1\"", "dir = \"n1\"\ncolour = 3")).contains(":11:1: unknown field `colour`"));
        assert!(err("[cluster\nname=1").starts_with("/etc/c.toml:1:"));
        assert!(err(&GOOD.replace("[[node]]\nid = 1", "[[node]]\nid = \"one\"")).contains(":8:6:"));
        assert_eq!(err("[cluster]\nname = \"x\"\nkey_file = \"k\"\n"), "/etc/c.toml: no [[node]] entries: a cluster has at least one node");
    }

    #[test]
    fn default_volumes_fold_onto_existing_nodes() {
        assert_eq!(default_volumes(4).iter().map(|v| v.1).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(default_volumes(2).iter().map(|v| v.1).collect::<Vec<_>>(), vec![1, 2, 1, 2]);
        assert_eq!(default_volumes(1).iter().map(|v| v.1).collect::<Vec<_>>(), vec![1, 1, 1, 1]);
    }
}
