//! One node's `Sdds` object: the buckets of every file placed here, and the coordinator of
//! every file whose bucket 0 is here. Key operations go to the bucket the client's image
//! names; a bucket stores what is its own and forwards the rest (answering with image
//! adjustments). A bucket over capacity tells the coordinator, which hands out the split
//! token: RP* splits the full bucket at its median, LH* the bucket the split pointer names.
//! Scans are evaluated by each bucket on its own records and forwarded down the split tree
//! to the buckets the client did not address.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ssi_orb::proto::{Empty, OneWay};
use ssi_orb::{CallCtx, Exception, Orb, OrbError};

use crate::bucket::{city_of, Bucket};
use crate::proto::{
    export_sdds, function::Op, BucketInfo, BucketResult, Done, FileInfo, FileName, FileSpec, Iam, KeyBatch, Kind, NewBucket, OpReply,
    Overflow, Record, ScanReply, ScanReq, Sdds, SddsStub, SplitReq,
};
use crate::{KeyOp, Stubs, SDDS_NAME};

/// Forwards allowed before a key is refused (LH* needs at most 2; RP* one per split level).
const MAX_HOPS: u32 = 64;

struct Coord {
    /// RP*: the next bucket number.
    next: u32,
    /// LH*: the file's level and split pointer.
    i: u32,
    n: u32,
    splits: u32,
}

struct FileHere {
    spec: FileSpec,
    buckets: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<Bucket>>>>,
    coord: Option<tokio::sync::Mutex<Coord>>,
    /// When each bucket here last reported it was full (one report per 100 ms).
    reported: Mutex<HashMap<u32, Instant>>,
}

impl FileHere {
    fn node_of(&self, b: u32) -> u32 {
        self.spec.nodes[b as usize % self.spec.nodes.len()]
    }
    fn bucket(&self, b: u32) -> Result<Arc<tokio::sync::Mutex<Bucket>>, Exception> {
        self.buckets
            .lock()
            .get(&b)
            .cloned()
            .ok_or_else(|| Exception::bad_request(format!("bucket {b} of {:?} is not here", self.spec.name)))
    }
}

#[derive(Clone)]
pub struct SddsNode(Arc<Inner>);

struct Inner {
    orb: Orb,
    files: Mutex<HashMap<String, Arc<FileHere>>>,
    stubs: Stubs,
}

/// Exports this node's `Sdds` object (name `sdds`).
pub fn serve(orb: &Orb) -> SddsNode {
    let n = SddsNode(Arc::new(Inner { orb: orb.clone(), files: Default::default(), stubs: Stubs::new(orb, Duration::from_secs(120)) }));
    let h = export_sdds(orb, n.clone());
    orb.register_name(SDDS_NAME, &h);
    n
}

fn bad(why: impl std::fmt::Display) -> Exception {
    Exception::bad_request(why)
}

fn orb_err(e: OrbError) -> Exception {
    match e {
        OrbError::Exception(x) => x,
        e => Exception::app(e.to_string()),
    }
}

fn check_spec(s: &FileSpec) -> Result<(), Exception> {
    if s.name.is_empty() || s.name.len() > 128 {
        return Err(bad("a file needs a name of 1..=128 bytes"));
    }
    if s.nodes.is_empty() {
        return Err(bad(format!("file {:?}: no nodes to put buckets on", s.name)));
    }
    if s.capacity < 2 {
        return Err(bad(format!("file {:?}: capacity {} (need at least 2 records)", s.name, s.capacity)));
    }
    if Kind::try_from(s.kind).unwrap_or(Kind::None) == Kind::None {
        return Err(bad(format!("file {:?}: kind must be RP or LH", s.name)));
    }
    if s.initial_buckets > 4096 {
        return Err(bad("at most 4096 initial buckets"));
    }
    Ok(())
}

impl SddsNode {
    async fn stub(&self, node: u32) -> Result<SddsStub, Exception> {
        self.0.stubs.get(node).await.map_err(orb_err)
    }

    fn file(&self, name: &str) -> Result<Arc<FileHere>, Exception> {
        self.0.files.lock().get(name).cloned().ok_or_else(|| bad(format!("no file {name:?} on node {}", self.0.orb.node())))
    }

    fn file_or_new(&self, spec: &FileSpec, coord: bool) -> Arc<FileHere> {
        self.0
            .files
            .lock()
            .entry(spec.name.clone())
            .or_insert_with(|| {
                Arc::new(FileHere {
                    spec: spec.clone(),
                    buckets: Default::default(),
                    coord: coord.then(|| tokio::sync::Mutex::new(Coord { next: 1, i: 0, n: 0, splits: 0 })),
                    reported: Default::default(),
                })
            })
            .clone()
    }

