//! Why a run of `ssi workload sdds` failed (the driver; the services fail with [`crate::SddsError`]).

ssi_node::run_error! {
    /// Why a run of `ssi workload sdds` failed (the driver; the services fail with [`crate::SddsError`]).
    pub enum Error {
        Sdds(crate::SddsError),
        Join(tokio::task::JoinError),
    }
}
