//! ssi-incop: the IN coprocessor of Friedman & Birman ("Using Group Communication Technology
//! to Implement a Reliable and Scalable Distributed IN Coprocessor") as an ssi workload.
//!
//! # Modules
//!
//! The IN coprocessor of seed 000, faithfully, on the ORB instead of Horus. Every daemon
//! serves one `Incop` object (name `incop`, `proto/incop.proto`) hosting whatever roles the
//! driver placed on its node; roles talk only in one-way batches.
//! - `node.rs` — the servant: `Start`/`Stop` roles, hands each batch to the member it names,
//!   keeps the node's `Group`, and applies the state-transfer rule (on every change of the
//!   group while a QE joins, the lowest-id ready QE — if here — sends it the state log).
//! - `group.rs` — the group as one node sees it: the starter's roster, joins and state-ready
//!   announcements, and the ORB's failure detector removing a departed node's members.
//! - `switch.rs` — the switch simulator: calls at a rate (with overload windows) every tick on
//!   both channels, dense sequence numbers in a queue (O(1) reply matching), duplicates
//!   removed, outcome counted when the deadline passes, per-interval and per-100 ms shares,
//!   latency hdrhistogram.
//! - `ea.rs` — an external adaptor: primary for odd (EA1) or even (EA2) calls, queries batched
//!   per QE and sent every sweep; the sweeper reissues calls unanswered after half the deadline
//!   to a different QE (the backup, or a lone primary), and takes over at once the calls of an
//!   EA that left; watermarks on pending calls.
//! - `qe.rs` — a query element: a full replica of the database, a worker answering one reply
//!   batch per query batch to both EAs, watermarks on its backlog; updates applied in the UI's
//!   order (held across gaps), the log since the dump (on its node's disk); joining: dump
//!   from disk, Join, updates held until the state log, then the UI's `Since`, then Ready.
//! - `ui.rs` — the update interface: numbers updates, keeps the log, multicasts to every node
//!   with a QE (joining ones too, and any node that asked `Since`); the paper's telephony rule:
//!   a service is plugged in before its addition is announced, and a removal is unplugged only
//!   once every QE in the view has applied it (`node.rs` asks them).
//! - `age.rs` — shedding by age beside the watermarks: once batches from a sender have kept
//!   arriving more than a quarter of the deadline late for 20 ms (measured against the least
//!   delay seen from that sender, so clocks need not agree), each such batch is dropped whole —
//!   at the EAs, on the switch's batches; QEs keep to the paper's watermark.
//! - `lib.rs` — `stub(orb, node, deadline)`: the one way the crate and its driver reach a
//!   node's `Incop`.
//! - `wheel.rs` (cyclic set of queues), `watermark.rs`, `pick.rs` (primary EA; primary and
//!   backup QE, never equal), `outbox.rs` (a queue and a sender task per destination node:
//!   a dead node only drops its own batches; a node back as a new incarnation is resolved
//!   again before the next send), `report.rs` (per-interval text and SVG; Fig 4(a)).
//!
//! # Invariants
//!
//! - **The IN coprocessor never waits on a node.** Its batches go through per-destination
//!   queues that drop when full; a crashed EA or QE costs at most half a deadline (the
//!   backup's reissue), before and after the failure detector notices.

pub mod proto {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ssi.incop.rs"));
}
pub mod age;
pub mod driver;
pub mod ea;
pub mod error;
pub mod group;
pub mod node;
pub mod outbox;
pub mod pick;
pub mod qe;
pub mod report;
pub mod switch;
pub mod ui;
pub mod watermark;
pub mod wheel;

pub use error::Error;

/// Why a role, a run, a placement or a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IncopError {
    #[error("a run needs a positive rate and at least one call")]
    EmptyRun,
    #[error("a run is in progress")]
    RunInProgress,
    #[error("{what} in {}: {source}", dir.display())]
    State { what: &'static str, dir: std::path::PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Dump { path: std::path::PathBuf, source: std::io::Error },
    #[error("{}: not a dump (truncated)", path.display())]
    NotADump { path: std::path::PathBuf },
    /// A command-line fault, overload or placement that cannot be: the reason.
    #[error("{0}")]
    Usage(String),
    /// The plotting library's error, as it words it.
    #[error("plot: {0}")]
    Plot(String),
}

/// The name every node's `Incop` object is registered under.
pub const INCOP_NAME: &str = "incop";

/// Node `node`'s `Incop` object, its calls bounded by `deadline`.
pub async fn stub(orb: &ssi_orb::Orb, node: u32, deadline: std::time::Duration) -> Result<proto::IncopStub, ssi_orb::OrbError> {
    let h = orb.resolve(node, INCOP_NAME).await?;
    Ok(proto::IncopStub::new(h)?.with_options(ssi_orb::CallOptions::default().deadline(deadline)))
}

pub use node::serve;

/// The IN coprocessor's object on every node: what the binary hands each daemon
/// (`ssi_node::daemon::Extension`); its state lives under the node's directory.
pub struct Servants;

impl ssi_node::daemon::Extension for Servants {
    fn start(self: Box<Self>, orb: &ssi_orb::Orb, node: &ssi_node::config::NodeConfig, _: &mut tonic::service::RoutesBuilder) {
        serve(orb, node.dir.join("incop"));
    }
}
