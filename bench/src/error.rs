//! Why a benchmark (`ssi bench ...`) failed.

ssi_node::run_error! {
    /// Why a benchmark (`ssi bench ...`) failed.
    pub enum Error {
        Sys(nix::Error),
        UnknownNode(ssi_node::config::UnknownNode),
        Control(ssi_node::control::ControlError),
        Rpc(tonic::Status),
        Trace(ssi_trace::error::TraceError),
        Incop(ssi_incop::Error),
        IncopService(ssi_incop::IncopError),
        Web(ssi_web::Error),
        Make(ssi_make::Error),
    }
}
