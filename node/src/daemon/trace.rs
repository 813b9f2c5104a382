//! The daemon's `Trace` control call: counters, and the in-process recorder on and off.

use std::path::Path;

use tonic::Status;

use crate::control::proto::{TracePeer, TraceReply, TraceRequest};
use ssi_orb::Orb;

/// The daemon's side: counters, or the in-process recorder on and off.
pub fn serve(orb: &Orb, r: TraceRequest) -> Result<TraceReply, Status> {
    let mut rep = TraceReply { node: orb.node(), pid: std::process::id() as u64, mono_to_unix_ns: mono_to_unix_ns(), ..Default::default() };
    match r.action.as_str() {
        // Records waiting for this node's next write go out now: the recorder reads the
        // counters when it opens and closes its window.
        "counters" => ssi_orb::probes::flush(),
        "start" => {
            let p = Path::new(&r.path);
            if !p.is_absolute() {
                return Err(Status::invalid_argument(format!("trace path {:?} must be absolute", r.path)));
            }
            ssi_orb::probes::inproc::start(p).map_err(|e| Status::failed_precondition(format!("{}: {e}", p.display())))?;
        }
        "stop" => rep.records = ssi_orb::probes::inproc::stop().unwrap_or(0),
        other => return Err(Status::invalid_argument(format!("unknown trace action {other:?} (counters, start, stop)"))),
    }
    let (at, peers) = orb.peer_counters();
    rep.at_ns = at;
    rep.peers = peers
        .into_iter()
        .map(|(peer, c)| TracePeer {
            peer,
            messages_sent: c.messages_sent,
            bytes_sent: c.bytes_sent,
            messages_received: c.messages_received,
            bytes_received: c.bytes_received,
        })
        .collect();
    Ok(rep)
}

fn mono_to_unix_ns() -> i64 {
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
    unix - ssi_orb::probes::now_ns() as i64
}
