//! ssi-trace: communication tracing (DESIGN §7) — the eBPF recorder for the USDT probes the
//! ORB and services fire, the trace format, and the reports reproducing the Solaris MC study.
//!
//! **Skeleton.** The probes exist (see `ssi_orb::probes`); the recorder and reports do not yet
//! (issue "Communication tracing").

/// What this crate can do today.
pub const STATUS: &str = "trace: not implemented yet — probes fire, nothing records them (use bpftrace)";
