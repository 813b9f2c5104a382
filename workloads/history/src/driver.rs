//! The run: a 5-node `--netns` cluster of its own, an agent on every node, the nemesis'
//! faults one after another (each held, taken away, and the cluster whole again before the
//! next), then every record, death, logged view and final file gathered into a
//! [`History`] for the checker.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use ssi_node::config::Config;
use ssi_node::local::{self, UpOptions};

use crate::agent::DIR;
use crate::checker::{self, Verdict};
use crate::nemesis::Nemesis;
use crate::record::{now, Fault, FaultKind, FinalFiles, History, Record, ViewSeen};
use crate::{Error, Result};

pub struct HistoryOptions {
    /// The cluster's directory (a cluster is started there and taken down at the end).
    pub dir: PathBuf,
    pub nodes: u32,
    pub faults: u32,
    pub seed: u64,
    /// Off: the negative control, where the checker must find anomalies.
    pub fencing: bool,
    /// Each fault is held for a time drawn from this range (seconds).
    pub hold: (f64, f64),
}

/// The shared pool of ports the agents fight over.
pub const PORT_BASE: u16 = 47000;
pub const PORTS: u16 = 8;

/// What `ssi workload history` prints.
#[derive(Serialize)]
pub struct Report {
    pub nodes: u32,
    pub fencing: bool,
    pub seed: u64,
    pub seconds: f64,
    /// Faults by kind.
    pub faults: BTreeMap<&'static str, u32>,
    pub agents: usize,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Where the whole history was written (JSON).
    pub history: PathBuf,
}

/// An agent on a node: its pid, once it said so, and the `ssi run` that started it.
struct Agent {
    pid: u32,
    tool: Child,
}

struct Run {
    o: HistoryOptions,
    cfg: Config,
    work: PathBuf,
    /// Volume name → (its path in the namespace, its owner).
    volumes: BTreeMap<String, (String, u32)>,
    agents: BTreeMap<u32, Agent>,
    launched: u32,
    deaths: Arc<Mutex<BTreeMap<u32, u64>>>,
}

/// Runs the workload and checks its history.
pub fn run(o: HistoryOptions) -> Result<Report> {
    if o.nodes < 3 {
        return Err(Error::Failed("a history needs at least 3 nodes (a minority must be able to exist)".into()));
    }
    let started = Instant::now();
    let cfg = local::up(&UpOptions { netns: true, fencing: o.fencing, ..UpOptions::new(o.dir.clone(), o.nodes) })?.config();
    let work = o.dir.join("history");
    let mut run = Run::new(o, cfg, work)?;
    let outcome = run.faults_and_collect();
    let down = local::down(&run.o.dir);
    let (history, faults) = outcome?;
    down?;
    let path = run.work.join("history.json");
    std::fs::write(&path, serde_json::to_vec(&history)?)?;
    Ok(Report {
        nodes: run.o.nodes,
        fencing: run.o.fencing,
        seed: run.o.seed,
        seconds: started.elapsed().as_secs_f64(),
        faults,
        agents: run.launched as usize,
        verdict: checker::check(&history),
        history: path,
    })
}

/// `ssi workload history`: runs, prints the report (text or JSON); whether it found no
/// anomaly.
pub fn workload(o: HistoryOptions, json: bool) -> Result<bool> {
    let r = run(o)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let kinds: Vec<String> = r.faults.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!(
            "history: {} nodes, fencing {}, seed {}, {:.0} s, {} faults ({}), {} agents, {} views",
            r.nodes,
            if r.fencing { "on" } else { "OFF" },
            r.seed,
            r.seconds,
            r.faults.values().sum::<u32>(),
            kinds.join(", "),
            r.agents,
            r.verdict.views
        );
        for (k, n) in &r.verdict.asked {
            println!("  {k:<8} {n:>6} asked {:>6} acknowledged", r.verdict.acked.get(k).copied().unwrap_or(0));
        }
        for a in r.verdict.anomalies.iter().take(30) {
            println!("ANOMALY [{}] {}", a.check, a.detail);
        }
        if r.verdict.anomalies.len() > 30 {
            println!("... {} anomalies in all", r.verdict.anomalies.len());
        }
        println!(
            "{}: {} anomalies (history in {})",
            if r.verdict.anomalies.is_empty() { "valid" } else { "INVALID" },
            r.verdict.anomalies.len(),
            r.history.display()
        );
    }
    Ok(r.verdict.anomalies.is_empty())
}

impl Run {
    fn new(o: HistoryOptions, cfg: Config, work: PathBuf) -> Result<Run> {
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let volumes: BTreeMap<String, (String, u32)> = cfg
            .volumes
            .iter()
            .map(|v| {
                let name = if v.path == "/" { "root".to_string() } else { v.path.trim_start_matches('/').replace('/', "-") };
                (name, (v.path.clone(), v.node))
            })
            .collect();
        let run = Run { o, cfg, work, volumes, agents: BTreeMap::new(), launched: 0, deaths: Default::default() };
        let first = run.cfg.nodes.keys().next().copied().unwrap_or(1);
        for (path, _) in run.volumes.values() {
            std::fs::create_dir_all(run.history_dir(first, path)?)?;
        }
        Ok(run)
    }

