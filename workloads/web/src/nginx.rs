//! nginx on cluster nodes, for the web benchmark and workload: one single-process nginx per
//! node started with `ssi run` (so its bind of the port goes through the SAP, as a member of
//! a scalable service or alone), serving a document root, logging each request to its own
//! access log so that per-node request counts come from nginx itself.

use crate::error::{Context, Error, Result};
use ssi_node::bail;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One nginx: its node, its files (config, logs, pid) under `dir`.
pub struct Nginx {
    pub node: u32,
    pub dir: PathBuf,
    run: Child,
}

/// What the nginx of one node serves, and how it binds.
pub struct Site<'a> {
    pub node: u32,
    pub port: u16,
    /// The document root.
    pub root: &'a Path,
    /// Joins this scalable service (round robin) instead of binding the port alone.
    pub service: Option<&'a str>,
}

impl Nginx {
    /// Starts nginx for `site` on the cluster in `cluster` (its files under `dir`) with the
    /// `ssi` binary `ssi`, and waits until the SAP lists it as a listener of the port.
    pub fn start(ssi: &Path, cluster: &Path, dir: &Path, site: &Site) -> Result<Nginx> {
        if Command::new("nginx").arg("-v").stderr(Stdio::null()).status().is_err() {
            bail!("nginx is not installed (apt: nginx-light; scripts/install-deps.sh)");
        }
        std::fs::create_dir_all(dir)?;
        let d = dir.display();
        // One process (no master), no daemonizing: `ssi run` holds it and the SAP entry is
        // its pid's; keep-alive connections are not cut after nginx's default 1,000 requests.
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 8192; }}\n\
             http {{\n  access_log {d}/access.log; keepalive_requests 10000000;\n  \
             client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n  \
             default_type application/octet-stream;\n  \
             server {{ listen {port}; root {root}; location / {{ add_header X-Node {node}; }} }}\n}}\n",
            port = site.port,
            root = site.root.display(),
            node = site.node
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = Command::new(ssi);
        cmd.arg("run").arg("--dir").arg(cluster).args(["-n", &site.node.to_string(), "--cwd", "/"]);
        if let Some(s) = site.service {
            cmd.args(["--service", s, "--policy", "rr"]);
        }
        let run = cmd
            .args(["--", "nginx", "-c"])
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("run.log"))?)
            .spawn()
            .context("ssi run nginx")?;
        let mut n = Nginx { node: site.node, dir: dir.to_path_buf(), run };
        n.wait_listed(cluster, site.port)?;
        Ok(n)
    }

    fn wait_listed(&mut self, cluster: &Path, port: u16) -> Result<()> {
        let t0 = Instant::now();
        loop {
            if ssi_node::ports::listeners(cluster, port)?.iter().any(|&(node, _)| node == self.node) {
                return Ok(());
            }
            if let Ok(Some(st)) = self.run.try_wait() {
                bail!(
                    "nginx on node {} exited ({st}): {}",
                    self.node,
                    std::fs::read_to_string(self.dir.join("run.log")).unwrap_or_default().trim()
                );
            }
            if t0.elapsed() > Duration::from_secs(15) {
                bail!("nginx on node {} did not bind port {port} within 15 s", self.node);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its pid (from its pid file).
    pub fn pid(&self) -> Result<i32> {
        let p = self.dir.join("nginx.pid");
        std::fs::read_to_string(&p)
            .with_context(|| p.display().to_string())?
            .trim()
            .parse()
            .with_context(|| format!("pid in {}", p.display()))
    }

    /// Requests it has logged so far.
    pub fn requests(&self) -> u64 {
        std::fs::read(self.dir.join("access.log")).map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64).unwrap_or(0)
    }

    /// Forgets the requests logged so far (between benchmark cases).
    pub fn clear_log(&self) {
        let _ = std::fs::write(self.dir.join("access.log"), b"");
        // nginx keeps writing at its offset (O_APPEND): the truncated file stays right.
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) -> Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()?), nix::sys::signal::Signal::SIGKILL)?;
        let _ = self.run.wait();
        Ok(())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = self.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.run.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.run.kill();
        let _ = self.run.wait();
    }
}

/// The paper's web document: one file of 1,500 bytes (`index.html` under `root`).
pub fn paper_document(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root)?;
    let body: Vec<u8> = (0..1500).map(|i| b"abcdefghijklmnopqrstuvwxyz\n"[i % 27]).collect();
    std::fs::write(root.join("index.html"), body)?;
    Ok(())
}
