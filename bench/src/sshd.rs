//! A throwaway sshd on loopback with its own host key and a user key that may log in: the
//! baseline of `ssi bench fs` (sshfs) and `ssi bench rexec` (ssh). Stopped on drop.

use crate::error::{Error, Result};
use ssi_node::bail;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    child: Child,
    pub port: u16,
    pub user: String,
    /// The private key of `user`.
    pub key: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// Starts sshd with keys and config under `dir`; returns once it accepts a login.
    pub fn start(dir: &Path) -> Result<Sshd> {
        for tool in ["/usr/sbin/sshd", "ssh-keygen", "ssh"] {
            if !ssi_node::installed(tool) {
                bail!("{tool} is not installed (apt-get install openssh-server openssh-client)");
            }
        }
        fs::create_dir_all(dir)?;
        for k in ["host_key", "user_key"] {
            let _ = fs::remove_file(dir.join(k));
            let status = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(dir.join(k)).status()?;
            if !status.success() {
                bail!("ssh-keygen failed");
            }
        }
        fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys"))?;
        let port = ssi_orb::ports::pick(std::net::Ipv4Addr::LOCALHOST.into(), &Default::default())?;
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\nPidFile none\nSubsystem sftp internal-sftp\n",
            hk = dir.join("host_key").display(),
            ak = dir.join("authorized_keys").display()
        );
        fs::write(dir.join("sshd_config"), cfg)?;
        fs::create_dir_all("/run/sshd")?;
        let child = Command::new("/usr/sbin/sshd").args(["-D", "-e", "-f"]).arg(dir.join("sshd_config")).stderr(Stdio::null()).spawn()?;
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())?.map(|u| u.name).unwrap_or_else(|| "root".into());
        let s = Sshd { child, port, user, key: dir.join("user_key") };
        let t = Instant::now();
        while !s.ssh(&["true"]).stderr(Stdio::null()).status().is_ok_and(|st| st.success()) {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("sshd on 127.0.0.1:{port} did not accept a login");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(s)
    }

    /// The options every client needs: this key, no host key checks, quiet.
    pub fn client_options(&self) -> String {
        format!("IdentityFile={},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR,BatchMode=yes", self.key.display())
    }

    /// `ssh` to this server running `cmd`.
    pub fn ssh(&self, cmd: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-p", &self.port.to_string()]);
        for o in self.client_options().split(',') {
            c.args(["-o", o]);
        }
        c.arg(format!("{}@127.0.0.1", self.user)).args(cmd).stdin(Stdio::null());
        c
    }
}
