//! `ssi ports`: the SAP table, and binds and releases by hand (an operator reserving a port);
//! the daemon's `Ports` control call (`daemon::ports`) behind it.

use std::path::Path;

use serde_json::json;

use crate::control::proto::{PortsReply, PortsRequest};
use crate::error::{Error, Result};
use crate::{bail, failed};
use ssi_netsap::sap::{proto_name, TCP, UDP};

fn call(dir: &Path, node: Option<u32>, req: PortsRequest) -> Result<PortsReply> {
    let cfg = crate::local::load(dir)?;
    let nc = match node {
        Some(n) => cfg.node(n)?.clone(),
        None => cfg
            .nodes
            .values()
            .find(|n| crate::pidfile::node_pid(n).is_some())
            .cloned()
            .ok_or_else(|| failed!("no node of the cluster in {} is running", dir.display()))?,
    };
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let mut c = crate::control::connect(&nc.control_socket).await.map_err(|e| failed!("node {}: {e}", nc.id))?;
        Ok(c.ports(req).await.map_err(|s| failed!("{}", s.message()))?.into_inner())
    })
}

/// The TCP listeners of `port` in the SAP table, as (node, pid).
pub fn listeners(dir: &Path, port: u16) -> Result<Vec<(u32, u32)>> {
    let rep = call(dir, None, PortsRequest { op: "list".into(), ..Default::default() })?;
    Ok(rep
        .entries
        .iter()
        .filter(|e| e.proto == TCP && e.port == port as u32)
        .flat_map(|e| e.listeners.iter().map(|l| (l.node, l.pid)))
        .collect())
}

/// `ssi ports [--json]`.
pub fn list(dir: &Path, as_json: bool) -> Result<()> {
    let rep = call(dir, None, PortsRequest { op: "list".into(), ..Default::default() })?;
    if as_json {
        let v: Vec<_> = rep
            .entries
            .iter()
            .map(|e| {
                json!({"proto": proto_name(e.proto), "port": e.port, "service": e.service, "policy": e.policy,
                       "listeners": e.listeners.iter().map(|l| json!({"node": l.node, "pid": l.pid, "weight": l.weight})).collect::<Vec<_>>()})
            })
            .collect();
        println!("{}", json!({ "ports": v }));
        return Ok(());
    }
    println!("{:<6} {:>6}  {:<12} {:<8} LISTENERS (node:pid)", "PROTO", "PORT", "SERVICE", "POLICY");
    for e in &rep.entries {
        let ls: Vec<String> = e.listeners.iter().map(|l| format!("{}:{}", l.node, l.pid)).collect();
        let (service, policy) = if e.service.is_empty() { ("-", "-") } else { (e.service.as_str(), e.policy.as_str()) };
        println!("{:<6} {:>6}  {:<12} {:<8} {}", proto_name(e.proto), e.port, service, policy, ls.join(" "));
    }
    Ok(())
}

pub struct BindOptions {
    pub dir: std::path::PathBuf,
    pub node: Option<u32>,
    pub udp: bool,
    pub port: u32,
    pub pid: u32,
    pub service: Option<String>,
    pub policy: String,
    pub release: bool,
}

/// `ssi ports bind|release`: exits 98 (EADDRINUSE) when a bind finds the port held elsewhere.
pub fn change(o: &BindOptions) -> Result<()> {
    if o.port == 0 || o.port > 65535 {
        bail!("port {} is not 1..=65535", o.port);
    }
    if !matches!(o.policy.as_str(), "rr" | "weighted" | "sticky") {
        bail!("policy {:?} is not rr, weighted or sticky", o.policy);
    }
    let req = PortsRequest {
        op: if o.release { "release" } else { "bind" }.into(),
        proto: if o.udp { UDP } else { TCP },
        port: o.port,
        pid: o.pid,
        service: o.service.clone().unwrap_or_default(),
        policy: o.policy.clone(),
        weight: 1,
    };
    let rep = call(&o.dir, o.node, req)?;
    if !rep.ok {
        let who: Vec<String> =
            rep.entries.iter().flat_map(|e| e.listeners.iter().map(|l| format!("node {} pid {}", l.node, l.pid))).collect();
        eprintln!("ssi ports: {}/{} is in use (EADDRINUSE) by {}", o.port, if o.udp { "udp" } else { "tcp" }, who.join(", "));
        std::process::exit(libc::EADDRINUSE);
    }
    Ok(())
}
