//! Addressing, with no directory on the access path: the client's image of the file, the
//! bucket's check of a key it received (and where to forward it), and the image adjustment
//! an IAM brings. Pure functions: the same on every node and in every client.
//!
//! - **LH\***: bucket `m` of level `j` holds the keys `c` with `h_j(c) = m`, `h_j(c) = mix(c)
//!   mod 2^j`. The file is (i, n): 2^i + n buckets, n the next to split. A client's image
//!   (i', n') may lag; a bucket forwards with Litwin's algorithm, at most twice.
//! - **RP\***: bucket `b` holds the keys in (low, high]. A split gives the upper half to a new
//!   bucket and lowers `high`, so a bucket's `low` never changes: a client that knows a
//!   bucket knows a true lower bound, and sends a key to the known bucket with the greatest
//!   `low` below it. A bucket forwards a key above its `high` to the child that took it.

use std::collections::BTreeMap;

use crate::proto::Iam;

/// A well-mixed hash of a key (splitmix64's finalizer): uniform buckets for any key pattern.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn h(j: u32, key: u64) -> u32 {
    if j == 0 {
        0
    } else {
        (mix(key) & ((1u64 << j) - 1)) as u32
    }
}

/// LH*: the bucket a client with image (i, n) sends `key` to.
pub fn lh_client(i: u32, n: u32, key: u64) -> u32 {
    let a = h(i, key);
    if a < n {
        h(i + 1, key)
    } else {
        a
    }
}

/// LH*: bucket `m` of level `j` received `key`: None if it is its own, else where to forward.
pub fn lh_forward(m: u32, j: u32, key: u64) -> Option<u32> {
    let mut a = h(j, key);
    if a == m {
        return None;
    }
    if j > 0 {
        let a2 = h(j - 1, key);
        if a2 > m && a2 < a {
            a = a2;
        }
    }
    Some(a)
}

/// LH*: the image after an IAM from bucket `m` of level `j` — the bucket the client
/// addressed, which forwarded (Litwin's rule; never smaller than before).
pub fn lh_adjust(i: u32, n: u32, m: u32, j: u32) -> (u32, u32) {
    if j == 0 {
        return (i, n);
    }
    // Bucket m at level j exists, and so do the buckets split before it at level j-1.
    // Litwin's rule (n' = m + 1) assumes m is in the lower half; a bucket of the upper half
    // (m ≥ 2^(j-1), made by splitting m - 2^(j-1)) vouches for the splits up to its parent:
    // this is also right for IAMs from any bucket, e.g. a scan's answers.
    let mut ni = j - 1;
    let half = 1u32 << ni;
    let mut nn = if m >= half { m - half + 1 } else { m + 1 };
    if nn >= (1u32 << ni) {
        nn = 0;
        ni += 1;
    }
    if (1u64 << ni) + nn as u64 > (1u64 << i) + n as u64 {
        (ni, nn)
    } else {
        (i, n)
    }
}

/// A client's image of a file.
#[derive(Clone, Debug)]
pub enum Image {
    /// Known buckets by their low bound: low → (bucket, high as last heard).
    Rp(BTreeMap<u64, (u32, u64)>),
    Lh {
        i: u32,
        n: u32,
    },
}

impl Image {
    /// The image of a new client: bucket 0 only.
    pub fn rp() -> Image {
        Image::Rp(BTreeMap::from([(0, (0, u64::MAX))]))
    }

    pub fn lh() -> Image {
        Image::Lh { i: 0, n: 0 }
    }

    pub fn address(&self, key: u64) -> u32 {
        match self {
            Image::Rp(m) => m.range(..key).next_back().map(|(_, (b, _))| *b).unwrap_or(0),
            Image::Lh { i, n } => lh_client(*i, *n, key),
        }
    }

    /// Takes in an IAM.
    pub fn adjust(&mut self, iam: &Iam) {
        match self {
            Image::Rp(m) => {
                m.insert(iam.low, (iam.bucket, iam.high));
            }
            Image::Lh { i, n } => {
                let (a, b) = lh_adjust(*i, *n, iam.bucket, iam.level);
                (*i, *n) = (a, b);
            }
        }
    }

    /// The buckets this image knows.
    pub fn buckets(&self) -> Vec<u32> {
        match self {
            Image::Rp(m) => m.values().map(|(b, _)| *b).collect(),
            Image::Lh { i, n } => (0..((1u32 << i) + n)).collect(),
        }
    }

    /// RP*: the known buckets whose range may meet (from, to].
    pub fn rp_meeting(&self, from: u64, to: u64) -> Vec<u32> {
        match self {
            Image::Rp(m) => {
                let first = m.range(..=from).next_back().map(|(l, _)| *l).unwrap_or(0);
                m.range(first..to).map(|(_, (b, _))| *b).collect()
            }
            Image::Lh { .. } => self.buckets(),
        }
    }
}

