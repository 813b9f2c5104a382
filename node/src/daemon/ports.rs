//! The daemon's `Ports` control call: the SAP table, and binds and releases by hand.

use tonic::Status;

use crate::control::proto::{PortEntry, PortListener, PortsReply, PortsRequest};
use ssi_netsap::proto::{Binding, Entry, Listener};
use ssi_netsap::sap::SapClient;

fn entry(e: Entry) -> PortEntry {
    PortEntry {
        proto: e.proto,
        port: e.port,
        service: e.service,
        policy: e.policy,
        listeners: e.listeners.iter().map(|l| PortListener { node: l.node, pid: l.pid, weight: l.weight.max(1) }).collect(),
    }
}

pub async fn serve(sap: &SapClient, node: u32, r: PortsRequest) -> Result<PortsReply, Status> {
    let fail = |e: ssi_orb::OrbError| Status::unavailable(format!("SAP: {e}"));
    match r.op.as_str() {
        "list" => Ok(PortsReply { ok: true, entries: sap.list().await.into_iter().map(entry).collect() }),
        "bind" => {
            let b = Binding {
                proto: r.proto,
                port: r.port,
                who: Some(Listener { node, pid: r.pid, weight: r.weight, incarnation: sap.incarnation() }),
                service: r.service,
                policy: r.policy,
            };
            let rep = sap.bind(b).await.map_err(|e| match e.os_errno() {
                Some(_) => Status::invalid_argument(e.to_string()),
                None => fail(e),
            })?;
            Ok(PortsReply { ok: rep.ok, entries: rep.holder.into_iter().map(entry).collect() })
        }
        "release" => {
            sap.release(r.proto, r.port, Listener { node, pid: r.pid, weight: 0, incarnation: 0 }).await.map_err(fail)?;
            Ok(PortsReply { ok: true, entries: vec![] })
        }
        other => Err(Status::invalid_argument(format!("unknown ports op {other:?} (list, bind, release)"))),
    }
}
