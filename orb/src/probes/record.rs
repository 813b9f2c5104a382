//! The trace record: the bytes a probe hands to a recorder.
//!
//! The `ssi:records` probe passes a bundle of records built here (back to back, each with its
//! length in its header); the BPF recorder copies bundles into its ring buffer as they are,
//! and the in-process recorder appends the same records to its file. So both kinds of trace
//! have one format, documented in `docs/trace-format.md` and decoded by `decode`.
//!
//! All fields are little endian, at fixed offsets. Header (24 bytes):
//! `u16 kind | u16 ndesc | u32 len | u32 pid | u32 node | u64 ts` — `len` is the whole
//! record's length, `node` the node that emitted it, `ts` CLOCK_MONOTONIC nanoseconds.

/// Records (and bundles) longer than this are split (the BPF program copies at most this).
pub const MAX_RECORD: usize = 16 << 10;
pub const HEADER_LEN: usize = 24;
/// A transport batch record: header, then `src dst nmsgs first bytes`, then descriptors.
pub const BATCH_FIXED: usize = HEADER_LEN + 24;
pub const DESC_LEN: usize = 24;
/// Descriptors per batch record, so that a record stays under `MAX_RECORD`.
pub const MAX_DESCS: usize = (MAX_RECORD - BATCH_FIXED) / DESC_LEN;

/// Record kinds.
pub mod kind {
    /// One transport write: the batch's messages, each with its chain (`ts`: handed to the transport).
    pub const BATCH_OUT: u16 = 1;
    /// One transport read (`ts`: received by the transport, before any message is handled).
    pub const BATCH_IN: u16 = 2;
    /// A two-way invocation completed at its caller (`ts`: completion).
    pub const RR_CLIENT: u16 = 3;
    /// A two-way invocation served (`ts`: reply prepared and queued).
    pub const RR_SERVER: u16 = 4;
}

/// A message as a batch record describes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgDesc {
    pub req_id: u64,
    /// Buffer lengths: ORB header, payload, object protocol (0 when absent).
    pub len: [u32; 3],
    /// Wire kind: 1 request, 2 one-way, 3 reply, 4 exception, 5 error, 6/7 handshake.
    pub kind: u8,
    pub nbufs: u8,
}

/// This process's pid, read once: `getpid` is a syscall, and every record carries it.
fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Builds records into a reusable buffer.
pub struct Builder<'a>(pub &'a mut Vec<u8>);

impl Builder<'_> {
    pub fn header(&mut self, kind: u16, ndesc: u16, node: u32, ts: u64) {
        self.0.clear();
        self.0.extend_from_slice(&kind.to_le_bytes());
        self.0.extend_from_slice(&ndesc.to_le_bytes());
        self.0.extend_from_slice(&0u32.to_le_bytes()); // len, set by `finish`
        self.0.extend_from_slice(&pid().to_le_bytes());
        self.0.extend_from_slice(&node.to_le_bytes());
        self.0.extend_from_slice(&ts.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn desc(&mut self, d: &MsgDesc) {
        self.u64(d.req_id);
        for l in d.len {
            self.u32(l);
        }
        self.0.extend_from_slice(&[d.kind, d.nbufs, 0, 0]);
    }
    fn rr_head(&mut self, req_id: u64, src: u32, dst: u32, method: u32, ok: bool) {
        self.u64(req_id);
        self.u32(src);
        self.u32(dst);
        self.u32(method);
        self.u32(ok as u32);
    }
    /// Writes the length into the header; returns the record.
    pub fn finish(&mut self) -> &[u8] {
        let len = self.0.len() as u32;
        self.0[4..8].copy_from_slice(&len.to_le_bytes());
        self.0
    }
}

/// What a batch record says besides its message descriptors.
#[derive(Clone, Copy, Debug)]
pub struct BatchHead {
    /// `kind::BATCH_OUT` or `kind::BATCH_IN`.
    pub kind: u16,
    pub node: u32,
    pub ts: u64,
    pub src: u32,
    pub dst: u32,
    /// Messages in the whole batch (a record carries at most `MAX_DESCS` of them).
    pub nmsgs: u32,
    /// Index in the batch of this record's first descriptor.
    pub first: u32,
    pub bytes: u64,
}

/// A batch record: the header, the fixed part, then `descs`.
pub fn batch(b: &mut Builder, h: &BatchHead, descs: &[MsgDesc]) {
    b.header(h.kind, descs.len() as u16, h.node, h.ts);
    b.u32(h.src);
    b.u32(h.dst);
    b.u32(h.nmsgs);
    b.u32(h.first);
    b.u64(h.bytes);
    for d in descs {
        b.desc(d);
    }
}

// A record of MAX_DESCS descriptors fits in one probe record.
const _: () = assert!(BATCH_FIXED + MAX_DESCS * DESC_LEN <= MAX_RECORD);

/// `req_id src dst method ok t_start t_prepared` — ts is completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrClient {
    pub req_id: u64,
    pub src: u32,
    pub dst: u32,
    pub method: u32,
    pub ok: bool,
    pub t_start: u64,
    pub t_prepared: u64,
}

