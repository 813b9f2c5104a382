//! wrk, the HTTP load generator, run in a `--netns` cluster's external namespace against the
//! cluster's global address; its report parsed (requests/s, latency percentiles, errors).

use crate::error::{Context, Error, Result};
use ssi_node::bail;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One wrk run.
pub struct Load<'a> {
    pub url: &'a str,
    pub connections: u32,
    pub threads: u32,
    pub duration: Duration,
    /// A new connection per request (`Connection: close`), else keep-alive.
    pub close: bool,
    /// A wrk Lua script (e.g. one that picks a path per request).
    pub script: Option<&'a Path>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub requests: u64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// connect + read + write + timeout errors.
    pub socket_errors: u64,
    /// wrk's own words for them: `connect 0, read 2, write 0, timeout 0`.
    pub socket_errors_detail: String,
    pub non_2xx: u64,
}

/// Runs `load` with wrk inside the external namespace `ext_ns`.
pub fn run(ext_ns: &str, load: &Load) -> Result<Report> {
    if Command::new("wrk").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        bail!("wrk is not installed (apt: wrk; scripts/install-deps.sh)");
    }
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ext_ns, "wrk", "--latency"])
        .args(["-t", &load.threads.max(1).to_string(), "-c", &load.connections.to_string()])
        .args(["-d", &format!("{}s", load.duration.as_secs_f64().ceil().max(1.0) as u64)]);
    if load.close {
        c.args(["-H", "Connection: close"]);
    }
    if let Some(s) = load.script {
        c.arg("-s").arg(s);
    }
    let out = c.arg(load.url).stdin(Stdio::null()).output().context("wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {}{}", text.trim(), String::from_utf8_lossy(&out.stderr).trim());
    }
    parse(&text).with_context(|| format!("wrk's report:\n{text}"))
}

/// Parses wrk's text report (run with `--latency`).
pub fn parse(text: &str) -> Result<Report> {
    let mut r = Report::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => r.per_sec = v.parse()?,
            [n, "requests", "in", ..] => r.requests = n.parse()?,
            ["50%", v] => r.p50_ms = millis(v)?,
            ["99%", v] => r.p99_ms = millis(v)?,
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx = n.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 3, write 0, timeout 0
                r.socket_errors = rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum();
                r.socket_errors_detail = rest.join(" ");
            }
            _ => {}
        }
    }
    if r.per_sec == 0.0 && r.requests == 0 {
        bail!("no requests/s in the report");
    }
    Ok(r)
}

/// wrk's durations: `812.00us`, `1.25ms`, `2.01s`.
fn millis(v: &str) -> Result<f64> {
    let (num, scale) = if let Some(x) = v.strip_suffix("us") {
        (x, 1e-3)
    } else if let Some(x) = v.strip_suffix("ms") {
        (x, 1.0)
    } else if let Some(x) = v.strip_suffix('m') {
        (x, 60e3)
    } else if let Some(x) = v.strip_suffix('s') {
        (x, 1e3)
    } else {
        bail!("a duration without a unit: {v}")
    };
    Ok(num.parse::<f64>()? * scale)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_a_report() {
        let text = "Running 3s test @ http://192.168.77.1/\n  1 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   631.13us  200.00us   5.00ms   90.00%\n  Latency Distribution\n     50%  598.00us\n     75%  700.00us\n     90%  800.00us\n     99%    1.25ms\n  151512 requests in 3.00s, 240.00MB read\n  Socket errors: connect 0, read 3, write 0, timeout 1\n  Non-2xx or 3xx responses: 2\nRequests/sec:  50504.19\nTransfer/sec:     80.00MB\n";
        let r = super::parse(text).unwrap();
        assert_eq!(r.requests, 151512);
        assert_eq!(r.per_sec, 50504.19);
        assert!((r.p50_ms - 0.598).abs() < 1e-9 && (r.p99_ms - 1.25).abs() < 1e-9);
        assert_eq!((r.socket_errors, r.non_2xx), (4, 2));
        assert!(super::parse("nothing").is_err());
    }
}
