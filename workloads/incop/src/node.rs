//! One node's `Incop` object: starts and stops the roles placed here, hands each incoming
//! batch to the role it is for, and keeps the node's group view — including the paper's
//! state transfer rule: whenever the group changes while a QE is joining, the live QE with
//! the lowest id (if it is here) sends it the state log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ssi_orb::proto::{Empty, OneWay};
use ssi_orb::{CallCtx, Exception, Orb};

use crate::ea::Ea;
use crate::group::Group;
use crate::outbox::{Out, Outbox};
use crate::proto::{
    export_incop, Announce, Answers, Calls, Incop, IncopStub, IssueReply, IssueReq, LookupReply, LookupReq, Member, NodeStatus, Params,
    Progress, Report, Role, RunReq, SinceReq, StartReq, Updates,
};
use crate::qe::Qe;
use crate::switch::Switch;
use crate::ui::Ui;
use crate::INCOP_NAME;

#[derive(Default)]
struct Roles {
    switch: Option<Arc<Switch>>,
    ui: Option<Arc<Ui>>,
    eas: HashMap<u32, Arc<Ea>>,
    qes: HashMap<u32, Arc<Qe>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Roles {
    fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        *self = Roles::default();
    }
}

#[derive(Clone)]
pub struct IncopNode(Arc<Inner>);

struct Inner {
    orb: Orb,
    out: Outbox,
    group: Arc<Mutex<Group>>,
    roles: Mutex<Roles>,
    /// Where QEs keep their dump and log: this node's own disk.
    state_dir: PathBuf,
}

/// Exports this node's `Incop` object (name `incop`) and follows the ORB's view.
pub fn serve(orb: &Orb, state_dir: PathBuf) -> IncopNode {
    let node = IncopNode(Arc::new(Inner {
        orb: orb.clone(),
        out: Outbox::new(orb),
        group: Default::default(),
        roles: Default::default(),
        state_dir,
    }));
    let h = export_incop(orb, node.clone());
    orb.register_name(INCOP_NAME, &h);
    let n = node.clone();
    tokio::spawn(orb.departures(move |gone| {
        let n = n.clone();
        async move {
            if n.0.group.lock().node_gone(gone) {
                tracing::info!(node = gone, "incop: members on node {gone} left the group");
                n.group_changed();
            }
        }
    }));
    node
}

fn bad(why: impl std::fmt::Display) -> Exception {
    Exception::bad_request(why)
}

impl IncopNode {
    fn switch(&self) -> Result<Arc<Switch>, Exception> {
        self.0.roles.lock().switch.clone().ok_or_else(|| bad("no switch on this node"))
    }

    /// State transfer for joining QEs, by the lowest-id ready QE if it is on this node.
    fn group_changed(&self) {
        let (joining, first) = {
            let g = self.0.group.lock();
            (g.joining_qes(), g.ready_qes().first().cloned())
        };
        let Some(first) = first else { return };
        let Some(qe) = self.0.roles.lock().qes.get(&first.id).cloned() else { return };
        for j in joining {
            let mut log = qe.log();
            log.to = j.id;
            qe.count_state_log_sent();
            self.0.out.send(j.node, Out::StateLog(log));
        }
    }

    /// A joining QE: tell the group, again every second until the state log came.
    fn join(&self, qe: Arc<Qe>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let nodes = me.0.group.lock().nodes();
                for n in nodes {
                    me.0.out.send(n, Out::Join(qe.announce()));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                if qe.is_ready() {
                    break;
                }
            }
        })
    }

    /// After the state log: what the UI logged since, then state-ready to the group.
    async fn finish_join(&self, qe: Arc<Qe>) {
        let ui = self.0.group.lock().ui();
        let missed = match ui {
            Some(ui) => {
                let r = async {
                    let s = crate::stub(&self.0.orb, ui.node, Duration::from_secs(2)).await?;
                    s.since(SinceReq { after: qe.applied(), member: qe.id() }).await
                }
                .await;
                match r {
                    Ok(u) => u.into_inner(),
                    Err(e) => {
                        tracing::warn!("incop: QE {} could not ask the UI for missed updates: {e}", qe.id());
                        Updates::default()
                    }
                }
            }
            None => Updates::default(),
        };
        let me = qe.become_ready(missed);
        self.0.group.lock().announce(&me);
        let nodes = self.0.group.lock().nodes();
        for n in nodes {
            self.0.out.send(n, Out::Ready(Announce { member: Some(me) }));
        }
        tracing::info!(qe = me.id, "incop: QE state-ready");
    }
}

