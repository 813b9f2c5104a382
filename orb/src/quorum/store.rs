//! The quorum's Raft log: in memory, where raft-rs reads it ([`LogStorage`]), and on disk.
//!
//! Raft is only safe if a node never forgets a vote or an acknowledged entry, also across a
//! crash: every `Ready` that changes the hard state or appends entries is written and
//! fsync'd before the messages that depend on it leave. The file is a sequence of records
//! `[kind u8][len u32 LE][protobuf]`: a hard state (the last one wins), an entry (an entry
//! at index i drops every entry from i on: Raft overwrites a conflicting suffix), or a
//! snapshot (the state machine at an index, which drops every entry up to it). A torn last
//! record (a crash mid-write) is ignored.
//!
//! Compaction: once `compact_after` entries are applied beyond the last snapshot, the state
//! machine is snapshotted at the applied index and the log before it dropped, so memory,
//! the file and a restart's replay stay bounded however many views a cluster goes through.
//! A follower that needs an entry no longer kept gets the snapshot instead (raft-rs asks
//! [`LogStorage::snapshot`]). The file is rewritten whole when it has grown to four times
//! what it holds.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};

const HARD_STATE: u8 = 1;
const ENTRY: u8 = 2;
const SNAPSHOT: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("quorum log {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("quorum log {path}: record {at}: {why}")]
    Corrupt { path: PathBuf, at: usize, why: String },
    /// Raft refused the state it was given (a log that does not fit its hard state).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
}

/// What the log holds: the last snapshot, the entries after it, the hard state and the
/// voters as of the last applied voter change.
#[derive(Default)]
struct Core {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index 0 (empty) until the first compaction.
    snapshot: Snapshot,
    /// The entries after the snapshot, consecutive.
    entries: Vec<Entry>,
    /// The state machine as of the last applied index: what a lagging follower is sent.
    applied: (u64, Vec<u8>),
}

impl Core {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_index(), |e| e.index)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snapshot_index() {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx < self.first_index() {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if idx > self.last_index() {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first_index()) as usize].term)
    }

    /// `entries` replace any from their first index on.
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        self.entries.retain(|e| e.index < first.index);
        self.entries.extend_from_slice(entries);
    }

    /// A snapshot of the state machine as of the last applied index, or the last one taken
    /// if nothing was applied since. The newest, since a snapshot that predates the voter
    /// change adding a follower would be refused by it (it is not in its voters).
    fn current_snapshot(&self) -> raft::Result<Snapshot> {
        let (index, data) = &self.applied;
        if *index <= self.snapshot_index() {
            return Ok(self.snapshot.clone());
        }
        let mut snap = Snapshot::default();
        snap.set_data(data.clone().into());
        let meta = snap.mut_metadata();
        meta.index = *index;
        meta.term = self.term(*index)?;
        meta.set_conf_state(self.conf_state.clone());
        Ok(snap)
    }

    fn install(&mut self, snap: &Snapshot) {
        let meta = snap.get_metadata();
        // Entries past the snapshot stay only if they continue it (the same term at its index).
        let keep = self.term(meta.index).ok() == Some(meta.term);
        self.entries.retain(|e| keep && e.index > meta.index);
        self.conf_state = meta.get_conf_state().clone();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.snapshot = snap.clone();
        if self.applied.0 < meta.index {
            self.applied = (meta.index, snap.data.to_vec());
        }
    }
}

/// raft-rs's view of the log: shares the memory of the node's [`DurableLog`].
#[derive(Clone)]
pub(crate) struct LogStorage(Arc<RwLock<Core>>);

