//! The update interface: numbers the updates (the FIFO order every QE applies them in),
//! keeps the log, and multicasts each update to every node with a QE — joining ones
//! included. A QE that asks what it missed (`since`) gets the log after its last update
//! and every later multicast, even before this node has heard it join.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::group::Group;
use crate::outbox::{Out, Outbox};
use crate::proto::{IssueReq, Update, Updates};

#[derive(Default)]
struct State {
    /// The services that are connected (number → route): what a found answer may name.
    plugged: std::collections::BTreeMap<u64, u64>,
    seq: u64,
    log: Vec<Update>,
    /// Nodes that asked for the log: they get every update from then on.
    extra: BTreeSet<u32>,
}

pub struct Ui {
    group: Arc<Mutex<Group>>,
    out: Outbox,
    state: Mutex<State>,
}

impl Ui {
    pub fn new(group: Arc<Mutex<Group>>, out: Outbox) -> Arc<Ui> {
        Arc::new(Ui { group, out, state: Mutex::new(State::default()) })
    }

    /// Numbers and multicasts an update; an added service is plugged in first. A removal is
    /// only announced here: `unplug` disconnects it once every QE has applied it.
    pub fn issue(&self, r: IssueReq) -> u64 {
        let (u, mut nodes) = {
            let mut s = self.state.lock();
            if !r.remove {
                s.plugged.insert(r.number, r.route);
            }
            s.seq += 1;
            let u = Update { seq: s.seq, number: r.number, route: r.route, remove: r.remove };
            s.log.push(u);
            (u, s.extra.clone())
        };
        {
            let g = self.group.lock();
            nodes.extend(g.ready_qes().iter().chain(g.joining_qes().iter()).map(|m| m.node));
        }
        for n in nodes {
            self.out.send(n, Out::Multicast(Updates { to: 0, updates: vec![u] }));
        }
        u.seq
    }

    pub fn unplug(&self, number: u64) {
        self.state.lock().plugged.remove(&number);
    }

    pub fn since(&self, after: u64, node: u32) -> Updates {
        let mut s = self.state.lock();
        s.extra.insert(node);
        Updates { to: 0, updates: s.log.iter().filter(|u| u.seq > after).cloned().collect() }
    }
}
