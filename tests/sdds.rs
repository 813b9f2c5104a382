//! RP* and LH* files on real daemons (a 4-node cluster), driven through the ORB as a cluster
//! tool: a file grown by inserts from one bucket to dozens answers every one of 1M keys, a
//! client starting from a one-bucket image reaches every key and ends with an exact image
//! after few IAMs, and range searches and parallel scans return exactly the matching records
//! with deterministic termination while other inserts split the buckets under them.

use std::collections::BTreeSet;

use ssi_sdds::addr::mix;
use ssi_sdds::client::Client;
use ssi_sdds::proto::{function::Op, FileSpec, Function, Kind, Record};
use ssi_testkit::Cluster;

/// Runs `body` with a cluster tool ORB on a fresh local cluster of `nodes` nodes.
fn on_cluster<F: std::future::Future<Output = ()>>(name: &str, nodes: u32, body: impl FnOnce(ssi_orb::Orb) -> F) {
    let c = Cluster::up(name, nodes);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let orb = ssi_node::tool::connect(&c.config()).await.unwrap();
        body(orb).await
    });
}

fn spec(name: &str, kind: Kind, capacity: u64) -> FileSpec {
    FileSpec { name: name.into(), kind: kind as i32, capacity, nodes: vec![1, 2, 3, 4], initial_buckets: 0, key_space: 0 }
}

fn rec(k: u64) -> Record {
    Record { key: k, value: k.to_le_bytes().to_vec().into() }
}

async fn grow_and_find_every_key(orb: &ssi_orb::Orb, kind: Kind) {
    const N: u64 = 1_000_000;
    let mut c = Client::create(orb, spec(&format!("grow-{kind:?}"), kind, 20_000)).await.unwrap();
    // Random order: the keys sorted by a hash of themselves.
    let mut keys: Vec<u64> = (1..=N).collect();
    keys.sort_by_key(|k| mix(*k));
    for chunk in keys.chunks(10_000) {
        assert_eq!(c.insert(chunk.iter().map(|k| rec(*k)).collect()).await.unwrap(), chunk.len() as u64);
    }
    // Splits reported during the load may still be under way: wait until the file is still.
    let (mut buckets, mut splits) = c.info().await.unwrap();
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (b2, s2) = c.info().await.unwrap();
        let still = s2 == splits && b2.len() == buckets.len();
        (buckets, splits) = (b2, s2);
        if still && splits as usize + 1 == buckets.len() {
            break;
        }
    }
    let total: u64 = buckets.iter().map(|b| b.records).sum();
    assert_eq!(total, N, "{kind:?}: every record stored once");
    assert!(buckets.len() >= 32, "{kind:?}: grew to {} buckets ({splits} splits)", buckets.len());
    let ids: Vec<u32> = buckets.iter().map(|b| b.iam.as_ref().unwrap().bucket).collect();
    assert_eq!(splits as usize + 1, buckets.len(), "{kind:?}: one bucket per split: {ids:?}");

    // A new client knows bucket 0 only; batch after batch, its IAMs correct its image.
    let mut fresh = Client::new(orb, c.spec.clone());
    let mut found = 0u64;
    for chunk in keys.chunks(10_000) {
        let got = fresh.search(chunk).await.unwrap();
        assert_eq!(got.len(), chunk.len(), "{kind:?}: every key answered");
        for r in got {
            assert_eq!(&r.value[..], &r.key.to_le_bytes(), "{kind:?}: key {} answers its own value", r.key);
            found += 1;
        }
    }
    assert_eq!(found, N);
    let file: BTreeSet<u32> = buckets.iter().map(|b| b.iam.as_ref().unwrap().bucket).collect();
    let image: BTreeSet<u32> = fresh.image.buckets().into_iter().collect();
    assert_eq!(image, file, "{kind:?}: the image is exact");
    let b = buckets.len() as f64;
    let bound = b * (b.log2().floor() + 1.0);
    assert!((fresh.iams as f64) <= bound, "{kind:?}: {} IAMs for {} buckets (bound {bound})", fresh.iams, buckets.len());
    // Deleting is addressed like searching.
    assert_eq!(fresh.delete(&keys[..1000]).await.unwrap(), 1000);
    assert!(fresh.search(&keys[..1000]).await.unwrap().is_empty());
    fresh.drop_file().await.unwrap();
}

#[test]
fn files_grow_from_one_bucket_and_answer_every_key() {
    on_cluster("sdds-grow", 4, |orb| async move {
        grow_and_find_every_key(&orb, Kind::Rp).await;
        grow_and_find_every_key(&orb, Kind::Lh).await;
        // Bad requests are refused with a reason.
        let e = Client::create(&orb, spec("tiny", Kind::Rp, 1)).await.err().unwrap();
        assert!(e.to_string().contains("capacity 1"), "{e}");
        let mut ghost = Client::new(&orb, spec("ghost", Kind::Lh, 100));
        let e = ghost.search(&[1]).await.err().unwrap();
        assert!(e.to_string().contains("no file \"ghost\""), "{e}");
    });
}

