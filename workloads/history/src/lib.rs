//! `ssi workload history`: a Jepsen-style run. Agents on every node of a 5-node `--netns`
//! cluster bind and release ports of a small shared pool, create, rename and remove files
//! and append fsync'd counters on every volume, recording each operation with when it was
//! asked and when (and whether) it was acknowledged. Meanwhile a nemesis cuts the
//! interconnect (majority against minority, one node alone, one way) and crashes nodes.
//! Afterwards the checker proves from the records, the faults, the views the nodes logged
//! and the files as they are: no port held by two live processes at once, no acknowledged
//! rename, create, remove or fsync'd append lost or doubled, no two views with one number
//! and different members, and no mutation acknowledged by a node cut off from the majority.
//!
//! - `record`: what agents and the driver write down (one clock: CLOCK_MONOTONIC, which
//!   every node of a local cluster shares).
//! - `agent`: the loop run on a node (`ssi workload history-agent`, started with `ssi run`
//!   so its binds go through the SAP).
//! - `nemesis`: the faults.
//! - `checker`: the proofs, over a `History`.
//! - `driver`: the run: cluster, agents, nemesis, collection, report.

pub mod agent;
pub mod checker;
pub mod driver;
pub mod error;
pub mod nemesis;
pub mod record;

pub use error::{Error, Result};