    /// The key operations' common path: own keys through `here`, the others forwarded.
    async fn keyed<F>(&self, req: KeyBatch, op: KeyOp, here: F) -> Result<OpReply, Exception>
    where
        F: Fn(&mut Bucket, Record, &mut OpReply),
    {
        if req.hops > MAX_HOPS {
            return Err(bad(format!("keys forwarded {} times: the file's buckets disagree", req.hops)));
        }
        let f = self.file(&req.file)?;
        let b = f.bucket(req.bucket)?;
        let mut reply = OpReply::default();
        let mut fwd: HashMap<u32, Vec<Record>> = HashMap::new();
        let (iam, len) = {
            let mut g = b.lock().await;
            for r in req.records {
                match g.forward(r.key) {
                    None => here(&mut g, r, &mut reply),
                    Some(t) => fwd.entry(t).or_default().push(r),
                }
            }
            (g.iam(), g.records.len() as u64)
        };
        // The client's image was off. LH*: the bucket it addressed says so with its level
        // (Litwin's IAM); RP*: each bucket the keys reached says its exact range.
        let lh = f.spec.kind == Kind::Lh as i32;
        if (lh && req.hops == 0 && !fwd.is_empty()) || (!lh && req.hops > 0) {
            reply.iams.push(iam);
        }
        if op == KeyOp::Insert && len > f.spec.capacity {
            self.report_full(&f, req.bucket, iam.level).await;
        }
        let mut calls = Vec::new();
        for (t, records) in fwd {
            reply.forwarded += records.len() as u32;
            let s = self.stub(f.node_of(t)).await?;
            let kb = KeyBatch { file: req.file.clone(), bucket: t, records, hops: req.hops + 1 };
            calls.push(async move { op.call(&s, kb).await });
        }
        for r in futures_util::future::join_all(calls).await {
            let r = r.map_err(orb_err)?.into_inner();
            reply.done += r.done;
            reply.found.extend(r.found);
            reply.iams.extend(r.iams);
            reply.forwarded += r.forwarded;
        }
        Ok(reply)
    }

    async fn report_full(&self, f: &Arc<FileHere>, bucket: u32, level: u32) {
        {
            let mut r = f.reported.lock();
            if r.get(&bucket).is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
                return;
            }
            r.insert(bucket, Instant::now());
        }
        if let Ok(s) = self.stub(f.node_of(0)).await {
            let _ = s.full(Overflow { file: f.spec.name.clone(), bucket, level }).await;
        }
    }

    /// The coordinator hands out one split token. RP*: the full bucket splits (if it still
    /// is); LH*: the bucket at the split pointer.
    async fn coordinate_split(&self, f: Arc<FileHere>, full: u32, level: Option<u32>) -> Result<(), Exception> {
        let coord = f.coord.as_ref().ok_or_else(|| bad("this node does not coordinate the file"))?;
        let mut c = coord.lock().await;
        let kind = Kind::try_from(f.spec.kind).unwrap_or(Kind::None);
        if let (Kind::Lh, Some(l)) = (kind, level) {
            // A report from before the bucket's last split is stale: it has room now.
            let now = if full < c.n || full >= (1 << c.i) { c.i + 1 } else { c.i };
            if l < now {
                return Ok(());
            }
        }
        let (victim, new) = match kind {
            Kind::Rp => (full, c.next),
            _ => (c.n, (1u32 << c.i) + c.n),
        };
        let s = self.stub(f.node_of(victim)).await?;
        let done = s.split(SplitReq { file: f.spec.name.clone(), bucket: victim, new_bucket: new }).await.map_err(orb_err)?.done;
        if !done {
            return Ok(()); // a stale report: the bucket has split since
        }
        c.splits += 1;
        match kind {
            Kind::Rp => c.next += 1,
            _ => {
                c.n += 1;
                if c.n == 1 << c.i {
                    c.n = 0;
                    c.i += 1;
                }
            }
        }
        Ok(())
    }
}

