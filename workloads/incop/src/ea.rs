//! An external adaptor: takes the switch's calls on its channel, and for the calls it is
//! primary for (odd for EA1, even for EA2; all of them when it is the only one) sends a
//! query to the QE the pick names. Queries leave in one batch per QE every sweep. The
//! sweeper also takes the wheel's oldest queue: a call still unanswered there — about half
//! the deadline old — is reissued by the backup EA to a different QE, without waiting for
//! the failure detector; a call seen there a second time is past its deadline and goes.
//! Every QE answers both EAs, and both relay to the switch (which drops the duplicate).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::age::{mono_us, AgeGate};
use crate::group::Group;
use crate::outbox::{Out, Outbox};
use crate::pick;
use crate::proto::{Answers, Call, Calls, Member, MemberStatus, Params};
use crate::watermark::Watermark;
use crate::wheel::Wheel;

struct Pending {
    number: u64,
    /// This EA sent the query (as primary, or on taking over from a dead one).
    sent: bool,
    /// Seen by the sweeper once already.
    swept: bool,
}

struct State {
    pending: HashMap<u64, Pending>,
    wheel: Wheel,
    gate: Watermark,
    /// Queries waiting for the next sweep, per QE member id.
    batches: HashMap<u32, Vec<Call>>,
    /// The live EAs at the last sweep: when one goes, its calls become this EA's.
    eas_seen: Vec<u32>,
    age: AgeGate,
    st: MemberStatus,
}

pub struct Ea {
    me: Member,
    group: Arc<Mutex<Group>>,
    out: Outbox,
    sweep: Duration,
    /// Batches queued longer than this on their way are shed (`age`).
    age_limit_us: u64,
    state: Mutex<State>,
}

impl Ea {
    pub fn new(me: Member, group: Arc<Mutex<Group>>, out: Outbox, p: &Params) -> Arc<Ea> {
        Arc::new(Ea {
            state: Mutex::new(State {
                pending: HashMap::new(),
                wheel: Wheel::new(p.deadline_ms / 2, p.sweep_ms),
                gate: Watermark::new(p.ea_high, p.ea_low),
                batches: HashMap::new(),
                eas_seen: Vec::new(),
                age: AgeGate::default(),
                st: MemberStatus { member: Some(me), ..Default::default() },
            }),
            me,
            group,
            out,
            sweep: Duration::from_millis(p.sweep_ms.max(1) as u64),
            age_limit_us: p.deadline_ms as u64 * 1000 / 4,
        })
    }

    /// The sweeper, every `sweep_ms` until aborted.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(me.sweep);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                iv.tick().await;
                me.sweep();
            }
        })
    }

    fn roles(&self) -> (Vec<u32>, Vec<Member>) {
        let g = self.group.lock();
        (g.eas().iter().map(|m| m.id).collect(), g.ready_qes())
    }

    /// Calls from the switch on this EA's channel.
    pub fn offer(&self, c: Calls) {
        let (eas, qes) = self.roles();
        let mut s = self.state.lock();
        if !s.age.fresh(c.from, c.sent_us, mono_us(), self.age_limit_us) {
            s.st.shed += c.calls.len() as u64;
            return;
        }
        for call in c.calls {
            if s.pending.contains_key(&call.seq) {
                continue;
            }
            let n = s.pending.len();
            if !s.gate.admit(n) {
                s.st.shed += 1;
                continue;
            }
            s.st.received += 1;
            s.wheel.insert(call.seq);
            let mut sent = false;
            if pick::primary_ea(call.seq, &eas) == Some(self.me.id) {
                if let Some(i) = pick::primary_qe(call.seq, qes.len()) {
                    s.batches.entry(qes[i].id).or_default().push(call);
                    s.st.forwarded += 1;
                    sent = true;
                }
            }
            s.pending.insert(call.seq, Pending { number: call.number, sent, swept: false });
        }
    }

    fn sweep(&self) {
        let (eas, qes) = self.roles();
        let alone = eas.len() <= 1;
        let batches = {
            let mut s = self.state.lock();
            let s = &mut *s;
            if s.eas_seen.iter().any(|e| !eas.contains(e)) {
                // An EA left: the calls it was primary for and this one never sent are
                // this one's now — sent at once rather than at half the deadline.
                for (seq, p) in s.pending.iter_mut().filter(|(_, p)| !p.sent && !p.swept) {
                    if let Some(i) = pick::primary_qe(*seq, qes.len()) {
                        s.batches.entry(qes[i].id).or_default().push(Call { seq: *seq, number: p.number });
                        s.st.forwarded += 1;
                        p.sent = true;
                    }
                }
            }
            s.eas_seen = eas;
            for seq in s.wheel.sweep() {
                let Some(p) = s.pending.get_mut(&seq) else { continue }; // answered
                if p.swept {
                    s.pending.remove(&seq); // a full deadline old: the switch has dropped it
                    continue;
                }
                p.swept = true;
                s.wheel.insert(seq);
                // Half the deadline and no answer: the backup reissues to a different QE.
                // The primary does too when it is the only EA left (no backup will).
                if !p.sent || alone {
                    if let Some(i) = pick::backup_qe(seq, qes.len()) {
                        s.batches.entry(qes[i].id).or_default().push(Call { seq, number: p.number });
                        s.st.reissued += 1;
                    }
                }
            }
            std::mem::take(&mut s.batches)
        };
        for (qe, calls) in batches {
            if let Some(m) = qes.iter().find(|m| m.id == qe) {
                self.out.send(m.node, Out::Query(Calls { to: qe, from: self.me.id, calls, sent_us: 0 }));
            }
        }
    }

    /// Answers from a QE: each call still pending is answered now, relayed to the switch.
    pub fn reply(&self, a: Answers) {
        let relay: Vec<_> = {
            let mut s = self.state.lock();
            let r: Vec<_> = a.answers.into_iter().filter(|x| s.pending.remove(&x.seq).is_some()).collect();
            s.st.relayed += r.len() as u64;
            r
        };
        if relay.is_empty() {
            return;
        }
        if let Some(sw) = self.group.lock().switch() {
            self.out.send(sw.node, Out::Relay(Answers { to: sw.id, from: self.me.id, answers: relay }));
        }
    }

    pub fn status(&self) -> MemberStatus {
        self.state.lock().st.clone()
    }
}
