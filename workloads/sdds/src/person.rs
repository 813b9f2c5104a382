//! The paper's benchmark table Person(ssn, name, city): ssn 1..N, 50 cities, random names
//! (records of about 25 bytes), reproducible from a seed; and the baseline, the self-join on
//! one node in SQLite (the paper's "AMOS-II alone").

use rusqlite::{params, Connection};

use crate::proto::Record;

pub const CITIES: u32 = 50;

fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Person `ssn`: [city][name], city in 1..=50.
pub fn person(ssn: u64, seed: u64) -> Record {
    let mut s = crate::addr::mix(ssn ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
    let city = (next(&mut s) % CITIES as u64) as u8 + 1;
    let len = 12 + (next(&mut s) % 10) as usize;
    let mut v = Vec::with_capacity(len + 1);
    v.push(city);
    v.extend((0..len).map(|_| b'a' + (next(&mut s) % 26) as u8));
    Record { key: ssn, value: v.into() }
}

/// The join's exact result size for ssn 1..=n: Σ over cities of C(count, 2).
pub fn expected_pairs(n: u64, seed: u64) -> u64 {
    let mut per = vec![0u64; CITIES as usize + 1];
    for s in 1..=n {
        per[crate::bucket::city_of(&person(s, seed).value) as usize] += 1;
    }
    per.iter().map(|c| c * c.saturating_sub(1) / 2).sum()
}

/// The baseline: Person in one in-memory SQLite database with an index on city, the join
/// counted (Query 2) or its pairs fetched (Query 1). Returns (seconds, result size).
pub fn sqlite_alone(n: u64, seed: u64, pairs: bool) -> Result<(f64, u64), crate::SddsError> {
    let c = Connection::open_in_memory()?;
    c.execute_batch("CREATE TABLE person(ssn INTEGER PRIMARY KEY, name TEXT, city INTEGER);")?;
    {
        let tx = c.unchecked_transaction()?;
        {
            let mut st = tx.prepare("INSERT INTO person VALUES (?1, ?2, ?3)")?;
            for s in 1..=n {
                let r = person(s, seed);
                st.execute(params![s as i64, String::from_utf8_lossy(&r.value[1..]), r.value[0] as i64])?;
            }
        }
        tx.commit()?;
    }
    c.execute_batch("CREATE INDEX person_city ON person(city);")?;
    let t = std::time::Instant::now();
    let q = "FROM person p JOIN person q ON q.city = p.city AND p.ssn < q.ssn";
    let size = if pairs {
        let mut st = c.prepare(&format!("SELECT p.ssn, q.ssn {q}"))?;
        let mut rows = st.query([])?;
        let mut k = 0u64;
        while rows.next()?.is_some() {
            k += 1;
        }
        k
    } else {
        c.query_row(&format!("SELECT count(*) {q}"), [], |r| r.get::<_, i64>(0))? as u64
    };
    Ok((t.elapsed().as_secs_f64(), size))
}

/// One run of the self-join through the SDDS: the probe tuples gathered by a parallel scan,
/// then shipped in chunks to every bucket (Query 1: the pairs come back; Query 2: counts).
pub struct JoinRun {
    pub seconds: f64,
    pub result: u64,
    pub complete: bool,
    /// The slowest bucket's evaluation time summed over chunks, seconds.
    pub eval_s: f64,
}

pub async fn join(c: &mut crate::client::Client, pairs: bool, i_strategy: bool, chunk: usize) -> Result<JoinRun, crate::SddsError> {
    use crate::proto::{function::Op, Function, Probe};
    let t = std::time::Instant::now();
    let all = c.scan(Function { op: Op::Records as i32, ..Default::default() }, None).await?;
    let mut complete = all.complete;
    let probes: Vec<Probe> =
        all.results.iter().flat_map(|r| r.records.iter().map(|x| Probe { ssn: x.key, city: crate::bucket::city_of(&x.value) })).collect();
    let buckets = all.results.len().max(1) as f64;
    drop(all);
    let op = if pairs { Op::JoinPairs } else { Op::JoinCount };
    // Query 1's answers must each fit in a message: about a million pairs per bucket answer.
    let per_probe = probes.len() as f64 / buckets / CITIES as f64 / 2.0;
    let chunk = if pairs { chunk.min((1e6 / per_probe.max(1.0)) as usize).max(100) } else { chunk };
    let (mut result, mut eval_s) = (0u64, 0f64);
    for ch in probes.chunks(chunk.max(1)) {
        let o = c.scan(Function { op: op as i32, probes: ch.to_vec(), i_strategy, ..Default::default() }, None).await?;
        complete &= o.complete;
        result += o.results.iter().map(|r| if pairs { r.pairs.len() as u64 } else { r.count }).sum::<u64>();
        eval_s += o.results.iter().map(|r| r.eval_us).max().unwrap_or(0) as f64 / 1e6;
    }
    Ok(JoinRun { seconds: t.elapsed().as_secs_f64(), result, complete, eval_s })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persons_are_reproducible_and_the_baseline_counts_exactly() {
        assert_eq!(person(42, 1).value, person(42, 1).value);
        assert!((1..=50).contains(&person(7, 1).value[0]));
        let want = expected_pairs(2000, 1);
        assert_eq!(sqlite_alone(2000, 1, false).unwrap().1, want);
        assert_eq!(sqlite_alone(2000, 1, true).unwrap().1, want);
        assert!(want > 2000 * 1999 / 2 / 60 && want < 2000 * 1999 / 2 / 40, "about 1/50 of all pairs: {want}");
    }
}
