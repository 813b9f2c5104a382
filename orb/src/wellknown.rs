//! The well-known objects every node serves: names, reference counts, membership.

use std::sync::Arc;

use crate::error::Exception;
use crate::object::CallCtx;
use crate::orb::{well_known, Orb};
use crate::proto::svc::{self, NameList, NodeInfo, ResolveReply};
use crate::proto::{Empty, OneWay};

pub(crate) fn install(orb: &Orb) {
    orb.export_at(well_known::NAMES, Arc::new(svc::NamesSkeleton(Arc::new(Names))), false);
    orb.export_at(well_known::REFCOUNTS, Arc::new(svc::RefCountsSkeleton(Arc::new(RefCounts))), false);
    orb.export_at(well_known::MEMBERSHIP, Arc::new(svc::MembershipSkeleton(Arc::new(Membership))), false);
}

struct Names;

#[async_trait::async_trait]
impl svc::Names for Names {
    async fn resolve(&self, ctx: &CallCtx, req: svc::ResolveRequest) -> Result<ResolveReply, Exception> {
        match ctx.orb.lookup_name(&req.name) {
            Some(h) => Ok(ResolveReply { obj: Some(*h.objref()) }),
            None => Err(Exception::new(
                crate::error::code::OBJECT_NOT_EXIST,
                format!("no object named {:?} on node {}", req.name, ctx.orb.node()),
            )),
        }
    }
    async fn list(&self, ctx: &CallCtx, _req: Empty) -> Result<NameList, Exception> {
        Ok(NameList { names: ctx.orb.names() })
    }
}

struct RefCounts;

#[async_trait::async_trait]
impl svc::RefCounts for RefCounts {
    async fn add_ref(&self, ctx: &CallCtx, req: svc::AddRefRequest) -> Result<Empty, Exception> {
        for o in &req.objects {
            ctx.orb.0.add_remote(req.holder, *o)?;
        }
        Ok(Empty {})
    }
    async fn release(&self, ctx: &CallCtx, req: svc::ReleaseRequest) -> Result<OneWay, Exception> {
        for r in &req.refs {
            ctx.orb.0.release_remote(ctx.src, r.object, r.count);
        }
        Ok(OneWay {})
    }
}

struct Membership;

#[async_trait::async_trait]
impl svc::Membership for Membership {
    async fn heartbeat(&self, ctx: &CallCtx, req: svc::HeartbeatMsg) -> Result<OneWay, Exception> {
        ctx.orb.0.on_heartbeat(ctx.src, req.view, req.quorum);
        Ok(OneWay {})
    }
    async fn info(&self, ctx: &CallCtx, _req: Empty) -> Result<NodeInfo, Exception> {
        let o = &ctx.orb;
        Ok(NodeInfo {
            node: o.node(),
            incarnation: o.incarnation(),
            addr: o.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            uptime_ms: o.uptime().as_millis() as u64,
            view: Some(o.view()),
            counters: Some(o.counters()),
            quorum: Some(o.quorum()),
        })
    }
    async fn raft(&self, ctx: &CallCtx, req: svc::RaftBatch) -> Result<OneWay, Exception> {
        if ctx.src != crate::orb::TOOL_NODE {
            let _ = ctx.orb.0.quorum_tx.send(crate::quorum::Input::Raft(ctx.src, req.msgs));
        }
        Ok(OneWay {})
    }
    async fn change_voter(&self, ctx: &CallCtx, req: svc::VoterChange) -> Result<svc::QuorumInfo, Exception> {
        if ctx.creds.as_ref().is_some_and(|c| c.uid != 0) {
            return Err(Exception::permission_denied("only root changes the voters"));
        }
        ctx.orb.change_voter(req.node, req.add).await.map_err(|e| Exception::app(e.to_string()))
    }
}
