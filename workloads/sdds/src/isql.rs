//! The I-strategy of the paper: import the bucket and the shipped probe tuples into an
//! embedded database (SQLite in memory, an index on the join attribute) and let it evaluate
//! the join. Runs on a blocking thread.

use rusqlite::{params, Connection};

use crate::proto::{function::Op, Function, Pair, Probe};

/// (ssn, city) of a bucket's records, and the function: the count or the pairs.
pub fn eval(rows: &[(u64, u32)], f: &Function) -> Result<(u64, Vec<Pair>), crate::SddsError> {
    let c = Connection::open_in_memory()?;
    c.execute_batch("CREATE TABLE b(ssn INTEGER, city INTEGER); CREATE TABLE p(ssn INTEGER, city INTEGER);")?;
    {
        let tx = c.unchecked_transaction()?;
        {
            let mut ib = tx.prepare("INSERT INTO b VALUES (?1, ?2)")?;
            for (s, city) in rows {
                ib.execute(params![*s as i64, *city])?;
            }
            let mut ip = tx.prepare("INSERT INTO p VALUES (?1, ?2)")?;
            for Probe { ssn, city } in &f.probes {
                ip.execute(params![*ssn as i64, *city])?;
            }
        }
        tx.commit()?;
    }
    c.execute_batch("CREATE INDEX b_city ON b(city);")?;
    match Op::try_from(f.op).unwrap_or(Op::None) {
        Op::JoinCount => {
            let n: i64 = c.query_row("SELECT count(*) FROM p JOIN b ON b.city = p.city AND p.ssn < b.ssn", [], |r| r.get(0))?;
            Ok((n as u64, Vec::new()))
        }
        Op::JoinPairs => {
            let mut st = c.prepare("SELECT p.ssn, b.ssn FROM p JOIN b ON b.city = p.city AND p.ssn < b.ssn")?;
            let pairs: Vec<Pair> = st
                .query_map([], |r| Ok(Pair { a: r.get::<_, i64>(0)? as u64, b: r.get::<_, i64>(1)? as u64 }))?
                .collect::<Result<_, _>>()?;
            Ok((pairs.len() as u64, pairs))
        }
        other => Err(crate::SddsError::NotAJoin(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_agrees_with_the_e_strategy() {
        let rows = vec![(2u64, 7u32), (5, 7), (9, 3)];
        let probes = vec![Probe { ssn: 1, city: 7 }, Probe { ssn: 2, city: 7 }, Probe { ssn: 5, city: 3 }];
        let (n, _) = eval(&rows, &Function { op: Op::JoinCount as i32, probes: probes.clone(), ..Default::default() }).unwrap();
        assert_eq!(n, 4);
        let (n, mut p) = eval(&rows, &Function { op: Op::JoinPairs as i32, probes, ..Default::default() }).unwrap();
        p.sort_by_key(|x| (x.a, x.b));
        assert_eq!(n, 4);
        assert_eq!(p.iter().map(|x| (x.a, x.b)).collect::<Vec<_>>(), vec![(1, 2), (1, 5), (2, 5), (5, 9)]);
    }
}
