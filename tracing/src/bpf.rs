//! The BPF recorder: loads `bpf/recorder.bpf.c`, attaches `on_record` to the ORB's USDT probe
//! in every traced daemon and the socket layer's send/receive tracepoints (every send/write
//! and recv/read syscall on a TCP socket), and drains the ring buffer into `events.bin` on a
//! timer until told to stop.

use std::io::Write;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, RingBufferBuilder};
use ssi_orb::probes::inproc::MAGIC;
use ssi_orb::probes::record;

use crate::format::{RecorderStats, WireCount, WireTotals};
use crate::sockets::{self, Daemon};

mod skel {
    #![allow(clippy::all, unused_imports, dead_code, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/recorder.skel.rs"));
}
use skel::RecorderSkelBuilder;

/// The probes `on_record` attaches to (`ssi_orb::probes`).
pub const PROBES: &[&str] = &["records"];
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
/// With `syscalls`, the transport's syscall tracepoints are attached too, for the iovec
/// counts (at a cost to every task on the machine: see `bpf/recorder.bpf.c`).
pub fn record(
    daemons: &[Daemon],
    out: &Path,
    syscalls: bool,
    attached: impl FnOnce(),
    mut until: impl FnMut() -> bool,
) -> Result<Outcome, Error> {
    // libbpf's own messages would spread a refusal over several lines; ours says it in one
    // (SSI_BPF_DEBUG=1 shows them).
    if std::env::var_os("SSI_BPF_DEBUG").is_none() {
        libbpf_rs::set_print(None);
    }
    ensure_tracefs();
    let mut storage = MaybeUninit::uninit();
    let open =
        RecorderSkelBuilder::default().open(&mut storage).map_err(|e| Error::Unavailable(format!("cannot open the BPF object: {e}")))?;
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
    links.push(skel.progs.on_send.attach().context("BTF tracepoint sock_send_length")?);
    links.push(skel.progs.on_recv.attach().context("BTF tracepoint sock_recv_length")?);
    if syscalls {
        let p = &skel.progs;
        for prog in [
            &p.enter_sendto,
            &p.enter_write,
            &p.enter_writev,
            &p.enter_sendmsg,
            &p.enter_recvfrom,
            &p.enter_read,
            &p.enter_readv,
            &p.enter_recvmsg,
            &p.exit_sendto,
            &p.exit_write,
            &p.exit_writev,
            &p.exit_sendmsg,
            &p.exit_recvfrom,
            &p.exit_read,
            &p.exit_readv,
            &p.exit_recvmsg,
        ] {
            links.push(prog.attach().with_context(|| format!("syscall tracepoint for {}", prog.name().to_string_lossy()))?);
        }
    }

    let path = out.join("events.bin");
    let mut file =
        std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
    file.write_all(MAGIC).context("events.bin")?;
    let mut written = 0u64;
    let mut records = 0u64;
    let mut malformed = 0u64;
    let mut write_err: Option<std::io::Error> = None;
    let mut rb = RingBufferBuilder::new();
    rb.add(&skel.maps.records, |data: &[u8]| {
        // A bundle: whole records back to back, each with its length at bytes 4..8.
        let mut at = 0;
        while at + record::HEADER_LEN <= data.len() {
            let len = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap()) as usize;
            if len < record::HEADER_LEN || at + len > data.len() {
                malformed += 1;
                break;
            }
            let r = file.write_all(&(len as u32).to_le_bytes()).and_then(|_| file.write_all(&data[at..at + len]));
            if let Err(e) = r {
                write_err.get_or_insert(e);
            }
            written += 4 + len as u64;
            records += 1;
            at += len;
        }
        0
    })
    .context("ring buffer")?;
    let ring = rb.build().context("ring buffer")?;

    attached();
    loop {
        let stop = until();
        ring.consume().context("draining the ring buffer")?;
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
    let (lost, refused) = (stat(1), stat(2) + malformed);
    let (wire, wire_other) = wire_counts(&skel.maps.wire, daemons);
    Ok(Outcome { stats: RecorderStats { records, lost, refused, bytes: written, probes_attached }, wire, wire_other })
}

/// libbpf finds USDT and uprobe bookkeeping through tracefs; mount it where it is missing
/// (best effort: an attach says why if it still fails).
fn ensure_tracefs() {
    let root = Path::new("/sys/kernel/tracing");
    if !root.join("events").exists() {
        let r = nix::mount::mount(Some("tracefs"), root, Some("tracefs"), nix::mount::MsFlags::empty(), None::<&str>);
        if let Err(e) = r {
            tracing::debug!("mounting tracefs at {}: {e}", root.display());
        }
    }
}

/// Sums the wire map per node pair (src = the daemon whose socket calls they were).
fn wire_counts(map: &dyn MapCore, daemons: &[Daemon]) -> (Vec<WireCount>, WireTotals) {
    let mut conns = Vec::new();
    for k in map.keys() {
        let Ok(Some(v)) = map.lookup(&k, MapFlags::ANY) else { continue };
        let u32_at = |i: usize| u32::from_ne_bytes(k[i..i + 4].try_into().unwrap());
        let u16_at = |i: usize| u16::from_ne_bytes(k[i..i + 2].try_into().unwrap());
        let u64_at = |i: usize| u64::from_ne_bytes(v[i..i + 8].try_into().unwrap());
        // Addresses are in network order as the kernel keeps them: their bytes are the octets.
        let ip = |i: usize| std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&k[i..i + 4]).unwrap());
        conns.push(sockets::Io {
            pid: u32_at(0),
            local: SocketAddr::new(ip(4).into(), u16_at(12)),
            remote: SocketAddr::new(ip(8).into(), u16_at(14)),
            sent: u32_at(16) == 0,
            calls: u64_at(0),
            bytes: u64_at(8),
            iovs: u64_at(16),
        });
    }
    let mut pairs: std::collections::BTreeMap<(u32, u32), WireTotals> = Default::default();
    let mut other = WireTotals::default();
    for (io, pair) in sockets::attribute(&conns, daemons) {
        let t = match pair {
            Some(p) => pairs.entry(p).or_default(),
            None => &mut other,
        };
        if io.sent {
            t.bytes_out += io.bytes;
            t.calls_out += io.calls;
            t.iovecs_out += io.iovs;
        } else {
            t.bytes_in += io.bytes;
            t.calls_in += io.calls;
            t.iovecs_in += io.iovs;
        }
    }
    (pairs.into_iter().map(|((src, dst), t)| WireCount { src, dst, t }).collect(), other)
}
