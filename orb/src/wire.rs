//! Messages on the wire: buffer chains and batches.
//!
//! A message is a chain of up to three buffers, as in Solaris MC (the study's Table 6.1):
//! `[ORB header][payload][object protocol]`. The header is a prost `Header`; the payload is
//! the marshalled arguments or result; the optional third buffer lists the object references
//! the message passes (`ObjProto`). The chain stays explicit (`Bytes` segments) until the
//! transport encodes it, so it is traced as it is and never copied into one buffer first.
//!
//! One gRPC stream message carries a *batch*: every ORB message queued for that peer at the
//! moment the transport asked for more. On the wire each message in a batch is
//! `u32 header_len | u32 payload_len | u32 proto_len | header | payload | proto` (little endian).

use bytes::{Buf, BufMut, Bytes};
use prost::Message as _;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::proto::Header;

/// Largest single ORB message accepted (header + payload + proto).
pub const MAX_MESSAGE: usize = 32 << 20;
/// Largest gRPC message (a batch) either side decodes.
pub const MAX_BATCH_DECODE: usize = 64 << 20;
/// A batch is closed once it holds this many bytes; the rest waits for the next write.
pub const BATCH_TARGET: usize = 256 << 10;
const PREFIX: usize = 12;

/// An outgoing message: the explicit buffer chain.
#[derive(Clone, Debug)]
pub struct WireMsg {
    pub header: Header,
    pub payload: Bytes,
    pub proto: Bytes,
}

impl WireMsg {
    /// Lengths of the chain's buffers: header, payload, proto.
    pub fn chain(&self) -> [usize; 3] {
        [self.header.encoded_len(), self.payload.len(), self.proto.len()]
    }
    pub fn encoded_len(&self) -> usize {
        let c = self.chain();
        PREFIX + c[0] + c[1] + c[2]
    }
}

/// Why a message of `encoded_len` bytes (`WireMsg::encoded_len`) may not be sent: over the
/// size every receiver refuses, it would make the peer drop the whole link as out of step.
pub fn size_error(encoded_len: usize) -> Option<String> {
    let len = encoded_len.saturating_sub(PREFIX);
    (len > MAX_MESSAGE).then(|| format!("a message of {len} bytes is over the ORB's {MAX_MESSAGE}-byte limit"))
}

/// Number of buffers in a chain: the header always, payload and proto when not empty.
pub fn nbufs(chain: &[usize; 3]) -> u32 {
    1 + (chain[1] > 0) as u32 + (chain[2] > 0) as u32
}

/// What travels in one gRPC stream message. Outgoing batches are encoded message by message
/// straight into the transport's buffer; incoming ones arrive as one `Bytes` and are split
/// without copying.
#[derive(Debug)]
pub enum Frames {
    Out(Vec<WireMsg>),
    /// Raw bytes: what was received, or (for tests of malformed input) what to send as is.
    In(Bytes),
}

/// An incoming message: the chain as received, header decoded.
#[derive(Clone, Debug)]
pub struct InMsg {
    pub header: Header,
    pub payload: Bytes,
    pub proto: Bytes,
    pub chain: [usize; 3],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated message prefix at byte {0}")]
    TruncatedPrefix(usize),
    #[error("message at byte {at} declares {len} bytes, only {left} left in the batch")]
    Truncated { at: usize, len: usize, left: usize },
    #[error("message at byte {at} is {len} bytes, over the {max}-byte limit")]
    TooLarge { at: usize, len: usize, max: usize },
    #[error("undecodable header at byte {at}: {why}")]
    BadHeader { at: usize, why: String },
}

/// Splits a received batch into messages. Stops at the first framing error: after that the
/// stream is out of step and cannot be trusted.
pub fn parse_batch(mut buf: Bytes) -> impl Iterator<Item = Result<InMsg, WireError>> {
    let mut at = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || buf.is_empty() {
            return None;
        }
        let r = parse_one(&mut buf, at);
        match &r {
            Ok(m) => at += PREFIX + m.chain[0] + m.chain[1] + m.chain[2],
            Err(_) => failed = true,
        }
        Some(r)
    })
}