#[ssi_orb::async_trait]
impl Sdds for SddsNode {
    async fn create(&self, _ctx: &CallCtx, spec: FileSpec) -> Result<Empty, Exception> {
        check_spec(&spec)?;
        if spec.nodes[0] != self.0.orb.node() {
            return Err(bad(format!("file {:?}: create it on node {} (its bucket 0's)", spec.name, spec.nodes[0])));
        }
        if self.0.files.lock().contains_key(&spec.name) {
            return Err(bad(format!("file {:?} exists", spec.name)));
        }
        let f = self.file_or_new(&spec, true);
        let kind = Kind::try_from(spec.kind).unwrap_or(Kind::None);
        let b0 = Bucket::new(kind, &Iam { bucket: 0, low: 0, high: u64::MAX, level: 0 }, vec![]);
        f.buckets.lock().insert(0, Arc::new(tokio::sync::Mutex::new(b0)));
        // Pre-split (the benchmark's fixed number of servers): RP* into equal key ranges
        // from the top down, LH* by splitting the empty file.
        let b = spec.initial_buckets.max(1);
        for k in 1..b {
            if kind == Kind::Rp {
                let low = spec.key_space.max(b as u64) / b as u64 * (b - k) as u64;
                let b0 = f.bucket(0)?;
                let mut g = b0.lock().await;
                let iam = Iam { bucket: k, low, high: g.high, level: 0 };
                let upper = g.high;
                g.rp_children.push(crate::addr::RpChild { key: low, upper, bucket: k });
                g.high = low;
                drop(g);
                self.stub(f.node_of(k))
                    .await?
                    .make(NewBucket { spec: Some(spec.clone()), bucket: k, iam: Some(iam), records: vec![], parent: 0 })
                    .await
                    .map_err(orb_err)?;
                f.coord.as_ref().expect("coordinator").lock().await.next = k + 1;
            } else {
                self.coordinate_split(f.clone(), 0, None).await?;
            }
        }
        Ok(Empty {})
    }

    async fn drop(&self, _ctx: &CallCtx, req: FileName) -> Result<Empty, Exception> {
        self.0.files.lock().remove(&req.name);
        Ok(Empty {})
    }

    async fn insert(&self, _ctx: &CallCtx, req: KeyBatch) -> Result<OpReply, Exception> {
        self.keyed(req, KeyOp::Insert, |b, r, rep| {
            b.insert(r);
            rep.done += 1;
        })
        .await
    }

    async fn search(&self, _ctx: &CallCtx, req: KeyBatch) -> Result<OpReply, Exception> {
        self.keyed(req, KeyOp::Search, |b, r, rep| {
            if let Some(v) = b.records.get(&r.key) {
                rep.found.push(Record { key: r.key, value: v.clone() });
                rep.done += 1;
            }
        })
        .await
    }

    async fn delete(&self, _ctx: &CallCtx, req: KeyBatch) -> Result<OpReply, Exception> {
        self.keyed(req, KeyOp::Delete, |b, r, rep| {
            if b.remove(r.key) {
                rep.done += 1;
            }
        })
        .await
    }

