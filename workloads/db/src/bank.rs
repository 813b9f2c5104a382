//! The database workload: debit/credit transactions in the style of TPC-B against one SQLite
//! database, from clients on every node at once (the database workload of the 1997 Solaris MC
//! communication study, §3).
//!
//! A transaction picks an account, its teller and branch, and a delta; it updates the three
//! balances and appends a history row, in one `BEGIN IMMEDIATE … COMMIT`. The invariant at the
//! end: the accounts' balances, the tellers' and the branches' each sum to the sum of the
//! history's deltas, and `PRAGMA integrity_check` says ok. SQLite serializes writers with
//! fcntl locks on the database file, so on PXFS every transaction exercises cluster-wide locks.
//!
//! SQLite waits for a busy database by polling (sleep, try again), and a client close to the
//! lock — on the node that owns the file — wins nearly every race: the others starve. So the
//! clients queue for the write: a blocking fcntl write lock (F_SETLKW) on a lock file beside
//! the database, which the owner's lock table grants to a waiter as soon as it is released.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng;
use rusqlite::{params, Connection, TransactionBehavior};
use serde::{Deserialize, Serialize};

/// The database's shape: TPC-B's ratios (10 tellers per branch), scaled down.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub branches: u32,
    pub accounts: u32,
}

pub const TELLERS_PER_BRANCH: u32 = 10;
/// How long a client waits for the database lock before a transaction counts as failed.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates the tables (rollback journal, the paper-era default) and fills them.
pub fn init(db: &Path, s: Scale) -> rusqlite::Result<()> {
    let _ = std::fs::remove_file(db);
    let mut c = Connection::open(db)?;
    c.execute_batch(
        "PRAGMA journal_mode=DELETE;
         CREATE TABLE branches(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE tellers(id INTEGER PRIMARY KEY, branch INTEGER NOT NULL, balance INTEGER NOT NULL);
         CREATE TABLE accounts(id INTEGER PRIMARY KEY, branch INTEGER NOT NULL, balance INTEGER NOT NULL);
         CREATE TABLE history(id INTEGER PRIMARY KEY, account INTEGER, teller INTEGER, branch INTEGER, delta INTEGER NOT NULL, node INTEGER);",
    )?;
    let tx = c.transaction()?;
    for b in 0..s.branches {
        tx.execute("INSERT INTO branches VALUES(?1, 0)", params![b])?;
        for t in 0..TELLERS_PER_BRANCH {
            tx.execute("INSERT INTO tellers VALUES(?1, ?2, 0)", params![b * TELLERS_PER_BRANCH + t, b])?;
        }
    }
    for a in 0..s.accounts {
        tx.execute("INSERT INTO accounts VALUES(?1, ?2, 0)", params![a, a % s.branches.max(1)])?;
    }
    tx.commit()
}

/// What one client did.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ClientReport {
    pub node: u32,
    pub committed: u64,
    pub failed: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Latencies in µs, for merging (a compact histogram would do; clients are few).
    pub latencies_us: Vec<u64>,
}

/// Runs transactions against `db` for `duration`; `node` is written into the history.
pub fn client(db: &Path, s: Scale, node: u32, duration: Duration) -> rusqlite::Result<ClientReport> {
    let mut c = Connection::open(db)?;
    c.busy_timeout(BUSY_TIMEOUT)?;
    let queue = WriteQueue::open(db).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let mut rng = rand::rng();
    let mut r = ClientReport { node, ..Default::default() };
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let start = Instant::now();
    while start.elapsed() < duration {
        let account = rng.random_range(0..s.accounts);
        let branch = account % s.branches.max(1);
        let teller = branch * TELLERS_PER_BRANCH + rng.random_range(0..TELLERS_PER_BRANCH);
        let delta: i64 = rng.random_range(-99_999..=99_999);
        let t = Instant::now();
        let _turn = queue.wait();
        let done = (|| -> rusqlite::Result<()> {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("UPDATE accounts SET balance = balance + ?1 WHERE id = ?2", params![delta, account])?;
            tx.execute("UPDATE tellers SET balance = balance + ?1 WHERE id = ?2", params![delta, teller])?;
            tx.execute("UPDATE branches SET balance = balance + ?1 WHERE id = ?2", params![delta, branch])?;
            tx.execute(
                "INSERT INTO history(account, teller, branch, delta, node) VALUES(?1, ?2, ?3, ?4, ?5)",
                params![account, teller, branch, delta, node],
            )?;
            tx.commit()
        })();
        match done {
            Ok(()) => {
                r.committed += 1;
                let us = t.elapsed().as_micros() as u64;
                let _ = hist.record(us.max(1));
                r.latencies_us.push(us);
            }
            Err(_) => r.failed += 1,
        }
    }
    r.seconds = start.elapsed().as_secs_f64();
    r.p50_ms = hist.value_at_quantile(0.5) as f64 / 1e3;
    r.p99_ms = hist.value_at_quantile(0.99) as f64 / 1e3;
    Ok(r)
}

