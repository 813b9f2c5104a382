//! Sending to other nodes' `Incop` objects without ever waiting on one: a queue and a
//! sender task per destination node. A node that is down (or slow) only fills its own
//! queue; when that is full, further batches for it are dropped — the coprocessor's backup
//! mechanism, not the sender, makes up for lost batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ssi_orb::Orb;
use tokio::sync::mpsc;

use crate::proto::{Announce, Answers, Calls, IncopStub, Updates};

/// A one-way message for some node's `Incop`.
pub enum Out {
    Offer(Calls),
    Query(Calls),
    Reply(Answers),
    Relay(Answers),
    Multicast(Updates),
    StateLog(Updates),
    Join(Announce),
    Ready(Announce),
}

const QUEUE: usize = 4096;

#[derive(Clone)]
pub struct Outbox(Arc<Inner>);

struct Inner {
    orb: Orb,
    queues: Mutex<HashMap<u32, mpsc::Sender<Out>>>,
}

impl Outbox {
    pub fn new(orb: &Orb) -> Outbox {
        Outbox(Arc::new(Inner { orb: orb.clone(), queues: Mutex::new(HashMap::new()) }))
    }

    pub fn send(&self, node: u32, msg: Out) {
        let tx = {
            let mut q = self.0.queues.lock();
            q.entry(node)
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    tokio::spawn(sender(self.0.orb.clone(), node, rx));
                    tx
                })
                .clone()
        };
        let _ = tx.try_send(msg); // full: dropped (see above)
    }
}

async fn sender(orb: Orb, node: u32, mut rx: mpsc::Receiver<Out>) {
    let mut stub: Option<IncopStub> = None;
    while let Some(msg) = rx.recv().await {
        // The node came back as a new incarnation: the object this stub names died with the old
        // one (a one-way call on it would be refused), so find the new node's object first.
        if stub.as_ref().is_some_and(|s| s.handle().objref().incarnation != orb.peer_incarnation(node)) {
            stub = None;
        }
        if stub.is_none() {
            stub = match crate::stub(&orb, node, Duration::from_millis(500)).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!(node, "incop: cannot reach node: {e}");
                    continue; // dropped: the node is not there (yet)
                }
            };
        }
        let s = stub.as_ref().expect("resolved above");
        let r = match msg {
            Out::Offer(m) => s.offer(m).await,
            Out::Query(m) => s.query(m).await,
            Out::Reply(m) => s.reply(m).await,
            Out::Relay(m) => s.relay(m).await,
            Out::Multicast(m) => s.multicast(m).await,
            Out::StateLog(m) => s.state_log(m).await,
            Out::Join(m) => s.join(m).await,
            Out::Ready(m) => s.ready(m).await,
        };
        if let Err(e) = r {
            tracing::debug!(node, "incop: send failed: {e}");
            stub = None; // resolve again: the node may have restarted
        }
    }
}
