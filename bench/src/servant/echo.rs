//! Echo servers node 2 starts for the `orb` bench baselines.

use std::net::IpAddr;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use super::proto::bench_echo_server::{BenchEcho, BenchEchoServer};
use super::proto::EchoMsg;

#[derive(Default)]
pub struct BenchServers {
    ports: Mutex<Option<(u16, u16)>>,
}

impl BenchServers {
    /// Starts (once) a raw TCP echo server and a tonic unary echo server on `ip`.
    pub async fn start(&self, ip: IpAddr) -> std::io::Result<(u16, u16)> {
        let mut p = self.ports.lock().await;
        if let Some(ports) = *p {
            return Ok(ports);
        }
        let raw = tokio::net::TcpListener::bind((ip, 0)).await?;
        let raw_port = raw.local_addr()?.port();
        tokio::spawn(async move {
            while let Ok((s, _)) = raw.accept().await {
                tokio::spawn(raw_echo(s));
            }
        });
        let tl = tokio::net::TcpListener::bind((ip, 0)).await?;
        let tonic_port = tl.local_addr()?.port();
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(BenchEchoServer::new(Echo))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(tl).with_nodelay(Some(true)));
        tokio::spawn(server);
        *p = Some((raw_port, tonic_port));
        Ok((raw_port, tonic_port))
    }
}

/// Frames: `u32 len` then `len` bytes; the reply is the bytes alone.
async fn raw_echo(mut s: tokio::net::TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let Ok(len) = s.read_u32_le().await else { return };
        if len > (16 << 20) {
            return;
        }
        buf.resize(len as usize, 0);
        if s.read_exact(&mut buf).await.is_err() || s.write_all(&buf).await.is_err() {
            return;
        }
    }
}

struct Echo;

#[tonic::async_trait]
impl BenchEcho for Echo {
    async fn echo(&self, req: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
        let data: Bytes = req.into_inner().data;
        Ok(Response::new(EchoMsg { data }))
    }
}
