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

pub use server::serve;
