//! Why `ssi workload make` failed.

ssi_node::run_error! {
    /// Why `ssi workload make` failed.
    pub enum Error {
        Orb(ssi_orb::OrbError),
    }
}
