//! The servants of `ssi bench orb` and `ssi bench trace`: a control-socket service that only
//! daemons started for a benchmark offer (`ssi node --with bench`). Node 2 starts echo
//! servers for the baselines; node 1 runs each case against it, so every case runs between
//! the same two daemon processes.

mod cases;
mod echo;

use std::path::Path;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub use cases::CASES;
use proto::bench_control_client::BenchControlClient;
use proto::bench_control_server::{BenchControl, BenchControlServer};
use proto::{Empty, RunReply, RunRequest, ServeReply};
use ssi_orb::Orb;

#[allow(clippy::all)]
pub mod proto {
    tonic::include_proto!("ssi.bench");
}

/// The name that starts these servants in a daemon (`ssi node --with bench`).
pub const NAME: &str = "bench";

/// The daemon extension the binary hands `ssi_node::daemon::run` for `--with bench`.
pub struct Servants;

impl ssi_node::daemon::Extension for Servants {
    fn start(self: Box<Self>, orb: &Orb, _node: &ssi_node::config::NodeConfig, control: &mut tonic::service::RoutesBuilder) {
        control.add_service(BenchControlServer::new(Servant { orb: orb.clone(), echo: Default::default() }));
    }
}

/// The benchmark service of the daemon listening on `socket`.
pub async fn connect(socket: &Path) -> Result<BenchControlClient<Channel>, ssi_node::control::ControlError> {
    Ok(BenchControlClient::new(ssi_node::control::channel(socket).await?))
}

struct Servant {
    orb: Orb,
    echo: echo::BenchServers,
}

#[tonic::async_trait]
impl BenchControl for Servant {
    async fn serve(&self, req: Request<Empty>) -> Result<Response<ServeReply>, Status> {
        ssi_node::control::require_admin(&req)?;
        let ip = self.orb.local_addr().map(|a| a.ip()).unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        let (raw, tonic) = self.echo.start(ip).await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ServeReply { raw_tcp_port: raw as u32, tonic_port: tonic as u32 }))
    }

    async fn run(&self, req: Request<RunRequest>) -> Result<Response<RunReply>, Status> {
        ssi_node::control::require_admin(&req)?;
        let r = cases::run(&self.orb, req.into_inner()).await.map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(r))
    }
}
