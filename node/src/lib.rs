//! A node of an ssi cluster, and the cluster as the `ssi` tool sees it.
//!
//! API boundary: [`daemon::run`] assembles one node's daemon (the ORB and the system services
//! on it, the control socket) with the [`daemon::Extension`]s the binary hands it;
//! [`local`] starts, stops and inspects a local cluster (`ssi up/down/status`, `--netns`);
//! [`control`] is the control socket's protocol and client; [`tool`] is the cluster tool's
//! own ORB. The rest are the tool sides of the commands (`rexec`, `ps`, `ports`, `trace`).
//!
//! Invariant: the daemon's modules (`daemon/`) never import the tool's (`local`, `rexec`, …);
//! both sides share only `config`, `control` and `pidfile`.

pub mod config;
pub mod control;
pub mod daemon;
pub mod error;
pub mod fanout;
pub mod faults;
pub mod gateway;
pub mod local;
pub mod pidfile;
pub mod ports;
pub mod ps;
pub mod rexec;
pub mod status;
pub mod tool;
pub mod trace;
pub mod voters;

pub use error::{Context, Error, Result};

/// Whether the program `tool` (a name on PATH, or a path) is installed.
pub fn installed(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
