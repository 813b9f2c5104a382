//! Figures from samples: the median of rounds and quantiles of latencies, as the reports,
//! the benchmarks and the workloads quote them.

/// The median of `v` (0 for none): this machine is shared and noisy, so figures are medians
/// of rounds.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        0.0
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    }
}

/// The `q` quantile of `sorted` (ascending; 0 for none), nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles_of_sorted_samples() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::quantile(&s, 0.5), 51.0);
        assert_eq!(super::quantile(&s, 0.99), 99.0);
        assert_eq!(super::quantile(&[], 0.5), 0.0);
        assert_eq!(super::median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