    async fn scan(&self, _ctx: &CallCtx, req: ScanReq) -> Result<ScanReply, Exception> {
        let f = self.file(&req.file)?;
        let func = req.f.clone().unwrap_or_default();
        let op = Op::try_from(func.op).unwrap_or(Op::None);
        if op == Op::None {
            return Err(bad("a scan needs a function"));
        }
        let b = f.bucket(req.bucket)?.lock_owned().await;
        // Evaluated off the runtime thread: a big join must not hold up the node's heartbeats.
        let (mut res, b) = if func.i_strategy && matches!(op, Op::JoinCount | Op::JoinPairs) {
            let rows: Vec<(u64, u32)> = b.records.iter().map(|(k, v)| (*k, city_of(v))).collect();
            let base = BucketResult { iam: Some(b.iam()), children: b.children(), ..Default::default() };
            let f2 = func.clone();
            let (n, pairs, us) = tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                crate::isql::eval(&rows, &f2).map(|(n, p)| (n, p, t.elapsed().as_micros() as u64))
            })
            .await
            .map_err(|e| Exception::app(e.to_string()))?
            .map_err(|e| Exception::app(e.to_string()))?;
            (BucketResult { count: n, pairs, eval_us: us, ..base }, b)
        } else {
            let f2 = func.clone();
            tokio::task::spawn_blocking(move || {
                let mut b = b;
                let r = b.eval(&f2);
                (r, b)
            })
            .await
            .map_err(|e| Exception::app(e.to_string()))?
        };
        // The children as of the evaluation: records they took before it are theirs to
        // report, records they take after it were counted here.
        let kids: Vec<(u32, u64, u64)> = match Kind::try_from(f.spec.kind).unwrap_or(Kind::None) {
            Kind::Rp => b.rp_children.iter().map(|c| (c.bucket, c.key, c.upper)).collect(),
            _ => b.lh_children.iter().map(|c| (*c, 0, u64::MAX)).collect(),
        };
        drop(b);
        let (from, to) = if op == Op::Records { (func.from, if func.to == 0 { u64::MAX } else { func.to }) } else { (0, u64::MAX) };
        // The children that must answer: those whose range meets the scan's.
        res.children = kids.iter().filter(|(_, lo, hi)| *lo < to && *hi > from).map(|k| k.0).collect();
        let mut out = ScanReply { results: vec![res] };
        let mut calls = Vec::new();
        for (c, lo, hi) in kids {
            if req.addressed.contains(&c) || !(lo < to && hi > from) {
                continue;
            }
            let s = self.stub(f.node_of(c)).await?;
            let r = ScanReq { file: req.file.clone(), bucket: c, f: Some(func.clone()), addressed: req.addressed.clone() };
            calls.push(async move { s.scan(r).await });
        }
        for r in futures_util::future::join_all(calls).await {
            out.results.extend(r.map_err(orb_err)?.into_inner().results);
        }
        Ok(out)
    }

    async fn info(&self, _ctx: &CallCtx, req: FileName) -> Result<FileInfo, Exception> {
        // A node that has no bucket of the file (yet) has nothing to say about it.
        let Ok(f) = self.file(&req.name) else { return Ok(FileInfo::default()) };
        let bs: Vec<_> = f.buckets.lock().values().cloned().collect();
        let mut out = FileInfo::default();
        for b in bs {
            let g = b.lock().await;
            out.buckets.push(BucketInfo {
                iam: Some(g.iam()),
                records: g.records.len() as u64,
                node: self.0.orb.node(),
                children: g.children(),
            });
        }
        if let Some(c) = &f.coord {
            out.splits = c.lock().await.splits;
        }
        Ok(out)
    }

    async fn make(&self, _ctx: &CallCtx, req: NewBucket) -> Result<Empty, Exception> {
        let spec = req.spec.ok_or_else(|| bad("a new bucket needs its file"))?;
        check_spec(&spec)?;
        let iam = req.iam.ok_or_else(|| bad("a new bucket needs its place"))?;
        let f = self.file_or_new(&spec, false);
        let kind = Kind::try_from(spec.kind).unwrap_or(Kind::None);
        let mut buckets = f.buckets.lock();
        if buckets.contains_key(&req.bucket) {
            return Err(bad(format!("bucket {} of {:?} exists", req.bucket, spec.name)));
        }
        let mut b = Bucket::new(kind, &iam, req.records);
        b.parent = (req.bucket != 0).then_some(req.parent);
        buckets.insert(req.bucket, Arc::new(tokio::sync::Mutex::new(b)));
        Ok(Empty {})
    }

    async fn split(&self, _ctx: &CallCtx, req: SplitReq) -> Result<Done, Exception> {
        let f = self.file(&req.file)?;
        let b = f.bucket(req.bucket)?;
        let mut g = b.lock().await;
        if g.kind == Kind::Rp && (g.records.len() as u64) <= f.spec.capacity {
            return Ok(Done { done: false }); // a stale report: it split already
        }
        let before = (g.high, g.level);
        let Some((iam, moved)) = g.split(req.new_bucket) else { return Ok(Done { done: false }) };
        let s = self.stub(f.node_of(req.new_bucket)).await?;
        // The bucket stays locked until the new one holds the records: no key is ever in
        // neither, and a scan sees each record once.
        let r = s
            .make(NewBucket {
                spec: Some(f.spec.clone()),
                bucket: req.new_bucket,
                iam: Some(iam),
                records: moved.clone(),
                parent: req.bucket,
            })
            .await;
        if let Err(e) = r {
            for rec in moved {
                g.insert(rec);
            }
            (g.high, g.level) = before;
            g.rp_children.pop();
            g.lh_children.pop();
            return Err(orb_err(e));
        }
        Ok(Done { done: true })
    }

    async fn full(&self, _ctx: &CallCtx, req: Overflow) -> Result<OneWay, Exception> {
        let f = self.file(&req.file)?;
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.coordinate_split(f, req.bucket, Some(req.level)).await {
                tracing::warn!("sdds: split of {:?} after bucket {} overflowed: {e:?}", req.file, req.bucket);
            }
        });
        Ok(OneWay {})
    }
}
