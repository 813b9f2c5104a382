//! Communication tracing: the recorders behind the ORB's probe points, the trace
//! directory format, and the reports that reproduce the Solaris MC study.
//!
//! # Modules
//!
//! Reads the ORB's probe records; never touches a daemon except through its probes (and, for
//! the in-process fallback, the `Trace` control call ssi-node makes).
//! - `bpf/recorder.bpf.c` — the BPF side (C, clang-14, built by `build.rs` into a libbpf-rs
//!   skeleton): `on_record` on the ORB's `ssi:records` probe copies each bundle of records into
//!   a 64 MiB ring buffer (no wake-up; drained every 20 ms); BTF tracepoints on the socket
//!   layer (`sock_send_length`/`sock_recv_length`: every send/write and recv/read syscall on a
//!   socket) count bytes and calls per (daemon, local address, remote address, direction).
//!   Syscall tracepoints (sys_enter of the eight transport calls: iovec counts) are attached
//!   only with `--syscalls`: enabling one puts every task on the slow syscall path (+17–19% on
//!   the ORB's two-way p50).
//! - `bpf.rs` — load, attach (USDT per daemon pid via `/proc/PID/exe`; tracepoints), drain to
//!   `events.bin` (bundles split into records), the wire totals; a load refused (EPERM, no
//!   BPF) is `Error::Unavailable` — nothing attached, the caller falls back. `sockets.rs` —
//!   which connection is which node pair, by the nodes' ORB addresses.
//! - `format.rs` — the trace directory (`trace.json`, `events*.bin`), record decoding.
//! - `analysis.rs` — one pass over the records: per-pair tallies inside the window, sizes,
//!   rates, buffer chains, request-responses joined across nodes by (caller, request id);
//!   `reference.rs` — the paper's figures (a copy of `shared/reference/solaris-mc-1997.toml`).
//! - `report.rs`, `plots.rs` — terminal tables / JSON, SVG figures (plotters), one HTML page;
//!   `perfetto.rs` — Chrome-trace JSON of request-responses.
//! - `stats.rs` — medians of rounds and quantiles of samples.
pub mod analysis;
pub mod bpf;
pub mod error;
pub mod format;
pub mod perfetto;
pub mod plots;
pub mod reference;
pub mod report;
pub mod sockets;
pub mod stats;
