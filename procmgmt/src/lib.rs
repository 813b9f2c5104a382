//! ssi-procmgmt: global processes (DESIGN §5) — global pids, remote exec, signals and wait
//! across nodes, the combining global `/proc`, `ssi ps`.
//!
//! **Skeleton.** Nothing is implemented yet (issue "Global processes").

/// A global pid: `node × 4194304 + local pid` (node ids 1..=511), so it fits a `pid_t`.
pub const GPID_STRIDE: u32 = 4_194_304;

/// What this crate can do today.
pub const STATUS: &str = "procmgmt: not implemented yet — no remote exec, no global /proc";
