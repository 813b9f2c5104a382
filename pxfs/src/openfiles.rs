//! The files a volume server holds open for nodes: by the number handed out at open, and per
//! file (its handle) how many opens each node has. The per-file index answers "does another
//! node have this file open" (exclusive tokens, on every open) and "is this file still open
//! anywhere" (dropping a removed file's tokens) without walking every open file.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

pub struct OpenFile {
    pub fd: Arc<OwnedFd>,
    pub node: u32,
    pub handle: Vec<u8>,
    /// Opened for writing through passthrough on the owner's node: writes that bypass the
    /// server while it is open.
    pub passthrough_writer: bool,
}

#[derive(Default)]
pub struct OpenFiles {
    by_fh: HashMap<u64, OpenFile>,
    /// Per file, opens per node; no entry without an open.
    by_file: HashMap<Vec<u8>, HashMap<u32, u32>>,
    /// Per file, its open passthrough writers; no entry without one.
    passthrough_writers: HashMap<Vec<u8>, u32>,
}

impl OpenFiles {
    pub fn insert(&mut self, fh: u64, f: OpenFile) {
        *self.by_file.entry(f.handle.clone()).or_default().entry(f.node).or_default() += 1;
        if f.passthrough_writer {
            *self.passthrough_writers.entry(f.handle.clone()).or_default() += 1;
        }
        self.by_fh.insert(fh, f);
    }

    pub fn len(&self) -> usize {
        self.by_fh.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_fh.is_empty()
    }

    pub fn get(&self, fh: u64) -> Option<&OpenFile> {
        self.by_fh.get(&fh)
    }

    /// Closes `fh`: the file, and whether that was its last open on any node.
    pub fn remove(&mut self, fh: u64) -> Option<(OpenFile, bool)> {
        let f = self.by_fh.remove(&fh)?;
        if f.passthrough_writer {
            self.passthrough_writer_gone(&f.handle);
        }
        let last = self.unindex(&f.handle, f.node);
        Some((f, last))
    }

    /// Closes every file `node` has open; how many.
    pub fn remove_node(&mut self, node: u32) -> usize {
        let before = self.by_fh.len();
        let gone: Vec<Vec<u8>> = self.by_fh.values().filter(|f| f.node == node && f.passthrough_writer).map(|f| f.handle.clone()).collect();
        for h in gone {
            self.passthrough_writer_gone(&h);
        }
        self.by_fh.retain(|_, f| f.node != node);
        self.by_file.retain(|_, nodes| {
            nodes.remove(&node);
            !nodes.is_empty()
        });
        before - self.by_fh.len()
    }

    /// Whether a node other than `node` has `file` open.
    pub fn open_elsewhere(&self, file: &[u8], node: u32) -> bool {
        self.by_file.get(file).is_some_and(|nodes| nodes.keys().any(|n| *n != node))
    }

    /// Whether `file` is open for writing through passthrough (its data and attributes
    /// change without the server seeing it).
    pub fn written_through_passthrough(&self, file: &[u8]) -> bool {
        self.passthrough_writers.contains_key(file)
    }

    fn passthrough_writer_gone(&mut self, file: &[u8]) {
        if let Some(n) = self.passthrough_writers.get_mut(file) {
            *n -= 1;
            if *n == 0 {
                self.passthrough_writers.remove(file);
            }
        }
    }

    pub fn is_open(&self, file: &[u8]) -> bool {
        self.by_file.contains_key(file)
    }

    /// One open of `file` by `node` fewer; whether it was the file's last.
    fn unindex(&mut self, file: &[u8], node: u32) -> bool {
        let Some(nodes) = self.by_file.get_mut(file) else { return true };
        if let Some(c) = nodes.get_mut(&node) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                nodes.remove(&node);
            }
        }
        if nodes.is_empty() {
            self.by_file.remove(file);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> Arc<OwnedFd> {
        Arc::new(std::fs::File::open("/dev/null").unwrap().into())
    }

    fn open(t: &mut OpenFiles, fh: u64, node: u32, file: &[u8]) {
        t.insert(fh, OpenFile { fd: fd(), node, handle: file.to_vec(), passthrough_writer: false });
    }

    #[test]
    fn the_index_follows_opens_and_closes() {
        let mut t = OpenFiles::default();
        open(&mut t, 1, 1, b"a");
        open(&mut t, 2, 1, b"a");
        open(&mut t, 3, 2, b"a");
        open(&mut t, 4, 2, b"b");
        assert!(t.open_elsewhere(b"a", 1) && t.open_elsewhere(b"a", 2));
        assert!(!t.open_elsewhere(b"b", 2) && t.open_elsewhere(b"b", 1));
        assert!(!t.remove(3).unwrap().1, "node 1 still has a open twice");
        assert!(!t.open_elsewhere(b"a", 1));
        assert!(!t.remove(1).unwrap().1);
        assert!(t.remove(2).unwrap().1, "the last open of a");
        assert!(!t.is_open(b"a") && t.is_open(b"b"));
        assert!(t.remove(2).is_none());
        open(&mut t, 5, 3, b"b");
        assert_eq!(t.remove_node(2), 1);
        assert!(t.is_open(b"b") && !t.open_elsewhere(b"b", 3));
        assert_eq!(t.remove_node(3), 1);
        assert!(!t.is_open(b"b"));
        assert!(t.by_file.is_empty() && t.by_fh.is_empty());
    }

    #[test]
    fn a_file_is_written_through_passthrough_while_a_writer_has_it_open() {
        let mut t = OpenFiles::default();
        let writer = |fh| OpenFile { fd: fd(), node: 2, handle: b"a".to_vec(), passthrough_writer: fh != 3 };
        t.insert(1, writer(1));
        t.insert(2, writer(2));
        t.insert(3, writer(3));
        assert!(t.written_through_passthrough(b"a") && !t.written_through_passthrough(b"b"));
        t.remove(1);
        assert!(t.written_through_passthrough(b"a"), "one writer left");
        t.remove(2);
        assert!(!t.written_through_passthrough(b"a"), "a reader is not a writer");
        t.insert(4, writer(4));
        assert_eq!(t.remove_node(2), 2);
        assert!(!t.written_through_passthrough(b"a") && t.passthrough_writers.is_empty());
    }
}
