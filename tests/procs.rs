//! Global processes between real node daemons: `ssi rexec`, `ssi sh` and `ssi kill`, through
//! the control socket and the ORB. Needs root (a test runs as another user) and /dev/fuse
//! (working directories move between the nodes' mountpoints); CI fails without them.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;
use ssi_testkit::{bin, required, Cluster};

const STRIDE: u64 = 4_194_304;

fn mnt(c: &Cluster, node: u32) -> PathBuf {
    c.config().node(node).unwrap().mountpoint.clone()
}

/// `ssi ARGS` as a tool on node 1, in node 1's mount.
fn ssi(c: &Cluster, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args).env("SSI_DIR", c.dir_str()).env_remove("SSI_NODE").current_dir(mnt(c, 1));
    cmd
}

/// Pids of processes whose command line is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "timed out after {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn started(child: &mut Child, argv: &[&str]) -> i32 {
    let mut pid = vec![];
    wait_until(Duration::from_secs(10), "the remote process to start", || {
        pid = pids_running(argv);
        !pid.is_empty()
    });
    assert!(child.try_wait().unwrap().is_none());
    pid[0]
}

#[test]
fn exit_codes_and_deaths_come_back() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("procs-exit", 3);
    for code in [0, 1, 2, 42, 127, 255] {
        let st = ssi(&c, &["rexec", "-n", "2", "--", "sh", "-c", &format!("exit {code}")]).status().unwrap();
        assert_eq!(st.code(), Some(code), "exit {code}");
    }
    for (sig, name) in [(libc::SIGKILL, "KILL"), (libc::SIGSEGV, "SEGV")] {
        let st = ssi(&c, &["rexec", "-n", "3", "--", "sh", "-c", &format!("kill -{name} $$")]).status().unwrap();
        assert_eq!(st.signal(), Some(sig), "the tool dies by the remote process's signal");
    }
    // The command runs on the node asked for, in the same directory of the namespace.
    let out = ssi(&c, &["rexec", "-n", "3", "--", "sh", "-c", "echo $SSI_NODE; pwd"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("3\n{}\n", mnt(&c, 3).display()));
    // The caller's environment and umask come along.
    let bin = bin();
    let out = Command::new("sh")
        .args(["-c", &format!("umask 027; exec {bin} rexec -n 2 -- sh -c 'umask; echo $SSI_TEST_VAR'")])
        .env("SSI_DIR", c.dir_str())
        .env("SSI_TEST_VAR", "carried")
        .current_dir(mnt(&c, 1))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0027\ncarried\n");
    // Outside the namespace without --cwd: a clear refusal.
    let out = ssi(&c, &["rexec", "-n", "2", "--", "true"]).current_dir("/").output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--cwd"), "{out:?}");
    let st = ssi(&c, &["rexec", "-n", "2", "--cwd", "/tmp", "--", "true"]).current_dir("/").status().unwrap();
    assert!(st.success());
    // -t: the remote side gets a terminal (here under `script`, which gives the tool one).
    if required("script (util-linux)", Command::new("script").arg("--version").output().is_ok()) {
        let inner = format!("{bin} rexec -n 2 -t -- sh -c 'tty; echo node $SSI_NODE'");
        let out = Command::new("script")
            .args(["-qec", &inner, "/dev/null"])
            .env("SSI_DIR", c.dir_str())
            .current_dir(mnt(&c, 1))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("/dev/pts/") && text.contains("node 2"), "{text}");
    }
}

#[test]
fn streams_arrive_whole_and_in_order() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("procs-streams", 2);
    // 100 MiB through stdin to a remote sha256sum.
    let data: Vec<u8> = (0..100u64 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let want = format!("{:x}", sha2::Sha256::digest(&data));
    let mut child = ssi(&c, &["rexec", "-n", "2", "--", "sha256sum"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    feeder.join().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(out.split_whitespace().next(), Some(want.as_str()));
    // stdout and stderr interleaved remotely: each keeps its own order.
    let script = "i=1; while [ $i -le 3000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done";
    let out = ssi(&c, &["rexec", "-n", "2", "--", "sh", "-c", script]).output().unwrap();
    let expect = |p: &str| (1..=3000).map(|i| format!("{p}{i}\n")).collect::<String>();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expect("out"));
    assert_eq!(String::from_utf8_lossy(&out.stderr), expect("err"));
}

#[test]
fn signals_reach_the_remote_process_and_orphans_die() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("procs-signals", 2);
    // SIGINT to the local tool stops the remote command; the tool dies by SIGINT too.
    let argv = ["sleep", "1001.5"];
    let mut child = ssi(&c, &["rexec", "-n", "2", "--", "sleep", "1001.5"]).spawn().unwrap();
    let remote = started(&mut child, &argv);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGINT));
    wait_until(Duration::from_secs(2), "the remote sleep to die of SIGINT", || !Path::new(&format!("/proc/{remote}")).exists());
    // The tool killed with SIGKILL: its remote process is hung up, not left running.
    let argv = ["sleep", "1002.5"];
    let mut child = ssi(&c, &["rexec", "-n", "2", "--", "sleep", "1002.5"]).spawn().unwrap();
    let remote = started(&mut child, &argv);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until(Duration::from_secs(5), "no orphan 5 s after the tool's SIGKILL", || !Path::new(&format!("/proc/{remote}")).exists());
    // The node running the process dies: the kernel hangs it up (its parent-death signal).
    let argv = ["sleep", "1002.9"];
    let mut child = ssi(&c, &["rexec", "-n", "2", "--", "sleep", "1002.9"]).spawn().unwrap();
    let remote = started(&mut child, &argv);
    c.kill9(2);
    wait_until(Duration::from_secs(5), "no orphan 5 s after its node died", || !Path::new(&format!("/proc/{remote}")).exists());
    let _ = child.wait();
    ssi_testkit::ok(&["up", "--dir", c.dir_str()]);
    // The launching node dies: its remote processes are hung up too.
    let argv = ["sleep", "1002.75"];
    let mut child = ssi(&c, &["rexec", "-n", "2", "--", "sleep", "1002.75"]).spawn().unwrap();
    let remote = started(&mut child, &argv);
    c.kill9(1);
    wait_until(Duration::from_secs(5), "no orphan 5 s after the launching node died", || !Path::new(&format!("/proc/{remote}")).exists());
    let _ = child.wait();
}

