//! One bucket: its records, its place in the file (RP* range or LH* level), the buckets it
//! split into, and evaluation of shipped functions on its records (the E-strategy: our own
//! code; `isql` is the I-strategy).

use std::collections::{BTreeMap, HashMap};

use ssi_orb::Bytes;

use crate::addr::{h, lh_forward, rp_forward, RpChild};
use crate::proto::{function::Op, BucketResult, Function, Iam, Kind, Pair, Record};

/// A Person record's value: the city in the first byte, then the name.
pub fn city_of(value: &[u8]) -> u32 {
    value.first().copied().unwrap_or(0) as u32
}

pub struct Bucket {
    pub kind: Kind,
    pub id: u32,
    pub low: u64,
    pub high: u64,
    pub level: u32,
    pub records: BTreeMap<u64, Bytes>,
    pub rp_children: Vec<RpChild>,
    pub lh_children: Vec<u32>,
    /// RP*: the bucket that split to make this one (None: bucket 0).
    pub parent: Option<u32>,
    /// city → sorted keys, built on the first join and dropped on any change.
    by_city: Option<HashMap<u32, Vec<u64>>>,
}

impl Bucket {
    pub fn new(kind: Kind, iam: &Iam, records: Vec<Record>) -> Bucket {
        Bucket {
            kind,
            id: iam.bucket,
            low: iam.low,
            high: iam.high,
            level: iam.level,
            records: records.into_iter().map(|r| (r.key, r.value)).collect(),
            rp_children: Vec::new(),
            lh_children: Vec::new(),
            parent: None,
            by_city: None,
        }
    }

    pub fn iam(&self) -> Iam {
        Iam { bucket: self.id, low: self.low, high: self.high, level: self.level }
    }

    pub fn children(&self) -> Vec<u32> {
        match self.kind {
            Kind::Rp => self.rp_children.iter().map(|c| c.bucket).collect(),
            _ => self.lh_children.clone(),
        }
    }

    /// None if `key` is this bucket's, else the bucket to forward it to.
    pub fn forward(&self, key: u64) -> Option<u32> {
        match self.kind {
            Kind::Rp => rp_forward(self.high, &self.rp_children, self.parent, key),
            _ => lh_forward(self.id, self.level, key),
        }
    }

    pub fn insert(&mut self, r: Record) {
        self.records.insert(r.key, r.value);
        self.by_city = None;
    }

    pub fn remove(&mut self, key: u64) -> bool {
        self.by_city = None;
        self.records.remove(&key).is_some()
    }

    /// The records a split into `new` moves, and the new bucket's place; this bucket takes
    /// its own new place. RP*: the upper half (above the median key); LH*: the keys whose
    /// next-level hash names the new bucket.
    pub fn split(&mut self, new: u32) -> Option<(Iam, Vec<Record>)> {
        self.by_city = None;
        match self.kind {
            Kind::Rp => {
                let n = self.records.len();
                if n < 2 {
                    return None;
                }
                let median = *self.records.keys().nth(n / 2 - 1).expect("n ≥ 2");
                let moved: Vec<Record> =
                    self.records.split_off(&(median + 1)).into_iter().map(|(key, value)| Record { key, value }).collect();
                let iam = Iam { bucket: new, low: median, high: self.high, level: 0 };
                self.rp_children.push(RpChild { key: median, upper: self.high, bucket: new });
                self.high = median;
                Some((iam, moved))
            }
            _ => {
                let j = self.level + 1;
                let (keep, go): (BTreeMap<u64, Bytes>, BTreeMap<u64, Bytes>) =
                    std::mem::take(&mut self.records).into_iter().partition(|(k, _)| h(j, *k) == self.id);
                self.records = keep;
                self.level = j;
                self.lh_children.push(new);
                Some((Iam { bucket: new, low: 0, high: 0, level: j }, go.into_iter().map(|(key, value)| Record { key, value }).collect()))
            }
        }
    }

    fn index(&mut self) -> &HashMap<u32, Vec<u64>> {
        if self.by_city.is_none() {
            let mut m: HashMap<u32, Vec<u64>> = HashMap::new();
            for (k, v) in &self.records {
                m.entry(city_of(v)).or_default().push(*k); // keys come sorted
            }
            self.by_city = Some(m);
        }
        self.by_city.as_ref().expect("built above")
    }

