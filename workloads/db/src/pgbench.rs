//! `ssi workload db --pgbench`: PostgreSQL with its data directory on PXFS (`/db`, through
//! the first node's mount) and the same on this machine's local disk, each initialized with
//! `pgbench -i` and run with `pgbench -T`; TPS and latency side by side.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Context, Error, Result};
use serde_json::json;
use ssi_node::{bail, failed};

pub struct PgbenchOptions {
    pub dir: PathBuf,
    pub seconds: f64,
    pub scale: u32,
    pub clients: u32,
    pub json: bool,
}

struct Pg {
    bin: PathBuf,
    uid: u32,
    gid: u32,
}

fn postgres() -> Result<Pg> {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| failed!("PostgreSQL is not installed (apt-get install postgresql)"))?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists() && b.join("pgbench").exists())
        .collect();
    bins.sort();
    let bin = bins.pop().ok_or_else(|| failed!("no PostgreSQL with initdb, pg_ctl and pgbench under /usr/lib/postgresql"))?;
    let u = nix::unistd::User::from_name("postgres")?.ok_or_else(|| failed!("no user postgres"))?;
    Ok(Pg { bin, uid: u.uid.as_raw(), gid: u.gid.as_raw() })
}

impl Pg {
    fn run(&self, prog: &str, args: &[&str]) -> Result<String> {
        use std::os::unix::process::CommandExt;
        let out =
            Command::new(self.bin.join(prog)).args(args).uid(self.uid).gid(self.gid).current_dir("/").stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!("{prog} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    }

    fn own(&self, dir: &Path, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)?;
        std::os::unix::fs::chown(dir, Some(self.uid), Some(self.gid))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// initdb, start, pgbench -i, pgbench -T, stop: (tps, latency ms).
    fn bench(&self, data: &Path, sock: &Path, o: &PgbenchOptions) -> Result<(f64, f64)> {
        let _ = std::fs::remove_dir_all(data);
        self.own(data, 0o700)?;
        self.own(sock, 0o755)?;
        let d = data.to_str().ok_or_else(|| failed!("non-UTF-8 path"))?;
        let s = sock.to_str().ok_or_else(|| failed!("non-UTF-8 path"))?;
        self.run("initdb", &["-D", d, "--no-instructions"])?;
        let port = ssi_orb::ports::pick(std::net::Ipv4Addr::LOCALHOST.into(), &Default::default())?.to_string();
        let opts = format!("-k {s} -p {port} -c listen_addresses=");
        self.run("pg_ctl", &["-D", d, "-l", &format!("{d}/server.log"), "-o", &opts, "-w", "start"])?;
        let result = (|| -> Result<(f64, f64)> {
            self.run("pgbench", &["-h", s, "-p", &port, "-i", "-q", "-s", &o.scale.to_string(), "postgres"])?;
            let t = format!("{}", o.seconds.ceil() as u64);
            let out = self.run("pgbench", &["-h", s, "-p", &port, "-c", &o.clients.to_string(), "-T", &t, "postgres"])?;
            let num =
                |key: &str| out.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
            Ok((num("tps = ").ok_or_else(|| failed!("pgbench printed no tps: {out}"))?, num("latency average = ").unwrap_or(0.0)))
        })();
        let _ = self.run("pg_ctl", &["-D", d, "-m", "fast", "-w", "stop"]);
        result
    }
}

pub fn pgbench(o: &PgbenchOptions) -> Result<()> {
    let pg = postgres()?;
    let (_, members, m1) = ssi_node::local::running(&o.dir)?;
    let first = members[0];
    let scratch = std::env::temp_dir().join(format!("ssi-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    if !o.json {
        eprintln!("PostgreSQL ({}) on PXFS /db...", pg.bin.display());
    }
    let on_pxfs = pg.bench(&m1.join("db/pgdata"), &scratch.join("sock-pxfs"), o);
    let _ = std::fs::remove_dir_all(m1.join("db/pgdata"));
    if !o.json {
        eprintln!("PostgreSQL on the local disk...");
    }
    let on_disk = pg.bench(&scratch.join("pgdata"), &scratch.join("sock-local"), o);
    let _ = std::fs::remove_dir_all(&scratch);
    let ((pt, pl), (lt, ll)) = (on_pxfs.context("on PXFS")?, on_disk.context("on the local disk")?);
    if o.json {
        println!(
            "{}",
            json!({"workload": "db-pgbench", "scale": o.scale, "clients": o.clients, "seconds": o.seconds,
                   "pxfs": {"tps": pt, "latency_ms": pl}, "local": {"tps": lt, "latency_ms": ll}, "ratio": pt / lt})
        );
    } else {
        println!("ssi workload db --pgbench — pgbench -s {} -c {} -T {}", o.scale, o.clients, o.seconds.ceil());
        println!("  data on PXFS /db (via node {first}):  {pt:>9.1} TPS, latency {pl:.3} ms");
        println!("  data on the local disk:          {lt:>9.1} TPS, latency {ll:.3} ms");
        println!("  PXFS / local: {:.2}", pt / lt);
    }
    Ok(())
}
