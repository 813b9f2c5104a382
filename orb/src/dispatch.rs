//! Serving invocations: from the link reader to the servant and back.
//!
//! The reader hands every request to `OrbInner::serve_request`, which never blocks. Up to
//! `max_concurrent` invocations run at once; the rest wait in a queue served in priority
//! order (highest first, then arrival; Guardian 90's request priority). Past `max_queued`
//! new requests are refused with `Overloaded` — rejecting at the ORB layer, never by
//! stalling the reader. A servant future that completes without waiting is run inline in
//! the reader (no task spawn); one that waits continues as its own task.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::error::{code, Exception};
use crate::link::Link;
use crate::object::{CallCtx, Servant};
use crate::orb::OrbInner;
use crate::probes::record::RrServer;
use crate::probes::{self, Counters};
use crate::proto::{Header, Kind};
use crate::wire::{InMsg, WireMsg};

pub(crate) struct Job {
    link: Arc<Link>,
    servant: Arc<dyn Servant>,
    ctx: CallCtx,
    method: u32,
    payload: Bytes,
    twoway: bool,
    object: u64,
    seq: u64,
    /// When it was dispatched (0 unless a recorder wants stage times).
    t_dispatch: u64,
}

impl PartialEq for Job {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == CmpOrdering::Equal
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Job {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        // Max-heap: higher priority first, then lower sequence number (earlier arrival).
        self.ctx.priority.cmp(&o.ctx.priority).then_with(|| o.seq.cmp(&self.seq))
    }
}

struct DState {
    active: usize,
    queue: BinaryHeap<Job>,
    seq: u64,
}

pub(crate) struct Dispatcher {
    state: Mutex<DState>,
    max_active: usize,
    max_queued: usize,
}

enum Admit {
    Run(Job),
    Queued,
    Refused(Job),
}

impl Dispatcher {
    pub fn new(max_active: usize, max_queued: usize) -> Self {
        Dispatcher { state: Mutex::new(DState { active: 0, queue: BinaryHeap::new(), seq: 0 }), max_active: max_active.max(1), max_queued }
    }

    fn admit(&self, mut job: Job) -> Admit {
        let mut s = self.state.lock();
        s.seq += 1;
        job.seq = s.seq;
        if s.active < self.max_active {
            s.active += 1;
            Admit::Run(job)
        } else if s.queue.len() < self.max_queued {
            s.queue.push(job);
            Admit::Queued
        } else {
            Admit::Refused(job)
        }
    }

    /// A slot was freed: the next job keeps it, or it is released.
    fn next_or_release(&self) -> Option<Job> {
        let mut s = self.state.lock();
        match s.queue.pop() {
            Some(j) => Some(j),
            None => {
                s.active -= 1;
                None
            }
        }
    }
}

impl OrbInner {
    /// A REQUEST or ONEWAY arrived on `link`.
    pub(crate) fn serve_request(self: &Arc<Self>, link: &Arc<Link>, m: InMsg, last_seen: &mut u64) {
        Counters::add(&self.counters.requests_received, 1);
        let h = &m.header;
        let twoway = h.kind == Kind::Request as i32;
        if h.request_id <= *last_seen {
            // At-most-once: a replayed or reordered request is never executed again.
            self.reply_exception(
                link,
                h,
                Exception::new(code::DUPLICATE, format!("request {} already seen (last {})", h.request_id, *last_seen)),
                twoway,
            );
            return;
        }
        *last_seen = h.request_id;
        let refs = self.unmarshal_refs(link.peer(), &m.proto);
        let target = crate::proto::ObjRef { node: self.cfg.node, object: h.object, incarnation: h.incarnation, interface: h.interface };
        let servant = match self.find_servant(&target, h.interface) {
            Ok(s) => s,
            Err(e) => return self.reply_exception(link, h, e, twoway),
        };
        if twoway == servant.is_oneway(h.method) {
            let e = Exception::new(
                code::BAD_REQUEST,
                format!(
                    "method {} is {}; sent as {}",
                    h.method,
                    if twoway { "one-way" } else { "two-way" },
                    if twoway { "two-way" } else { "one-way" }
                ),
            );
            return self.reply_exception(link, h, e, twoway);
        }
        let ctx = CallCtx {
            orb: self.orb(),
            src: link.peer(),
            request_id: h.request_id,
            priority: h.priority,
            deadline: Instant::now() + Duration::from_micros(h.deadline_us.min(24 * 3600 * 1_000_000)),
            creds: h.creds.clone(),
            refs,
        };
        let t_dispatch = if twoway { probes::stamp() } else { 0 };
        let job =
            Job { link: link.clone(), servant, ctx, method: h.method, payload: m.payload, twoway, object: h.object, seq: 0, t_dispatch };
        match self.dispatcher.admit(job) {
            Admit::Run(job) => self.start(job),
            Admit::Queued => {}
            Admit::Refused(job) => {
                Counters::add(&self.counters.overloaded, 1);
                let h = Header { request_id: job.ctx.request_id, src_node: job.link.peer(), method: job.method, ..Default::default() };
                self.reply_exception(&job.link, &h, Exception::new(code::OVERLOADED, "dispatch queue full"), job.twoway);
            }
        }
    }

