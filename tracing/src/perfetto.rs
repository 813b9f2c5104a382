//! `ssi trace export`: request-response timelines as Chrome trace / Perfetto JSON (open in
//! ui.perfetto.dev or chrome://tracing). Each node is a process; each request-response is one
//! track per side, its stages as slices, and flow arrows for the request and reply crossing
//! between the nodes.

use std::path::Path;

use crate::error::TraceError;
use serde_json::{json, Value};

use crate::analysis::STAGES;

pub fn export(dir: &Path, out: &Path, limit: usize) -> Result<(), TraceError> {
    let a = crate::report::load(dir, limit)?;
    if a.timelines.is_empty() {
        return Err(TraceError::NoRequestResponse(dir.to_path_buf()));
    }
    let origin = a.timelines.iter().map(|t| t.t[0]).min().unwrap_or(0);
    let us = |ns: u64| (ns - origin) as f64 / 1000.0;
    let mut ev: Vec<Value> = Vec::new();
    for n in a.nodes() {
        ev.push(json!({"ph": "M", "name": "process_name", "pid": n, "args": {"name": format!("node {n}")}}));
    }
    // Stages 0, 1, 9 run at the caller; 3..=7 at the server; 2 and 8 cross the network.
    for (k, t) in a.timelines.iter().enumerate() {
        let tid = t.req_id % 1_000_000;
        let name = format!("request {} ({}→{}, method {})", t.req_id, t.caller, t.server, t.method);
        ev.push(json!({"ph": "X", "name": name, "cat": "request", "pid": t.caller, "tid": tid, "ts": us(t.t[0]), "dur": us(t.t[10]) - us(t.t[0])}));
        for (i, stage) in STAGES.iter().enumerate() {
            let pid = match i {
                0 | 1 | 9 => t.caller,
                3..=7 => t.server,
                _ => continue,
            };
            ev.push(json!({"ph": "X", "name": stage, "cat": "stage", "pid": pid, "tid": tid, "ts": us(t.t[i]), "dur": us(t.t[i + 1]) - us(t.t[i])}));
        }
        // Flows: request handed to the transport → received; reply likewise.
        for (j, (from, to, a0, b0)) in [(t.caller, t.server, 2usize, 3usize), (t.server, t.caller, 8, 9)].into_iter().enumerate() {
            let id = k * 2 + j;
            ev.push(json!({"ph": "s", "name": "wire", "cat": "wire", "id": id, "pid": from, "tid": tid, "ts": us(t.t[a0])}));
            ev.push(json!({"ph": "f", "bp": "e", "name": "wire", "cat": "wire", "id": id, "pid": to, "tid": tid, "ts": us(t.t[b0])}));
        }
    }
    let doc = json!({"traceEvents": ev, "displayTimeUnit": "ns", "otherData": {"source": dir.display().to_string(), "requests": a.timelines.len()}});
    let text = serde_json::to_string(&doc).map_err(|source| TraceError::Json { path: out.to_path_buf(), source })?;
    std::fs::write(out, text).map_err(TraceError::io("writing", out))?;
    eprintln!("ssi trace: {} request-responses written to {} (open in ui.perfetto.dev)", a.timelines.len(), out.display());
    Ok(())
}
