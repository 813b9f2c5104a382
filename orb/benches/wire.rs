//! The in-process encode/decode path of ORB messages: marshalling a request, framing a batch
//! of 256 buffer chains the way the transport writes them, and splitting a received batch.
//! Baseline in the same run: copying the same bytes into one buffer (what any transport
//! must do at least once). `cargo bench -p ssi-orb --bench wire`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use ssi_orb::proto::diag::Blob;
use ssi_orb::proto::{Header, Kind};
use ssi_orb::wire::{encode_msg, parse_batch, WireMsg};
use ssi_orb::Outgoing;

const BATCH: usize = 256;

fn msgs(payload: usize) -> Vec<WireMsg> {
    (0..BATCH as u64)
        .map(|i| WireMsg {
            header: Header {
                kind: Kind::Request as i32,
                request_id: 1_000_000 + i,
                src_node: 1,
                dst_node: 2,
                object: 17,
                incarnation: 0x0006_60c3_11c4_2623,
                interface: 0xdead_beef,
                method: 0,
                deadline_us: 30_000_000,
                ..Default::default()
            },
            payload: Bytes::from(Blob { data: vec![0xa5; payload].into() }.encode_to_vec()),
            proto: Bytes::new(),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for payload in [128usize, 4096] {
        let m = msgs(payload);
        let mut encoded = BytesMut::new();
        for x in &m {
            encode_msg(x, &mut encoded);
        }
        let encoded = encoded.freeze();
        let mut g = c.benchmark_group(format!("wire_{payload}B"));
        g.throughput(Throughput::Elements(BATCH as u64));
        // Both write into one reused buffer, as the transport does (tonic's encode buffer).
        let mut out = BytesMut::with_capacity(encoded.len());
        g.bench_function("baseline_memcpy_batch", |b| {
            b.iter(|| {
                out.clear();
                out.extend_from_slice(&encoded);
                out.len()
            })
        });
        g.bench_function("marshal_request", |b| {
            let blob = Blob { data: vec![0xa5; payload].into() };
            b.iter(|| Outgoing::from_message(&blob))
        });
        g.bench_function("encode_batch", |b| {
            b.iter(|| {
                out.clear();
                for x in &m {
                    encode_msg(x, &mut out);
                }
                out.len()
            })
        });
        g.bench_function("decode_batch", |b| b.iter(|| parse_batch(encoded.clone()).map(|r| r.unwrap().payload.len()).sum::<usize>()));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
