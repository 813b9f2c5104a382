//! Cache tokens, server side: which nodes may cache what of a volume, and calling them back.
//!
//! A node that receives a file's attributes, data or a directory's entries from the server
//! holds a token for that file (handle). Before the server completes an operation that makes
//! another node's cache wrong (write, setattr, create/unlink/rename in a directory, xattrs),
//! it calls `CacheManager.Invalidate` on every other holder and waits (bounded) for them;
//! their tokens are gone until they fetch again. A node that does not answer within the
//! bound is down or stuck; its cache no longer matters to correctness of the others.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use ssi_orb::{CallOptions, Orb};

use crate::proto::{CacheManagerStub, EntryName, HeldLocks, InvalidateReq, RecallReq};

pub const CACHE_MANAGER_NAME: &str = "pxfs.cache";
/// How long a server waits for one node to drop its cache.
const CALLBACK_DEADLINE: Duration = Duration::from_secs(1);
/// How long a server waits for an exclusive holder to write back and hand over its locks.
const RECALL_DEADLINE: Duration = Duration::from_secs(30);

pub struct Tokens {
    orb: Orb,
    volume: u32,
    holders: Mutex<HashMap<Vec<u8>, BTreeSet<u32>>>,
    /// Per directory, the nodes that cache names in it (found or absent). A callback about
    /// one name drops just that name there, so, unlike `holders`, these stay: the node still
    /// caches the directory's other names and must hear of their changes too.
    names: Mutex<HashMap<Vec<u8>, BTreeSet<u32>>>,
    stubs: Mutex<HashMap<u32, CacheManagerStub>>,
}

impl Tokens {
    pub fn new(orb: Orb, volume: u32) -> Self {
        Tokens { orb, volume, holders: Mutex::new(HashMap::new()), names: Mutex::new(HashMap::new()), stubs: Mutex::new(HashMap::new()) }
    }

    /// `node` now caches something of `handle`.
    pub fn grant(&self, node: u32, handle: &[u8]) {
        if node == ssi_orb::TOOL_NODE {
            return;
        }
        self.holders.lock().entry(handle.to_vec()).or_default().insert(node);
    }

    /// `node` now caches names (present or absent) in directory `dir`.
    pub fn grant_names(&self, node: u32, dir: &[u8]) {
        if node == ssi_orb::TOOL_NODE {
            return;
        }
        self.names.lock().entry(dir.to_vec()).or_default().insert(node);
    }

    /// Files some node caches, and directories some node caches names of.
    pub fn counts(&self) -> (usize, usize) {
        (self.holders.lock().len(), self.names.lock().len())
    }

    /// Per node, how many files it holds a cache token on.
    pub fn cached_by_node(&self) -> HashMap<u32, u64> {
        let mut by = HashMap::new();
        for nodes in self.holders.lock().values() {
            for n in nodes {
                *by.entry(*n).or_default() += 1;
            }
        }
        by
    }

    /// `node` left the view: whatever it cached is gone with it (a new incarnation starts
    /// with empty caches). How many files and directories it cached.
    pub fn node_gone(&self, node: u32) -> usize {
        let mut n = 0;
        for map in [&self.holders, &self.names] {
            map.lock().retain(|_, nodes| {
                n += nodes.remove(&node) as usize;
                !nodes.is_empty()
            });
        }
        self.stubs.lock().remove(&node);
        n
    }

    /// `handle` is gone (removed, and open nowhere): nobody caches it or names in it any more.
    pub fn forget(&self, handle: &[u8]) {
        self.holders.lock().remove(handle);
        self.names.lock().remove(handle);
    }

    async fn stub(&self, node: u32) -> Option<CacheManagerStub> {
        if let Some(s) = self.stubs.lock().get(&node) {
            return Some(s.clone());
        }
        let h = self.orb.resolve(node, CACHE_MANAGER_NAME).await.ok()?;
        let s = CacheManagerStub::new(h).ok()?.with_options(CallOptions::default().deadline(CALLBACK_DEADLINE).priority(100));
        self.stubs.lock().insert(node, s.clone());
        Some(s)
    }

    /// Takes `node`'s exclusive token on `handle` back (see `exclusive`): the node writes back
    /// what it buffered and answers with its locks. None when it cannot be reached: what it
    /// buffered and its locks are gone with it.
    pub async fn recall(&self, node: u32, handle: &[u8], epoch: u64) -> Option<HeldLocks> {
        let s = self.stub(node).await?.with_options(CallOptions::default().deadline(RECALL_DEADLINE).priority(100));
        match s.recall(RecallReq { volume: self.volume, handle: Bytes::copy_from_slice(handle), epoch }).await {
            Ok(r) => Some(r.into_inner()),
            Err(e) => {
                tracing::warn!(volume = self.volume, node, error = %e, "recall of an exclusive token failed");
                self.stubs.lock().remove(&node);
                None
            }
        }
    }