pub fn rr_client(b: &mut Builder, ts: u64, r: &RrClient) {
    b.header(kind::RR_CLIENT, 0, r.src, ts);
    b.rr_head(r.req_id, r.src, r.dst, r.method, r.ok);
    b.u64(r.t_start);
    b.u64(r.t_prepared);
}

/// `req_id src dst method ok t_dispatch t_start t_end` — ts is the reply prepared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrServer {
    pub req_id: u64,
    pub src: u32,
    pub dst: u32,
    pub method: u32,
    pub ok: bool,
    pub t_dispatch: u64,
    pub t_start: u64,
    pub t_end: u64,
}

pub fn rr_server(b: &mut Builder, ts: u64, r: &RrServer) {
    b.header(kind::RR_SERVER, 0, r.dst, ts);
    b.rr_head(r.req_id, r.src, r.dst, r.method, r.ok);
    b.u64(r.t_dispatch);
    b.u64(r.t_start);
    b.u64(r.t_end);
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Batch(Batch),
    /// With its completion time.
    RrClient(u64, RrClient),
    /// With the time its reply was queued.
    RrServer(u64, RrServer),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Sent (true) or received.
    pub out: bool,
    pub node: u32,
    pub pid: u32,
    pub ts: u64,
    pub src: u32,
    pub dst: u32,
    /// Messages in the whole batch; `first` is this record's first message's index in it.
    pub nmsgs: u32,
    pub first: u32,
    pub bytes: u64,
    pub descs: Vec<MsgDesc>,
}

/// Why a trace record does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record truncated at byte {0}")]
    Truncated(usize),
    #[error("record says {says} bytes, has {has}")]
    Length { says: usize, has: usize },
    #[error("batch record of {len} bytes for {ndesc} descriptors")]
    Descriptors { len: usize, ndesc: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
}

/// Reads little-endian fields in order; running out is an error, never a panic.
struct Cursor<'a>(&'a [u8], usize);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.0.get(self.1..self.1 + N).ok_or(DecodeError::Truncated(self.1))?;
        self.1 += N;
        Ok(b.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    /// `req_id src dst method ok`, the start of both request-response records.
    fn rr_head(&mut self) -> Result<(u64, u32, u32, u32, bool), DecodeError> {
        Ok((self.u64()?, self.u32()?, self.u32()?, self.u32()?, self.u32()? != 0))
    }
}

