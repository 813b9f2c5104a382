//! The 1997 Solaris MC communication study's own figures (`reference/solaris-mc-1997.toml`, copied
//! from the project's shared reference data), for printing ours beside theirs.

use toml::Value;

const TEXT: &str = include_str!("../reference/solaris-mc-1997.toml");

pub struct Paper(Value);

/// The paper's workloads, in its order.
pub const WORKLOADS: [&str; 3] = ["make", "web", "database"];

impl Paper {
    pub fn load() -> Paper {
        Paper(TEXT.parse::<toml::Table>().map(Value::Table).expect("the bundled reference figures parse"))
    }
    fn get(&self, path: &[&str]) -> Option<&Value> {
        let mut v = &self.0;
        for p in path {
            v = v.get(p)?;
        }
        Some(v)
    }
    pub fn num(&self, path: &[&str]) -> Option<f64> {
        self.get(path).and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
    }
    /// Table 4.1: messages and KB from `src` to `dst` (1-based nodes) for `workload`.
    pub fn table_4_1(&self, workload: &str, src: u32, dst: u32) -> Option<(f64, f64)> {
        let key = format!("{src}:{dst}");
        Some((self.num(&["table_4_1", workload, "msgs", &key])?, self.num(&["table_4_1", workload, "kb", &key])?))
    }
    /// A list of three shares (Tables 6.1, 6.2).
    pub fn triple(&self, table: &str, workload: &str) -> Option<[f64; 3]> {
        let a = self.get(&[table, workload])?.as_array()?;
        let f = |i: usize| a.get(i).and_then(|v| v.as_float());
        Some([f(0)?, f(1)?, f(2)?])
    }
}

/// Fig 5.2 as the paper gives it, mapped onto our stages (µs): the paper's "driver receive"
/// and "transport receive" together are our transport → peer transport; its reply path
/// (the rest of the 1,650 µs) is our reply queue → transport and transport → transport.
pub fn fig_5_2(p: &Paper) -> [Option<f64>; 10] {
    let g = |k: &str| p.num(&["request_response", k]);
    let known = [
        "orb_prepare_request_us",
        "transport_send_us",
        "driver_receive_us",
        "transport_receive_us",
        "orb_unpack_us",
        "invocation_us",
        "orb_prepare_reply_us",
        "orb_process_reply_us",
    ];
    let listed: f64 = known.iter().filter_map(|k| g(k)).sum();
    let reply_path = g("total_us").map(|t| t - listed);
    [
        g("orb_prepare_request_us"),
        g("transport_send_us"),
        Some(g("driver_receive_us").unwrap_or(0.0) + g("transport_receive_us").unwrap_or(0.0)),
        g("orb_unpack_us"),
        None,
        g("invocation_us"),
        g("orb_prepare_reply_us"),
        None,
        reply_path,
        g("orb_process_reply_us"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_figures_are_there() {
        let p = Paper::load();
        assert_eq!(p.table_4_1("make", 1, 3), Some((15650.0, 6502.0)));
        assert_eq!(p.triple("table_6_1", "web"), Some([0.007, 0.940, 0.053]));
        let f = fig_5_2(&p);
        let sum: f64 = f.iter().flatten().sum();
        assert!((sum - 1650.0).abs() < 1e-6, "stages sum to the paper's total: {sum}");
    }
}
