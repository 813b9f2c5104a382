//! Why `ssi demo` failed.

ssi_node::run_error! {
    /// Why `ssi demo` failed.
    pub enum Error {
        Orb(ssi_orb::OrbError),
        UnknownNode(ssi_node::config::UnknownNode),
        Sys(nix::Error),
        Join(tokio::task::JoinError),
        Json(serde_json::Error),
        Trace(ssi_trace::error::TraceError),
    }
}
