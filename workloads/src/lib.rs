//! ssi-workloads: the paper's make, web and database workloads, the IN coprocessor and the
//! SDDS (RP*/LH*) workloads (DESIGN §8).
//!
//! - `db`: the debit/credit database workload on SQLite (the orchestration across nodes is
//!   `ssi workload db`, in the `ssi` crate).
//!
//! Not yet: make and web workloads, tracing built in, the IN coprocessor, SDDS.

pub mod db;

/// What this crate can do today.
pub const STATUS: &str = "workloads: db (SQLite debit/credit from every node); make, web, IN, SDDS not yet";
