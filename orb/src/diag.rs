//! The `diag` object every node daemon serves: echo and sink for benchmarks, a stalling
//! method, and operations that create, pass, hold and drop references (the refcount tests
//! and operators checking a cluster use them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::Exception;
use crate::object::{CallCtx, ObjHandle, RefKey};
use crate::orb::Orb;
use crate::proto::diag::{self, Blob, Count, GiveRequest, ObjectList, RefMsg, SleepRequest, ViewList, ViewNumber};
use crate::proto::{Empty, ObjRef, OneWay};

pub const DIAG_NAME: &str = "diag";

/// A stub on the diag object of `node`.
pub async fn stub(orb: &Orb, node: u32) -> Result<diag::DiagStub, crate::error::OrbError> {
    diag::DiagStub::new(orb.resolve(node, DIAG_NAME).await?)
}

/// Exports the diag object on `orb` and registers it under `diag`.
pub fn install(orb: &Orb) -> ObjHandle {
    let h = diag::export_diag(orb, Diag::default());
    orb.register_name(DIAG_NAME, &h);
    h
}

#[derive(Default)]
pub struct Diag {
    sunk: AtomicU64,
    held: Mutex<HashMap<RefKey, ObjHandle>>,
}

fn want_ref(r: &Option<ObjRef>) -> Result<&ObjRef, Exception> {
    r.as_ref().ok_or_else(|| Exception::app("request carries no reference"))
}

impl Diag {
    fn held(&self, r: &ObjRef) -> Result<ObjHandle, Exception> {
        self.held.lock().get(&RefKey::from(r)).cloned().ok_or_else(|| Exception::app(format!("this node holds no reference to {r}")))
    }
}

fn orb_err(e: crate::error::OrbError) -> Exception {
    match e {
        crate::error::OrbError::Exception(x) => x,
        other => Exception::app(other.to_string()),
    }
}

#[async_trait::async_trait]
impl diag::Diag for Diag {
    async fn echo(&self, _ctx: &CallCtx, req: Blob) -> Result<Blob, Exception> {
        Ok(req)
    }
    async fn sink(&self, _ctx: &CallCtx, _req: Blob) -> Result<OneWay, Exception> {
        self.sunk.fetch_add(1, Relaxed);
        Ok(OneWay {})
    }
    async fn sink_count(&self, _ctx: &CallCtx, _req: Empty) -> Result<Count, Exception> {
        Ok(Count { n: self.sunk.load(Relaxed) })
    }
    async fn sleep(&self, _ctx: &CallCtx, req: SleepRequest) -> Result<Count, Exception> {
        tokio::time::sleep(Duration::from_millis(req.ms.min(60_000))).await;
        Ok(Count { n: req.ms })
    }
    async fn spawn(&self, ctx: &CallCtx, _req: Empty) -> Result<RefMsg, Exception> {
        let h = diag::export_counter(&ctx.orb, Counter::default());
        let r = *h.objref();
        self.held.lock().insert(h.key(), h);
        Ok(RefMsg { obj: Some(r) })
    }
    async fn hold(&self, ctx: &CallCtx, req: RefMsg) -> Result<Empty, Exception> {
        let r = want_ref(&req.obj)?;
        let h = ctx.refs.adopt(r).ok_or_else(|| Exception::app(format!("reference {r} did not arrive counted")))?;
        self.held.lock().insert(h.key(), h);
        Ok(Empty {})
    }
    async fn give(&self, ctx: &CallCtx, req: GiveRequest) -> Result<Empty, Exception> {
        let r = want_ref(&req.obj)?;
        let _keep = self.held(r)?;
        let peer = ctx.orb.resolve(req.to, DIAG_NAME).await.map_err(orb_err)?;
        let stub = diag::DiagStub::new(peer).map_err(orb_err)?;
        stub.hold(RefMsg { obj: Some(*r) }).await.map_err(orb_err)?;
        Ok(Empty {})
    }
    async fn drop_ref(&self, _ctx: &CallCtx, req: RefMsg) -> Result<Empty, Exception> {
        let r = want_ref(&req.obj)?;
        self.held.lock().remove(&RefKey::from(r)).ok_or_else(|| Exception::app(format!("this node holds no reference to {r}")))?;
        Ok(Empty {})
    }
    async fn invoke_held(&self, _ctx: &CallCtx, req: RefMsg) -> Result<Count, Exception> {
        let h = self.held(want_ref(&req.obj)?)?;
        let c = diag::CounterStub::new(h).map_err(orb_err)?;
        Ok(c.incr(Empty {}).await.map_err(orb_err)?.into_inner())
    }
    async fn unreferenced_log(&self, ctx: &CallCtx, _req: Empty) -> Result<ObjectList, Exception> {
        Ok(ObjectList { objects: ctx.orb.unreferenced_log() })
    }
    async fn views(&self, ctx: &CallCtx, _req: Empty) -> Result<ViewList, Exception> {
        let views = ctx
            .orb
            .views_seen()
            .into_iter()
            .map(|v| ViewNumber {
                number: v.number,
                nodes: v.members.iter().map(|m| m.node).collect(),
                incarnations: v.members.iter().map(|m| m.incarnation).collect(),
            })
            .collect();
        Ok(ViewList { views })
    }
}

/// A counter object: what the refcount tests pass around.
#[derive(Default)]
pub struct Counter {
    n: AtomicU64,
}

#[async_trait::async_trait]
impl diag::Counter for Counter {
    async fn incr(&self, _ctx: &CallCtx, _req: Empty) -> Result<Count, Exception> {
        Ok(Count { n: self.n.fetch_add(1, Relaxed) + 1 })
    }
}
