//! The study's database workload: debit/credit transactions on one SQLite database from a
//! client on every node (`bank`, driven by `driver`), and PostgreSQL under pgbench with its
//! data directory on PXFS (`pgbench`). Each run checks the books and measures the same work
//! on the local disk beside it.

pub mod bank;
pub mod driver;
pub mod error;
pub mod pgbench;

pub use error::Error;
