//! ssi-incop: the IN coprocessor of Friedman & Birman (seed 000) as an ssi workload.
//!
//! Every daemon serves one `Incop` object (`node`), which hosts the roles the driver
//! (`ssi workload in`) places on that node: the switch simulator (`switch`), external
//! adaptors (`ea`), query elements (`qe`), the update interface (`ui`). The group view
//! (`group`) is each node's own, fed by the ORB's failure detector. Roles talk in one-way
//! batches through per-node queues (`outbox`); the paper's mechanisms are their own
//! modules: the cyclic set of queues (`wheel`), the watermarks (`watermark`), the
//! deterministic QE pick (`pick`). `report` turns a run into text and a plot.

pub mod proto {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ssi.incop.rs"));
}
pub mod age;
pub mod ea;
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

/// The name every node's `Incop` object is registered under.
pub const INCOP_NAME: &str = "incop";

/// Node `node`'s `Incop` object, its calls bounded by `deadline`.
pub async fn stub(orb: &ssi_orb::Orb, node: u32, deadline: std::time::Duration) -> Result<proto::IncopStub, ssi_orb::OrbError> {
    let h = orb.resolve(node, INCOP_NAME).await?;
    Ok(proto::IncopStub::new(h)?.with_options(ssi_orb::CallOptions::default().deadline(deadline)))
}

pub use node::serve;
