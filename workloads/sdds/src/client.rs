//! A client of a file: its own image (bucket 0 only, at first), corrected by the IAMs the
//! buckets send when it addressed one wrongly; key operations in batches per bucket, all
//! issued at once; scans shipped to every bucket of the image, with deterministic
//! termination (every bucket that should answer has: the addressed ones and every child any
//! answering bucket reports) or probabilistic termination (whatever answered in time).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use ssi_orb::Orb;

use crate::addr::Image;
use crate::proto::{
    function::Op, BucketInfo, BucketResult, FileName, FileSpec, Function, KeyBatch, Kind, OpReply, Record, ScanReq, SddsStub,
};
use crate::SddsError;
use crate::{KeyOp, Stubs};

pub struct Client {
    pub spec: FileSpec,
    pub image: Image,
    stubs: Stubs,
    /// Image adjustment messages received so far.
    pub iams: u64,
    /// Keys that reached their bucket through a forward.
    pub forwarded: u64,
    /// Records per request to one bucket.
    pub batch: usize,
}

pub struct ScanOutcome {
    pub results: Vec<BucketResult>,
    /// Every bucket that had to answer did (deterministic termination).
    pub complete: bool,
}

impl Client {
    /// A new client of an existing file: its image knows bucket 0 only.
    pub fn new(orb: &Orb, spec: FileSpec) -> Client {
        let image = if spec.kind == Kind::Rp as i32 { Image::rp() } else { Image::lh() };
        Client { spec, image, stubs: Stubs::new(orb, Duration::from_secs(300)), iams: 0, forwarded: 0, batch: 5000 }
    }

    /// Creates the file (on its first node) and returns a client of it.
    pub async fn create(orb: &Orb, spec: FileSpec) -> Result<Client, SddsError> {
        let c = Client::new(orb, spec);
        let n0 = *c.spec.nodes.first().ok_or(SddsError::NoNodes)?;
        c.stub(n0).await?.create(c.spec.clone()).await.map_err(SddsError::from)?;
        Ok(c)
    }

    async fn stub(&self, node: u32) -> Result<SddsStub, SddsError> {
        self.stubs.get(node).await.map_err(SddsError::from)
    }

    fn node_of(&self, b: u32) -> u32 {
        self.spec.nodes[b as usize % self.spec.nodes.len()]
    }

    async fn keyed(&mut self, op: KeyOp, records: Vec<Record>) -> Result<OpReply, SddsError> {
        let mut per: HashMap<u32, Vec<Record>> = HashMap::new();
        for r in records {
            per.entry(self.image.address(r.key)).or_default().push(r);
        }
        let mut calls = Vec::new();
        for (b, rs) in per {
            let s = self.stub(self.node_of(b)).await?;
            for chunk in rs.chunks(self.batch.max(1)) {
                let kb = KeyBatch { file: self.spec.name.clone(), bucket: b, records: chunk.to_vec(), hops: 0 };
                let s = s.clone();
                calls.push(async move { op.call(&s, kb).await });
            }
        }
        let mut out = OpReply::default();
        for r in futures_util::future::join_all(calls).await {
            let r = r.map_err(SddsError::from)?.into_inner();
            for iam in &r.iams {
                self.image.adjust(iam);
            }
            self.iams += r.iams.len() as u64;
            self.forwarded += r.forwarded as u64;
            out.done += r.done;
            out.forwarded += r.forwarded;
            out.found.extend(r.found);
        }
        Ok(out)
    }

    /// Inserts (or replaces) records; returns how many were stored.
    pub async fn insert(&mut self, records: Vec<Record>) -> Result<u64, SddsError> {
        Ok(self.keyed(KeyOp::Insert, records).await?.done)
    }

    /// The records with these keys that exist.
    pub async fn search(&mut self, keys: &[u64]) -> Result<Vec<Record>, SddsError> {
        Ok(self.keyed(KeyOp::Search, keys.iter().map(|k| Record { key: *k, value: Default::default() }).collect()).await?.found)
    }

    pub async fn delete(&mut self, keys: &[u64]) -> Result<u64, SddsError> {
        Ok(self.keyed(KeyOp::Delete, keys.iter().map(|k| Record { key: *k, value: Default::default() }).collect()).await?.done)
    }

