//! A local cluster: N node daemons on this machine, each with its own directory (its "disk"),
//! started as separate processes from one generated config.
//!
//! Layout of a cluster directory:
//! ```text
//! DIR/cluster.toml     the config (nodes on 127.0.0.1, the paper's volumes)
//! DIR/cluster.key      the cluster key (mode 0600)
//! DIR/nodeN/           node N's disk: pid, incarnation, ctl.sock, log, mnt/, disk/
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::{default_volumes, Config, NodeConfig};
use crate::control::proto::StatusRequest;
use crate::error::{Context, Error, Result};
use crate::pidfile::{is_running, node_pid, write_pid_file};
use crate::{bail, failed};

/// `$SSI_DIR`, else a fixed per-user directory.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SSI_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("ssi");
    }
    PathBuf::from(format!("/tmp/ssi-{}", nix::unistd::getuid()))
}

pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("cluster.toml")
}

pub fn load(dir: &Path) -> Result<Config> {
    let p = config_path(dir);
    if !p.exists() {
        bail!("no cluster in {} (run `ssi up` first)", dir.display());
    }
    Config::load(&p).map_err(|e| failed!("{e}"))
}

/// The network-namespace topology of the local cluster in `dir` (`ssi up --netns`): its
/// names start with a prefix unique to the directory.
pub fn topology(dir: &Path, cfg: &Config) -> ssi_netsap::topology::Topology {
    let nodes: Vec<u32> = cfg.nodes.keys().copied().collect();
    ssi_netsap::topology::Topology::new(&netns_prefix(dir), &nodes, &cfg.gateways)
}

/// The prefix of the network namespaces of the local cluster in `dir`: `ssi` and six hex
/// digits of an FNV-1a hash of the path (short, stable, distinct for distinct clusters).
pub fn netns_prefix(dir: &Path) -> String {
    let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let h = canon.as_os_str().as_encoded_bytes().iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    format!("ssi{:06x}", h & 0xff_ffff)
}

/// The external namespace (`ssi ext`) of the `--netns` cluster in `dir`.
pub fn ext_namespace(dir: &Path) -> Result<String> {
    let cfg = load(dir)?;
    if !cfg.uses_netns() {
        bail!("the cluster in {} has no network namespaces (start it with ssi up --netns)", dir.display());
    }
    Ok(topology(dir, &cfg).ext_ns())
}

/// The running cluster in `dir`: its config, its members, and the first member's mountpoint
/// (where a workload starts from).
pub fn running(dir: &Path) -> Result<(Config, Vec<u32>, PathBuf)> {
    let cfg = load(dir)?;
    let members = status(dir).context("the cluster must be running (ssi up)")?.view_members;
    let first = *members.first().ok_or_else(|| failed!("no node of the cluster in {} is up", dir.display()))?;
    let m1 = cfg.node(first)?.mountpoint.clone();
    Ok((cfg, members, m1))
}

/// Writes a fresh config and key for `n` nodes; with `netns`, each node in its namespace
/// (named from the topology's prefix) at its interconnect address.
fn write_cluster(o: &UpOptions, netns: Option<&str>) -> Result<PathBuf> {
    let (dir, n, dispatch) = (o.dir.as_path(), o.nodes, o.dispatch);
    std::fs::create_dir_all(dir).with_context(|| format!("cluster dir {}", dir.display()))?;
    let key = dir.join("cluster.key");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&key);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key)?;
        writeln!(f, "{}", ssi_orb::ClusterKey::generate_hex())?;
    }
    let mut ports = BTreeSet::new();
    while netns.is_none() && ports.len() < n as usize {
        ports.insert(ssi_orb::ports::pick(std::net::Ipv4Addr::LOCALHOST.into(), &ports)?);
    }
    let mut t = String::new();
    let gateway = if n >= 2 { 2 } else { 1 };
    writeln!(t, "# Local cluster written by `ssi up`.\n[cluster]\nname = \"local\"\nkey_file = \"cluster.key\"\ngateways = [{gateway}]")?;
    if netns.is_some() {
        writeln!(t, "global_address = \"{}\"\ndispatch = \"{}\"", ssi_netsap::topology::GLOBAL_ADDRESS, dispatch.name())?;
    }
    if !o.fencing {
        writeln!(t, "\n# The history checker's negative control: no fencing.\n[orb]\nfencing = false")?;
    }
    writeln!(t)?;
    for i in 1..=n {
        match netns {
            // Each node has its own network: one well-known port serves them all.
            Some(prefix) => writeln!(
                t,
                "[[node]]\nid = {i}\naddr = \"{}:7100\"\ndir = \"node{i}\"\nnetns = \"{prefix}-n{i}\"\n",
                ssi_netsap::topology::Topology::node_ip(i)
            )?,
            None => writeln!(
                t,
                "[[node]]\nid = {i}\naddr = \"127.0.0.1:{}\"\ndir = \"node{i}\"\n",
                ports.iter().nth(i as usize - 1).expect("a port per node")
            )?,
        }
    }
    for (path, node) in default_volumes(n) {
        let name = if path == "/" { "root".to_string() } else { path.trim_start_matches('/').to_string() };
        writeln!(t, "[[volume]]\npath = \"{path}\"\nnode = {node}\ndir = \"disk/{name}\"\n")?;
    }
    let p = config_path(dir);
    std::fs::write(&p, t)?;
    Ok(p)
}