/// Range searches (RP*) and full parallel scans (both) during concurrent splits: the even
/// keys, loaded first, must come back exactly once each, with deterministic termination,
/// while another client inserts the odd keys and the buckets split under the scans.
async fn scans_during_splits(orb: &ssi_orb::Orb, kind: Kind) {
    const N: u64 = 60_000;
    let mut c = Client::create(orb, spec(&format!("scan-{kind:?}"), kind, 1_500)).await.unwrap();
    let evens: Vec<Record> = (1..=N / 2).map(|k| rec(2 * k)).collect();
    c.insert(evens).await.unwrap();
    let mut writer = Client::new(orb, c.spec.clone());
    let splits_before = c.info().await.unwrap().1;
    let inserts = async {
        let mut odd: Vec<u64> = (0..N / 2).map(|k| 2 * k + 1).collect();
        odd.sort_by_key(|k| mix(*k));
        for ch in odd.chunks(500) {
            writer.insert(ch.iter().map(|k| rec(*k)).collect()).await.unwrap();
        }
    };
    let scans = async {
        let mut rounds = 0;
        for round in 0..40u64 {
            if kind == Kind::Rp {
                let (a, b) = (round * 1_337 % N, round * 1_337 % N + 9_000);
                let (recs, complete) = c.range(a, b).await.unwrap();
                assert!(complete, "range ({a}, {b}]: deterministic termination");
                let got: Vec<u64> = recs.iter().map(|r| r.key).filter(|k| k % 2 == 0).collect();
                let want: Vec<u64> = (a + 1..=b.min(N)).filter(|k| k % 2 == 0).collect();
                assert_eq!(got, want, "range ({a}, {b}]: the even keys exactly once");
                assert!(recs.iter().all(|r| r.key > a && r.key <= b));
            }
            let o = c.scan(Function { op: Op::Records as i32, ..Default::default() }, None).await.unwrap();
            assert!(o.complete, "{kind:?}: full scan terminated deterministically");
            let mut evens: Vec<u64> = o.results.iter().flat_map(|r| r.records.iter().map(|x| x.key)).filter(|k| k % 2 == 0).collect();
            evens.sort_unstable();
            assert_eq!(evens.len() as u64, N / 2, "{kind:?}: every even key once in round {round}");
            assert!(evens.windows(2).all(|w| w[0] < w[1]), "{kind:?}: no record twice");
            rounds += 1;
            tokio::task::yield_now().await;
        }
        rounds
    };
    let (_, rounds) = tokio::join!(inserts, scans);
    assert_eq!(rounds, 40);
    let (buckets, splits) = c.info().await.unwrap();
    assert!(splits > splits_before, "{kind:?}: the buckets split during the scans ({splits_before} → {splits})");
    assert_eq!(buckets.iter().map(|b| b.records).sum::<u64>(), N);
    // Probabilistic termination: whatever answered within the time-out.
    let o =
        c.scan(Function { op: Op::CountEq as i32, city: 0, ..Default::default() }, Some(std::time::Duration::from_secs(10))).await.unwrap();
    assert!(o.complete && o.results.len() == buckets.len(), "{kind:?}: every bucket answered within 10 s");
    c.drop_file().await.unwrap();
}

#[test]
fn scans_are_exact_while_buckets_split() {
    on_cluster("sdds-scan", 4, |orb| async move {
        scans_during_splits(&orb, Kind::Rp).await;
        scans_during_splits(&orb, Kind::Lh).await;
    });
}

/// RP*: a client that learned of a bucket but not of its sibling to the right (split off
/// the same parent earlier) sends keys above it there: the bucket passes them up to its
/// parent and down to the right bucket, and a range search over the unknown part is still
/// answered in full.
#[test]
fn keys_beyond_a_known_bucket_go_up_the_split_tree() {
    on_cluster("sdds-up", 3, |orb| async move {
        // Pre-split into (0, 100], (100, 200] (bucket 2) and (200, MAX] (bucket 1).
        let s = FileSpec {
            name: "up".into(),
            kind: Kind::Rp as i32,
            capacity: 1_000,
            nodes: vec![1, 2, 3],
            initial_buckets: 3,
            key_space: 300,
        };
        let mut w = Client::create(&orb, s.clone()).await.unwrap();
        // In key order: the image learns bucket 2 (low 100) before bucket 1 (low 200), so
        // keys above 200 are sent to bucket 2 first.
        for lo in [1u64, 101, 201] {
            assert_eq!(w.insert((lo..lo + 100).map(rec).collect()).await.unwrap(), 100);
        }
        let (buckets, _) = w.info().await.unwrap();
        let per: Vec<u64> = buckets.iter().map(|b| b.records).collect();
        assert_eq!(per, vec![100, 100, 100], "each key in its bucket: {buckets:?}");
        let mut r = Client::new(&orb, s);
        r.image.adjust(&ssi_sdds::proto::Iam { bucket: 2, low: 100, high: 200, level: 0 });
        let (recs, complete) = r.range(150, 280).await.unwrap();
        assert!(complete);
        assert_eq!(recs.iter().map(|x| x.key).collect::<Vec<_>>(), (151..=280).collect::<Vec<_>>());
        let found = r.search(&(1..=300).collect::<Vec<_>>()).await.unwrap();
        assert_eq!(found.len(), 300);
    });
}

/// `ssi workload sdds` end to end on a small case: the joins' results are checked inside
/// (the command fails on a wrong count), and the Redis Cluster baseline runs beside.
#[test]
fn the_person_benchmark_runs_and_reports_beside_the_paper() {
    if !ssi_testkit::required("redis-server", ssi_node::installed("redis-server")) {
        return;
    }
    let c = Cluster::up("sdds-workload", 3);
    let out = ssi_testkit::ssi(&["workload", "sdds", "--cases", "2000:1,2000:3", "--searches", "5000", "--json", "--dir", c.dir_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    ssi_testkit::golden::assert_shape("workload-sdds", std::slice::from_ref(&r));
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for k in ["q2_e_s", "q2_i_s", "q1_e_s", "q1_i_s", "sqlite_alone_q2_s"] {
        assert!(cases[1][k].as_f64().is_some(), "{k} measured: {r}");
    }
    assert_eq!(cases[0]["result_tuples"], cases[1]["result_tuples"]);
    let k = &r["key_search"];
    assert!(k["redis_cluster_gets_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(k["fresh_image_buckets"], 3, "the one-bucket image ends exact: {r}");
}