    /// Runs a job; if it completes without waiting, continues with queued jobs in the same slot.
    fn start(self: &Arc<Self>, mut job: Job) {
        loop {
            if job.ctx.deadline <= Instant::now() {
                let h = Header { request_id: job.ctx.request_id, src_node: job.link.peer(), method: job.method, ..Default::default() };
                self.reply_exception(&job.link, &h, Exception::new(code::DEADLINE_EXCEEDED, "deadline passed while queued"), job.twoway);
            } else {
                let mut fut: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(self.clone().execute(job));
                let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
                if fut.as_mut().poll(&mut cx) == Poll::Pending {
                    let inner = self.clone();
                    tokio::spawn(async move {
                        fut.await;
                        if let Some(next) = inner.dispatcher.next_or_release() {
                            inner.start(next);
                        }
                    });
                    return;
                }
            }
            match self.dispatcher.next_or_release() {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    async fn execute(self: Arc<Self>, job: Job) {
        let Job { link, servant, ctx, method, payload, twoway, object, t_dispatch, .. } = job;
        let (id, prio) = (ctx.request_id, ctx.priority);
        let t_start = if twoway { probes::stamp() } else { 0 };
        let res = servant.dispatch(ctx, method, payload).await;
        if !twoway {
            return;
        }
        let stages = Stages { t_dispatch, t_start, t_end: probes::stamp() };
        let header = Header {
            kind: Kind::Reply as i32,
            request_id: id,
            src_node: self.cfg.node,
            dst_node: link.peer(),
            object,
            method,
            priority: prio,
            ..Default::default()
        };
        let msg = match res {
            Ok(out) if out.refs.is_empty() => WireMsg { header, payload: out.payload, proto: Bytes::new() },
            Ok(out) => match self.orb().marshal_refs(&out.refs, link.peer()).await {
                Ok(proto) => WireMsg { header, payload: out.payload, proto },
                Err(e) => exception(header, code::INTERNAL, format!("cannot pass references in the reply: {e}")),
            },
            Err(e) => exception(header, e.code, e.message),
        };
        self.send_reply(&link, msg, stages);
    }

    fn send_reply(&self, link: &Link, mut msg: WireMsg, s: Stages) {
        let mut len = msg.encoded_len();
        if let Some(why) = crate::wire::size_error(len) {
            // The caller hears why instead of losing the link to a frame it must refuse.
            msg = exception(msg.header, code::INTERNAL, format!("the reply cannot be sent: {why}"));
            len = msg.encoded_len();
        }
        let h = &msg.header;
        probes::rr_server(&RrServer {
            req_id: h.request_id,
            src: h.dst_node,
            dst: self.cfg.node,
            method: h.method,
            ok: h.kind == Kind::Reply as i32,
            t_dispatch: s.t_dispatch,
            t_start: s.t_start,
            t_end: s.t_end,
        });
        Counters::add(&self.counters.replies_sent, 1);
        link.enqueue_sized(msg, len);
    }

    pub(crate) fn reply_exception(&self, link: &Link, req: &Header, e: Exception, twoway: bool) {
        if !twoway {
            tracing::debug!(request = req.request_id, src = req.src_node, "one-way invocation failed: {e}");
            return;
        }
        let header = Header {
            kind: Kind::Exception as i32,
            request_id: req.request_id,
            src_node: self.cfg.node,
            dst_node: link.peer(),
            method: req.method,
            code: e.code,
            message: e.message,
            ..Default::default()
        };
        self.send_reply(link, WireMsg { header, payload: Bytes::new(), proto: Bytes::new() }, Stages::default());
    }
}

/// A served request's stage times (0 when no recorder wanted them).
#[derive(Default, Clone, Copy)]
struct Stages {
    t_dispatch: u64,
    t_start: u64,
    t_end: u64,
}

/// A reply's header turned into an exception with no payload.
fn exception(mut header: Header, code: u32, message: String) -> WireMsg {
    header.kind = Kind::Exception as i32;
    header.code = code;
    header.message = message;
    WireMsg { header, payload: Bytes::new(), proto: Bytes::new() }
}
