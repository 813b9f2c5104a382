//! `ssi ps [-e] [-f] [--json]`: every process of the cluster, read from the global /proc in
//! this node's mount of the namespace. `-ef` prints procps's `ps -ef` columns with the gpid
//! as PID, the parent's gpid as PPID, and a NODE column.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::{Context, Result};
use ssi_procmgmt::table::{boot_time_s, ticks_per_s};

pub struct PsOptions {
    pub dir: PathBuf,
    pub all: bool,
    pub full: bool,
    pub json: bool,
}

#[derive(Debug)]
struct Proc {
    gpid: u64,
    gppid: u64,
    node: u32,
    uid: u32,
    name: String,
    tty_nr: u64,
    cpu_ticks: u64,
    start_s: i64,
    cmd: String,
}

/// One process from its global /proc directory; None when it ended while being read.
fn read_proc(dir: &Path, gpid: u64, hz: u64, boot: i64) -> Option<Proc> {
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let num = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After "pid (comm)": state=0 ppid=1 pgrp=2 session=3 tty_nr=4 ... utime=11 stime=12 ... starttime=19
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let name = field("Name:").unwrap_or_default();
    let cmd =
        if cmdline.is_empty() { format!("[{name}]") } else { String::from_utf8_lossy(&cmdline).trim_end_matches('\0').replace('\0', " ") };
    Some(Proc {
        gpid,
        gppid: field("GPPid:")?.parse().ok()?,
        node: field("Node:")?.parse().ok()?,
        uid: field("Uid:")?.split_whitespace().next()?.parse().ok()?,
        name,
        tty_nr: num(4),
        cpu_ticks: num(11) + num(12),
        start_s: boot + (num(19) / hz) as i64,
        cmd,
    })
}

fn tty_name(nr: u64) -> String {
    let (major, minor) = ((nr >> 8) & 0xfff, (nr & 0xff) | ((nr >> 12) & 0xfff00));
    match major {
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        _ => "?".into(),
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name).unwrap_or_else(|| uid.to_string())
}

fn local_time(t: i64) -> libc::tm {
    // SAFETY: libc::tm is a plain C struct; all zeros is a valid value (its zone pointer null).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: t and tm are live locals; localtime_r is the reentrant form and writes only tm.
    unsafe { libc::localtime_r(&t, &mut tm) };
    tm
}

/// procps's STIME: the time of day when started in the last 24 hours, else the date.
fn stime(start_s: i64, now: i64) -> String {
    let tm = local_time(start_s);
    if now - start_s < 86_400 {
        format!("{:02}:{:02}", tm.tm_hour, tm.tm_min)
    } else {
        const M: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        format!("{}{:02}", M[tm.tm_mon.clamp(0, 11) as usize], tm.tm_mday)
    }
}

fn cpu_time(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// The global /proc as this node mounts it.
fn global_proc(dir: &Path) -> Result<PathBuf> {
    Ok(crate::rexec::this_node(dir)?.mountpoint.join("proc"))
}

pub fn run(o: &PsOptions) -> Result<()> {
    let root = global_proc(&o.dir)?;
    let (hz, boot) = (ticks_per_s(), boot_time_s());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let me = nix::unistd::getuid().as_raw();
    let mut procs: Vec<Proc> = std::fs::read_dir(&root)
        .with_context(|| format!("the global /proc at {}", root.display()))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter_map(|g| read_proc(&root.join(g.to_string()), g, hz, boot))
        .filter(|p| o.all || p.uid == me)
        .collect();
    procs.sort_by_key(|p| p.gpid);
    if o.json {
        let v: Vec<_> = procs
            .iter()
            .map(|p| {
                json!({"gpid": p.gpid, "ppid": p.gppid, "node": p.node, "uid": p.uid, "user": user_name(p.uid), "name": p.name,
                       "start": p.start_s, "tty": tty_name(p.tty_nr), "cpu_s": p.cpu_ticks / hz, "cmd": p.cmd})
            })
            .collect();
        return emit(format!("{}\n", serde_json::Value::Array(v)));
    }
    use std::fmt::Write as _;
    let mut out = String::new();
    if o.full {
        let _ = writeln!(
            out,
            "{:<8} {:>10} {:>10} {:>4} {:>2} {:<5} {:<8} {:>8} CMD",
            "UID", "PID", "PPID", "NODE", "C", "STIME", "TTY", "TIME"
        );
    } else {
        let _ = writeln!(out, "{:>10} {:>4} {:<8} {:>8} CMD", "PID", "NODE", "TTY", "TIME");
    }
    for p in &procs {
        let cpu_s = p.cpu_ticks / hz;
        if o.full {
            let elapsed = (now - p.start_s).max(1) as u64;
            let c = (p.cpu_ticks * 100 / hz / elapsed).min(99);
            let _ = writeln!(
                out,
                "{:<8} {:>10} {:>10} {:>4} {:>2} {:<5} {:<8} {:>8} {}",
                user_name(p.uid),
                p.gpid,
                p.gppid,
                p.node,
                c,
                stime(p.start_s, now),
                tty_name(p.tty_nr),
                cpu_time(cpu_s),
                p.cmd
            );
        } else {
            let _ = writeln!(out, "{:>10} {:>4} {:<8} {:>8} {}", p.gpid, p.node, tty_name(p.tty_nr), cpu_time(cpu_s), p.name);
        }
    }
    emit(out)
}

/// Writes the listing; a reader that stopped early (`| head`) is not an error.
fn emit(text: String) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_format_as_procps() {
        assert_eq!(cpu_time(0), "00:00:00");
        assert_eq!(cpu_time(3_725), "01:02:05");
        assert_eq!(cpu_time(90_061), "1-01:01:01");
        assert_eq!(tty_name(0), "?");
        assert_eq!(tty_name((136 << 8) | 3), "pts/3");
        assert_eq!(tty_name((4 << 8) | 1), "tty1");
        assert_eq!(stime(1_000_000, 1_000_000 + 3_600).len(), 5);
    }
}
