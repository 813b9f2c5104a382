//! The quorum's durable Raft state: one append-only file of records, replayed at start.
//!
//! Raft is only safe if a node never forgets a vote or an acknowledged entry, also across a
//! crash: every `Ready` that changes the hard state or appends entries is written and
//! fsync'd before the messages that depend on it leave. Records are `[kind u8][len u32 LE]
//! [protobuf]`: a hard state (the last one wins) or an entry (an entry at index i drops
//! every entry from i on: Raft overwrites a conflicting suffix). A torn last record (a crash
//! mid-write) is ignored. The log is not compacted: it holds one entry per view change and
//! per voter change, a few hundred bytes each; the file is rewritten whole when it has
//! grown to four times what it holds.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState};
use raft::storage::MemStorage;

const HARD_STATE: u8 = 1;
const ENTRY: u8 = 2;

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

/// The Raft state of one node: in memory (what raft-rs reads) and, unless the node is
/// ephemeral, on disk.
pub(crate) struct DurableLog {
    path: Option<PathBuf>,
    file: Option<File>,
    /// Bytes the file holds and bytes its live records would take.
    written: u64,
    live: u64,
    hard_state: HardState,
    entries: Vec<Entry>,
}

impl DurableLog {
    /// Opens (or creates) the log in `dir`, or an in-memory one for `None`. `voters` is the
    /// configuration a brand-new cluster starts with; a replayed log's voter changes are
    /// applied again by Raft when it delivers the committed entries.
    pub(crate) fn open(dir: Option<&Path>, voters: &[u32]) -> Result<(DurableLog, MemStorage), StoreError> {
        let cs = ConfState::from((voters.iter().map(|v| *v as u64).collect::<Vec<_>>(), vec![]));
        let storage = MemStorage::new_with_conf_state(cs);
        let Some(dir) = dir else {
            let log = DurableLog { path: None, file: None, written: 0, live: 0, hard_state: HardState::default(), entries: vec![] };
            return Ok((log, storage));
        };
        let path = dir.join("quorum.log");
        let io = |source| StoreError::Io { path: path.clone(), source };
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let (hard_state, entries) = replay(&path, &bytes)?;
        {
            let mut w = storage.wl();
            w.append(&entries).map_err(|e| StoreError::Corrupt { path: path.clone(), at: 0, why: e.to_string() })?;
            w.set_hardstate(hard_state.clone());
        }
        let mut log = DurableLog { path: Some(path), file: None, written: 0, live: 0, hard_state, entries };
        log.rewrite()?;
        Ok((log, storage))
    }

    /// Makes `hs` and `entries` durable (entries replace any from their first index on).
    pub(crate) fn persist(&mut self, hs: Option<&HardState>, entries: &[Entry]) -> Result<(), StoreError> {
        if let Some(first) = entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hs {
            self.hard_state = hs.clone();
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
        self.live = self.live_size();
        if self.written + buf.len() as u64 > 4 * self.live.max(4096) {
            return self.rewrite();
        }
        let path = self.path.clone().expect("a durable log");
        let f = self.file.as_mut().expect("an open log file");
        f.write_all(&buf).and_then(|_| f.sync_data()).map_err(|source| StoreError::Io { path, source })?;
        self.written += buf.len() as u64;
        Ok(())
    }

    fn live_size(&self) -> u64 {
        let e: usize = self.entries.iter().map(|e| 5 + e.compute_size() as usize).sum();
        (e + 5 + self.hard_state.compute_size() as usize) as u64
    }

    /// Writes what the log holds to a new file and renames it over the old one.
    fn rewrite(&mut self) -> Result<(), StoreError> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let io = |source| StoreError::Io { path: path.clone(), source };
        let mut buf = Vec::new();
        for e in &self.entries {
            record(&mut buf, ENTRY, &e.write_to_bytes().expect("encoding an entry"));
        }
        record(&mut buf, HARD_STATE, &self.hard_state.write_to_bytes().expect("encoding a hard state"));
        let tmp = path.with_extension("log.new");
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&buf).and_then(|_| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.file = Some(OpenOptions::new().append(true).open(&path).map_err(io)?);
        self.written = buf.len() as u64;
        self.live = self.written;
        Ok(())
    }
}

fn record(buf: &mut Vec<u8>, kind: u8, body: &[u8]) {
    buf.push(kind);
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(body);
}

fn replay(path: &Path, mut bytes: &[u8]) -> Result<(HardState, Vec<Entry>), StoreError> {
    let corrupt = |at: usize, why: String| StoreError::Corrupt { path: path.to_path_buf(), at, why };
    let mut hs = HardState::default();
    let mut entries: Vec<Entry> = Vec::new();
    let mut at = 0;
    while bytes.len() >= 5 {
        let kind = bytes[0];
        let len = u32::from_le_bytes(bytes[1..5].try_into().expect("four bytes")) as usize;
        if bytes.len() < 5 + len {
            break; // a torn last record: it was never acknowledged
        }
        let body = &bytes[5..5 + len];
        match kind {
            HARD_STATE => hs = HardState::parse_from_bytes(body).map_err(|e| corrupt(at, e.to_string()))?,
            ENTRY => {
                let e = Entry::parse_from_bytes(body).map_err(|e| corrupt(at, e.to_string()))?;
                entries.retain(|x| x.index < e.index);
                if entries.last().is_some_and(|l| l.index + 1 != e.index) || (entries.is_empty() && e.index != 1) {
                    return Err(corrupt(at, format!("entry {} does not follow the log", e.index)));
                }
                entries.push(e);
            }
            k => return Err(corrupt(at, format!("unknown record kind {k}"))),
        }
        bytes = &bytes[5 + len..];
        at += 1;
    }
    Ok((hs, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8; 10].into(), ..Default::default() }
    }

    #[test]
    fn a_reopened_log_has_what_was_persisted_with_conflicts_overwritten() {
        let dir = std::env::temp_dir().join(format!("ssi-quorum-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
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
        assert_eq!((log.hard_state.term, log.hard_state.vote), (2, 3));
        assert_eq!(log.entries.len(), 299);
        assert_eq!(log.entries[2].term, 2, "the overwritten entry stays overwritten");
        use raft::Storage;
        assert_eq!(storage.last_index().unwrap(), 299);
        assert_eq!(storage.initial_state().unwrap().hard_state.vote, 3);
        // Garbage in the middle is refused with where it is.
        std::fs::write(dir.join("quorum.log"), [9u8, 1, 0, 0, 0, 0]).unwrap();
        let err = DurableLog::open(Some(&dir), &[1]).err().unwrap();
        assert!(err.to_string().contains("unknown record kind 9"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