fn check(p: &Params) -> Result<(), Exception> {
    if p.deadline_ms == 0 || p.sweep_ms == 0 || p.sweep_ms > p.deadline_ms {
        return Err(bad(format!("deadline {} ms and sweep {} ms: need 0 < sweep ≤ deadline", p.deadline_ms, p.sweep_ms)));
    }
    if p.ea_low > p.ea_high || p.qe_low > p.qe_high || p.ea_high == 0 || p.qe_high == 0 {
        return Err(bad("watermarks: need 0 < low ≤ high"));
    }
    if p.db_entries == 0 || p.db_entries > 100_000_000 {
        return Err(bad(format!("db_entries {}: need 1..=100000000", p.db_entries)));
    }
    Ok(())
}

#[ssi_orb::async_trait]
impl Incop for IncopNode {
    async fn start(&self, _ctx: &CallCtx, req: StartReq) -> Result<Empty, Exception> {
        let me = req.me.ok_or_else(|| bad("start without a member"))?;
        let p = req.params.ok_or_else(|| bad("start without parameters"))?;
        check(&p)?;
        if me.node != self.0.orb.node() {
            return Err(bad(format!("member {} is for node {}, this is node {}", me.id, me.node, self.0.orb.node())));
        }
        {
            let mut g = self.0.group.lock();
            g.merge(&req.roster);
            g.announce(&me);
        }
        let deadline = Duration::from_millis(p.deadline_ms as u64);
        let mut roles = self.0.roles.lock();
        match Role::try_from(me.role).unwrap_or(Role::None) {
            Role::Switch => roles.switch = Some(Switch::new(me, self.0.group.clone(), self.0.out.clone(), deadline, p.db_entries)),
            Role::Ui => roles.ui = Some(Ui::new(self.0.group.clone(), self.0.out.clone())),
            Role::Ea => {
                let ea = Ea::new(me, self.0.group.clone(), self.0.out.clone(), &p);
                roles.tasks.push(ea.start());
                roles.eas.insert(me.id, ea);
            }
            Role::Qe => {
                let qe = Qe::new(me, self.0.group.clone(), self.0.out.clone(), &p, &self.0.state_dir, req.joining)
                    .map_err(|e| Exception::app(e.to_string()))?;
                roles.tasks.push(qe.start());
                if req.joining {
                    roles.tasks.push(self.join(qe.clone()));
                }
                roles.qes.insert(me.id, qe);
            }
            Role::None => return Err(bad(format!("member {} has no role", me.id))),
        }
        Ok(Empty {})
    }

    async fn stop(&self, _ctx: &CallCtx, _req: Empty) -> Result<Empty, Exception> {
        self.0.roles.lock().stop();
        *self.0.group.lock() = Group::default();
        Ok(Empty {})
    }

    async fn status(&self, _ctx: &CallCtx, _req: Empty) -> Result<NodeStatus, Exception> {
        let (group, changes) = {
            let g = self.0.group.lock();
            (g.members(), g.changes())
        };
        let roles = self.0.roles.lock();
        let mut members: Vec<_> = roles.eas.values().map(|e| e.status()).chain(roles.qes.values().map(|q| q.status())).collect();
        for m in &mut members {
            m.view = changes;
            m.group = group.clone();
        }
        members.sort_by_key(|m| m.member.as_ref().map(|x| x.id));
        Ok(NodeStatus { members })
    }

    async fn run(&self, _ctx: &CallCtx, req: RunReq) -> Result<Empty, Exception> {
        let sw = self.switch()?;
        let t = sw.start(req).map_err(bad)?;
        self.0.roles.lock().tasks.push(t);
        Ok(Empty {})
    }

    async fn poll(&self, _ctx: &CallCtx, _req: Empty) -> Result<Progress, Exception> {
        Ok(self.switch()?.progress())
    }

    async fn finish(&self, _ctx: &CallCtx, _req: Empty) -> Result<Report, Exception> {
        self.switch()?.report().ok_or_else(|| bad("no run on this switch"))
    }

