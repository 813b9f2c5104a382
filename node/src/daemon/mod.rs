//! `ssi node`: one node's daemon. Wires the services onto the ORB and serves the control
//! socket. Holds no service logic; what the binary adds (workload servants, a benchmark's
//! control services) comes in as [`Extension`]s.

mod control;
mod ports;
mod procctl;
mod trace;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::{Config, NodeConfig};
use crate::control::proto::control_server::ControlServer;
use crate::error::{Context, Result};
use control::ControlService;
use ssi_orb::{Orb, OrbConfig};

/// What the binary adds to a node beyond the system services: a workload's servants on the
/// ORB, or services on the control socket that only some daemons offer (a benchmark's).
pub trait Extension: Send {
    /// Exports this extension's objects on the node's ORB and adds its control-socket
    /// services, if any, to `control`.
    fn start(self: Box<Self>, orb: &Orb, node: &NodeConfig, control: &mut tonic::service::RoutesBuilder);
}

/// Each start of a node is a new incarnation: larger than the last one recorded in its dir
/// and than the clock (so a wiped dir still gets a fresh one).
fn next_incarnation(dir: &Path) -> Result<u64> {
    let f = dir.join("incarnation");
    let last: u64 = std::fs::read_to_string(&f).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64;
    let inc = (last + 1).max(now);
    let tmp = dir.join("incarnation.tmp");
    std::fs::write(&tmp, format!("{inc}\n"))?;
    std::fs::rename(&tmp, &f)?;
    Ok(inc)
}

/// The second layer of bind interposition (netsap's `bindguard`): cgroup programs on a cgroup
/// this daemon moves into, so they see the binds of every process it starts. Without cgroup v2
/// or BPF the node says why and keeps the seccomp layer alone.
fn start_bind_guard(dir: &Path, id: u32, sap: ssi_netsap::sap::SapClient, sup: ssi_netsap::interpose::Supervisor) {
    let Some(cg) = ssi_netsap::bindguard::cgroup_of(dir) else {
        return tracing::warn!("no bind guard: cgroup v2 is not mounted");
    };
    match ssi_netsap::bindguard::start(&cg, id, sap, sup, tokio::runtime::Handle::current()) {
        Ok(()) => tracing::info!("bind guard: attached to {}", cg.display()),
        Err(e) => tracing::warn!("no bind guard: {e}"),
    }
}

/// The packet dispatcher of a gateway (netsap's `dispatch`): steers connections for the
/// cluster's global address to the nodes the SAP says listen. A gateway that cannot run one
/// says why and goes on as a plain node.
fn start_dispatcher(
    cfg: &Config,
    id: u32,
    global: std::net::Ipv4Addr,
    sap: ssi_netsap::sap::SapClient,
) -> Option<ssi_netsap::dispatch::Dispatcher> {
    let std::net::IpAddr::V4(me) = cfg.nodes[&id].addr.ip() else {
        tracing::warn!("no dispatcher: this gateway's interconnect address is not IPv4");
        return None;
    };
    let addrs = cfg.nodes.iter().filter_map(|(&n, c)| match c.addr.ip() {
        std::net::IpAddr::V4(a) => Some((n, a)),
        _ => None,
    });
    let site = match ssi_netsap::dispatch::Site::discover(global, me, addrs.collect()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("no dispatcher: {e}");
            return None;
        }
    };
    let external = site.external.name.clone();
    match ssi_netsap::dispatch::spawn(cfg.dispatch, site, sap, tokio::runtime::Handle::current()) {
        Ok(d) => {
            for why in &d.passed_over {
                tracing::warn!("dispatcher: passed over {why}");
            }
            tracing::info!("dispatcher: {} on {external} steers {global}", d.mechanism);
            Some(d)
        }
        Err(e) => {
            tracing::warn!("no dispatcher: {e}");
            None
        }
    }
}

