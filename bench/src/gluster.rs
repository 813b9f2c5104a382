//! A throwaway two-server GlusterFS (Debian's `glusterfs-server`): the peer of `ssi bench fs`
//! beside sshfs, a FUSE cluster file system with files on its servers' disks, as PXFS.
//!
//! GlusterFS refuses bricks at loopback addresses, so each server runs in a network
//! namespace of its own on a bridge made for the run (10.231.X.0/24, the host at .254);
//! nothing goes beyond this machine's own namespaces. Each glusterd also gets a mount
//! namespace with its own state, sockets and logs under the run's directory (two glusterds
//! on one host would share /var/lib/glusterd and /run/gluster). Its bricks are on the run's
//! scratch ext4 (which must be mounted before: the servers' mount namespaces copy the
//! mounts they start with). One distributed volume over both bricks, mounted on the host
//! by the GlusterFS FUSE client. All of it is stopped and removed on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Context, Error, Result};
use ssi_node::bail;

const SERVERS: u32 = 2;
const VOLUME: &str = "ssibench";

pub struct Gluster {
    pub mnt: PathBuf,
    bridge: String,
    netns: Vec<String>,
    glusterds: Vec<Child>,
}

impl Gluster {
    /// Starts the servers (state and bricks under `dir`) and mounts the volume at `dir/mnt`.
    pub fn start(dir: &Path) -> Result<Gluster> {
        for tool in ["/usr/sbin/glusterd", "/usr/sbin/gluster", "/usr/sbin/glusterfs", "ip", "nsenter", "unshare"] {
            if !ssi_node::installed(tool) {
                bail!("{tool} is not installed (apt-get install glusterfs-server glusterfs-client iproute2 util-linux)");
            }
        }
        let pid = std::process::id();
        let subnet = format!("10.231.{}", pid % 250);
        let mut g =
            Gluster { mnt: dir.join("mnt"), bridge: format!("ssigfs{}", pid % 10_000_000), netns: Vec::new(), glusterds: Vec::new() };
        // From here on, a failure undoes what was made (drop).
        ip(&["link", "add", &g.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", &g.bridge])?;
        ip(&["link", "set", &g.bridge, "up"])?;
        for i in 1..=SERVERS {
            let (ns, veth) = (format!("ssigfs-{pid}-{i}"), format!("sgf{}v{i}", pid % 10_000_000));
            ip(&["netns", "add", &ns])?;
            g.netns.push(ns.clone());
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["link", "set", &veth, "master", &g.bridge, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{subnet}.{i}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let state = dir.join(format!("server{i}"));
            for d in ["lib", "run", "log", "brick"] {
                fs::create_dir_all(state.join(d))?;
            }
            let s = state.display();
            let setup = format!(
                "mount --bind {s}/lib /var/lib/glusterd && mount --bind {s}/run /run && \
                 mkdir -p /var/log/glusterfs && mount --bind {s}/log /var/log/glusterfs && exec glusterd -N --log-level WARNING"
            );
            let log = fs::File::create(state.join("glusterd.out"))?;
            let child = Command::new("ip")
                .args(["netns", "exec", &ns, "unshare", "-m", "--propagation", "private", "sh", "-c", &setup])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting glusterd")?;
            g.glusterds.push(child);
        }
        // The servers' CLI speaks to the glusterd of its own mount namespace (its socket).
        let cli = |args: &[&str]| g.cli(args);
        wait_for(|| cli(&["peer", "status"]).is_ok(), "glusterd never answered")?;
        for i in 2..=SERVERS {
            cli(&["peer", "probe", &format!("{subnet}.{i}")])?;
        }
        wait_for(
            || cli(&["pool", "list"]).is_ok_and(|out| out.matches("Connected").count() == SERVERS as usize),
            "the GlusterFS servers never formed a pool",
        )?;
        let bricks: Vec<String> =
            (1..=SERVERS).map(|i| format!("{subnet}.{i}:{}", dir.join(format!("server{i}/brick/b")).display())).collect();
        let mut create = vec!["volume", "create", VOLUME];
        create.extend(bricks.iter().map(String::as_str));
        // `force`: the bricks' disk is also the scratch disk's root directory's file system.
        create.push("force");
        cli(&create)?;
        cli(&["volume", "start", VOLUME])?;
        fs::create_dir_all(&g.mnt)?;
        let out = Command::new("mount")
            .args(["-t", "glusterfs", &format!("{subnet}.1:/{VOLUME}")])
            .arg(&g.mnt)
            .output()
            .context("mount -t glusterfs")?;
        if !out.status.success() {
            bail!("mounting the GlusterFS volume: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        // Each brick registers its port with its glusterd after it starts, and the client
        // connects to the bricks on its own after mounting (retrying every few seconds):
        // until it reaches both, files hashed to the missing one fail with EIO. Ready once
        // files of many names (spread over both bricks by their hashes) can be made and
        // removed.
        let probe = |i: u32| -> std::io::Result<()> {
            let p = g.mnt.join(format!(".ssi-probe-{i}"));
            fs::write(&p, b"x")?;
            fs::remove_file(&p)
        };
        wait_for(|| (0..32).all(|i| probe(i).is_ok()), "the GlusterFS mount never reached both bricks")?;
        Ok(g)
    }

    /// The gluster CLI as the first server's glusterd sees it; its output, or why it failed.
    fn cli(&self, args: &[&str]) -> Result<String> {
        let Some(pid) = self.glusterds.first().and_then(|c| glusterd_pid(c.id())) else { bail!("glusterd is not running") };
        let out = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "-n", "gluster", "--mode=script"])
            .args(args)
            .output()
            .context("gluster")?;
        if !out.status.success() {
            bail!("gluster {}: {}", args.join(" "), String::from_utf8_lossy(&out.stdout).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// glusterd's own pid: the process `ip netns exec … sh -c 'exec glusterd'` became (its
/// executable is glusterfsd's, under another name: ask its command name).
fn glusterd_pid(launcher: u32) -> Option<u32> {
    let comm = fs::read_to_string(format!("/proc/{launcher}/comm")).ok()?;
    (comm.trim() == "glusterd").then_some(launcher)
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("ip")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn wait_for(mut ok: impl FnMut() -> bool, what: &str) -> Result<()> {
    let t0 = Instant::now();
    while !ok() {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("{what} (30 s)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

impl Drop for Gluster {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        // Every process of the servers (glusterd, its bricks) lives in their namespaces.
        for ns in &self.netns {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        for c in &mut self.glusterds {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.netns {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