    async fn issue(&self, _ctx: &CallCtx, req: IssueReq) -> Result<IssueReply, Exception> {
        let ui = self.0.roles.lock().ui.clone().ok_or_else(|| bad("no UI on this node"))?;
        let (number, remove) = (req.number, req.remove);
        let seq = ui.issue(req);
        if !remove {
            return Ok(IssueReply { seq, qes_applied: 0, unplugged: false });
        }
        // Announce before unplug: disconnect only once every QE in the view has applied the
        // removal (a QE that leaves the view meanwhile no longer counts). Each QE is asked
        // until it confirms, through one stub per node.
        let t0 = std::time::Instant::now();
        let mut confirmed = std::collections::BTreeSet::new();
        let mut stubs: HashMap<u32, IncopStub> = HashMap::new();
        loop {
            let qes = self.0.group.lock().ready_qes();
            let waiting: Vec<&Member> = qes.iter().filter(|q| !confirmed.contains(&q.id)).collect();
            for q in waiting {
                if let std::collections::hash_map::Entry::Vacant(e) = stubs.entry(q.node) {
                    let Ok(s) = crate::stub(&self.0.orb, q.node, Duration::from_millis(500)).await else { continue };
                    e.insert(s);
                }
                if let Ok(r) = stubs[&q.node].lookup(LookupReq { qe: q.id, number: 0 }).await {
                    if r.applied_seq >= seq {
                        confirmed.insert(q.id);
                    }
                }
            }
            let applied = qes.iter().filter(|q| confirmed.contains(&q.id)).count();
            if applied == qes.len() {
                ui.unplug(number);
                return Ok(IssueReply { seq, qes_applied: applied as u32, unplugged: true });
            }
            if t0.elapsed() > Duration::from_secs(5) {
                return Err(Exception::app(format!(
                    "removal #{seq} announced, applied by {applied} of {} QEs within 5 s: not unplugged",
                    qes.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn lookup(&self, _ctx: &CallCtx, req: LookupReq) -> Result<LookupReply, Exception> {
        let qe = self.0.roles.lock().qes.get(&req.qe).cloned().ok_or_else(|| bad(format!("no QE {} on this node", req.qe)))?;
        Ok(qe.lookup(req.number))
    }

    async fn since(&self, ctx: &CallCtx, req: SinceReq) -> Result<Updates, Exception> {
        let ui = self.0.roles.lock().ui.clone().ok_or_else(|| bad("no UI on this node"))?;
        Ok(ui.since(req.after, ctx.src))
    }

    async fn offer(&self, _ctx: &CallCtx, req: Calls) -> Result<OneWay, Exception> {
        let ea = self.0.roles.lock().eas.get(&req.to).cloned();
        if let Some(ea) = ea {
            ea.offer(req);
        }
        Ok(OneWay {})
    }

    async fn query(&self, _ctx: &CallCtx, req: Calls) -> Result<OneWay, Exception> {
        let qe = self.0.roles.lock().qes.get(&req.to).cloned();
        if let Some(qe) = qe {
            qe.query(req);
        }
        Ok(OneWay {})
    }

    async fn reply(&self, _ctx: &CallCtx, req: Answers) -> Result<OneWay, Exception> {
        let ea = self.0.roles.lock().eas.get(&req.to).cloned();
        if let Some(ea) = ea {
            ea.reply(req);
        }
        Ok(OneWay {})
    }

    async fn relay(&self, _ctx: &CallCtx, req: Answers) -> Result<OneWay, Exception> {
        let sw = self.0.roles.lock().switch.clone();
        if let Some(sw) = sw {
            sw.relay(req);
        }
        Ok(OneWay {})
    }

    async fn multicast(&self, _ctx: &CallCtx, req: Updates) -> Result<OneWay, Exception> {
        let qes: Vec<_> = self.0.roles.lock().qes.values().cloned().collect();
        for qe in qes {
            qe.updates(req.clone());
        }
        Ok(OneWay {})
    }

    async fn state_log(&self, _ctx: &CallCtx, req: Updates) -> Result<OneWay, Exception> {
        let qe = self.0.roles.lock().qes.get(&req.to).cloned();
        if let Some(qe) = qe {
            if qe.state_log(req) {
                let me = self.clone();
                tokio::spawn(async move { me.finish_join(qe).await });
            }
        }
        Ok(OneWay {})
    }

    async fn join(&self, _ctx: &CallCtx, req: Announce) -> Result<OneWay, Exception> {
        let m = req.member.ok_or_else(|| bad("join without a member"))?;
        self.0.group.lock().announce(&Member { ready: false, ..m });
        self.group_changed();
        Ok(OneWay {})
    }

    async fn ready(&self, _ctx: &CallCtx, req: Announce) -> Result<OneWay, Exception> {
        let m = req.member.ok_or_else(|| bad("ready without a member"))?;
        self.0.group.lock().announce(&Member { ready: true, ..m });
        Ok(OneWay {})
    }
}