    /// Ships `f` to the buckets (those meeting the range, for a range search). With a
    /// timeout, takes what answered within it (probabilistic termination).
    pub async fn scan(&mut self, f: Function, timeout: Option<Duration>) -> Result<ScanOutcome, SddsError> {
        let addressed: Vec<u32> = if f.op == Op::Records as i32 {
            self.image.rp_meeting(f.from, if f.to == 0 { u64::MAX } else { f.to })
        } else {
            self.image.buckets()
        };
        let mut calls = Vec::new();
        for b in &addressed {
            let s = self.stub(self.node_of(*b)).await?;
            let req = ScanReq { file: self.spec.name.clone(), bucket: *b, f: Some(f.clone()), addressed: addressed.clone() };
            calls.push(async move {
                match timeout {
                    Some(t) => tokio::time::timeout(t, s.scan(req)).await.ok(),
                    None => Some(s.scan(req).await),
                }
            });
        }
        let mut results = Vec::new();
        // None: a bucket that did not answer in time.
        for r in futures_util::future::join_all(calls).await.into_iter().flatten() {
            results.extend(r.map_err(SddsError::from)?.into_inner().results);
        }
        for r in &results {
            if let Some(iam) = &r.iam {
                self.image.adjust(iam);
            }
        }
        let got: BTreeSet<u32> = results.iter().filter_map(|r| r.iam.as_ref().map(|i| i.bucket)).collect();
        let complete = addressed.iter().all(|b| got.contains(b)) && results.iter().all(|r| r.children.iter().all(|c| got.contains(c)));
        Ok(ScanOutcome { results, complete })
    }

    /// RP*: the records with keys in (from, to], in key order, and whether the answering
    /// buckets' ranges covered it all. A part no answer covered (the image did not know the
    /// buckets there, nor did any bucket it addressed lead to them) is asked again from
    /// bucket 0, the root of every split: the answers' ranges are disjoint, so no record
    /// comes twice.
    pub async fn range(&mut self, from: u64, to: u64) -> Result<(Vec<Record>, bool), SddsError> {
        let mut o = self.scan(Function { op: Op::Records as i32, from, to, ..Default::default() }, None).await?;
        let mut complete = false;
        for _ in 0..8 {
            let covered = o.results.iter().filter_map(|r| r.iam.as_ref().map(|i| (i.low, i.high))).collect();
            let gaps = crate::addr::rp_gaps(from, to, covered);
            if gaps.is_empty() {
                complete = true; // deterministic termination: every key of the range is answered for
                break;
            }
            for (a, b) in gaps {
                let s = self.stub(self.node_of(0)).await?;
                let f = Function { op: Op::Records as i32, from: a, to: b, ..Default::default() };
                let r = s
                    .scan(ScanReq { file: self.spec.name.clone(), bucket: 0, f: Some(f), addressed: vec![0] })
                    .await
                    .map_err(SddsError::from)?
                    .into_inner();
                for x in &r.results {
                    if let Some(iam) = &x.iam {
                        self.image.adjust(iam);
                    }
                }
                // Only the gap's records: the buckets' other records were answered already.
                for mut x in r.results {
                    x.records.retain(|rec| rec.key > a && rec.key <= b);
                    if let Some(i) = x.iam.as_mut() {
                        (i.low, i.high) = (i.low.max(a), i.high.min(b));
                    }
                    o.results.push(x);
                }
            }
        }
        let mut recs: Vec<Record> = o.results.into_iter().flat_map(|r| r.records).collect();
        recs.sort_by_key(|r| r.key);
        Ok((recs, complete))
    }

    /// Every bucket of the file, from every node.
    pub async fn info(&self) -> Result<(Vec<BucketInfo>, u32), SddsError> {
        let nodes: BTreeSet<u32> = self.spec.nodes.iter().copied().collect();
        let mut out = Vec::new();
        let mut splits = 0;
        for n in nodes {
            let i = self.stub(n).await?.info(FileName { name: self.spec.name.clone() }).await.map_err(SddsError::from)?.into_inner();
            out.extend(i.buckets);
            splits += i.splits;
        }
        out.sort_by_key(|b| b.iam.as_ref().map(|i| i.bucket));
        Ok((out, splits))
    }

    pub async fn drop_file(&self) -> Result<(), SddsError> {
        let nodes: BTreeSet<u32> = self.spec.nodes.iter().copied().collect();
        for n in nodes {
            self.stub(n).await?.drop(FileName { name: self.spec.name.clone() }).await.map_err(SddsError::from)?;
        }
        Ok(())
    }
}