/// RP*: a bucket's record of a split it made: the child took (key, upper].
#[derive(Clone, Copy, Debug)]
pub struct RpChild {
    pub key: u64,
    pub upper: u64,
    pub bucket: u32,
}

/// RP*: where a bucket with `high`, `children` (in split order) and `parent` sends `key`, if
/// not its own: down to the child that took it, or, for a key above everything this bucket
/// ever held (a client that knows this bucket but not a sibling to its right), up to the
/// parent — whose children cover everything above its own range, down to bucket 0 whose
/// first range was all keys.
pub fn rp_forward(high: u64, children: &[RpChild], parent: Option<u32>, key: u64) -> Option<u32> {
    if key <= high {
        return None;
    }
    children.iter().find(|c| key > c.key && key <= c.upper).map(|c| c.bucket).or(parent)
}

/// RP*: the parts of (from, to] that the ranges (low, high] do not cover.
pub fn rp_gaps(from: u64, to: u64, mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut gaps = Vec::new();
    let mut at = from;
    for (lo, hi) in ranges {
        if hi <= at {
            continue;
        }
        if lo > at {
            gaps.push((at, lo.min(to)));
        }
        at = at.max(hi);
        if at >= to {
            break;
        }
    }
    if at < to {
        gaps.push((at, to));
    }
    gaps.retain(|(a, b)| a < b);
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An LH* file of `b` buckets: bucket levels as the splits left them.
    fn lh_levels(b: u32) -> Vec<u32> {
        let (mut i, mut n) = (0u32, 0u32);
        let mut lv = vec![0u32];
        while (lv.len() as u32) < b {
            lv[n as usize] += 1;
            lv.push(i + 1);
            n += 1;
            if n == 1 << i {
                n = 0;
                i += 1;
            }
        }
        lv
    }

    fn owner(levels: &[u32], key: u64) -> u32 {
        (0..levels.len() as u32).find(|m| h(levels[*m as usize], key) == *m).unwrap()
    }

    #[test]
    fn lh_every_key_reaches_its_bucket_in_at_most_two_forwards_and_iams_fix_images() {
        for b in [1u32, 2, 3, 5, 8, 13, 32, 50] {
            let lv = lh_levels(b);
            for key in 0..5000u64 {
                let own = owner(&lv, key);
                let mut img = Image::lh();
                let first = img.address(key);
                let mut at = first;
                let mut hops = 0;
                while let Some(next) = lh_forward(at, lv[at as usize], key) {
                    at = next;
                    hops += 1;
                }
                assert_eq!(at, own, "b {b} key {key}");
                assert!(hops <= 2, "b {b} key {key}: {hops} forwards");
                if hops > 0 {
                    // The IAM names the bucket the client addressed, and its level.
                    img.adjust(&Iam { bucket: first, level: lv[first as usize], ..Default::default() });
                }
                assert!(img.buckets().len() as u32 <= b);
                // Any bucket's (m, j) is safe too (scans hear from all of them), and all of
                // them together make the image exact.
                let mut any = Image::lh();
                for m in 0..b {
                    any.adjust(&Iam { bucket: m, level: lv[m as usize], ..Default::default() });
                    assert!(any.buckets().len() as u32 <= b, "b {b}: after bucket {m}");
                }
                assert_eq!(any.buckets().len() as u32, b);
            }
        }
    }

    #[test]
    fn rp_addresses_by_known_lows_and_forwards_down_the_split_tree() {
        // Bucket 0 (0, MAX] split at 500 (child 1 took (500, MAX]), then at 250 (child 2 took (250, 500]).
        let kids = [RpChild { key: 500, upper: u64::MAX, bucket: 1 }, RpChild { key: 250, upper: 500, bucket: 2 }];
        assert_eq!(rp_forward(250, &kids, None, 100), None);
        assert_eq!(rp_forward(250, &kids, None, 300), Some(2));
        assert_eq!(rp_forward(250, &kids, None, 501), Some(1));
        // Bucket 2 (250, 500] knows nothing above 500: up to its parent.
        assert_eq!(rp_forward(500, &[], Some(0), 501), Some(0));
        assert_eq!(rp_gaps(0, 100, vec![(0, 10), (20, 50), (50, 60)]), vec![(10, 20), (60, 100)]);
        assert_eq!(rp_gaps(5, 8, vec![(0, 10)]), vec![]);
        assert_eq!(rp_gaps(5, 30, vec![(10, 20)]), vec![(5, 10), (20, 30)]);
        let mut img = Image::rp();
        assert_eq!(img.address(900), 0);
        img.adjust(&Iam { bucket: 1, low: 500, high: u64::MAX, level: 0 });
        assert_eq!(img.address(900), 1);
        assert_eq!(img.address(500), 0, "500 is in (250, 500]: not bucket 1's");
        assert_eq!(img.rp_meeting(100, 600), vec![0, 1]);
        assert_eq!(img.rp_meeting(600, 700), vec![1]);
    }
}