fn parse_one(buf: &mut Bytes, at: usize) -> Result<InMsg, WireError> {
    if buf.len() < PREFIX {
        return Err(WireError::TruncatedPrefix(at));
    }
    let hl = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    let pl = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
    let xl = u32::from_le_bytes(buf[8..12].try_into().unwrap()) as usize;
    let len = hl.saturating_add(pl).saturating_add(xl);
    if len > MAX_MESSAGE {
        return Err(WireError::TooLarge { at, len, max: MAX_MESSAGE });
    }
    if buf.len() - PREFIX < len {
        return Err(WireError::Truncated { at, len, left: buf.len() - PREFIX });
    }
    buf.advance(PREFIX);
    let h = buf.split_to(hl);
    let payload = buf.split_to(pl);
    let proto = buf.split_to(xl);
    let header = Header::decode(h).map_err(|e| WireError::BadHeader { at, why: e.to_string() })?;
    Ok(InMsg { header, payload, proto, chain: [hl, pl, xl] })
}

/// Descriptors of a received batch's messages (for the trace probes): the header is not
/// decoded, only scanned for its kind and request id. Stops at the first framing error.
pub fn peek_batch(raw: &Bytes) -> impl Iterator<Item = crate::probes::record::MsgDesc> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let b = raw.get(at..)?;
        if b.len() < PREFIX {
            return None;
        }
        let l = [0, 4, 8].map(|o| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize);
        let len = l[0].checked_add(l[1])?.checked_add(l[2])?;
        if b.len() - PREFIX < len {
            return None;
        }
        let (kind, req_id) = scan_header(&b[PREFIX..PREFIX + l[0]]);
        at += PREFIX + len;
        Some(crate::probes::record::MsgDesc { req_id, len: l.map(|x| x as u32), kind, nbufs: nbufs(&l) as u8 })
    })
}

/// `Header.kind` (field 1) and `Header.request_id` (field 2) from an encoded header.
fn scan_header(mut h: &[u8]) -> (u8, u64) {
    let (mut kind, mut id) = (0u8, 0u64);
    while !h.is_empty() {
        let Ok(key) = prost::encoding::decode_varint(&mut h) else { break };
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let Ok(v) = prost::encoding::decode_varint(&mut h) else { break };
                match field {
                    1 => kind = v as u8,
                    2 => id = v,
                    _ => {}
                }
            }
            1 if h.len() >= 8 => h = &h[8..],
            5 if h.len() >= 4 => h = &h[4..],
            2 => {
                let Ok(n) = prost::encoding::decode_varint(&mut h) else { break };
                let Some(rest) = h.get(n as usize..) else { break };
                h = rest;
            }
            _ => break,
        }
        if field >= 2 {
            break;
        }
    }
    (kind, id)
}

/// Writes one message in batch framing.
pub fn encode_msg(m: &WireMsg, dst: &mut impl BufMut) {
    let hl = m.header.encoded_len();
    dst.put_u32_le(hl as u32);
    dst.put_u32_le(m.payload.len() as u32);
    dst.put_u32_le(m.proto.len() as u32);
    m.header.encode(dst).expect("BufMut grows");
    dst.put_slice(&m.payload);
    dst.put_slice(&m.proto);
}

/// tonic codec for the ORB stream: `Frames` both ways.
#[derive(Default, Clone, Copy)]
pub struct BatchCodec;

pub struct BatchEncoder;
pub struct BatchDecoder;

impl Codec for BatchCodec {
    type Encode = Frames;
    type Decode = Frames;
    type Encoder = BatchEncoder;
    type Decoder = BatchDecoder;
    fn encoder(&mut self) -> BatchEncoder {
        BatchEncoder
    }
    fn decoder(&mut self) -> BatchDecoder {
        BatchDecoder
    }
}