/// Decodes one record (as `Builder` made it); a malformed one is an error with the reason.
pub fn decode(rec: &[u8]) -> Result<Event, DecodeError> {
    let mut c = Cursor(rec, 0);
    let k = u16::from_le_bytes(c.take()?);
    let ndesc = u16::from_le_bytes(c.take()?) as usize;
    let len = c.u32()? as usize;
    if len != rec.len() {
        return Err(DecodeError::Length { says: len, has: rec.len() });
    }
    let (pid, node, ts) = (c.u32()?, c.u32()?, c.u64()?);
    Ok(match k {
        kind::BATCH_OUT | kind::BATCH_IN => {
            let (src, dst, nmsgs, first, bytes) = (c.u32()?, c.u32()?, c.u32()?, c.u32()?, c.u64()?);
            if rec.len() != BATCH_FIXED + ndesc * DESC_LEN {
                return Err(DecodeError::Descriptors { len: rec.len(), ndesc });
            }
            let mut descs = Vec::with_capacity(ndesc);
            for _ in 0..ndesc {
                let req_id = c.u64()?;
                let len = [c.u32()?, c.u32()?, c.u32()?];
                let (kind, nbufs) = (c.u8()?, c.u8()?);
                c.take::<2>()?;
                descs.push(MsgDesc { req_id, len, kind, nbufs });
            }
            Event::Batch(Batch { out: k == kind::BATCH_OUT, node, pid, ts, src, dst, nmsgs, first, bytes, descs })
        }
        kind::RR_CLIENT => {
            let (req_id, src, dst, method, ok) = c.rr_head()?;
            Event::RrClient(ts, RrClient { req_id, src, dst, method, ok, t_start: c.u64()?, t_prepared: c.u64()? })
        }
        kind::RR_SERVER => {
            let (req_id, src, dst, method, ok) = c.rr_head()?;
            Event::RrServer(ts, RrServer { req_id, src, dst, method, ok, t_dispatch: c.u64()?, t_start: c.u64()?, t_end: c.u64()? })
        }
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_documented_offsets() {
        let mut v = Vec::new();
        let mut b = Builder(&mut v);
        let d = MsgDesc { req_id: 7, len: [20, 128, 0], kind: 1, nbufs: 2 };
        let h = BatchHead { kind: kind::BATCH_OUT, node: 1, ts: 99, src: 1, dst: 2, nmsgs: 3, first: 0, bytes: 500 };
        batch(&mut b, &h, &[d, d]);
        let r = b.finish().to_vec();
        assert_eq!(r.len(), BATCH_FIXED + 2 * DESC_LEN);
        assert_eq!(u32::from_le_bytes(r[4..8].try_into().unwrap()) as usize, r.len());
        assert_eq!(u64::from_le_bytes(r[16..24].try_into().unwrap()), 99);
        assert_eq!(u64::from_le_bytes(r[BATCH_FIXED..BATCH_FIXED + 8].try_into().unwrap()), 7);
        match decode(&r).unwrap() {
            Event::Batch(b) => assert_eq!((b.out, b.ts, b.src, b.dst, b.nmsgs, b.bytes, b.descs), (true, 99, 1, 2, 3, 500, vec![d, d])),
            e => panic!("{e:?}"),
        }
        for cut in 0..r.len() {
            assert!(decode(&r[..cut]).is_err(), "a truncated record is refused");
        }
        let mut v = Vec::new();
        let mut b = Builder(&mut v);
        let rs = RrServer { req_id: 1, src: 1, dst: 2, method: 3, ok: true, t_dispatch: 1, t_start: 2, t_end: 3 };
        rr_server(&mut b, 5, &rs);
        assert_eq!(b.finish().len(), HEADER_LEN + 8 + 16 + 24);
        assert_eq!(decode(b.finish()), Ok(Event::RrServer(5, rs)));
        let mut v = Vec::new();
        let mut b = Builder(&mut v);
        let rc = RrClient { req_id: 1, src: 1, dst: 2, method: 3, ok: true, t_start: 1, t_prepared: 2 };
        rr_client(&mut b, 5, &rc);
        assert_eq!(b.finish().len(), HEADER_LEN + 8 + 16 + 16);
        assert_eq!(decode(b.finish()), Ok(Event::RrClient(5, rc)));
    }
}