/// Every process running `ssi node --config <config>` (also those whose pid file is lost).
pub fn daemons_of(config: &Path) -> Vec<i32> {
    let want = config.as_os_str().as_encoded_bytes().to_vec();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.iter().any(|a| *a == b"node") && args.windows(2).any(|w| w[0] == b"--config" && w[1] == want.as_slice()) && is_running(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// Starts node `id`'s daemon detached from this terminal, logging to `nodeN/log`.
pub fn spawn_node(cfg: &Config, id: u32, cpu: Option<usize>, with: &[String]) -> Result<u32> {
    let nc = cfg.node(id)?;
    std::fs::create_dir_all(&nc.dir)?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(nc.dir.join("log"))?;
    let exe = std::env::current_exe().context("path of the ssi binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("node").arg("--config").arg(&cfg.path).arg("--id").arg(id.to_string());
    for w in with {
        cmd.arg("--with").arg(w);
    }
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    // SAFETY: the closure runs in the forked child before exec and calls only setsid and sched_setaffinity, which are async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if let Some(c) = cpu {
                let mut set = nix::sched::CpuSet::new();
                set.set(c).map_err(std::io::Error::from)?;
                nix::sched::sched_setaffinity(Pid::from_raw(0), &set).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("starting ssi node")?;
    let pid = child.id();
    write_pid_file(&nc.dir, pid)?;
    // The daemon is reaped by init once this process exits; it must not become ours to wait.
    std::mem::forget(child);
    Ok(pid)
}

pub struct UpOptions {
    pub dir: PathBuf,
    pub nodes: u32,
    pub config: Option<PathBuf>,
    /// Pin node N to CPU (N-1) mod ncpu (benchmarks).
    pub pin: bool,
    /// Each node in its own network namespace (`ssi up --netns`).
    pub netns: bool,
    /// How the gateway steers connections for the global address (`--netns` clusters).
    pub dispatch: ssi_netsap::dispatch::Mode,
    /// Extensions each daemon starts beyond the system services (`ssi node --with NAME`),
    /// e.g. a benchmark's servants; the binary knows the names.
    pub with: Vec<String>,
    /// Whether a node without quorum refuses to grant (`[orb] fencing`); off only for the
    /// history checker's negative control.
    pub fencing: bool,
}

impl UpOptions {
    /// `nodes` nodes in `dir`, from a fresh config, unpinned, on loopback, with no extension.
    pub fn new(dir: PathBuf, nodes: u32) -> UpOptions {
        UpOptions { dir, nodes, config: None, pin: false, netns: false, dispatch: Default::default(), with: vec![], fencing: true }
    }
}

pub enum UpOutcome {
    Started(Config),
    Restarted(Config, Vec<u32>),
}

impl UpOutcome {
    /// The running cluster's config, however it came up.
    pub fn config(self) -> Config {
        match self {
            UpOutcome::Started(c) | UpOutcome::Restarted(c, _) => c,
        }
    }
}

/// Starts a local cluster and waits until every node is a member of the same view.
pub fn up(o: &UpOptions) -> Result<UpOutcome> {
    if o.nodes == 0 || o.nodes > ssi_orb::MAX_NODE {
        bail!("--nodes must be 1..={}", ssi_orb::MAX_NODE);
    }
    let existing = config_path(&o.dir);
    let (cfg, restart) = if existing.exists() && o.config.is_none() {
        let cfg = load(&o.dir)?;
        let dead: Vec<u32> = cfg.nodes.values().filter(|n| node_pid(n).is_none()).map(|n| n.id).collect();
        if dead.len() < cfg.nodes.len() {
            if dead.is_empty() {
                bail!("a cluster of {} nodes is already running in {} (ssi down first, or ssi status)", cfg.nodes.len(), o.dir.display());
            }
            (cfg, Some(dead))
        } else {
            // Nothing runs: start afresh with the requested size.
            (fresh_cluster(o)?, None)
        }
    } else if let Some(c) = &o.config {
        let cfg = Config::load(c)?;
        if cfg.nodes.values().any(|n| node_pid(n).is_some()) {
            bail!("nodes of {} are already running", c.display());
        }
        std::fs::create_dir_all(&o.dir)?;
        std::fs::write(o.dir.join("config-path"), c.display().to_string())?;
        (cfg, None)
    } else {
        (fresh_cluster(o)?, None)
    };
    crate::config::read_key(&cfg.key_file)?;
    if restart.is_none() && cfg.uses_netns() {
        let topo = topology(&o.dir, &cfg);
        topo.destroy(); // what a crashed run may have left
        topo.create().map_err(|e| failed!("--netns: {e}"))?;
    }
    let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let to_start: Vec<u32> = restart.clone().unwrap_or_else(|| cfg.nodes.keys().copied().collect());
    for id in &to_start {
        let cpu = o.pin.then(|| (*id as usize - 1) % ncpu);
        spawn_node(&cfg, *id, cpu, &o.with)?;
    }
    wait_members(&cfg, Duration::from_secs(30))?;
    Ok(match restart {
        Some(dead) => UpOutcome::Restarted(cfg, dead),
        None => UpOutcome::Started(cfg),
    })
}

/// A new config for `o` (netns names need the directory to exist first).
fn fresh_cluster(o: &UpOptions) -> Result<Config> {
    let p = write_cluster(o, None)?;
    if !o.netns {
        return Config::load(&p).map_err(|e| failed!("{e}"));
    }
    let cfg = Config::load(&p)?;
    let prefix = topology(&o.dir, &cfg).prefix;
    let p = write_cluster(o, Some(&prefix))?;
    Config::load(&p).map_err(|e| failed!("{e}"))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Waits until every configured node reports one view with all of them, itself in it as
/// the incarnation now running (a restarted node replays the views of its last life first),
/// and a quorum.
pub fn wait_members(cfg: &Config, timeout: Duration) -> Result<()> {
    let want: Vec<u32> = cfg.nodes.keys().copied().collect();
    let t0 = Instant::now();
    rt().block_on(async {
        loop {
            let mut ok = true;
            let mut views = BTreeSet::new();
            for nc in cfg.nodes.values() {
                if node_pid(nc).is_none() {
                    let tail = std::fs::read_to_string(nc.dir.join("log")).unwrap_or_default();
                    let last = tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no log)");
                    bail!("node {} exited during start-up: {}", nc.id, last.trim());
                }
                match status_of(&nc.control_socket).await {
                    Ok(s) if s.view_members == want && s.in_view && s.quorum => {
                        views.insert(s.view);
                    }
                    _ => ok = false,
                }
            }
            if ok && views.len() == 1 {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                bail!("nodes did not all join one view within {timeout:?} (see the logs in each node dir)");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

pub async fn status_of(sock: &Path) -> Result<crate::control::proto::StatusReply, crate::control::ControlError> {
    let mut c = crate::control::connect(sock).await?;
    c.status(StatusRequest {}).await.map(|r| r.into_inner()).map_err(|s| crate::control::ControlError::Refused(s.message().to_string()))
}

/// The node a tool outside every node should go through: the lowest whose daemon answers
/// and is in a majority, else the lowest that answers (no node is special: any live one
/// will do). Runs on a thread of its own, so it may be called from inside a runtime.
pub fn answering_node(cfg: &Config) -> Option<u32> {
    std::thread::scope(|s| {
        s.spawn(|| {
            rt().block_on(async {
                let mut first = None;
                for (id, n) in &cfg.nodes {
                    if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(1), status_of(&n.control_socket)).await {
                        if st.quorum {
                            return Some(*id);
                        }
                        first = first.or(Some(*id));
                    }
                }
                first
            })
        })
        .join()
        .ok()
        .flatten()
    })
}

/// Status from the first node that answers.
pub fn status(dir: &Path) -> Result<crate::control::proto::StatusReply> {
    status_from(dir, None)
}

/// Status from node `node`, or from the first node that answers.
pub fn status_from(dir: &Path, node: Option<u32>) -> Result<crate::control::proto::StatusReply> {
    let cfg = load(dir)?;
    if let Some(n) = node {
        let sock = cfg.node(n)?.control_socket.clone();
        return rt().block_on(status_of(&sock)).map_err(|e| failed!("node {n}: {e}"));
    }
    rt().block_on(async {
        let mut last = String::from("no node configured");
        for nc in cfg.nodes.values() {
            match status_of(&nc.control_socket).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e.to_string(),
            }
        }
        Err(failed!("no node of the cluster in {} answers ({last})", dir.display()))
    })
}

/// What `down` did.
pub struct DownReport {
    pub stopped: usize,
    pub killed: usize,
    /// Processes the nodes had started that were still running, killed with their cgroups.
    pub orphans: usize,
    pub unmounted: usize,
    /// Network namespaces removed (`--netns` clusters).
    pub namespaces: usize,
}

/// Stops every daemon of the cluster in `dir`, unmounts what is mounted under it, removes
/// sockets. Node disks stay.
pub fn down(dir: &Path) -> Result<DownReport> {
    let cfg = load(dir)?;
    let mut pids: BTreeSet<i32> = cfg.nodes.values().filter_map(node_pid).collect();
    pids.extend(daemons_of(&cfg.path));
    let fuse_conns = fuse_connections_under(dir);
    for p in &pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGTERM);
    }
    let t0 = Instant::now();
    let alive = |p: &i32| is_running(*p);
    while pids.iter().any(alive) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut killed = 0;
    for p in pids.iter().filter(|p| alive(p)) {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        killed += 1;
    }
    let t1 = Instant::now();
    while pids.iter().any(alive) && t1.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if pids.iter().any(alive) {
        // A daemon blocked on a request to a FUSE mount (its own, wedged) cannot die until the
        // request ends: abort those connections.
        abort_fuse_connections(&fuse_conns);
        let t2 = Instant::now();
        while pids.iter().any(alive) && t2.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // What the nodes started (remote commands, nginx, a build's compilers) lives in their
    // cgroups and may outlive the daemons: down leaves nothing running.
    let mut orphans = 0;
    for nc in cfg.nodes.values() {
        if let Some(cg) = ssi_netsap::bindguard::cgroup_of(&nc.dir) {
            match ssi_netsap::bindguard::kill_cgroup(&cg, Duration::from_secs(2)) {
                Ok(n) => orphans += n,
                Err(e) => {
                    abort_fuse_connections(&fuse_conns);
                    tracing::warn!("node {}: {e}", nc.id);
                }
            }
        }
    }
    let unmounted = unmount_under(dir)?;
    for nc in cfg.nodes.values() {
        let _ = std::fs::remove_file(&nc.control_socket);
        let _ = std::fs::remove_file(nc.dir.join("pid"));
    }
    // The nodes' bind-guard cgroups (and any a crashed cluster left), once empty.
    ssi_netsap::bindguard::remove_empty_cgroups();
    let namespaces = if cfg.uses_netns() { topology(dir, &cfg).destroy() } else { 0 };
    Ok(DownReport { stopped: pids.len(), killed, orphans, unmounted, namespaces })
}

/// One line of /proc/self/mountinfo.
struct Mount {
    /// The device's minor number: for FUSE, the connection id under /sys/fs/fuse/connections.
    minor: String,
    path: PathBuf,
    fstype: String,
}

fn mounts() -> Vec<Mount> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(Mount {
                minor: f.get(2)?.split(':').nth(1)?.to_string(),
                path: PathBuf::from(f.get(4)?.replace("\\040", " ")),
                fstype: f.get(sep + 1)?.to_string(),
            })
        })
        .collect()
}

fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// FUSE connection ids of the FUSE mounts under `dir`.
pub fn fuse_connections_under(dir: &Path) -> Vec<String> {
    let dir = canonical(dir);
    mounts().into_iter().filter(|m| m.path.starts_with(&dir) && m.fstype.starts_with("fuse")).map(|m| m.minor).collect()
}

/// Aborts FUSE connections through fusectl, mounting it for the purpose if needed.
pub fn abort_fuse_connections(conns: &[String]) {
    if conns.is_empty() {
        return;
    }
    let ctl = Path::new("/sys/fs/fuse/connections");
    let mounted_here = !ctl.join(&conns[0]).exists()
        && nix::mount::mount(Some("fusectl"), ctl, Some("fusectl"), nix::mount::MsFlags::empty(), None::<&str>).is_ok();
    for c in conns {
        let _ = std::fs::write(ctl.join(c).join("abort"), "1");
    }
    if mounted_here {
        let _ = nix::mount::umount(ctl);
    }
}

/// Mount points at or under `dir` (from /proc/self/mountinfo), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = canonical(dir);
    let mut v: Vec<PathBuf> = mounts().into_iter().map(|m| m.path).filter(|p| p.starts_with(&dir)).collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

fn unmount_under(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for m in mounts_under(dir) {
        nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).with_context(|| format!("unmount {}", m.display()))?;
        n += 1;
    }
    Ok(n)
}

/// A counter (`requests_sent`, `messages_sent`, ...) a daemon logged when it stopped (its
/// last run), from `nodeN/log`.
pub fn final_counter(nc: &NodeConfig, name: &str) -> Option<u64> {
    let log = std::fs::read_to_string(nc.dir.join("log")).ok()?;
    let line = log.lines().rev().find(|l| l.contains("final counters"))?;
    let key = format!("{name}=");
    line.split_whitespace().find_map(|w| w.strip_prefix(key.as_str())).and_then(|v| v.parse().ok())
}
