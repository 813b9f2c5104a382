//! The BPF recorder: loads `bpf/recorder.bpf.c`, attaches `on_record` to the catalogue's
//! USDT probes in every traced daemon and the transport's syscall tracepoints, and drains the
//! ring buffer into `events.bin` on a timer until told to stop.

use std::collections::HashMap;
use std::io::Write;
use std::mem::MaybeUninit;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, RingBufferBuilder, TracepointCategory};
use ssi_orb::probes::inproc::MAGIC;

use crate::format::{RecorderStats, WireCount, WireTotals};
use crate::sockets::{self, Daemon};

mod skel {
    #![allow(clippy::all, unused_imports, dead_code, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/recorder.skel.rs"));
}
use skel::RecorderSkelBuilder;

/// The probes `on_record` attaches to (`ssi_orb::probes`).
pub const PROBES: &[&str] = &["batch_out", "batch_in", "rr_client", "rr_server"];
const SYSCALLS: &[&str] = &["sendto", "write", "writev", "sendmsg", "recvfrom", "read", "readv", "recvmsg"];
/// The ring is drained this often; records are submitted without waking the reader.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

#[derive(Debug)]
pub enum Error {
    /// BPF cannot be used here (no privilege, no BPF): nothing was attached.
    Unavailable(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::Other(e)
    }
}

pub struct Outcome {
    pub stats: RecorderStats,
    pub wire: Vec<WireCount>,
    pub wire_other: WireTotals,
}