impl raft::Storage for LogStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.0.read();
        Ok(RaftState { hard_state: c.hard_state.clone(), conf_state: c.conf_state.clone() })
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        let c = self.0.read();
        if low < c.first_index() {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if high > c.last_index() + 1 || low > high {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        let (lo, hi) = ((low - c.first_index()) as usize, (high - c.first_index()) as usize);
        let mut out = Vec::new();
        let (mut size, max) = (0u64, max_size.into().unwrap_or(u64::MAX));
        for e in &c.entries[lo..hi] {
            size += e.compute_size() as u64;
            // At least one entry, however large, as raft-rs expects.
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.0.read().term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.0.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.0.read().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let snap = self.0.read().current_snapshot()?;
        if snap.get_metadata().index < request_index {
            return Err(raft::Error::Store(RaftStorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(snap)
    }
}

/// Where the log sits in its indexes: for `ssi status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogSpan {
    pub snapshot: u64,
    pub last: u64,
}

/// The Raft log of one node: in memory and, unless the node is ephemeral, on disk.
pub(crate) struct DurableLog {
    path: Option<PathBuf>,
    file: Option<File>,
    /// Bytes the file holds.
    written: u64,
    core: Arc<RwLock<Core>>,
}

impl DurableLog {
    /// Opens (or creates) the log in `dir`, or an in-memory one for `None`. `voters` is the
    /// configuration a brand-new cluster starts with; a replayed log starts from its
    /// snapshot's voters, and the voter changes after it are applied again by Raft when it
    /// delivers the committed entries.
    pub(crate) fn open(dir: Option<&Path>, voters: &[u32]) -> Result<(DurableLog, LogStorage), StoreError> {
        let mut core =
            Core { conf_state: ConfState::from((voters.iter().map(|v| *v as u64).collect::<Vec<_>>(), vec![])), ..Default::default() };
        let path = dir.map(|d| d.join("quorum.log"));
        if let Some(path) = &path {
            let io = |source| StoreError::Io { path: path.clone(), source };
            let mut bytes = Vec::new();
            match File::open(path) {
                Ok(mut f) => {
                    f.read_to_end(&mut bytes).map_err(io)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
            replay(path, &bytes, &mut core)?;
        }
        let core = Arc::new(RwLock::new(core));
        let mut log = DurableLog { path, file: None, written: 0, core: core.clone() };
        log.rewrite()?;
        Ok((log, LogStorage(core)))
    }

    /// The state machine as of the last snapshot (empty bytes before the first).
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.core.read().snapshot.clone()
    }

    pub(crate) fn span(&self) -> LogSpan {
        let c = self.core.read();
        LogSpan { snapshot: c.snapshot_index(), last: c.last_index() }
    }

    /// Makes `hs` and `entries` durable (entries replace any from their first index on).
    pub(crate) fn persist(&mut self, hs: Option<&HardState>, entries: &[Entry]) -> Result<(), StoreError> {
        {
            let mut c = self.core.write();
            c.append(entries);
            if let Some(hs) = hs {
                c.hard_state = hs.clone();
            }
        }
        if self.path.is_none() || (hs.is_none() && entries.is_empty()) {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in entries {
            record(&mut buf, ENTRY, &e.write_to_bytes().expect("encoding an entry"));
        }
        if let Some(hs) = hs {
            record(&mut buf, HARD_STATE, &hs.write_to_bytes().expect("encoding a hard state"));
        }
        self.append_or_rewrite(&buf)
    }

    /// The commit index moved without a new hard state to persist (raft-rs's light ready):
    /// kept in memory; the next hard state carries it to disk.
    pub(crate) fn set_commit(&mut self, commit: u64) {
        self.core.write().hard_state.commit = commit;
    }

    /// The voters changed (a voter change was applied).
    pub(crate) fn set_conf_state(&mut self, cs: ConfState) {
        self.core.write().conf_state = cs;
    }

    /// A snapshot from the leader: the log restarts from it.
    pub(crate) fn install(&mut self, snap: &Snapshot) -> Result<(), StoreError> {
        self.core.write().install(snap);
        self.rewrite()
    }

    /// Records the state machine (`data`) as of `applied` (with the voters as last set),
    /// and once `compact_after` entries are applied beyond the last snapshot, makes it the
    /// snapshot and drops the log up to it. Returns whether it compacted.
    pub(crate) fn applied(&mut self, applied: u64, data: Vec<u8>, compact_after: u64) -> Result<bool, StoreError> {
        {
            let mut c = self.core.write();
            if applied < c.snapshot_index() || applied > c.last_index() {
                return Ok(false);
            }
            c.applied = (applied, data);
            if applied < c.snapshot_index() + compact_after.max(1) {
                return Ok(false);
            }
            let snap = c.current_snapshot()?;
            c.entries.retain(|e| e.index > applied);
            c.snapshot = snap;
        }
        self.rewrite()?;
        Ok(true)
    }

    fn append_or_rewrite(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        let live = self.live_size();
        if self.written + buf.len() as u64 > 4 * live.max(4096) {
            return self.rewrite();
        }
        let path = self.path.clone().expect("a durable log");
        let f = self.file.as_mut().expect("an open log file");
        f.write_all(buf).and_then(|_| f.sync_data()).map_err(|source| StoreError::Io { path, source })?;
        self.written += buf.len() as u64;
        Ok(())
    }

    fn live_size(&self) -> u64 {
        let c = self.core.read();
        let e: usize = c.entries.iter().map(|e| 5 + e.compute_size() as usize).sum();
        (e + 10 + c.hard_state.compute_size() as usize + c.snapshot.compute_size() as usize) as u64
    }

    /// Writes what the log holds to a new file and renames it over the old one.
    fn rewrite(&mut self) -> Result<(), StoreError> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let io = |source| StoreError::Io { path: path.clone(), source };
        let mut buf = Vec::new();
        {
            let c = self.core.read();
            if !c.snapshot.is_empty() {
                record(&mut buf, SNAPSHOT, &c.snapshot.write_to_bytes().expect("encoding a snapshot"));
            }
            for e in &c.entries {
                record(&mut buf, ENTRY, &e.write_to_bytes().expect("encoding an entry"));
            }
            record(&mut buf, HARD_STATE, &c.hard_state.write_to_bytes().expect("encoding a hard state"));
        }
        let tmp = path.with_extension("log.new");
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&buf).and_then(|_| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.file = Some(OpenOptions::new().append(true).open(&path).map_err(io)?);
        self.written = buf.len() as u64;
        Ok(())
    }
}

fn record(buf: &mut Vec<u8>, kind: u8, body: &[u8]) {
    buf.push(kind);
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(body);
}

fn replay(path: &Path, mut bytes: &[u8], core: &mut Core) -> Result<(), StoreError> {
    let corrupt = |at: usize, why: String| StoreError::Corrupt { path: path.to_path_buf(), at, why };
    let mut at = 0;
    while bytes.len() >= 5 {
        let kind = bytes[0];
        let len = u32::from_le_bytes(bytes[1..5].try_into().expect("four bytes")) as usize;
        if bytes.len() < 5 + len {
            break; // a torn last record: it was never acknowledged
        }
        let body = &bytes[5..5 + len];
        match kind {
            HARD_STATE => core.hard_state = HardState::parse_from_bytes(body).map_err(|e| corrupt(at, e.to_string()))?,
            ENTRY => {
                let e = Entry::parse_from_bytes(body).map_err(|e| corrupt(at, e.to_string()))?;
                if e.index < core.first_index() || e.index > core.last_index() + 1 {
                    return Err(corrupt(
                        at,
                        format!("entry {} does not follow the log ({}..{})", e.index, core.first_index(), core.last_index()),
                    ));
                }
                core.append(std::slice::from_ref(&e));
            }
            SNAPSHOT => {
                let s = Snapshot::parse_from_bytes(body).map_err(|e| corrupt(at, e.to_string()))?;
                if s.get_metadata().index < core.snapshot_index() {
                    return Err(corrupt(at, format!("snapshot at {} older than the one before it", s.get_metadata().index)));
                }
                core.install(&s);
            }
            k => return Err(corrupt(at, format!("unknown record kind {k}"))),
        }
        bytes = &bytes[5 + len..];
        at += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8; 10].into(), ..Default::default() }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ssi-quorum-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_reopened_log_has_what_was_persisted_with_conflicts_overwritten() {
        let dir = temp_dir("reopen");
        {
            let (mut log, _) = DurableLog::open(Some(&dir), &[1, 2, 3]).unwrap();
            let hs = HardState { term: 2, vote: 3, ..Default::default() };
            log.persist(Some(&hs), &[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
            // A new leader overwrites index 3 on: the old 3 must not come back.
            log.persist(None, &[entry(3, 2), entry(4, 2)]).unwrap();
            for i in 5..300 {
                log.persist(None, &[entry(i, 2)]).unwrap();
            }
        }
        // A torn record after the last good one is ignored.
        let mut f = OpenOptions::new().append(true).open(dir.join("quorum.log")).unwrap();
        f.write_all(&[ENTRY, 200, 0, 0, 0, 1, 2]).unwrap();
        let (log, storage) = DurableLog::open(Some(&dir), &[1, 2, 3]).unwrap();
        assert_eq!(log.span(), LogSpan { snapshot: 0, last: 299 });
        assert_eq!(storage.term(3).unwrap(), 2, "the overwritten entry stays overwritten");
        assert_eq!(storage.initial_state().unwrap().hard_state.vote, 3);
        assert_eq!(storage.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);
        // Garbage in the middle is refused with where it is.
        std::fs::write(dir.join("quorum.log"), [9u8, 1, 0, 0, 0, 0]).unwrap();
        let err = DurableLog::open(Some(&dir), &[1]).err().unwrap();
        assert!(err.to_string().contains("unknown record kind 9"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_keeps_the_state_drops_the_log_and_survives_a_restart() {
        let dir = temp_dir("compact");
        {
            let (mut log, storage) = DurableLog::open(Some(&dir), &[1, 2, 3]).unwrap();
            let hs = HardState { term: 1, vote: 1, commit: 10, ..Default::default() };
            log.persist(Some(&hs), &(1..=12).map(|i| entry(i, 1)).collect::<Vec<_>>()).unwrap();
            log.set_conf_state(ConfState::from((vec![1, 2], vec![])));
            assert!(!log.applied(9, b"state at 9".to_vec(), 20).unwrap(), "not before `compact_after` entries");
            let s = storage.snapshot(0, 2).unwrap();
            assert_eq!((s.get_metadata().index, &s.data[..]), (9, &b"state at 9"[..]), "a follower gets the applied state");
            assert!(log.applied(10, b"state at 10".to_vec(), 8).unwrap());
            assert_eq!(log.span(), LogSpan { snapshot: 10, last: 12 });
            assert_eq!(storage.first_index().unwrap(), 11);
            assert_eq!(storage.term(10).unwrap(), 1, "the snapshot's index keeps its term");
            assert!(matches!(
                storage.entries(5, 12, None, GetEntriesContext::empty(false)),
                Err(raft::Error::Store(RaftStorageError::Compacted))
            ));
            assert_eq!(storage.entries(11, 13, None, GetEntriesContext::empty(false)).unwrap().len(), 2);
            let s = storage.snapshot(0, 2).unwrap();
            assert_eq!((s.get_metadata().index, &s.data[..]), (10, &b"state at 10"[..]));
            assert_eq!(s.get_metadata().get_conf_state().voters, vec![1, 2]);
            assert!(storage.snapshot(11, 2).is_err(), "no snapshot newer than the one taken");
            log.persist(None, &[entry(13, 1)]).unwrap();
        }
        let (log, storage) = DurableLog::open(Some(&dir), &[1, 2, 3]).unwrap();
        assert_eq!(log.span(), LogSpan { snapshot: 10, last: 13 });
        assert_eq!(&log.snapshot().data[..], b"state at 10");
        let st = storage.initial_state().unwrap();
        assert_eq!((st.conf_state.voters, st.hard_state.commit), (vec![1, 2], 10), "voters from the snapshot, not the start");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_installed_snapshot_replaces_a_log_that_does_not_continue_it() {
        let (mut log, storage) = DurableLog::open(None, &[1, 2, 3]).unwrap();
        log.persist(None, &(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>()).unwrap();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 20;
        snap.mut_metadata().term = 3;
        snap.mut_metadata().set_conf_state(ConfState::from((vec![1, 2, 3, 4], vec![])));
        log.install(&snap).unwrap();
        assert_eq!(log.span(), LogSpan { snapshot: 20, last: 20 });
        assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (21, 20));
        let st = storage.initial_state().unwrap();
        assert_eq!((st.hard_state.commit, st.hard_state.term, st.conf_state.voters), (20, 3, vec![1, 2, 3, 4]));
    }
}
