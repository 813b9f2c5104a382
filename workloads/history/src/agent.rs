//! The agent: one process on one node (`ssi workload history-agent`, started with `ssi run`
//! so that its binds go through the SAP), doing one operation at a time until the stop file
//! appears, each written to its log as soon as it is answered. It ignores SIGHUP: a cut
//! that takes its `ssi run` session away must not end it — only a crash of its node, or
//! the node's failfast while it holds a port, does.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::record::{now, Op, Record};
use crate::Result;

/// Where an agent works and what it may touch.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub node: u32,
    /// Its record log (on the host's disk, not on PXFS).
    pub log: PathBuf,
    /// The volumes: (name, the history directory on this node's mount).
    pub volumes: Vec<(String, PathBuf)>,
    /// The shared pool of ports: `port_base .. port_base + ports`.
    pub port_base: u16,
    pub ports: u16,
    /// It stops when this file exists.
    pub stop: PathBuf,
}

/// The history directory's name on each volume.
pub const DIR: &str = ".history";

struct Agent {
    o: AgentOptions,
    pid: u32,
    log: std::fs::File,
    rng: StdRng,
    /// Files made (`c-…`) whose create was acknowledged and that were not yet removed.
    made: Vec<(usize, String)>,
    next: u64,
    /// The rename pair in use: (volume, pair number, whether `-b` is the current name).
    pair: Option<(usize, u64, bool)>,
}

/// Runs the agent until the stop file appears.
pub fn run(o: AgentOptions) -> Result<()> {
    // SAFETY: setting a signal's disposition to "ignore" has no handler to be unsafe in.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    let pid = std::process::id();
    let log = std::fs::OpenOptions::new().create(true).append(true).mode(0o644).open(&o.log)?;
    let rng = StdRng::seed_from_u64(now() ^ ((pid as u64) << 20) ^ o.node as u64);
    let mut a = Agent { o, pid, log, rng, made: vec![], next: 0, pair: None };
    let t = now();
    a.write(Record { node: a.o.node, pid, t0: t, t1: t, op: Op::Start, ok: true, err: None, invoke: false })?;
    while !a.o.stop.exists() {
        match a.rng.random_range(0..100) {
            0..30 => a.bind()?,
            30..55 => a.append()?,
            55..70 => a.rename()?,
            70..85 => a.create()?,
            _ => a.remove()?,
        }
    }
    Ok(())
}

impl Agent {
    fn write(&mut self, r: Record) -> Result<()> {
        let mut line = serde_json::to_string(&r)?;
        line.push('\n');
        self.log.write_all(line.as_bytes())?;
        Ok(())
    }

    /// Runs `f` as operation `op`, recording its outcome; Some when acknowledged.
    fn op<T>(&mut self, op: Op, f: impl FnOnce() -> std::io::Result<T>) -> Result<Option<T>> {
        let t0 = now();
        let node = self.o.node;
        self.write(Record { node, pid: self.pid, t0, t1: 0, op: op.clone(), ok: false, err: None, invoke: true })?;
        let r = f();
        let t1 = now();
        let (ok, err) = match &r {
            Ok(_) => (true, None),
            Err(e) => (false, Some(e.to_string())),
        };
        self.write(Record { node, pid: self.pid, t0, t1, op, ok, err, invoke: false })?;
        if !ok {
            // A refusal comes back at once while the node is cut off: not thousands a second.
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(r.ok())
    }

    fn volume(&mut self) -> usize {
        self.rng.random_range(0..self.o.volumes.len())
    }

    fn path(&self, v: usize, name: &str) -> PathBuf {
        self.o.volumes[v].1.join(name)
    }

    /// Binds a port of the pool, holds it a little, closes it.
    fn bind(&mut self) -> Result<()> {
        let port = self.o.port_base + self.rng.random_range(0..self.o.ports);
        let Some(listener) = self.op(Op::Bind { port }, || std::net::TcpListener::bind(("0.0.0.0", port)))? else {
            return Ok(());
        };
        let hold = Duration::from_millis(self.rng.random_range(100..600));
        std::thread::sleep(hold);
        self.op(Op::Release { port }, move || {
            drop(listener);
            Ok(())
        })?;
        Ok(())
    }

    /// Appends the next number to this agent's counter file on a volume, and fsyncs it.
    fn append(&mut self) -> Result<()> {
        let v = self.volume();
        let file = format!("a-{}-{}", self.o.node, self.pid);
        let (path, seq) = (self.path(v, &file), self.next);
        self.next += 1;
        let vol = self.o.volumes[v].0.clone();
        self.op(Op::Append { vol, file, seq }, || {
            let mut f = std::fs::OpenOptions::new().append(true).create(true).mode(0o644).open(&path)?;
            f.write_all(format!("{seq}\n").as_bytes())?;
            f.sync_all()
        })?;
        Ok(())
    }

    /// Renames this agent's pair file to its other name (first creating it).
    fn rename(&mut self) -> Result<()> {
        let Some((v, k, b)) = self.pair else {
            let v = self.volume();
            let k = self.next;
            self.next += 1;
            let file = format!("r-{}-{}-{k}-a", self.o.node, self.pid);
            let path = self.path(v, &file);
            let vol = self.o.volumes[v].0.clone();
            if self.op(Op::Create { vol, file }, || create_new(&path))?.is_some() {
                self.pair = Some((v, k, false));
            }
            return Ok(());
        };
        let name = |b: bool| format!("r-{}-{}-{k}-{}", self.o.node, self.pid, if b { 'b' } else { 'a' });
        let (from, to) = (name(b), name(!b));
        let (pf, pt) = (self.path(v, &from), self.path(v, &to));
        let vol = self.o.volumes[v].0.clone();
        // Unacknowledged, the pair's state is unknown: the next rename starts a new pair.
        self.pair = self.op(Op::Rename { vol, from, to }, || std::fs::rename(&pf, &pt))?.map(|_| (v, k, !b));
        Ok(())
    }

    fn create(&mut self) -> Result<()> {
        let v = self.volume();
        let file = format!("c-{}-{}-{}", self.o.node, self.pid, self.next);
        self.next += 1;
        let path = self.path(v, &file);
        let vol = self.o.volumes[v].0.clone();
        if self.op(Op::Create { vol, file: file.clone() }, || create_new(&path))?.is_some() {
            self.made.push((v, file));
        }
        Ok(())
    }

    fn remove(&mut self) -> Result<()> {
        if self.made.is_empty() {
            return self.create();
        }
        let i = self.rng.random_range(0..self.made.len());
        let (v, file) = self.made.swap_remove(i);
        let path = self.path(v, &file);
        let vol = self.o.volumes[v].0.clone();
        self.op(Op::Remove { vol, file }, || std::fs::remove_file(&path))?;
        Ok(())
    }
}

fn create_new(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(path).map(drop)
}