/// Records until `until()` says stop (polled every drain). `attached()` runs once every
/// probe is attached, before the window opens.
pub fn record(daemons: &[Daemon], out: &Path, attached: impl FnOnce(), mut until: impl FnMut() -> bool) -> Result<Outcome, Error> {
    // libbpf's own messages would spread a refusal over several lines; ours says it in one.
    libbpf_rs::set_print(None);
    ensure_tracefs();
    let mut storage = MaybeUninit::uninit();
    let open = RecorderSkelBuilder::default().open(&mut storage).map_err(|e| Error::Unavailable(format!("cannot open the BPF object: {e}")))?;
    let skel = open.load().map_err(|e| Error::Unavailable(format!("cannot load BPF programs: {e}")))?;

    for d in daemons {
        skel.maps.daemons.update(&d.pid.to_ne_bytes(), &d.node.to_ne_bytes(), MapFlags::ANY).context("daemons map")?;
    }
    let mut links = Vec::new();
    for d in daemons {
        let exe = format!("/proc/{}/exe", d.pid);
        for p in PROBES {
            let l = skel
                .progs
                .on_record
                .attach_usdt(d.pid as i32, &exe, "ssi", p)
                .with_context(|| format!("attaching to probe ssi:{p} of node {} (pid {})", d.node, d.pid))?;
            links.push(l);
        }
    }
    let probes_attached = links.len() as u32;
    let tp = |p: &libbpf_rs::ProgramMut, name: String| -> anyhow::Result<libbpf_rs::Link> {
        p.attach_tracepoint(TracepointCategory::Custom("syscalls".into()), &name).with_context(|| format!("tracepoint syscalls/{name}"))
    };
    let progs = &skel.progs;
    let pairs = [
        (&progs.enter_sendto, &progs.exit_sendto),
        (&progs.enter_write, &progs.exit_write),
        (&progs.enter_writev, &progs.exit_writev),
        (&progs.enter_sendmsg, &progs.exit_sendmsg),
        (&progs.enter_recvfrom, &progs.exit_recvfrom),
        (&progs.enter_read, &progs.exit_read),
        (&progs.enter_readv, &progs.exit_readv),
        (&progs.enter_recvmsg, &progs.exit_recvmsg),
    ];
    for (sys, (enter, exit)) in SYSCALLS.iter().zip(pairs) {
        links.push(tp(enter, format!("sys_enter_{sys}"))?);
        links.push(tp(exit, format!("sys_exit_{sys}"))?);
    }

    let path = out.join("events.bin");
    let mut file = std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
    file.write_all(MAGIC).context("events.bin")?;
    let mut written = 0u64;
    let mut records = 0u64;
    let mut write_err: Option<std::io::Error> = None;
    let mut rb = RingBufferBuilder::new();
    rb.add(&skel.maps.records, |data: &[u8]| {
        let r = file.write_all(&(data.len() as u32).to_le_bytes()).and_then(|_| file.write_all(data));
        if let Err(e) = r {
            write_err.get_or_insert(e);
        }
        written += 4 + data.len() as u64;
        records += 1;
        0
    })
    .context("ring buffer")?;
    let ring = rb.build().context("ring buffer")?;

    // Which fds are ORB connections: now, every second, and at the end.
    let mut fds = sockets::resolve(daemons);
    attached();
    let mut last_resolve = Instant::now();
    loop {
        let stop = until();
        ring.consume().context("draining the ring buffer")?;
        if last_resolve.elapsed() > Duration::from_secs(1) || stop {
            fds.extend(sockets::resolve(daemons));
            last_resolve = Instant::now();
        }
        if stop {
            break;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
    drop(links);
    ring.consume().context("draining the ring buffer")?;
    drop(ring);
    if let Some(e) = write_err {
        return Err(Error::Other(anyhow::Error::new(e).context(format!("writing {}", path.display()))));
    }
    file.flush().with_context(|| format!("writing {}", path.display()))?;

    let stat = |i: u32| -> u64 {
        skel.maps
            .stats
            .lookup_percpu(&i.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .map(|v| v.iter().map(|c| u64::from_ne_bytes(c[..8].try_into().unwrap())).sum())
            .unwrap_or(0)
    };
    let (lost, refused) = (stat(1), stat(2));
    let (wire, wire_other) = wire_counts(&skel.maps.wire, daemons, &fds);
    Ok(Outcome { stats: RecorderStats { records, lost, refused, bytes: written, probes_attached }, wire, wire_other })
}

/// The syscall tracepoints live in tracefs; mount it where it is missing (best effort: the
/// attach says why if it still fails).
fn ensure_tracefs() {
    let root = Path::new("/sys/kernel/tracing");
    if !root.join("events").exists() {
        let r = nix::mount::mount(Some("tracefs"), root, Some("tracefs"), nix::mount::MsFlags::empty(), None::<&str>);
        if let Err(e) = r {
            tracing::debug!("mounting tracefs at {}: {e}", root.display());
        }
    }
}

/// Sums the wire map per node pair (src = the daemon whose syscalls they were).
fn wire_counts(map: &dyn MapCore, daemons: &[Daemon], fds: &HashMap<(u32, u32), u32>) -> (Vec<WireCount>, WireTotals) {
    let node_of: HashMap<u32, u32> = daemons.iter().map(|d| (d.pid, d.node)).collect();
    let mut pairs: std::collections::BTreeMap<(u32, u32), WireTotals> = Default::default();
    let mut other = WireTotals::default();
    for k in map.keys() {
        let Ok(Some(v)) = map.lookup(&k, MapFlags::ANY) else { continue };
        let u = |b: &[u8], i: usize| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        let w = |i: usize| u64::from_ne_bytes(v[i * 8..i * 8 + 8].try_into().unwrap());
        let (pid, fd, dir) = (u(&k, 0), u(&k, 1), u(&k, 2));
        let (calls, bytes, iovs) = (w(0), w(1), w(2));
        let t = match (node_of.get(&pid), fds.get(&(pid, fd))) {
            (Some(&src), Some(&dst)) => pairs.entry((src, dst)).or_default(),
            _ => &mut other,
        };
        if dir == 0 {
            t.bytes_out += bytes;
            t.syscalls_out += calls;
            t.iovecs_out += iovs;
        } else {
            t.bytes_in += bytes;
            t.syscalls_in += calls;
        }
    }
    (pairs.into_iter().map(|((src, dst), t)| WireCount { src, dst, t }).collect(), other)
}
