//! Why a run of `ssi workload in` failed (the driver; the services fail with [`crate::IncopError`]).

ssi_node::run_error! {
    /// Why a run of `ssi workload in` failed (the driver; the services fail with [`crate::IncopError`]).
    pub enum Error {
        Orb(ssi_orb::OrbError),
        UnknownNode(ssi_node::config::UnknownNode),
        Sys(nix::Error),
        Incop(crate::IncopError),
    }
}