    /// The E-strategy: evaluates `f` on this bucket's records.
    pub fn eval(&mut self, f: &Function) -> BucketResult {
        let t = std::time::Instant::now();
        let mut out = BucketResult { iam: Some(self.iam()), children: self.children(), ..Default::default() };
        match Op::try_from(f.op).unwrap_or(Op::None) {
            Op::Records => {
                let to = if f.to == 0 { u64::MAX } else { f.to };
                if f.from < to {
                    out.records = self.records.range(f.from + 1..=to).map(|(k, v)| Record { key: *k, value: v.clone() }).collect();
                }
            }
            Op::CountEq => out.count = self.records.values().filter(|v| city_of(v) == f.city).count() as u64,
            Op::JoinCount => {
                let idx = self.index();
                out.count = f
                    .probes
                    .iter()
                    .map(|p| idx.get(&p.city).map(|ks| (ks.len() - ks.partition_point(|k| *k <= p.ssn)) as u64).unwrap_or(0))
                    .sum();
            }
            Op::JoinPairs => {
                let idx = self.index();
                for p in &f.probes {
                    if let Some(ks) = idx.get(&p.city) {
                        let from = ks.partition_point(|k| *k <= p.ssn);
                        out.pairs.extend(ks[from..].iter().map(|k| Pair { a: p.ssn, b: *k }));
                    }
                }
                out.count = out.pairs.len() as u64;
            }
            Op::None => {}
        }
        out.eval_us = t.elapsed().as_micros() as u64;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Probe;

    fn rec(key: u64, city: u8) -> Record {
        Record { key, value: vec![city, b'x'].into() }
    }

    #[test]
    fn rp_split_moves_the_upper_half_and_forwards_to_it() {
        let mut b = Bucket::new(Kind::Rp, &Iam { bucket: 0, low: 0, high: u64::MAX, level: 0 }, (1..=10).map(|k| rec(k, 1)).collect());
        let (iam, moved) = b.split(1).unwrap();
        assert_eq!((iam.low, b.high, moved.len(), b.records.len()), (5, 5, 5, 5));
        assert_eq!(b.forward(7), Some(1));
        assert_eq!(b.forward(5), None);
    }

    #[test]
    fn lh_split_moves_the_next_levels_keys() {
        let mut b = Bucket::new(Kind::Lh, &Iam { bucket: 0, low: 0, high: 0, level: 0 }, (1..=1000).map(|k| rec(k, 1)).collect());
        let (iam, moved) = b.split(1).unwrap();
        assert_eq!((iam.level, b.level), (1, 1));
        assert!(moved.iter().all(|r| h(1, r.key) == 1));
        assert!(b.records.keys().all(|k| h(1, *k) == 0));
        assert!(moved.len() > 400 && moved.len() < 600);
        assert_eq!(b.forward(moved[0].key), Some(1));
    }

    #[test]
    fn joins_count_and_list_the_pairs_with_the_smaller_ssn_probing() {
        let mut b = Bucket::new(Kind::Rp, &Iam { bucket: 0, low: 0, high: u64::MAX, level: 0 }, vec![rec(2, 7), rec(5, 7), rec(9, 3)]);
        let probes = vec![Probe { ssn: 1, city: 7 }, Probe { ssn: 2, city: 7 }, Probe { ssn: 5, city: 3 }];
        let c = b.eval(&Function { op: Op::JoinCount as i32, probes: probes.clone(), ..Default::default() });
        assert_eq!(c.count, 2 + 1 + 1);
        let p = b.eval(&Function { op: Op::JoinPairs as i32, probes, ..Default::default() });
        let got: Vec<(u64, u64)> = p.pairs.iter().map(|x| (x.a, x.b)).collect();
        assert_eq!(got, vec![(1, 2), (1, 5), (2, 5), (5, 9)]);
        let r = b.eval(&Function { op: Op::Records as i32, from: 2, to: 9, ..Default::default() });
        assert_eq!(r.records.iter().map(|x| x.key).collect::<Vec<_>>(), vec![5, 9]);
    }
}
