//! Why `ssi workload web` failed.

ssi_node::run_error! {
    /// Why `ssi workload web` failed.
    pub enum Error {
        Sys(nix::Error),
        Int(std::num::ParseIntError),
        Float(std::num::ParseFloatError),
    }
}
