//! Why `ssi workload db` failed.

ssi_node::run_error! {
    /// Why `ssi workload db` failed.
    pub enum Error {
        Sql(rusqlite::Error),
        Json(serde_json::Error),
        Sys(nix::Error),
    }
}