#[test]
fn users_stay_themselves_on_every_node() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("procs-users", 2);
    // The tool as another user: a copy of the binary that user may run.
    let bin_dir = c.dir.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let bin = bin_dir.join("ssi");
    std::fs::copy(ssi_testkit::bin(), &bin).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new(&bin).args(args).env("SSI_DIR", c.dir_str()).current_dir(mnt(&c, 1)).uid(65534).gid(65534).output().unwrap()
    };
    let out = as_nobody(&["rexec", "-n", "2", "--", "id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "65534\n", "{out:?}");
    // A root process, seen from node 2: nobody may not signal it; root may.
    let mut victim = Command::new("sleep").arg("1003.5").spawn().unwrap();
    let gpid = (2 * STRIDE + victim.id() as u64).to_string();
    let out = as_nobody(&["kill", "-KILL", &gpid]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not permitted"), "{out:?}");
    assert!(victim.try_wait().unwrap().is_none(), "still running");
    assert!(ssi(&c, &["kill", "-KILL", &gpid]).status().unwrap().success());
    assert_eq!(victim.wait().unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn make_spreads_compiles_over_the_nodes() {
    if !ssi_testkit::root_and_fuse()
        || !required(
            "cc and make",
            Command::new("cc").arg("--version").output().is_ok() && Command::new("make").arg("--version").output().is_ok(),
        )
    {
        return;
    }
    let c = Cluster::up("procs-make", 4);
    // A recursive make, like redis's (`cd src && $(MAKE) all`): the sub-make holds make's job
    // server, so it must run on this node (the pipe cannot cross) and keep -j8 for its compiles.
    let top = mnt(&c, 1).join("src/tree");
    let tree = top.join("sub");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(top.join("Makefile"), "all:\n\t$(MAKE) -C sub\n").unwrap();
    for i in 0..24 {
        std::fs::write(tree.join(format!("f{i}.c")), format!("int f{i}(int x) {{ return x * {i} + 1; }}\n")).unwrap();
    }
    std::fs::write(
        tree.join("Makefile"),
        "OBJS := $(patsubst %.c,%.o,$(wildcard *.c))\nall: $(OBJS)\n%.o: %.c\n\tcc -O2 -c $< -o $@ && echo $$SSI_NODE > $@.node\n",
    )
    .unwrap();
    let bin = bin();
    let shell = format!("SHELL={bin} sh");
    let out = Command::new("make").args(["-j8", &shell]).env("SSI_DIR", c.dir_str()).current_dir(&top).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("jobserver unavailable"), "the sub-make lost make's job server: {stderr}");
    let mut nodes = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..24 {
        assert!(tree.join(format!("f{i}.o")).exists(), "f{i}.o built");
        *nodes.entry(std::fs::read_to_string(tree.join(format!("f{i}.o.node"))).unwrap().trim().to_string()).or_default() += 1;
    }
    assert!(nodes.len() >= 3, "compiles ran on {nodes:?}");
}

/// `ssi ps --json -e`, parsed.
fn ps_json(c: &Cluster) -> Vec<serde_json::Value> {
    let out = ssi(c, &["ps", "-e", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    ssi_testkit::golden::assert_shape("ps", std::slice::from_ref(&v));
    v.as_array().unwrap().clone()
}

/// The machine's processes now, split: those in a node daemon's subtree (the cluster's), and
/// the rest (the host's).
fn host_pids(c: &Cluster) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let daemons: BTreeSet<u64> = (1..=4).map(|n| c.pid(n) as u64).collect();
    let parent = |pid: u64| -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    let all: BTreeSet<u64> = std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    all.into_iter().partition(|pid| {
        let mut p = *pid;
        for _ in 0..4096 {
            if daemons.contains(&p) {
                return true;
            }
            match parent(p) {
                Some(pp) if pp != 0 => p = pp,
                _ => return false,
            }
        }
        false
    })
}

#[test]
fn the_global_proc_and_ps_show_every_process_once() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("procs-ps", 4);
    // A process on each node, started from node 1 (`--any` for one of them).
    let mut kids: Vec<(Child, u32, &str)> = Vec::new();
    for (node, tag) in [("2", "1005.25"), ("3", "1005.5"), ("4", "1005.75")] {
        let child = ssi(&c, &["rexec", "-n", node, "--", "sleep", tag]).spawn().unwrap();
        kids.push((child, node.parse().unwrap(), tag));
    }
    let any = ssi(&c, &["rexec", "--any", "--", "sleep", "1006.5"]).spawn().unwrap();
    kids.push((any, 0, "1006.5"));
    for (child, _, tag) in &mut kids {
        started(child, &["sleep", tag]);
    }
    let (before, host_before) = host_pids(&c);
    let t = Instant::now();
    let procs = ps_json(&c);
    let took = t.elapsed();
    let (after, host_after) = host_pids(&c);
    assert!(took < Duration::from_secs(1), "ssi ps took {took:?}");
    // Every process of every node that lived through the listing, exactly once, and none
    // of the host's: no node claims "the rest" of the machine.
    let listed: Vec<u64> = procs.iter().map(|p| p["gpid"].as_u64().unwrap() % STRIDE).collect();
    let unique: BTreeSet<u64> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "a process listed twice");
    for pid in before.intersection(&after) {
        assert!(unique.contains(pid), "pid {pid} missing from ssi ps");
    }
    for pid in host_before.intersection(&host_after) {
        assert!(!unique.contains(pid), "pid {pid}, the host's (in no node's subtree), listed by ssi ps");
    }
    // Each started process on its node, its parent the launching tool on node 1.
    for (child, node, tag) in &kids {
        let cmd = format!("sleep {tag}");
        let p = procs.iter().find(|p| p["cmd"] == cmd.as_str()).unwrap_or_else(|| panic!("{cmd} not listed"));
        if *node != 0 {
            assert_eq!(p["node"].as_u64(), Some(*node as u64), "{cmd}");
        }
        assert_eq!(p["ppid"].as_u64(), Some(STRIDE + child.id() as u64), "{cmd}: the parent is the tool's gpid");
    }
    // The files behind it: per-process and per-node.
    let root = mnt(&c, 2).join("proc");
    let g = procs.iter().find(|p| p["cmd"] == "sleep 1005.5").unwrap()["gpid"].as_u64().unwrap();
    assert_eq!(std::fs::read(root.join(format!("{g}/cmdline"))).unwrap(), b"sleep\x001005.5\x00");
    assert!(std::fs::read_to_string(root.join(format!("{g}/status"))).unwrap().contains("Node:\t3\n"));
    assert!(std::fs::read_to_string(root.join("nodes/4/loadavg")).unwrap().split_whitespace().count() >= 5);
    for n in ["meminfo", "uptime"] {
        assert!(!std::fs::read(root.join(format!("nodes/1/{n}"))).unwrap().is_empty());
    }
    // environ is as private as on Linux: another user may not read root's.
    let env = root.join(format!("{g}/environ"));
    let out = Command::new("cat").arg(&env).uid(65534).gid(65534).output().unwrap();
    assert!(!out.status.success(), "nobody read root's environ");
    assert!(!std::fs::read(&env).unwrap().is_empty());
    for (mut child, _, _) in kids {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn one_command_on_many_nodes_at_once() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("procs-fanout", 3);
    // Prefixed lines as they come, one exit status: the worst.
    let out = ssi(&c, &["rexec", "-n", "1,2,3", "--prefix", "--", "sh", "-c", "echo on $SSI_NODE; exit $SSI_NODE"]).output().unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(lines, ["1: on 1", "2: on 2", "3: on 3"]);
    assert_eq!(out.status.code(), Some(3), "the worst exit code");
    // Without --prefix each node's output whole, in node order, though node 3 writes first.
    let script = "echo a$SSI_NODE; echo e$SSI_NODE >&2; sleep 0.$((4 - SSI_NODE)); echo b$SSI_NODE";
    let out = ssi(&c, &["rexec", "--all", "--", "sh", "-c", script]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a1\nb1\na2\nb2\na3\nb3\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "e1\ne2\ne3\n");
    // A signal to the tool reaches every command; a death by signal is 128 + it.
    let mut tool = ssi(&c, &["rexec", "--all", "--", "sleep", "600"]).spawn().unwrap();
    let t0 = Instant::now();
    while pids_running(&["sleep", "600"]).len() < 3 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the commands did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(tool.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(tool.wait().unwrap().code(), Some(128 + libc::SIGTERM));
    assert!(pids_running(&["sleep", "600"]).is_empty(), "every command got the signal");
    // A node that cannot run it: 255, with the reason.
    let out = ssi(&c, &["rexec", "-n", "1,9", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("node 9"), "{out:?}");
}
