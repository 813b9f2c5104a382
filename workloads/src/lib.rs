//! ssi-workloads: the paper's make, web and database workloads, the IN coprocessor and the
//! SDDS (RP*/LH*) workloads (DESIGN §8).
//!
//! **Skeleton.** Nothing is implemented yet (issues "workloads", "IN", "SDDS").

/// What this crate can do today.
pub const STATUS: &str = "workloads: not implemented yet";
