//! The study's web workload: nginx on every member node joined into one scalable service on
//! the cluster's global address, loaded with wrk from outside; one nginx on one node beside it.

pub mod driver;
pub mod error;
pub mod nginx;
pub mod wrk;

pub use error::Error;