pub fn run(config_path: &Path, id: u32, extensions: Vec<Box<dyn Extension>>) -> Result<()> {
    let cfg = Config::load(config_path)?;
    let me = cfg.node(id)?.clone();
    if let Some(ns) = &me.netns {
        // Before any thread exists: threads take the namespace of the one that starts them.
        ssi_netsap::topology::enter(ns)?;
        // Its own ephemeral ports, disjoint from every other node's: implicit binds of
        // different nodes never collide in the cluster's one port namespace.
        let (lo, hi) = ssi_netsap::topology::ephemeral_range(id);
        if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", format!("{lo} {hi}")) {
            tracing::warn!("ephemeral port range {lo}-{hi}: {e}");
        }
    }
    let key = crate::config::read_key(&cfg.key_file)?;
    std::fs::create_dir_all(&me.dir).with_context(|| format!("node dir {}", me.dir.display()))?;
    let incarnation = next_incarnation(&me.dir)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut oc = OrbConfig::new(&cfg.cluster, id, incarnation, key);
        oc.listen = Some(me.addr);
        oc.peers = cfg.nodes.iter().map(|(i, n)| (*i, n.addr.to_string())).collect();
        oc.heartbeat = cfg.heartbeat;
        oc.fail_timeout = cfg.fail_timeout;
        oc.max_concurrent = cfg.max_concurrent;
        oc.state_dir = Some(me.dir.clone());
        oc.fencing = cfg.fencing;
        oc.compact_after = cfg.compact_after;
        let orb = Orb::start(oc).await?;
        ssi_orb::diag::install(&orb);
        // A local cluster: every node on this machine (see procmgmt's `table`).
        let one_machine = cfg.nodes.values().all(|n| n.addr.ip().is_loopback()) || cfg.uses_netns();
        let claim = if one_machine {
            ssi_procmgmt::table::Claim::Subtree { pid_files: cfg.nodes.iter().map(|(i, n)| (*i, n.dir.join("pid"))).collect() }
        } else {
            ssi_procmgmt::table::Claim::Machine
        };
        let procs = ssi_procmgmt::server::serve(&orb, claim).context("procmgmt")?;
        let procmgrs = Arc::new(ssi_procmgmt::ProcMgrs::new(&orb));
        let global_proc = ssi_pxfs::synthetic::SyntheticVolume {
            path: "/proc".into(),
            provider: Arc::new(ssi_procmgmt::procfs::ProcFs::new(&orb, procmgrs.clone())),
        };
        let fs = start_pxfs(&cfg, &orb, id, vec![global_proc]);
        let mountpoints = cfg.nodes.iter().map(|(i, n)| (*i, n.mountpoint.clone())).collect();
        let launcher =
            Arc::new(ssi_procmgmt::launch::Launcher::new(&orb, procmgrs, mountpoints, Box::new(ssi_procmgmt::placement::LeastLoaded::default()), one_machine));

        let sock = &me.control_socket;
        if sock.exists() {
            std::fs::remove_file(sock).with_context(|| format!("stale socket {}", sock.display()))?;
        }
        let listener = UnixListener::bind(sock).with_context(|| format!("control socket {}", sock.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o666))?;
        }
        crate::pidfile::write_pid_file(&me.dir, std::process::id())?;
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let node_ids: Vec<u32> = cfg.nodes.keys().copied().collect();
        ssi_netsap::sap::serve(&orb, node_ids.clone());
        let mut routes = tonic::service::Routes::builder();
        for ext in extensions {
            ext.start(&orb, &me, &mut routes);
        }
        let sap = ssi_netsap::sap::SapClient::new(&orb, node_ids);
        match ssi_netsap::interpose::Supervisor::start(sap.clone(), id, tokio::runtime::Handle::current()) {
            Ok(sup) => {
                start_bind_guard(&me.dir, id, sap.clone(), sup.clone());
                procs.set_bind_gate(Arc::new(BindGate(sup)));
            }
            Err(e) => tracing::warn!("no bind interposition on this node (ssi run): {e}"),
        }
        let dispatcher = cfg.global_address.filter(|_| cfg.gateways.contains(&id)).and_then(|global| start_dispatcher(&cfg, id, global, sap.clone()));
        let volumes = ssi_pxfs::owners::Owners::new(orb.clone(), volume_specs(&cfg).iter().map(|v| (v.id, v.node)).collect());
        let svc = ControlService { orb: orb.clone(), cfg: Arc::new(cfg.clone()), stop: stop_tx.clone(), launcher, sap, volumes };
        let server = tonic::transport::Server::builder()
            .add_routes(routes.routes().add_service(ControlServer::new(svc)))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                let _ = stop_rx.changed().await;
            });
        tracing::info!(node = id, incarnation = format!("{incarnation:x}"), addr = %me.addr, "node up");
        let signals = async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! { _ = term.recv() => "SIGTERM", _ = int.recv() => "SIGINT" }
        };
        let mut stopped = stop_tx.subscribe();
        tokio::select! {
            r = server => r.context("control server")?,
            why = signals => tracing::info!("stopping on {why}"),
            _ = stopped.changed() => tracing::info!("stopping on request"),
        }
        let _ = stop_tx.send(true);
        // A stopped gateway steers nothing: its steering goes with it (the SAP is asked
        // through this runtime, so the dispatcher's last round must finish off it).
        if let Some(d) = dispatcher {
            tokio::task::spawn_blocking(move || d.stop()).await.ok();
        }
        procs.hang_up_all();
        // Unmount first: nothing may be left waiting on a server that is going away.
        if let Some(session) = fs {
            tokio::task::spawn_blocking(move || drop(session)).await.ok();
        }
        orb.shutdown();
        let c = orb.counters();
        // One parsable line for operators and for checking probe counts against the ORB's.
        tracing::info!(
            "final counters requests_sent={} oneway_sent={} replies_received={} requests_received={} replies_sent={} batches_sent={} messages_sent={} bytes_sent={} malformed={} auth_failures={} unreferenced={}",
            c.requests_sent, c.oneway_sent, c.replies_received, c.requests_received, c.replies_sent, c.batches_sent, c.messages_sent, c.bytes_sent, c.malformed, c.auth_failures, c.unreferenced
        );
        // Let the links send their last frames.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = std::fs::remove_file(&me.control_socket);
        let _ = std::fs::remove_file(me.dir.join("pid"));
        Ok(())
    })
}