    /// Volume `path`'s history directory as node `node` sees it.
    fn history_dir(&self, node: u32, path: &str) -> Result<PathBuf> {
        Ok(self.cfg.node(node)?.mountpoint.join(path.trim_start_matches('/')).join(DIR))
    }

    fn faults_and_collect(&mut self) -> Result<(History, BTreeMap<&'static str, u32>)> {
        let nodes: Vec<u32> = self.cfg.nodes.keys().copied().collect();
        for &n in &nodes {
            self.start_agent(n)?;
        }
        let mut nemesis = Nemesis::new(self.o.dir.clone(), nodes.clone(), self.o.seed);
        let mut faults = vec![];
        let mut kinds: BTreeMap<&'static str, u32> = BTreeMap::new();
        for _ in 0..self.o.faults {
            let kind = nemesis.next_fault();
            let hold = nemesis.hold(self.o.hold.0, self.o.hold.1);
            eprintln!("fault {}/{}: {kind:?} for {hold:.1?}", faults.len() + 1, self.o.faults);
            nemesis.apply(&kind)?;
            let t0 = now();
            std::thread::sleep(hold);
            let t1 = now();
            nemesis.undo(&kind)?;
            *kinds
                .entry(match &kind {
                    FaultKind::Partition { oneway: true, .. } => "oneway",
                    FaultKind::Partition { a, b, .. } if a.len() == 1 || b.len() == 1 => "isolated",
                    FaultKind::Partition { .. } => "partition",
                    FaultKind::Crash { .. } => "crash",
                })
                .or_default() += 1;
            faults.push(Fault { kind, t0, t1 });
            local::wait_members(&self.cfg, Duration::from_secs(30))?;
            for &n in &nodes {
                if self.deaths.lock().expect("deaths").contains_key(&self.agents[&n].pid) {
                    self.start_agent(n)?;
                }
            }
        }
        self.stop_agents()?;
        let end = now();
        let history = History {
            nodes: self.o.nodes,
            owners: self.volumes.iter().map(|(name, (_, owner))| (name.clone(), *owner)).collect(),
            records: self.records()?,
            faults,
            deaths: self.deaths.lock().expect("deaths").clone(),
            views: self.views(),
            files: self.final_files(nodes[0])?,
            end,
        };
        Ok((history, kinds))
    }

