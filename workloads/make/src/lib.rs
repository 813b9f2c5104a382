//! The study's make workload: a real C tree (redis) unpacked on PXFS and built with
//! `make -jN SHELL='ssi sh'`, so the recipes spread over the nodes; the same build on the
//! local disk beside it.

pub mod buildtree;
pub mod driver;
pub mod error;

pub use error::Error;
