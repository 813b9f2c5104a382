//! One `ssi bench orb` case, run inside the daemon that drives it (node 1).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::proto::bench_echo_client::BenchEchoClient;
use super::proto::{EchoMsg, RunReply, RunRequest};
use ssi_orb::proto::diag::{Blob, DiagStub};
use ssi_orb::proto::Empty;
use ssi_orb::Orb;

pub const CASES: &[&str] = &["raw_tcp", "tonic_unary", "orb_twoway", "orb_twoway_pipelined", "orb_oneway"];

/// Why a case could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("unknown case {0:?}; cases are {cases}", cases = CASES.join(", "))]
    UnknownCase(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connecting: {0}")]
    Connect(String),
    #[error("{}", .0.message())]
    Grpc(#[from] tonic::Status),
    #[error("{0}")]
    Orb(#[from] ssi_orb::OrbError),
    #[error("only {arrived} of {sent} one-way invocations arrived")]
    Lost { arrived: u64, sent: u64 },
}

/// Runs `$call` (an expression awaited each time) back to back for `$dur`, one in flight,
/// recording each latency; yields `(ops, seconds)`. A macro rather than a function taking an
/// async closure: such closures lose `Send` inside tonic's service futures.
macro_rules! closed_loop {
    ($dur:expr, $h:expr, $call:expr) => {{
        let start = Instant::now();
        let mut ops = 0u64;
        while start.elapsed() < $dur {
            let t = Instant::now();
            $call.map_err(CaseError::from)?;
            let _ = $h.record(t.elapsed().as_nanos() as u64);
            ops += 1;
        }
        Ok((ops, start.elapsed().as_secs_f64()))
    }};
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds")
}

pub async fn run(orb: &Orb, r: RunRequest) -> Result<RunReply, CaseError> {
    let dur = Duration::from_millis(r.duration_ms.clamp(50, 120_000));
    let payload = Bytes::from(vec![0xa5u8; r.payload as usize]);
    let before = orb.counters().requests_sent;
    let mut h = hist();
    let (ops, secs) = match r.case.as_str() {
        "raw_tcp" => raw_tcp(&r, &payload, dur, &mut h).await?,
        "tonic_unary" => tonic_unary(&r, &payload, dur, &mut h).await?,
        "orb_twoway" => orb_twoway(orb, &r, &payload, dur, &mut h).await?,
        "orb_twoway_pipelined" => orb_pipelined(orb, &r, &payload, dur, &mut h).await?,
        "orb_oneway" => orb_oneway(orb, &r, &payload, dur).await?,
        other => return Err(CaseError::UnknownCase(other.to_string())),
    };
    let q = |p: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(p) as f64 / 1000.0 };
    Ok(RunReply { ops, seconds: secs, p50_us: q(0.5), p99_us: q(0.99), requests_sent: orb.counters().requests_sent - before })
}

async fn raw_tcp(r: &RunRequest, payload: &Bytes, dur: Duration, h: &mut Histogram<u64>) -> Result<(u64, f64), CaseError> {
    let mut s = tokio::net::TcpStream::connect((r.target_host.as_str(), r.raw_tcp_port as u16)).await?;
    s.set_nodelay(true)?;
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(payload);
    let mut back = vec![0u8; payload.len()];
    closed_loop!(
        dur,
        h,
        async {
            s.write_all(&frame).await?;
            s.read_exact(&mut back).await
        }
        .await
    )
}

async fn tonic_unary(r: &RunRequest, payload: &Bytes, dur: Duration, h: &mut Histogram<u64>) -> Result<(u64, f64), CaseError> {
    let ep = tonic::transport::Endpoint::from_shared(format!("http://{}:{}", r.target_host, r.tonic_port))
        .map_err(|e| CaseError::Connect(e.to_string()))?
        .tcp_nodelay(true);
    let mut c = BenchEchoClient::new(ep.connect().await.map_err(|e| CaseError::Connect(e.to_string()))?);
    closed_loop!(dur, h, c.echo(EchoMsg { data: payload.clone() }).await)
}

async fn diag(orb: &Orb, node: u32) -> Result<DiagStub, CaseError> {
    Ok(ssi_orb::diag::stub(orb, node).await?)
}

async fn orb_twoway(orb: &Orb, r: &RunRequest, payload: &Bytes, dur: Duration, h: &mut Histogram<u64>) -> Result<(u64, f64), CaseError> {
    let d = diag(orb, r.target).await?;
    closed_loop!(dur, h, d.echo(Blob { data: payload.clone() }).await)
}

async fn orb_pipelined(orb: &Orb, r: &RunRequest, payload: &Bytes, dur: Duration, h: &mut Histogram<u64>) -> Result<(u64, f64), CaseError> {
    let d = diag(orb, r.target).await?;
    let inflight = r.inflight.clamp(1, 65536) as usize;
    let call = |d: DiagStub, p: Bytes| async move {
        let t = Instant::now();
        d.echo(Blob { data: p }).await.map(|_| t.elapsed())
    };
    let mut futs = FuturesUnordered::new();
    let start = Instant::now();
    for _ in 0..inflight {
        futs.push(call(d.clone(), payload.clone()));
    }
    let mut ops = 0u64;
    while let Some(res) = futs.next().await {
        let el = res?;
        let _ = h.record(el.as_nanos() as u64);
        ops += 1;
        if start.elapsed() < dur {
            futs.push(call(d.clone(), payload.clone()));
        }
    }
    Ok((ops, start.elapsed().as_secs_f64()))
}

async fn orb_oneway(orb: &Orb, r: &RunRequest, payload: &Bytes, dur: Duration) -> Result<(u64, f64), CaseError> {
    let d = diag(orb, r.target).await?;
    let base = d.sink_count(Empty {}).await?.n;
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < dur {
        for _ in 0..1024 {
            d.sink(Blob { data: payload.clone() }).await?;
        }
        sent += 1024;
    }
    // Throughput counts what arrived: wait until the sink has seen every one.
    loop {
        let n = d.sink_count(Empty {}).await?.n - base;
        if n >= sent {
            break;
        }
        if start.elapsed() > dur * 10 + Duration::from_secs(10) {
            return Err(CaseError::Lost { arrived: n, sent });
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok((sent, start.elapsed().as_secs_f64()))
}