    /// Starts an agent on `node` with `ssi run` and waits for it to say its pid. A tool that
    /// gives up first (the cluster only just whole again) is asked again.
    fn start_agent(&mut self, node: u32) -> Result<()> {
        let mut said = String::new();
        for _ in 0..5 {
            match self.try_start_agent(node)? {
                Ok(()) => return Ok(()),
                Err(why) => said = why,
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        Err(Error::Failed(format!("the agent on node {node} did not start: {}", said.trim())))
    }

    /// Ok(Err(what the tool said)) when it ended before its agent started.
    fn try_start_agent(&mut self, node: u32) -> Result<std::result::Result<(), String>> {
        self.launched += 1;
        let log = self.work.join(format!("agent-{node}-{}.jsonl", self.launched));
        let tool_log = self.work.join(format!("tool-{node}-{}.log", self.launched));
        let exe = std::env::current_exe()?;
        let mut args: Vec<String> = ["run", "--dir"].iter().map(|s| s.to_string()).collect();
        args.push(self.o.dir.display().to_string());
        args.extend(["-n".into(), node.to_string(), "--cwd".into(), "/".into(), "--".into(), exe.display().to_string()]);
        args.extend(["workload", "history-agent", "--node"].iter().map(|s| s.to_string()));
        args.push(node.to_string());
        args.extend(["--log".into(), log.display().to_string(), "--stop".into(), self.stop_file().display().to_string()]);
        args.extend(["--port-base".into(), PORT_BASE.to_string(), "--ports".into(), PORTS.to_string()]);
        for (name, (path, _)) in &self.volumes {
            args.push("--volume".into());
            args.push(format!("{name}={}", self.history_dir(node, path)?.display()));
        }
        let out = std::fs::File::create(&tool_log)?;
        let mut tool = Command::new(exe).args(&args).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).spawn()?;
        let t0 = Instant::now();
        let pid = loop {
            let first =
                std::fs::read_to_string(&log).ok().and_then(|t| t.lines().next().and_then(|l| serde_json::from_str::<Record>(l).ok()));
            if let Some(r) = first {
                break r.pid;
            }
            if tool.try_wait()?.is_some() || t0.elapsed() > Duration::from_secs(20) {
                let _ = tool.kill();
                let _ = tool.wait();
                return Ok(Err(std::fs::read_to_string(&tool_log).unwrap_or_default()));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        watch_death(pid, self.deaths.clone());
        if let Some(mut old) = self.agents.insert(node, Agent { pid, tool }) {
            let _ = old.tool.kill();
            let _ = old.tool.wait();
        }
        Ok(Ok(()))
    }

    fn stop_file(&self) -> PathBuf {
        self.work.join("stop")
    }

    /// Has every agent stop, and waits (killing those stuck past a bound).
    fn stop_agents(&mut self) -> Result<()> {
        std::fs::write(self.stop_file(), b"")?;
        let t0 = Instant::now();
        while self.agents.values().any(|a| !self.deaths.lock().expect("deaths").contains_key(&a.pid)) {
            if t0.elapsed() > Duration::from_secs(20) {
                for a in self.agents.values() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.pid as i32), nix::sys::signal::Signal::SIGKILL);
                }
            }
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(Error::Failed("agents outlived SIGKILL for 10 s".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for a in self.agents.values_mut() {
            let _ = a.tool.kill();
            let _ = a.tool.wait();
        }
        Ok(())
    }

    fn records(&self) -> Result<Vec<Record>> {
        let mut out = vec![];
        for e in std::fs::read_dir(&self.work)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("agent-") && name.ends_with(".jsonl") {
                let text = std::fs::read_to_string(e.path())?;
                for line in text.lines() {
                    out.push(serde_json::from_str(line).map_err(|err| Error::Failed(format!("{}: {err}: {line}", e.path().display())))?);
                }
            }
        }
        Ok(crate::record::completed(out))
    }

    /// Every view each node logged ("new view view=N members=[…]"), every life of it.
    fn views(&self) -> Vec<ViewSeen> {
        let mut out = vec![];
        for nc in self.cfg.nodes.values() {
            let log = std::fs::read_to_string(nc.dir.join("log")).unwrap_or_default();
            out.extend(log.lines().filter_map(|l| parse_view(nc.id, l)));
        }
        out
    }

    /// The history directories as node `node` sees them once every fault is over.
    fn final_files(&self, node: u32) -> Result<FinalFiles> {
        let mut f = FinalFiles::default();
        for (name, (path, _)) in &self.volumes {
            let dir = self.history_dir(node, path)?;
            let mut names: Vec<String> = std::fs::read_dir(&dir)?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            let appended = f.appended.entry(name.clone()).or_default();
            for n in names.iter().filter(|n| n.starts_with("a-")) {
                appended.insert(n.clone(), std::fs::read_to_string(dir.join(n))?);
            }
            f.names.insert(name.clone(), names);
        }
        Ok(f)
    }
}

/// A thread that notes when process `pid` is seen gone (an upper bound on its death).
fn watch_death(pid: u32, deaths: Arc<Mutex<BTreeMap<u32, u64>>>) {
    std::thread::spawn(move || {
        // SAFETY: pidfd_open takes integers; the fd it returns is closed below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) } as i32;
        if fd >= 0 {
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd; -1 waits until the process exits.
            while unsafe { libc::poll(&mut p, 1, -1) } < 0 {}
            // SAFETY: fd is ours.
            unsafe { libc::close(fd) };
        }
        deaths.lock().expect("deaths").insert(pid, now());
    });
}

/// A "new view" line of a node's log.
fn parse_view(node: u32, line: &str) -> Option<ViewSeen> {
    let line = &strip_colours(line);
    if !line.contains("new view") {
        return None;
    }
    let after = |key: &str| line.split_once(key).map(|(_, rest)| rest);
    let number = after("view=")?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    let members = after("members=[")?.split(']').next()?;
    let members = members.split(',').filter_map(|m| m.trim().parse().ok()).collect();
    Some(ViewSeen { node, number, members })
}

/// `line` without its ANSI colour sequences (ESC [ … m), as a daemon's log has them.
fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn view_lines_of_the_log_are_read() {
        let l = "2026-12-07T17:00:00.1Z  INFO ssi_orb::membership: new view view=12 members=[1, 3, 5]";
        let v = super::parse_view(4, l).unwrap();
        assert_eq!((v.node, v.number, v.members), (4, 12, vec![1, 3, 5]));
        assert!(super::parse_view(4, "INFO something else view=3").is_none());
        let coloured = "\u{1b}[2m2026-12-07T17:17:45Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m new view \u{1b}[3mview\u{1b}[0m\u{1b}[2m=\u{1b}[0m2 \u{1b}[3mmembers\u{1b}[0m\u{1b}[2m=\u{1b}[0m[2, 3, 5]";
        let v = super::parse_view(1, coloured).unwrap();
        assert_eq!((v.number, v.members), (2, vec![2, 3, 5]));
    }
}
