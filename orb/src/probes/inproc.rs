//! The in-process recorder: when BPF cannot be used, the daemon itself writes the records its
//! probe points build into a trace file, in the same format the BPF recorder writes.
//!
//! Records are appended to a buffer under one short lock and written out by a flusher thread
//! every 50 ms, so no I/O happens on the ORB's paths. Nothing is dropped: if the flusher falls
//! behind, the buffer grows.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// The file format's first bytes (`docs/trace-format.md`).
pub const MAGIC: &[u8; 8] = b"SSITRC1\n";

static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Framed records not yet written, and how many records this recording has taken.
static PENDING: Mutex<Option<(Vec<u8>, u64)>> = Mutex::new(None);
static FLUSHER: Mutex<Option<(std::thread::JoinHandle<()>, Arc<AtomicBool>)>> = Mutex::new(None);

/// Whether the in-process recorder is on (one relaxed load on the hot paths).
#[inline]
pub fn active() -> bool {
    ACTIVE.load(Relaxed)
}

/// Appends one record, framed as the trace file frames it (`u32 len` then the bytes).
pub(crate) fn write(rec: &[u8]) {
    if let Some((buf, n)) = PENDING.lock().as_mut() {
        buf.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        buf.extend_from_slice(rec);
        *n += 1;
    }
}

/// Starts recording into `path` (created; fails if a recording is running).
pub fn start(path: &Path) -> std::io::Result<()> {
    let mut fl = FLUSHER.lock();
    if fl.is_some() {
        return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "an in-process recording is already running"));
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(MAGIC)?;
    *PENDING.lock() = Some((Vec::with_capacity(1 << 20), 0));
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let display = path.display().to_string();
    let h = std::thread::Builder::new().name("ssi-trace-flush".into()).spawn(move || flusher(&s2, f, &display))?;
    *fl = Some((h, stop));
    ACTIVE.store(true, Relaxed);
    Ok(())
}

/// Stops recording: the rest is written and the file synced. Returns how many records it took.
pub fn stop() -> Option<u64> {
    ACTIVE.store(false, Relaxed);
    let (h, stop) = FLUSHER.lock().take()?;
    // A probe point that saw the recorder on just before may still be writing: let it land.
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Relaxed);
    let _ = h.join();
    PENDING.lock().take().map(|(_, n)| n)
}

fn flusher(stop: &AtomicBool, mut f: std::fs::File, path: &str) {
    let mut out = Vec::with_capacity(1 << 20);
    loop {
        let stopping = stop.load(Relaxed);
        if let Some((buf, _)) = PENDING.lock().as_mut() {
            std::mem::swap(buf, &mut out);
        }
        if !out.is_empty() {
            if let Err(e) = f.write_all(&out) {
                tracing::warn!("in-process trace {path}: {e}");
            }
            out.clear();
        }
        if stopping {
            let _ = f.sync_all();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
