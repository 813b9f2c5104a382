//! The control socket: how the `ssi` tool reaches its local daemon.
//!
//! gRPC over a Unix socket (mode 0666). The daemon reads each caller's uid from
//! `SO_PEERCRED`; status is open to everyone, everything else needs root or the daemon's
//! own user.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

#[allow(clippy::all)]
pub mod proto {
    tonic::include_proto!("ssi.control");
}
pub use proto::control_client::ControlClient;

/// Why the tool got no answer from a daemon.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing (or no daemon) listens on the socket; `why` is the connection's error chain.
    #[error("no daemon answers at {}: {why}", path.display())]
    NoDaemon { path: PathBuf, why: String },
    /// The daemon refused or failed the request (its status message).
    #[error("{0}")]
    Refused(String),
}

/// Connects to the daemon listening on `path`.
pub async fn connect(path: &Path) -> Result<ControlClient<Channel>, ControlError> {
    Ok(ControlClient::new(channel(path).await?))
}

/// A channel to the daemon listening on `path`, for any service on its control socket.
pub async fn channel(path: &Path) -> Result<Channel, ControlError> {
    let p: PathBuf = path.to_path_buf();
    let no_daemon = |why: String| ControlError::NoDaemon { path: path.to_path_buf(), why };
    let channel = Endpoint::try_from("http://ssi.local")
        .map_err(|e| no_daemon(e.to_string()))?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
        }))
        .await
        .map_err(|e| no_daemon(source_text(&e)))?;
    Ok(channel)
}

fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s = format!("{s}: {c}");
        cur = c.source();
    }
    s
}

/// The credentials of the process on the other end of a control request (SO_PEERCRED).
pub fn peer_cred<T>(req: &Request<T>) -> Result<tokio::net::unix::UCred, Status> {
    req.extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
        .ok_or_else(|| Status::permission_denied("caller credentials unavailable (SO_PEERCRED)"))
}

/// The uid of the process on the other end of a control request.
pub fn caller_uid<T>(req: &Request<T>) -> Result<u32, Status> {
    peer_cred(req).map(|c| c.uid())
}

/// Root, or the user the daemon runs as.
pub fn require_admin<T>(req: &Request<T>) -> Result<u32, Status> {
    let uid = caller_uid(req)?;
    let me = nix::unistd::geteuid().as_raw();
    if uid == 0 || uid == me {
        Ok(uid)
    } else {
        Err(Status::permission_denied(format!("uid {uid} may not do this; it needs root or uid {me}")))
    }
}
