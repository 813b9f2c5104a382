//! Why `ssi workload history` failed (a failed run, not anomalies: those are its result).

ssi_node::run_error! {
    /// Why `ssi workload history` failed.
    pub enum Error {
        Json(serde_json::Error),
        Sys(nix::Error),
        UnknownNode(ssi_node::config::UnknownNode),
    }
}
