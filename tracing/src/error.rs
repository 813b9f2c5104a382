//! Why a trace could not be recorded, read, written or reported.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A file or directory could not be read or written (`what` says which step).
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{}: malformed: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{}: trace format {found} (this ssi reads {reads})", path.display())]
    Version { path: PathBuf, found: u32, reads: u32 },
    /// A trace file that is not one, or is cut short: where, and how.
    #[error("{}: {why}", path.display())]
    Malformed { path: PathBuf, why: String },
    #[error("{}: record at byte {at}: {source}", path.display())]
    Record { path: PathBuf, at: u64, source: ssi_orb::probes::record::DecodeError },
    #[error("{}: no events*.bin files", .0.display())]
    NoEvents(PathBuf),
    #[error("{}: no complete request-response in the trace (it needs two-way invocations between nodes)", .0.display())]
    NoRequestResponse(PathBuf),
    /// The eBPF recorder failed after it attached (`what` says at which step).
    #[error("{what}: {source}")]
    Bpf { what: String, source: libbpf_rs::Error },
    #[error("{0}")]
    Plot(#[from] crate::plots::PlotError),
}

impl TraceError {
    /// An I/O error at step `what` on `path`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TraceError {
        let path = path.into();
        move |source| TraceError::Io { what, path, source }
    }
}
