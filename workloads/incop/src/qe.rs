//! A query element: holds the database (every QE a full replica, so every entry is held by
//! more than one), answers batches of queries to both EAs, applies the UI's updates in
//! FIFO order, and keeps the log of updates since the last dump.
//!
//! Joining (the paper's §4.2): a new or recovered QE loads the last dump from its node's
//! disk, announces itself, buffers updates, applies the state log a live QE sends it, then
//! the buffered updates and whatever the UI logged meanwhile, and only then announces
//! state-ready — the EAs send it queries from then on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::group::Group;
use crate::outbox::{Out, Outbox};
use crate::proto::{Announce, Answer, Answers, Calls, LookupReply, Member, MemberStatus, Params, Update, Updates};
use crate::switch::NUMBER_BASE;
use crate::watermark::Watermark;

/// The real number behind database entry `i` of the initial dump.
fn route_of(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    2_000_000_000 + (z ^ (z >> 31)) % 7_000_000_000
}

/// The day's dump on this node's disk: `entries` numbers, as of update 0. Written once
/// (every node gets it at setup); read by every QE that starts or joins.
pub fn dump_path(dir: &Path, entries: u64) -> PathBuf {
    dir.join(format!("dump-{entries}.bin"))
}

pub fn provision_dump(dir: &Path, entries: u64) -> std::io::Result<()> {
    let path = dump_path(dir, entries);
    if path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
    w.write_all(&0u64.to_le_bytes())?; // the update sequence number it includes
    w.write_all(&entries.to_le_bytes())?;
    for i in 0..entries {
        w.write_all(&(NUMBER_BASE + i).to_le_bytes())?;
        w.write_all(&route_of(i).to_le_bytes())?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// Reads a dump: (the update it includes, the database).
pub fn load_dump(path: &Path) -> Result<(u64, HashMap<u64, u64>), crate::IncopError> {
    let mut b = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut b))
        .map_err(|source| crate::IncopError::Dump { path: path.to_path_buf(), source })?;
    let word = |i: usize| b.get(i * 8..i * 8 + 8).map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")));
    let bad = || crate::IncopError::NotADump { path: path.to_path_buf() };
    let seq = word(0).ok_or_else(bad)?;
    let n = word(1).ok_or_else(bad)?;
    if b.len() as u64 != 16 + n * 16 {
        return Err(bad());
    }
    let mut db = HashMap::with_capacity(n as usize);
    for i in 0..n as usize {
        db.insert(word(2 + 2 * i).ok_or_else(bad)?, word(3 + 2 * i).ok_or_else(bad)?);
    }
    Ok((seq, db))
}

struct State {
    db: HashMap<u64, u64>,
    applied: u64,
    /// Updates applied since the dump: what a state log carries.
    log: Vec<Update>,
    log_file: Option<BufWriter<std::fs::File>>,
    /// The state log has arrived (or this QE started with the group).
    have_state: bool,
    ready: bool,
    /// Updates that came early: while joining, or after a gap in the UI's order.
    held: BTreeMap<u64, Update>,
    queue: VecDeque<Calls>,
    backlog: usize,
    gate: Watermark,
    st: MemberStatus,
}

impl State {
    fn apply(&mut self, u: &Update) {
        if u.remove {
            self.db.remove(&u.number);
        } else {
            self.db.insert(u.number, u.route);
        }
        self.applied = u.seq;
        self.log.push(*u);
        if let Some(f) = &mut self.log_file {
            let _ = writeln!(f, "{} {} {} {}", u.seq, u.number, u.route, u.remove as u8);
        }
    }

    /// Applies what follows `applied` without a gap, from `held`.
    fn drain_held(&mut self) {
        while let Some(u) = self.held.remove(&(self.applied + 1)) {
            self.apply(&u);
        }
        let applied = self.applied;
        self.held.retain(|s, _| *s > applied);
        if let Some(f) = &mut self.log_file {
            let _ = f.flush();
        }
    }

    fn take(&mut self, u: Update) {
        if u.seq > self.applied {
            self.held.insert(u.seq, u);
        }
        if self.have_state {
            self.drain_held();
        }
    }
}

pub struct Qe {
    me: Member,
    group: Arc<Mutex<Group>>,
    out: Outbox,
    service: Duration,
    state: Mutex<State>,
    work: Notify,
}

impl Qe {
    /// A QE with the dump loaded from `dir`; `joining`: not serving until the state log.
    pub fn new(
        me: Member,
        group: Arc<Mutex<Group>>,
        out: Outbox,
        p: &Params,
        dir: &Path,
        joining: bool,
    ) -> Result<Arc<Qe>, crate::IncopError> {
        let state = |what| move |source| crate::IncopError::State { what, dir: dir.to_path_buf(), source };
        provision_dump(dir, p.db_entries).map_err(state("dump"))?;
        let (seq, db) = load_dump(&dump_path(dir, p.db_entries))?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(dir.join(format!("qe-{}.log", me.id)))
            .map(BufWriter::new)
            .map_err(state("log"))?;
        Ok(Arc::new(Qe {
            state: Mutex::new(State {
                db,
                applied: seq,
                log: Vec::new(),
                log_file: Some(log_file),
                have_state: !joining,
                ready: !joining,
                held: BTreeMap::new(),
                queue: VecDeque::new(),
                backlog: 0,
                gate: Watermark::new(p.qe_high, p.qe_low),
                st: MemberStatus { member: Some(Member { ready: !joining, ..me }), ..Default::default() },
            }),
            me,
            group,
            out,
            service: Duration::from_micros(p.qe_service_us as u64),
            work: Notify::new(),
        }))
    }

    pub fn id(&self) -> u32 {
        self.me.id
    }

    pub fn is_ready(&self) -> bool {
        self.state.lock().ready
    }