/// The config's volumes as PXFS numbers them (their index in the config).
fn volume_specs(cfg: &Config) -> Vec<ssi_pxfs::VolumeSpec> {
    cfg.volumes
        .iter()
        .enumerate()
        .map(|(i, v)| ssi_pxfs::VolumeSpec { id: i as u32, path: v.path.clone(), node: v.node, dir: v.dir.clone() })
        .collect()
}

/// Serves this node's volumes and mounts the global namespace. A node that cannot (not
/// root, no /dev/fuse) says why in its log and goes on serving the ORB.
fn start_pxfs(cfg: &Config, orb: &Orb, id: u32, synthetic: Vec<ssi_pxfs::synthetic::SyntheticVolume>) -> Option<fuser::BackgroundSession> {
    let vols = volume_specs(cfg);
    // The volumes served here, read by this node's client without an invocation.
    let local = ssi_pxfs::server::LocalVolumes::default();
    for v in vols.iter().filter(|v| v.node == id) {
        match ssi_pxfs::server::serve(orb, v.id, &v.dir, &local) {
            Ok(_) => tracing::info!(volume = v.path, dir = %v.dir.display(), "serving volume"),
            Err(e) => tracing::error!(volume = v.path, "cannot serve volume from {}: {e}", v.dir.display()),
        }
    }
    let mountpoint = cfg.nodes[&id].mountpoint.clone();
    let client = match ssi_pxfs::client::Client::new(orb.clone(), tokio::runtime::Handle::current(), vols, local, synthetic) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("PXFS not mounted: {e}");
            return None;
        }
    };
    match ssi_pxfs::client::mount(client, &mountpoint) {
        Ok(s) => {
            tracing::info!(mountpoint = %mountpoint.display(), "global namespace mounted");
            Some(s)
        }
        Err(e) => {
            tracing::warn!("PXFS not mounted at {}: {e}", mountpoint.display());
            None
        }
    }
}

/// The node's SAP supervisor, as procmgmt's bind gate (`ssi run`).
struct BindGate(ssi_netsap::interpose::Supervisor);

impl ssi_procmgmt::server::BindGate for BindGate {
    fn filter(&self) -> Arc<Vec<libc::sock_filter>> {
        self.0.filter()
    }
    fn supervise(&self, listener: std::os::fd::OwnedFd, role: &ssi_procmgmt::proto::Interpose) {
        self.0.supervise(
            listener,
            ssi_netsap::interpose::Role { service: role.service.clone(), policy: role.policy.clone(), weight: role.weight.max(1) },
        );
    }
}
