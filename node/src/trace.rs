//! `ssi trace record` / `report` / `export`: the CLI side of tracing (the daemon's `Trace`
//! control call is `daemon::trace`). The recorders, the format and the reports live in
//! `ssi-trace`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::control::proto::{TraceReply, TraceRequest};
use crate::error::{Context, Error, Result};
use crate::{bail, failed};
use ssi_trace::format::{Meta, NodeMeta, PeerCount, FORMAT_VERSION};
use ssi_trace::sockets::Daemon;

pub struct RecordOptions {
    pub dir: PathBuf,
    pub out: PathBuf,
    pub duration: Option<Duration>,
    pub in_process: bool,
    /// Attach the syscall tracepoints too (iovec counts; costly for every task).
    pub syscalls: bool,
    pub command: Vec<String>,
    /// No messages of the recorder's own, and the command's stdout discarded.
    pub quiet: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// What a recording yields, for callers that record around their own work (benchmarks,
/// workloads).
pub struct Recorded {
    pub meta: Meta,
    /// The traced command's exit status, if there was one.
    pub status: Option<std::process::ExitStatus>,
}

/// Records the running cluster in `o.dir` until the command exits, the duration passes, or
/// SIGINT; writes `o.out`.
pub fn record(o: &RecordOptions) -> Result<Recorded> {
    if !nix::unistd::geteuid().is_root() {
        bail!("only root may record traces: a trace shows every user's traffic");
    }
    let cfg = crate::local::load(&o.dir)?;
    let mut daemons = Vec::new();
    let mut sockets = Vec::new();
    for n in cfg.nodes.values() {
        let Some(pid) = crate::pidfile::node_pid(n) else { continue };
        daemons.push(Daemon { node: n.id, pid: pid as u32, orb_addr: n.addr });
        sockets.push((n.id, n.control_socket.clone()));
    }
    if daemons.is_empty() {
        bail!("no daemon of the cluster in {} is running (ssi up)", o.dir.display());
    }
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let out = std::fs::canonicalize(&o.out)?;
    for old in ssi_trace::format::event_files(&out)? {
        std::fs::remove_file(old)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let ctl = Ctl { rt: &rt, sockets: &sockets };

    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    INTERRUPTED.store(false, Ordering::Relaxed);
    let started_unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let w = std::cell::RefCell::new(Window {
        o,
        ctl: &ctl,
        started: Instant::now(),
        before: Vec::new(),
        after: Vec::new(),
        child: None,
        status: None,
        err: None,
    });

    let mut meta =
        Meta { format: FORMAT_VERSION, cluster: cfg.cluster.clone(), command: o.command.clone(), started_unix_ms, ..Default::default() };
    let forced = o.in_process.then(|| "--in-process given".to_string());
    let bpf = match forced {
        Some(why) => Err(ssi_trace::bpf::Error::Unavailable(why)),
        None => ssi_trace::bpf::record(&daemons, &out, o.syscalls, || w.borrow_mut().open("bpf"), || w.borrow_mut().should_stop()),
    };
    match bpf {
        Ok(outcome) => {
            meta.mode = "bpf".into();
            meta.recorder = outcome.stats;
            meta.wire = outcome.wire;
            meta.wire_other = outcome.wire_other;
            meta.syscalls = o.syscalls;
        }
        Err(ssi_trace::bpf::Error::Other(e)) => {
            if let Some(mut c) = w.borrow_mut().child.take() {
                let _ = c.kill();
            }
            return Err(e).context("BPF recorder");
        }
        Err(ssi_trace::bpf::Error::Unavailable(why)) => {
            eprintln!("ssi trace: eBPF not available ({why}); recording in-process");
            meta.mode = "in-process".into();
            meta.fallback_reason = Some(why);
            ctl.all("start", |node| out.join(format!("events-{node}.bin")).display().to_string())?;
            w.borrow_mut().open("in-process");
            while !w.borrow_mut().should_stop() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let stops = ctl.all("stop", |_| String::new())?;
            meta.recorder.records = stops.iter().map(|r| r.records).sum();
            meta.recorder.bytes = ssi_trace::format::event_files(&out)?.iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
        }
    }
    let Window { before, after, status, err, .. } = w.into_inner();
    // SAFETY: restores the default disposition.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    if let Some(e) = err {
        return Err(e);
    }
    if after.is_empty() {
        bail!("could not read the ORB counters at the end of the recording");
    }
    for b in &before {
        let a = after.iter().find(|a| a.node == b.node);
        meta.nodes.push(NodeMeta {
            node: b.node,
            pid: b.pid as u32,
            mono_to_unix_ns: b.mono_to_unix_ns,
            window_start_ns: b.at_ns,
            window_end_ns: a.map(|a| a.at_ns).unwrap_or(b.at_ns),
            counters_before: peers(b),
            counters_after: a.map(peers).unwrap_or_default(),
        });
    }
    meta.start_ns = before.iter().map(|b| b.at_ns).min().unwrap_or(0);
    meta.end_ns = after.iter().map(|a| a.at_ns).max().unwrap_or(0);
    meta.write(&out)?;
    if !o.quiet {
        eprintln!(
            "ssi trace: {} records ({} mode, {:.1} s) in {}; `ssi trace report {}` prints the study",
            meta.recorder.records,
            meta.mode,
            (meta.end_ns.saturating_sub(meta.start_ns)) as f64 / 1e9,
            out.display(),
            out.display()
        );
        if meta.recorder.lost > 0 {
            eprintln!("ssi trace: warning: {} records lost (ring buffer full)", meta.recorder.lost);
        }
    }
    Ok(Recorded { meta, status })
}

/// The recording window: opened once the recorder listens (counters read, command started),
/// closed when the command exits, the duration passes or SIGINT comes (counters read again,
/// before the recorder stops listening).
struct Window<'a> {
    o: &'a RecordOptions,
    ctl: &'a Ctl<'a>,
    started: Instant,
    before: Vec<TraceReply>,
    after: Vec<TraceReply>,
    child: Option<std::process::Child>,
    status: Option<std::process::ExitStatus>,
    err: Option<Error>,
}

