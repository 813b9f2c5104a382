//! Who does what for a call, computed alike on every node from the call's sequence number
//! and the group view: the primary EA (EA1 odd, EA2 even; the survivor when one is gone)
//! and the QE each EA sends it to. The pick is a deterministic uniform function of the
//! sequence number, and the backup's pick differs from the primary's (the paper's §3.2).

/// A well-mixed 64-bit hash of the sequence number (splitmix64's finalizer).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The primary EA for `seq` among the live EAs (ids in ascending order).
pub fn primary_ea(seq: u64, eas: &[u32]) -> Option<u32> {
    match eas.len() {
        0 => None,
        1 => Some(eas[0]),
        _ => Some(if seq % 2 == 1 { eas[0] } else { eas[1] }),
    }
}

/// Index of the QE the primary EA sends `seq` to, among `n` ready QEs.
pub fn primary_qe(seq: u64, n: usize) -> Option<usize> {
    (n > 0).then(|| (mix(seq) % n as u64) as usize)
}

/// Index of the QE the backup EA reissues `seq` to: never the primary's when there are two.
pub fn backup_qe(seq: u64, n: usize) -> Option<usize> {
    let p = primary_qe(seq, n)?;
    if n == 1 {
        return Some(p);
    }
    let step = 1 + (mix(seq ^ 0x9e37_79b9_7f4a_7c15) % (n as u64 - 1)) as usize;
    Some((p + step) % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_differs_and_both_spread_evenly() {
        for n in 2..12usize {
            let mut p = vec![0u64; n];
            let mut b = vec![0u64; n];
            let calls = 120_000u64;
            for seq in 1..=calls {
                let (x, y) = (primary_qe(seq, n).unwrap(), backup_qe(seq, n).unwrap());
                assert_ne!(x, y, "seq {seq} n {n}");
                p[x] += 1;
                b[y] += 1;
            }
            let fair = calls as f64 / n as f64;
            for c in p.iter().chain(b.iter()) {
                assert!((*c as f64 - fair).abs() < fair * 0.05, "n {n}: {p:?} {b:?}");
            }
        }
    }

    #[test]
    fn odd_calls_to_the_first_ea_even_to_the_second_all_to_a_survivor() {
        assert_eq!(primary_ea(1, &[3, 5]), Some(3));
        assert_eq!(primary_ea(2, &[3, 5]), Some(5));
        assert_eq!(primary_ea(2, &[3]), Some(3));
        assert_eq!(primary_ea(2, &[]), None);
        assert_eq!(primary_qe(9, 0), None);
        assert_eq!(backup_qe(9, 1), Some(0));
    }
}
