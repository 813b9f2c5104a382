//! Communication tracing (DESIGN §7): the recorders behind the ORB's probe points, the trace
//! directory format, and the reports that reproduce the Solaris MC study.
//!
//! - `bpf`: the eBPF recorder (libbpf-rs; the C program in `bpf/recorder.bpf.c`).
//! - `sockets`: which daemon fds are ORB connections (for the wire-level counts).
//! - `format`: the trace directory and its records.
//! - `analysis`: records → the study's measurements; `reference`: the paper's figures.
//! - `report`, `plots`: terminal tables, JSON, SVG figures, the HTML page.
//! - `perfetto`: request-response timelines for a trace viewer.
pub mod analysis;
pub mod bpf;
pub mod format;
pub mod perfetto;
pub mod plots;
pub mod reference;
pub mod report;
pub mod sockets;