impl Window<'_> {
    fn open(&mut self, mode: &str) {
        self.started = Instant::now();
        match self.ctl.all("counters", |_| String::new()) {
            Ok(r) => self.before = r,
            Err(e) => return self.err = Some(e),
        }
        if !self.o.quiet {
            eprintln!("ssi trace: recording {} daemons ({mode}); the command's end, --duration or Ctrl-C stops it", self.before.len());
        }
        if let Some((cmd, args)) = self.o.command.split_first() {
            let mut c = std::process::Command::new(cmd);
            c.args(args);
            if self.o.quiet {
                c.stdout(std::process::Stdio::null());
            }
            match c.spawn() {
                Ok(c) => self.child = Some(c),
                Err(e) => self.err = Some(failed!("cannot run {cmd}: {e}")),
            }
        }
    }

    fn should_stop(&mut self) -> bool {
        let mut done =
            self.err.is_some() || INTERRUPTED.load(Ordering::Relaxed) || self.o.duration.is_some_and(|d| self.started.elapsed() >= d);
        if let Some(c) = self.child.as_mut() {
            match c.try_wait() {
                Ok(Some(s)) => {
                    self.status = Some(s);
                    done = true;
                }
                Ok(None) => {}
                Err(_) => done = true,
            }
        }
        if done && self.after.is_empty() {
            match self.ctl.all("counters", |_| String::new()) {
                Ok(r) => self.after = r,
                Err(e) => self.err = Some(e),
            }
        }
        done
    }
}

/// `ssi workload ... --trace OUT`: runs this same command without `--trace` under the
/// recorder, then prints the trace's report and writes `OUT/report.html`.
pub fn rerun_traced(out: &Path, cluster: &Path) -> Result<()> {
    let mut args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        if args[i] == "--trace" {
            args.drain(i..(i + 2).min(args.len()));
        } else if args[i].starts_with("--trace=") {
            args.remove(i);
        } else {
            i += 1;
        }
    }
    args[0] = std::env::current_exe()?.display().to_string();
    let a = record_and_report(out, cluster, args, false, &out.display().to_string())?;
    print!("{}", ssi_trace::report::text(&a));
    Ok(())
}

/// Records `command` on the cluster in `cluster` into `out` and writes `out/report.html`
/// (titled `title`); fails when the command does. `quiet`: no recorder messages, the
/// command's stdout discarded.
pub fn record_and_report(
    out: &Path,
    cluster: &Path,
    command: Vec<String>,
    quiet: bool,
    title: &str,
) -> Result<ssi_trace::analysis::Analysis> {
    let r = record(&RecordOptions {
        dir: cluster.to_path_buf(),
        out: out.to_path_buf(),
        duration: None,
        in_process: false,
        syscalls: false,
        command,
        quiet,
    })?;
    if let Some(st) = r.status.filter(|s| !s.success()) {
        bail!("the traced command failed ({st}); its trace is in {}", out.display());
    }
    let a = ssi_trace::report::load(out, 0)?;
    ssi_trace::report::write_html(&out.join("report.html"), &[(title.to_string(), &a)])?;
    Ok(a)
}

fn peers(r: &TraceReply) -> Vec<PeerCount> {
    r.peers
        .iter()
        .map(|p| PeerCount {
            peer: p.peer,
            messages_sent: p.messages_sent,
            bytes_sent: p.bytes_sent,
            messages_received: p.messages_received,
            bytes_received: p.bytes_received,
        })
        .collect()
}

/// The control sockets of the traced daemons.
struct Ctl<'a> {
    rt: &'a tokio::runtime::Runtime,
    sockets: &'a [(u32, PathBuf)],
}

impl Ctl<'_> {
    /// `action` on every daemon (`path(node)` for its path); one reply each.
    fn all(&self, action: &str, path: impl Fn(u32) -> String) -> Result<Vec<TraceReply>> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            for (node, sock) in self.sockets {
                let mut c = crate::control::connect(sock).await.map_err(|e| failed!("node {node}: {e}"))?;
                let r = c
                    .trace(TraceRequest { action: action.into(), path: path(*node) })
                    .await
                    .map_err(|s| failed!("node {node}: trace {action}: {}", s.message()))?;
                out.push(r.into_inner());
            }
            Ok(out)
        })
    }
}