    /// Revokes the tokens on `inodes` (attributes, data) and on the parents of `entries`
    /// (names) from every node but `except`, and waits until they have dropped their caches.
    pub async fn revoke(&self, except: u32, inodes: Vec<Vec<u8>>, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        let mut nodes: BTreeSet<u32> = BTreeSet::new();
        {
            let mut h = self.holders.lock();
            for k in inodes.iter().chain(entries.iter().map(|(p, _)| p)) {
                if let Some(set) = h.get_mut(k) {
                    nodes.extend(set.iter().copied().filter(|n| *n != except));
                    set.retain(|n| *n == except);
                    if set.is_empty() {
                        h.remove(k);
                    }
                }
            }
            let names = self.names.lock();
            for (dir, _) in &entries {
                if let Some(set) = names.get(dir) {
                    nodes.extend(set.iter().copied().filter(|n| *n != except));
                }
            }
        }
        if nodes.is_empty() {
            return;
        }
        let req = InvalidateReq {
            volume: self.volume,
            inodes: inodes.into_iter().map(Bytes::from).collect(),
            entries: entries.into_iter().map(|(parent, name)| EntryName { parent: parent.into(), name: name.into() }).collect(),
        };
        let calls = nodes.into_iter().map(|n| {
            let req = req.clone();
            async move {
                if let Some(s) = self.stub(n).await {
                    if s.invalidate(req).await.is_err() {
                        self.stubs.lock().remove(&n);
                    }
                }
            }
        });
        futures_util::future::join_all(calls).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::proto::{export_cache_manager, CacheManager, InvalidateReq};
    use ssi_orb::proto::Empty;
    use ssi_orb::{ClusterKey, OrbConfig};

    /// When each revocation was answered, and the files it named.
    type Log = Arc<Mutex<Vec<(Instant, Vec<Bytes>)>>>;

    /// Node 2's cache manager: records each revocation, answering only after 50 ms.
    struct Recorder(Log);

    #[ssi_orb::async_trait]
    impl CacheManager for Recorder {
        async fn invalidate(&self, _ctx: &ssi_orb::CallCtx, req: InvalidateReq) -> Result<Empty, ssi_orb::Exception> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.0.lock().push((Instant::now(), req.inodes));
            Ok(Empty {})
        }
        async fn recall(&self, _ctx: &ssi_orb::CallCtx, _req: RecallReq) -> Result<HeldLocks, ssi_orb::Exception> {
            Ok(HeldLocks::default())
        }
    }

    /// Two ORBs on loopback that see each other.
    async fn pair() -> (Orb, Orb) {
        let key = ClusterKey::parse(&ClusterKey::generate_hex()).unwrap();
        let mut taken = BTreeSet::new();
        let mut addrs = std::collections::BTreeMap::new();
        for i in 1..=2u32 {
            let p = ssi_orb::ports::pick(std::net::Ipv4Addr::LOCALHOST.into(), &taken).unwrap();
            taken.insert(p);
            addrs.insert(i, format!("127.0.0.1:{p}"));
        }
        let start = |id: u32| {
            let mut c = OrbConfig::new("t", id, 1, key.clone());
            c.listen = Some(addrs[&id].parse().unwrap());
            c.peers = addrs.clone();
            Orb::start(c)
        };
        let (a, b) = (start(1).await.unwrap(), start(2).await.unwrap());
        let t0 = Instant::now();
        while a.view().members.len() < 2 || b.view().members.len() < 2 {
            assert!(t0.elapsed() < Duration::from_secs(10), "the two ORBs never saw each other");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (a, b)
    }

    #[tokio::test]
    async fn a_change_completes_only_after_every_other_holder_dropped_its_cache() {
        let (a, b) = pair().await;
        let log = Arc::new(Mutex::new(Vec::new()));
        let cm = export_cache_manager(&b, Recorder(log.clone()));
        b.register_name(CACHE_MANAGER_NAME, &cm);
        let t = Tokens::new(a.clone(), 0);
        t.grant(1, b"f");
        t.grant(2, b"f");
        t.grant(2, b"other");
        t.revoke(1, vec![b"f".to_vec()], vec![]).await;
        let done = Instant::now();
        let seen = log.lock().clone();
        assert_eq!(seen.len(), 1, "node 2 was called back once");
        assert_eq!(seen[0].1, vec![Bytes::from_static(b"f")]);
        assert!(seen[0].0 <= done, "the revocation was answered before the change went on");
        assert_eq!(t.counts().0, 2, "node 1 (the changer) still holds f; node 2 still holds the other file");
        // Node 2 holds f no more: the next change calls nobody.
        t.revoke(1, vec![b"f".to_vec()], vec![]).await;
        assert_eq!(log.lock().len(), 1);
        a.shutdown();
        b.shutdown();
    }
}
