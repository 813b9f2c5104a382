//! A throwaway Redis Cluster on loopback: the baseline for SDDS key searches (`ssi workload
//! sdds`). Debian's redis-server, one process per master, cluster bus on port + 10000, no
//! persistence; loaded and measured with redis-benchmark's cluster mode; stopped and removed
//! when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::SddsError;

struct Cluster {
    dir: PathBuf,
    ports: Vec<u16>,
    servers: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn cli(port: u16, args: &[&str]) -> Result<String, SddsError> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map_err(|e| SddsError::Redis(format!("redis-cli: {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn start(masters: u32) -> Result<Cluster, SddsError> {
    for t in ["redis-server", "redis-cli", "redis-benchmark"] {
        if !ssi_node::installed(t) {
            return Err(SddsError::Redis(format!("{t} is not installed (scripts/install-deps.sh installs redis-server)")));
        }
    }
    let dir = std::env::temp_dir().join(format!("ssi-redis-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| SddsError::Redis(e.to_string()))?;
    let mut c = Cluster { dir: dir.clone(), ports: Vec::new(), servers: Vec::new() };
    let mut p = 17_000 + (std::process::id() % 2_000) as u16;
    while c.ports.len() < masters as usize {
        p += 1;
        if p > 25_000 {
            return Err(SddsError::Redis("no free loopback ports for the Redis Cluster".into()));
        }
        if !(free(p) && free(p + 10_000)) {
            continue;
        }
        let log = std::fs::File::create(dir.join(format!("redis-{p}.log"))).map_err(|e| SddsError::Redis(e.to_string()))?;
        let child = Command::new("redis-server")
            .args(["--port", &p.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{p}.conf"), "--dir"])
            .arg(&dir)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::from(log.try_clone().map_err(|e| SddsError::Redis(e.to_string()))?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| SddsError::Redis(format!("redis-server: {e}")))?;
        c.servers.push(child);
        c.ports.push(p);
    }
    let t0 = Instant::now();
    for p in &c.ports {
        while cli(*p, &["ping"])?.trim() != "PONG" {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(SddsError::Redis(format!("redis-server on port {p} did not answer")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let addrs: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .map_err(|e| SddsError::Redis(format!("redis-cli --cluster create: {e}")))?;
    if !out.status.success() {
        return Err(SddsError::Redis(format!(
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("")
        )));
    }
    while !cli(c.ports[0], &["cluster", "info"])?.contains("cluster_state:ok") {
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(SddsError::Redis("the Redis Cluster did not reach cluster_state:ok".into()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(c)
}

/// redis-benchmark in cluster mode: requests per second of `test`.
fn bench(port: u16, test: &str, n: u64, keyspace: u64) -> Result<f64, SddsError> {
    let out = Command::new("redis-benchmark")
        .args(["--cluster", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", test])
        .args(["-n", &n.to_string(), "-r", &keyspace.to_string(), "-d", "24", "-c", "50", "-P", "64", "--csv"])
        .output()
        .map_err(|e| SddsError::Redis(format!("redis-benchmark: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.to_ascii_uppercase().starts_with(&format!("\"{}\"", test.to_ascii_uppercase())));
    line.and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .ok_or_else(|| SddsError::Redis(format!("redis-benchmark -t {test}: no rate in its output: {}", text.lines().last().unwrap_or(""))))
}

/// GETs per second from a Redis Cluster of `masters` (at least 3) holding `keyspace` keys.
pub fn get_rate(masters: u32, gets: u64, keyspace: u64) -> Result<f64, SddsError> {
    let c = start(masters.max(3))?;
    bench(c.ports[0], "set", keyspace.max(1), keyspace.max(1))?;
    bench(c.ports[0], "get", gets.max(1), keyspace.max(1))
}
