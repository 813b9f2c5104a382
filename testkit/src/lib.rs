//! What the cluster tests share: a local cluster of real `ssi node` processes for one test
//! (plain, or `--netns` behind a gateway), taken down even when the test fails; the `ssi`
//! binary to run; requirements that fail loudly in CI; and the check that no earlier test
//! left a process, cgroup, mount or network namespace behind.

pub mod golden;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The `ssi` binary under test: `$SSI_BIN`, or the one cargo built beside the test binary
/// (`target/<profile>/ssi`, the test being `target/<profile>/deps/<name>-<hash>`).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = std::env::var_os("SSI_BIN") {
            return b.into_string().expect("SSI_BIN is not UTF-8");
        }
        let me = std::env::current_exe().expect("path of the test binary");
        let b = me.parent().and_then(Path::parent).expect("target/<profile>/deps").join("ssi");
        assert!(b.exists(), "no ssi binary at {} (cargo test builds it; or set SSI_BIN)", b.display());
        b.into_os_string().into_string().expect("target dir is not UTF-8")
    })
}

/// Runs `ssi args...` (not reaching for `$SSI_DIR`'s cluster); its output.
pub fn ssi(args: &[&str]) -> Output {
    Command::new(bin()).args(args).env_remove("SSI_DIR").output().expect("run ssi")
}