impl Encoder for BatchEncoder {
    type Item = Frames;
    type Error = Status;
    fn encode(&mut self, item: Frames, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Frames::Out(msgs) => {
                for m in &msgs {
                    encode_msg(m, dst);
                }
            }
            Frames::In(raw) => dst.put_slice(&raw),
        }
        Ok(())
    }
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(64 << 10, BATCH_TARGET)
    }
}

impl Decoder for BatchDecoder {
    type Item = Frames;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Frames>, Status> {
        let n = src.remaining();
        Ok(Some(Frames::In(src.copy_to_bytes(n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Kind;

    fn msg(id: u64, payload: &[u8], proto: &[u8]) -> WireMsg {
        WireMsg {
            header: Header { kind: Kind::Request as i32, request_id: id, ..Default::default() },
            payload: Bytes::copy_from_slice(payload),
            proto: Bytes::copy_from_slice(proto),
        }
    }

    #[test]
    fn batch_round_trip_keeps_chains() {
        let msgs = vec![msg(1, b"hello", b""), msg(2, b"", b""), msg(3, &[7u8; 5000], b"refs")];
        let mut buf = bytes::BytesMut::new();
        for m in &msgs {
            encode_msg(m, &mut buf);
        }
        let got: Vec<InMsg> = parse_batch(buf.freeze()).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 3);
        for (a, b) in msgs.iter().zip(&got) {
            assert_eq!(a.header, b.header);
            assert_eq!(a.payload, b.payload);
            assert_eq!(a.proto, b.proto);
            assert_eq!(a.chain(), b.chain);
        }
        assert_eq!(nbufs(&got[0].chain), 2);
        assert_eq!(nbufs(&got[1].chain), 1);
        assert_eq!(nbufs(&got[2].chain), 3);
        let peeked: Vec<_> = peek_batch(&buf_again(&msgs)).collect();
        assert_eq!(peeked.len(), 3);
        for (a, d) in msgs.iter().zip(&peeked) {
            assert_eq!((d.req_id, d.kind as i32), (a.header.request_id, a.header.kind));
            assert_eq!(d.len.map(|l| l as usize), a.chain());
        }
    }

    fn buf_again(msgs: &[WireMsg]) -> Bytes {
        let mut buf = bytes::BytesMut::new();
        for m in msgs {
            encode_msg(m, &mut buf);
        }
        buf.freeze()
    }

    #[test]
    fn malformed_batches_are_refused_with_a_reason() {
        assert!(matches!(parse_batch(Bytes::from_static(b"abc")).next(), Some(Err(WireError::TruncatedPrefix(0)))));
        let mut b = bytes::BytesMut::new();
        b.put_u32_le(100);
        b.put_u32_le(0);
        b.put_u32_le(0);
        b.put_slice(b"short");
        assert!(matches!(parse_batch(b.freeze()).next(), Some(Err(WireError::Truncated { .. }))));
        let mut b = bytes::BytesMut::new();
        b.put_u32_le(u32::MAX);
        b.put_u32_le(u32::MAX);
        b.put_u32_le(0);
        assert!(matches!(parse_batch(b.freeze()).next(), Some(Err(WireError::TooLarge { .. }))));
        let mut b = bytes::BytesMut::new();
        b.put_u32_le(3);
        b.put_u32_le(0);
        b.put_u32_le(0);
        b.put_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(parse_batch(b.freeze()).next(), Some(Err(WireError::BadHeader { .. }))));
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics() {
        // A cheap deterministic fuzz: xorshift bytes, every length up to 200.
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for len in 0..200 {
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x & 0xff) as u8
                })
                .collect();
            let raw = Bytes::from(v);
            for r in parse_batch(raw.clone()) {
                let _ = r;
            }
            for d in peek_batch(&raw) {
                let _ = d;
            }
        }
    }
}
