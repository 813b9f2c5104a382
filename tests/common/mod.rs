//! A local cluster of real `ssi node` processes for one test, taken down even when the
//! test fails.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ssi");

pub fn ssi(args: &[&str]) -> Output {
    let out = Command::new(BIN).args(args).env_remove("SSI_DIR").output().expect("run ssi");
    out
}

pub fn ok(args: &[&str]) -> String {
    let out = ssi(args);
    assert!(out.status.success(), "ssi {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Cluster {
    pub dir: PathBuf,
    pub nodes: u32,
}

impl Cluster {
    pub fn up(name: &str, nodes: u32) -> Cluster {
        let dir = std::env::temp_dir().join(format!("ssi-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Cluster { dir, nodes };
        ok(&["up", "--nodes", &nodes.to_string(), "--dir", c.dir_str()]);
        c
    }
    pub fn dir_str(&self) -> &str {
        self.dir.to_str().unwrap()
    }
    pub fn config(&self) -> ssi::config::Config {
        ssi::local::load(&self.dir).unwrap()
    }
    pub fn pid(&self, node: u32) -> i32 {
        let cfg = self.config();
        ssi::local::node_pid(cfg.node(node).unwrap()).unwrap_or_else(|| panic!("node {node} is not running"))
    }
    pub fn kill9(&self, node: u32) {
        let pid = self.pid(node);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        // Reap-wait: the daemon's parent is init, so wait until /proc says it is gone.
        let t0 = Instant::now();
        while ssi::local::is_running(pid) {
            assert!(t0.elapsed() < Duration::from_secs(5), "node {node} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    pub fn addr(&self, node: u32) -> String {
        self.config().node(node).unwrap().addr.to_string()
    }
    pub fn key(&self) -> ssi_orb::ClusterKey {
        ssi::daemon::read_key(&self.config().key_file).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = ssi(&["down", "--dir", self.dir_str()]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 4-node `--netns` cluster (node 2 the gateway) with the dispatcher `dispatch`, taken
/// down even when the test fails.
pub struct NetCluster {
    pub dir: PathBuf,
}

impl NetCluster {
    pub fn up(name: &str, dispatch: &str) -> NetCluster {
        let dir = std::env::temp_dir().join(format!("ssi-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = NetCluster { dir };
        ok(&["up", "--netns", "--dispatch", dispatch, "--nodes", "4", "--dir", c.d()]);
        c
    }
    pub fn d(&self) -> &str {
        self.dir.to_str().unwrap()
    }
    pub fn mechanism(&self) -> String {
        ssi::gateway::mechanism(&self.dir)
    }
    pub fn wait_steering(&self, what: &str) {
        ssi::gateway::wait_steering(&self.dir, &[what]).unwrap();
    }
    /// Runs `python3 -c code args...` in `ext`; its stdout.
    pub fn ext_python(&self, code: &str, args: &[&str]) -> String {
        let mut a = vec!["ext", "--dir", self.d(), "--", "python3", "-c", code];
        a.extend_from_slice(args);
        let out = ssi(&a);
        assert!(out.status.success(), "python in ext: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        let _ = ssi(&["down", "--dir", self.d()]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `f` until it is true or `within` passes.
pub async fn eventually(within: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < within, "timed out after {within:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A requirement of a test (root, bpftrace, ...): in CI (`CI=true`) its absence fails the
/// test; elsewhere the test says why it did not run and returns.
pub fn required(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is required in CI and missing");
    }
    eprintln!("SKIPPED: {what} missing (this test runs in CI)");
    false
}