/// The clients' queue for the database's write lock: a whole-file fcntl lock on `DB.txlock`.
struct WriteQueue(std::fs::File);

struct Turn<'a>(&'a WriteQueue);

impl WriteQueue {
    fn open(db: &Path) -> std::io::Result<Self> {
        let mut p = db.as_os_str().to_owned();
        p.push(".txlock");
        Ok(WriteQueue(std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(p)?))
    }

    fn lock(&self, typ: i32, wait: bool) -> bool {
        use std::os::fd::AsRawFd;
        let fl = libc::flock { l_type: typ as i16, l_whence: libc::SEEK_SET as i16, l_start: 0, l_len: 0, l_pid: 0 };
        // SAFETY: F_SETLK(W) reads one flock from fl, a live local; the file is open for as long as self.
        unsafe { libc::fcntl(self.0.as_raw_fd(), if wait { libc::F_SETLKW } else { libc::F_SETLK }, &fl) == 0 }
    }

    /// Waits for this client's turn (on an error, goes ahead: SQLite's own locks still hold).
    fn wait(&self) -> Turn<'_> {
        let _ = self.lock(libc::F_WRLCK, true);
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let _ = self.0.lock(libc::F_UNLCK, false);
    }
}

/// The end-of-run checks.
#[derive(Debug, Serialize)]
pub struct Invariant {
    pub history_rows: u64,
    pub history_sum: i64,
    pub accounts_sum: i64,
    pub tellers_sum: i64,
    pub branches_sum: i64,
    pub integrity: String,
}

impl Invariant {
    pub fn holds(&self) -> bool {
        self.accounts_sum == self.history_sum
            && self.tellers_sum == self.history_sum
            && self.branches_sum == self.history_sum
            && self.integrity == "ok"
    }
}

pub fn check(db: &Path) -> rusqlite::Result<Invariant> {
    let c = Connection::open(db)?;
    c.busy_timeout(BUSY_TIMEOUT)?;
    let sum = |sql: &str| c.query_row(sql, [], |r| r.get::<_, Option<i64>>(0)).map(|v| v.unwrap_or(0));
    Ok(Invariant {
        history_rows: c.query_row("SELECT count(*) FROM history", [], |r| r.get::<_, i64>(0))? as u64,
        history_sum: sum("SELECT sum(delta) FROM history")?,
        accounts_sum: sum("SELECT sum(balance) FROM accounts")?,
        tellers_sum: sum("SELECT sum(balance) FROM tellers")?,
        branches_sum: sum("SELECT sum(balance) FROM branches")?,
        integrity: c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_clients_keep_the_books_balanced() {
        let dir = std::env::temp_dir().join(format!("ssi-db-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("bank.db");
        let s = Scale { branches: 2, accounts: 100 };
        init(&db, s).unwrap();
        let d2 = db.clone();
        let other = std::thread::spawn(move || client(&d2, s, 2, Duration::from_millis(300)).unwrap());
        let mine = client(&db, s, 1, Duration::from_millis(300)).unwrap();
        let theirs = other.join().unwrap();
        let inv = check(&db).unwrap();
        assert!(inv.holds(), "{inv:?}");
        assert_eq!(inv.history_rows, mine.committed + theirs.committed);
        assert!(mine.committed > 0 && theirs.committed > 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