    /// The worker: answers queued batches, one reply batch per query batch to every EA.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.work.notified().await;
                while let Some(c) = me.next_batch() {
                    let answers = me.answer(&c);
                    for ea in me.group.lock().eas() {
                        me.out.send(ea.node, Out::Reply(Answers { to: ea.id, from: me.me.id, answers: answers.clone() }));
                    }
                    tokio::task::yield_now().await;
                }
            }
        })
    }

    fn next_batch(&self) -> Option<Calls> {
        let mut s = self.state.lock();
        let c = s.queue.pop_front()?;
        s.backlog -= c.calls.len();
        Some(c)
    }

    fn answer(&self, c: &Calls) -> Vec<Answer> {
        let mut s = self.state.lock();
        let out: Vec<Answer> = c
            .calls
            .iter()
            .map(|q| {
                if !self.service.is_zero() {
                    let t = Instant::now(); // the database work a real QE would do
                    while t.elapsed() < self.service {
                        std::hint::spin_loop();
                    }
                }
                match s.db.get(&q.number) {
                    Some(r) => Answer { seq: q.seq, route: *r, found: true },
                    None => Answer { seq: q.seq, route: 0, found: false },
                }
            })
            .collect();
        s.st.answered += out.len() as u64;
        out
    }

    /// A batch of queries from an EA; shed whole when the backlog is over the watermark.
    pub fn query(&self, c: Calls) {
        let mut s = self.state.lock();
        if !s.ready {
            return;
        }
        s.st.received += c.calls.len() as u64;
        let backlog = s.backlog;
        // Only the paper's watermark here: a QE that sheds by age costs the backup EA's
        // reissue at half the deadline, which the EAs' own age gate spares.
        if !s.gate.admit(backlog) {
            s.st.shed += c.calls.len() as u64;
            return;
        }
        s.backlog += c.calls.len();
        s.queue.push_back(c);
        drop(s);
        self.work.notify_one();
    }

    /// Updates multicast by the UI.
    pub fn updates(&self, u: Updates) {
        let mut s = self.state.lock();
        for x in u.updates {
            if !s.have_state {
                s.st.buffered_updates += 1;
            }
            s.take(x);
        }
    }

    /// The state log from a live QE: this QE is up to date once it and what came meanwhile
    /// are applied. Returns false when it already had its state.
    pub fn state_log(&self, u: Updates) -> bool {
        let mut s = self.state.lock();
        if s.have_state {
            return false;
        }
        for x in u.updates {
            if x.seq > s.applied {
                s.st.log_applied += 1;
                s.held.insert(x.seq, x);
            }
        }
        s.have_state = true;
        s.drain_held();
        true
    }

    /// Updates the UI logged after what this QE has (closing any gap), then state-ready.
    pub fn become_ready(&self, from_ui: Updates) -> Member {
        let mut s = self.state.lock();
        for x in from_ui.updates {
            s.take(x);
        }
        s.ready = true;
        if let Some(m) = &mut s.st.member {
            m.ready = true;
        }
        Member { ready: true, ..self.me }
    }

    pub fn applied(&self) -> u64 {
        self.state.lock().applied
    }

    /// What a joining member needs: every update since the dump.
    pub fn log(&self) -> Updates {
        let s = self.state.lock();
        Updates { to: 0, updates: s.log.clone() }
    }

    pub fn count_state_log_sent(&self) {
        self.state.lock().st.state_logs_sent += 1;
    }

    pub fn lookup(&self, number: u64) -> LookupReply {
        let s = self.state.lock();
        match s.db.get(&number) {
            Some(r) => LookupReply { found: true, route: *r, applied_seq: s.applied },
            None => LookupReply { found: false, route: 0, applied_seq: s.applied },
        }
    }

    pub fn announce(&self) -> Announce {
        Announce { member: Some(Member { ready: self.is_ready(), ..self.me }) }
    }

    pub fn status(&self) -> MemberStatus {
        let s = self.state.lock();
        MemberStatus { applied_seq: s.applied, ..s.st.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_round_trip_and_bad_ones_are_refused() {
        let d = std::env::temp_dir().join(format!("incop-dump-{}", std::process::id()));
        provision_dump(&d, 1000).unwrap();
        let (seq, db) = load_dump(&dump_path(&d, 1000)).unwrap();
        assert_eq!((seq, db.len()), (0, 1000));
        assert_eq!(db[&(NUMBER_BASE + 7)], route_of(7));
        std::fs::write(d.join("bad.bin"), [1u8; 20]).unwrap();
        assert!(load_dump(&d.join("bad.bin")).unwrap_err().to_string().contains("not a dump"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn state() -> State {
        State {
            db: HashMap::new(),
            applied: 0,
            log: vec![],
            log_file: None,
            have_state: false,
            ready: false,
            held: BTreeMap::new(),
            queue: VecDeque::new(),
            backlog: 0,
            gate: Watermark::new(10, 5),
            st: MemberStatus::default(),
        }
    }

    fn upd(seq: u64) -> Update {
        Update { seq, number: seq, route: seq * 10, remove: false }
    }

    #[test]
    fn updates_apply_in_fifo_order_once_the_state_is_there() {
        let mut s = state();
        s.take(upd(3)); // joining: held
        s.take(upd(1));
        assert_eq!(s.applied, 0);
        s.have_state = true;
        s.take(upd(2));
        assert_eq!(s.applied, 3);
        s.take(upd(2)); // a duplicate
        s.take(upd(5)); // a gap: held until 4 comes
        assert_eq!(s.applied, 3);
        s.take(upd(4));
        assert_eq!(s.applied, 5);
        assert_eq!(s.log.iter().map(|u| u.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(s.db[&4], 40);
    }
}
