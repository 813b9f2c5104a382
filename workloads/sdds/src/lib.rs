//! ssi-sdds: Litwin's scalable distributed data structures on the ssi ORB — RP* (range
//! partitioning, the AMOS-SDDS paper's choice) and LH* (linear hashing) — with
//! parallel scans that ship a function to the data.
//!
//! # Modules
//!
//! Scalable distributed data structures (seed 004): every daemon serves one `Sdds` object
//! (name `sdds`, `proto/sdds.proto`) holding the buckets of any file placed on its node
//! (bucket b on `nodes[b mod N]`); the node of bucket 0 coordinates the file (hands out split
//! tokens), never on the access path.
//! - `addr.rs` — pure addressing: LH* (h_j, the client's (i', n') image, Litwin's forwarding —
//!   at most two hops —, the IAM adjustment, safe for any bucket's (m, j)); RP* (images keyed
//!   by known lower bounds, which never change; forwarding down to the child that took a key
//!   or up to the parent for keys above all the bucket ever held; the gaps a range's answers
//!   leave).
//! - `bucket.rs` — records (BTreeMap), the bucket's place and its split children, splits (RP*
//!   at the median, LH* by the next level's hash), the E-strategy evaluation of shipped
//!   functions (records in a range, count by city, the Person self-join as pairs or counts via
//!   a per-city sorted index).
//! - `isql.rs` — the I-strategy: bucket and probe tuples into SQLite in memory with an index on
//!   the join attribute.
//! - `server.rs` — the servant: key batches (own keys stored, the rest forwarded per target, IAMs
//!   back), overflow reports (rate-limited; stale ones ignored), the coordinator's split token
//!   (RP*: the full bucket; LH*: the split pointer), splits that keep the bucket locked until
//!   the new bucket holds its records, scans evaluated on the blocking pool and forwarded to
//!   the children (as of the evaluation) the client did not address.
//! - `lib.rs` — `KeyOp` (insert, search, delete: one request type, one dispatch for servers
//!   and clients) and `Stubs` (every node's `Sdds` resolved once).
//! - `client.rs` — a client with its image: key operations batched per bucket and issued
//!   together; scans with deterministic termination (every child reported has answered; for
//!   RP* ranges, the answers' ranges cover the range, gaps asked again from bucket 0) or
//!   probabilistic (a time-out).
//! - `person.rs` — the benchmark's Person table, the join through the SDDS, and the one-node
//!   SQLite baseline (the paper's "AMOS-II alone").
//!
//! # Invariants
//!
//! - **An SDDS has no directory on the access path.** A client's image only ever names buckets
//!   that exist; a wrong guess costs forwards (LH* at most two) and is answered with IAMs; a
//!   record is in exactly one bucket at every moment (a splitting bucket stays locked until the
//!   new one holds the moved records), so a scan sees each record once.

pub mod proto {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ssi.sdds.rs"));
}
pub mod addr;
pub mod bucket;
pub mod client;
pub mod driver;
pub mod error;
pub mod isql;
pub mod person;
pub mod plot;
pub mod redis_cluster;
pub mod server;

pub use error::Error;

/// Why an SDDS operation, its baseline or its plot failed.
#[derive(Debug, thiserror::Error)]
pub enum SddsError {
    #[error("{0}")]
    Orb(#[from] ssi_orb::OrbError),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a file needs nodes")]
    NoNodes,
    #[error("the I-strategy evaluates joins, not {0}")]
    NotAJoin(String),
    /// The plotting library's error, as it words it.
    #[error("plot: {0}")]
    Plot(String),
    /// The Redis Cluster baseline could not run (what failed, and why).
    #[error("{0}")]
    Redis(String),
    #[error("{0}: expected TUPLES:BUCKETS with 1 ≤ buckets ≤ min(1024, tuples), e.g. 20000:5")]
    BadCase(String),
}

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

/// The SDDS object on every node: what the binary hands each daemon
/// (`ssi_node::daemon::Extension`).
pub struct Servants;

impl ssi_node::daemon::Extension for Servants {
    fn start(self: Box<Self>, orb: &ssi_orb::Orb, _: &ssi_node::config::NodeConfig, _: &mut tonic::service::RoutesBuilder) {
        server::serve(orb);
    }
}
