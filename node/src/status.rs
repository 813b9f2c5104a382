//! `ssi status`: what the answering daemon says of the cluster, for people and for scripts.

use crate::control::proto::StatusReply;

pub fn format_uptime(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let s = ms / 1000;
    if s < 120 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 7200 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

pub fn print_status(s: &StatusReply) {
    println!(
        "cluster {}   view {} (coordinator node {}, members {:?})   answered by node {}",
        s.cluster, s.view, s.coordinator, s.view_members, s.node
    );
    println!("{}", quorum_line(s));
    if !s.roles.is_empty() {
        let roles: Vec<String> = s.roles.iter().map(|r| format!("{} node {} (view {})", r.name, r.node, r.epoch)).collect();
        println!("roles: {}", roles.join(", "));
    }
    println!("{:<5} {:<22} {:<8} {:<14} {:<9} MOUNTPOINT", "NODE", "ADDR", "STATE", "INCARNATION", "UPTIME");
    for n in &s.nodes {
        let inc = if n.incarnation == 0 { "-".to_string() } else { format!("{:x}", n.incarnation) };
        println!("{:<5} {:<22} {:<8} {:<14} {:<9} {}", n.id, n.addr, n.state, inc, format_uptime(n.uptime_ms), n.mountpoint);
    }
    if s.volumes.is_empty() {
        return;
    }
    println!();
    println!("{:<12} {:<5} {:>6} {:>8} {:>6} {:>10} {:>7}", "VOLUME", "NODE", "OPEN", "CACHED", "DIRS", "EXCLUSIVE", "LOCKED");
    for v in &s.volumes {
        match &v.state {
            Some(st) => println!(
                "{:<12} {:<5} {:>6} {:>8} {:>6} {:>10} {:>7}",
                v.path, v.node, st.open_files, st.cached_files, st.named_dirs, st.exclusive_tokens, st.locked_files
            ),
            // Its only copy is on that node's disk: nobody can serve it meanwhile.
            None => println!("{:<12} {:<5} (unavailable: its owner is not reachable)", v.path, v.node),
        }
    }
}

/// "quorum: leader node 3, voters [1, 2, 3, 4, 5]", or why the answering node has none.
pub fn quorum_line(s: &StatusReply) -> String {
    let voters = format!("voters {:?}", s.voters);
    match (s.quorum, s.fencing) {
        (true, _) => format!("quorum: leader node {}, {voters}", s.leader),
        (false, true) => format!("no quorum: node {} is cut off from a majority of the {voters}; it grants nothing", s.node),
        (false, false) => format!("no quorum: node {} is cut off from a majority of the {voters} (FENCING OFF)", s.node),
    }
}

pub fn status_json(s: &StatusReply) -> serde_json::Value {
    serde_json::json!({
        "quorum": s.quorum,
        "leader": s.leader,
        "voters": s.voters,
        "fencing": s.fencing,
        // The answering node's Raft log: entries up to `last`, compacted up to `snapshot`.
        "quorum_log": { "snapshot": s.log_snapshot, "last": s.log_last },
        // Roles one node at a time holds, as the answering node's view assigns them.
        "roles": s.roles.iter().map(|r| serde_json::json!({ "name": r.name, "node": r.node, "epoch": r.epoch })).collect::<Vec<_>>(),
        "cluster": s.cluster,
        "view": s.view,
        "coordinator": s.coordinator,
        "global_address": s.global_address,
        "answered_by": s.node,
        // ORB requests the answering node has sent since it started.
        "requests_sent": s.requests_sent,
        "nodes": s.nodes.iter().map(|n| serde_json::json!({
            "id": n.id,
            "addr": n.addr,
            "state": n.state,
            "mountpoint": n.mountpoint,
            "incarnation": n.incarnation,
            "uptime_s": n.uptime_ms as f64 / 1000.0,
            "member": s.view_members.contains(&n.id),
        })).collect::<Vec<_>>(),
        // What each volume's server keeps for the nodes: open files, files and directories
        // cached under tokens, exclusive tokens, locked files.
        "volumes": s.volumes.iter().map(|v| {
            let mut j = serde_json::json!({"path": v.path, "node": v.node, "reachable": v.state.is_some()});
            if let Some(st) = &v.state {
                for (k, n) in [
                    ("open_files", st.open_files),
                    ("cached_files", st.cached_files),
                    ("named_dirs", st.named_dirs),
                    ("exclusive_tokens", st.exclusive_tokens),
                    ("locked_files", st.locked_files),
                ] {
                    j[k] = n.into();
                }
                let by: serde_json::Map<String, serde_json::Value> =
                    st.cached_by_node.iter().map(|(n, c)| (n.to_string(), (*c).into())).collect();
                j["cached_by_node"] = by.into();
            }
            j
        }).collect::<Vec<_>>(),
    })
}
