//! ssi-sdds: Litwin's scalable distributed data structures on the ssi ORB — RP* (range
//! partitioning, the AMOS-SDDS paper's choice, seed 004) and LH* (linear hashing) — with
//! parallel scans that ship a function to the data.
//!
//! `addr` is the addressing (images, forwarding, IAMs: pure), `bucket` a bucket's records,
//! splits and E-strategy evaluation, `isql` the I-strategy (SQLite in memory), `server` a
//! node's buckets and the files' coordinators, `client` a client with its image, `person`
//! the benchmark's table and its one-node SQLite baseline.

pub mod proto {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ssi.sdds.rs"));
}
pub mod addr;
pub mod bucket;
pub mod client;
pub mod isql;
pub mod person;
pub mod plot;
pub mod server;

/// The name every node's `Sdds` object is registered under.
pub const SDDS_NAME: &str = "sdds";

/// The three key operations: one request type, addressed and forwarded alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOp {
    Insert,
    Search,
    Delete,
}

impl KeyOp {
    pub async fn call(self, s: &proto::SddsStub, kb: proto::KeyBatch) -> Result<ssi_orb::Received<proto::OpReply>, ssi_orb::OrbError> {
        match self {
            KeyOp::Insert => s.insert(kb).await,
            KeyOp::Search => s.search(kb).await,
            KeyOp::Delete => s.delete(kb).await,
        }
    }
}

/// Every node's `Sdds` object, each resolved once (servers and clients alike).
pub struct Stubs {
    orb: ssi_orb::Orb,
    deadline: std::time::Duration,
    map: parking_lot::Mutex<std::collections::HashMap<u32, proto::SddsStub>>,
}

impl Stubs {
    pub fn new(orb: &ssi_orb::Orb, deadline: std::time::Duration) -> Stubs {
        Stubs { orb: orb.clone(), deadline, map: Default::default() }
    }

    pub async fn get(&self, node: u32) -> Result<proto::SddsStub, ssi_orb::OrbError> {
        if let Some(s) = self.map.lock().get(&node) {
            return Ok(s.clone());
        }
        let h = self.orb.resolve(node, SDDS_NAME).await?;
        let s = proto::SddsStub::new(h)?.with_options(ssi_orb::CallOptions::default().deadline(self.deadline));
        self.map.lock().insert(node, s.clone());
        Ok(s)
    }
}

pub use server::serve;
