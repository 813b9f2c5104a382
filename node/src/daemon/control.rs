//! The daemon's side of the control socket: status, shutdown, and the calls the `ssi` tool
//! makes for its user (exec, kill, ports, trace).

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::control::proto::control_server::Control;
use crate::control::proto::{self as cp, NodeStatus, StatusReply, StatusRequest};
use crate::control::require_admin;
use ssi_orb::proto::svc::{MembershipStub, MEMBERSHIP_INTERFACE};
use ssi_orb::{well_known, CallOptions, Liveness, Orb};

pub(super) struct ControlService {
    pub orb: Orb,
    pub cfg: Arc<Config>,
    pub stop: tokio::sync::watch::Sender<bool>,
    pub launcher: Arc<ssi_procmgmt::launch::Launcher>,
    pub sap: ssi_netsap::sap::SapClient,
    /// The volume servers' stubs (`ssi status` asks each what it keeps).
    pub volumes: ssi_pxfs::owners::Owners,
}

#[tonic::async_trait]
impl Control for ControlService {
    type ExecStream = super::procctl::ExecStream;

    async fn exec(&self, req: Request<tonic::Streaming<cp::ExecIn>>) -> Result<Response<Self::ExecStream>, Status> {
        super::procctl::exec(self.launcher.clone(), self.orb.node(), req).await
    }

    async fn kill(&self, req: Request<cp::KillRequest>) -> Result<Response<cp::Empty>, Status> {
        super::procctl::kill(&self.launcher, req).await
    }

    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let view = self.orb.view();
        let quorum = self.orb.quorum();
        let opts = CallOptions::default().deadline(Duration::from_millis(500));
        // Every node and volume asked at once: during a partition the unreachable ones cost
        // one deadline, not one each.
        let nodes = futures_util::future::join_all(self.cfg.nodes.iter().map(|(id, n)| {
            let opts = opts.clone();
            async move {
                let liveness = self.orb.liveness(*id);
                let mut st = NodeStatus {
                    id: *id,
                    addr: n.addr.to_string(),
                    state: match liveness {
                        Liveness::Up => "up",
                        Liveness::Down => "down",
                        Liveness::Unknown => "unknown",
                    }
                    .into(),
                    mountpoint: n.mountpoint.display().to_string(),
                    ..Default::default()
                };
                if *id == self.orb.node() {
                    st.pid = std::process::id() as u64;
                }
                if liveness == Liveness::Up {
                    let stub = MembershipStub::new(self.orb.well_known(*id, well_known::MEMBERSHIP, MEMBERSHIP_INTERFACE))
                        .expect("well-known interface")
                        .with_options(opts);
                    if let Ok(info) = stub.info(ssi_orb::proto::Empty {}).await {
                        st.incarnation = info.incarnation;
                        st.uptime_ms = info.uptime_ms;
                    }
                }
                st
            }
        }))
        .await;
        let volumes = futures_util::future::join_all(self.cfg.volumes.iter().enumerate().map(|(i, v)| {
            let opts = opts.clone();
            async move {
                let mut vs = cp::VolumeStatus { path: v.path.clone(), node: v.node, ..Default::default() };
                if self.orb.liveness(v.node) == Liveness::Up {
                    if let Ok(s) = self.volumes.stub(i as u32).await {
                        vs.state = s.with_options(opts).state(ssi_orb::proto::Empty {}).await.ok().map(|st| st.into_inner());
                        if vs.state.is_none() {
                            // Its server may have restarted: resolve it again next time.
                            self.volumes.drop_stub(i as u32);
                        }
                    }
                }
                vs
            }
        }))
        .await;
        Ok(Response::new(StatusReply {
            cluster: self.orb.cluster().to_string(),
            node: self.orb.node(),
            view: view.number,
            coordinator: view.coordinator,
            view_members: view.members.iter().map(|m| m.node).collect(),
            global_address: self.cfg.global_address.map(|a| a.to_string()).unwrap_or_default(),
            nodes,
            requests_sent: self.orb.counters().requests_sent,
            volumes,
            quorum: quorum.quorum,
            leader: quorum.leader,
            voters: quorum.voters,
            fencing: quorum.fencing,
            log_snapshot: quorum.log_snapshot,
            log_last: quorum.log_last,
            roles: view.roles.iter().map(|r| cp::RoleStatus { name: r.name.clone(), node: r.node, epoch: r.epoch }).collect(),
            in_view: view.has(self.orb.node(), self.orb.incarnation()),
        }))
    }

    async fn shutdown(&self, req: Request<cp::Empty>) -> Result<Response<cp::Empty>, Status> {
        require_admin(&req)?;
        let _ = self.stop.send(true);
        Ok(Response::new(cp::Empty {}))
    }

    async fn ports(&self, req: Request<cp::PortsRequest>) -> Result<Response<cp::PortsReply>, Status> {
        if req.get_ref().op != "list" {
            require_admin(&req)?;
        }
        super::ports::serve(&self.sap, self.orb.node(), req.into_inner()).await.map(Response::new)
    }

    async fn trace(&self, req: Request<cp::TraceRequest>) -> Result<Response<cp::TraceReply>, Status> {
        require_admin(&req)?;
        super::trace::serve(&self.orb, req.into_inner()).map(Response::new)
    }
}