/// Runs `ssi args...`, which must succeed; its stdout.
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
        let dir = test_dir(name);
        let c = Cluster { dir, nodes };
        ok(&["up", "--nodes", &nodes.to_string(), "--dir", c.dir_str()]);
        c
    }
    pub fn dir_str(&self) -> &str {
        self.dir.to_str().unwrap()
    }
    pub fn config(&self) -> ssi_node::config::Config {
        ssi_node::local::load(&self.dir).unwrap()
    }
    pub fn pid(&self, node: u32) -> i32 {
        let cfg = self.config();
        ssi_node::pidfile::node_pid(cfg.node(node).unwrap()).unwrap_or_else(|| panic!("node {node} is not running"))
    }
    pub fn kill9(&self, node: u32) {
        let pid = self.pid(node);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        // Reap-wait: the daemon's parent is init, so wait until /proc says it is gone.
        let t0 = Instant::now();
        while ssi_node::pidfile::is_running(pid) {
            assert!(t0.elapsed() < Duration::from_secs(5), "node {node} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    pub fn addr(&self, node: u32) -> String {
        self.config().node(node).unwrap().addr.to_string()
    }
    pub fn key(&self) -> ssi_orb::ClusterKey {
        ssi_node::config::read_key(&self.config().key_file).unwrap()
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
        let dir = test_dir(name);
        let c = NetCluster { dir };
        ok(&["up", "--netns", "--dispatch", dispatch, "--nodes", "4", "--dir", c.d()]);
        c
    }
    pub fn d(&self) -> &str {
        self.dir.to_str().unwrap()
    }
    pub fn mechanism(&self) -> String {
        ssi_node::gateway::mechanism(&self.dir)
    }
    pub fn wait_steering(&self, what: &str) {
        ssi_node::gateway::wait_steering(&self.dir, &[what]).unwrap();
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

/// A copy of the running test binary that any user may execute, wherever the checkout
/// lives (for helpers run as an unprivileged user); removed when dropped.
pub struct UserExe(pub PathBuf);

impl UserExe {
    pub fn new(name: &str) -> UserExe {
        use std::os::unix::fs::PermissionsExt;
        let exe = std::env::temp_dir().join(format!("ssi-{name}-{}", std::process::id()));
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        UserExe(exe)
    }
}

impl Drop for UserExe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Root and /dev/fuse, what every test of a FUSE-mounting cluster needs (see [`required`]).
pub fn root_and_fuse() -> bool {
    required("root", nix::unistd::geteuid().is_root()) && required("/dev/fuse", std::path::Path::new("/dev/fuse").exists())
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

/// The clusters of this test binary (their directories): whatever runs for them is ours.
static OURS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// A fresh directory for a test's cluster, `ssi-test-NAME-PID` in the temp dir, after
/// checking that no earlier test left anything running ([`assert_clean`]).
pub fn test_dir(name: &str) -> PathBuf {
    assert_clean();
    let dir = std::env::temp_dir().join(format!("ssi-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    OURS.lock().unwrap().insert(dir.clone());
    dir
}

/// Fails the test when an earlier test (another test binary: they run one after another)
/// left something behind — a daemon, anything a node started, a mount, a network namespace
/// — since it would load the machine or hold ports and mounts this test measures or needs.
///
/// What is on its way out is not left behind: a cluster another test of this binary takes
/// down at this moment has processes that are exiting (their command line already gone), so
/// what is found is looked for again for up to 2 s, and only what stays fails the test.
pub fn assert_clean() {
    let t0 = Instant::now();
    let mut left = leftovers();
    while !left.is_empty() && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
        left = leftovers();
    }
    assert!(left.is_empty(), "an earlier test left these behind:\n  {}", left.join("\n  "));
}

/// The pid in a test's or tool's scratch path (`/tmp/ssi-test-NAME-PID/...`,
/// `/tmp/ssi-redis-PID`): the process the directory belongs to.
fn owner_in(text: &str) -> Option<i32> {
    let tmp = std::env::temp_dir();
    let at = text.find(&format!("{}/ssi-", tmp.display()))?;
    let comp = text[at..].split('/').nth(tmp.components().count())?;
    let pid = comp.rsplit('-').next()?;
    pid.chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().ok()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// What earlier tests left: processes working in a scratch directory whose owner is gone,
/// processes in a node cgroup of no cluster of ours, mounts in such directories, and
/// network namespaces of no cluster of ours.
pub fn leftovers() -> Vec<String> {
    let me = std::process::id() as i32;
    let ours: Vec<PathBuf> = OURS.lock().unwrap().iter().cloned().collect();
    let orphan = |text: &str| owner_in(text).is_some_and(|o| o != me && !alive(o));
    let mut left = Vec::new();
    let proc_text = |pid: i32| {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).map(|p| p.display().to_string()).unwrap_or_default();
        (cmd.trim().to_string(), cwd)
    };
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let (cmd, cwd) = proc_text(pid);
        if orphan(&cmd) || orphan(&cwd) {
            left.push(format!("process {pid} ({cmd}) in {cwd}"));
        }
    }
    // Node cgroups hold what nodes started, whatever its command line says; one is in use
    // while something in it works for a live owner (a live cluster's daemon always does).
    if let Some(root) = ssi_netsap::bindguard::cgroup2_root() {
        for e in std::fs::read_dir(root.join("ssi")).into_iter().flatten().flatten() {
            let procs = ssi_netsap::bindguard::cgroup_procs(&e.path());
            let texts: Vec<(i32, String, String)> = procs
                .iter()
                .map(|p| {
                    let (cmd, cwd) = proc_text(*p);
                    (*p, cmd, cwd)
                })
                .collect();
            let in_use = texts.iter().any(|(_, cmd, cwd)| [cmd, cwd].iter().any(|t| owner_in(t).is_some_and(|o| o == me || alive(o))));
            if !procs.is_empty() && !in_use {
                let what: Vec<String> = texts.iter().map(|(p, cmd, _)| format!("{p} ({cmd})")).collect();
                left.push(format!("cgroup {} holds {}", e.path().display(), what.join(", ")));
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for l in mounts.lines() {
        if let Some(path) = l.split(' ').nth(4) {
            if orphan(path) {
                left.push(format!("mount {path}"));
            }
        }
    }
    // A cluster's namespaces are in use while one of its processes (a daemon) works for a
    // live owner; ours count from before their daemons start.
    let our_prefixes: Vec<String> = ours.iter().map(|d| ssi_node::local::netns_prefix(d)).collect();
    for ns in ssi_netsap::topology::list() {
        let cluster_ns =
            ns.starts_with("ssi") && ns.get(3..9).is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit())) && ns.get(9..10) == Some("-");
        if !cluster_ns || our_prefixes.iter().any(|p| ns.starts_with(&format!("{p}-"))) {
            continue;
        }
        let pids = Command::new("ip")
            .args(["netns", "pids", &ns])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let in_use = pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()).any(|p| {
            let (cmd, cwd) = proc_text(p);
            [cmd, cwd].iter().any(|t| owner_in(t).is_some_and(|o| o == me || alive(o)))
        });
        if !in_use {
            left.push(format!("network namespace {ns}"));
        }
    }
    left
}
