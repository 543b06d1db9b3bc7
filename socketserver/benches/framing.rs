//! Framing overhead: encoding and decoding one length-prefixed frame of
//! 64 B, 4 KiB and 1 MiB, in memory (no socket), so only the framework's
//! own work is measured: the header, the vectored write, the bounded
//! read-ahead of the payload buffer.
//!
//! ```text
//! cargo bench -p socketserver --bench framing
//! ```
//!
//! * `encode`: `Framing::write_frame` into a reused `Vec` (header and
//!   payload go out in one `write_vectored`);
//! * `decode`: `Framing::read_frame` from a byte slice (a new `Vec` per
//!   frame, as a handler that keeps each message would);
//! * `decode_into`: `Framing::read_frame_into` reusing one buffer.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use socketserver::framing::Framing;

const SIZES: [usize; 3] = [64, 4 * 1024, 1024 * 1024];

fn framing(c: &mut Criterion) {
    let framing = Framing::new();
    let mut g = c.benchmark_group("framing");
    for size in SIZES {
        let payload: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        let mut wire = Vec::new();
        framing.write_frame(&mut wire, &payload).unwrap();
        g.throughput(Throughput::Bytes(size as u64));

        g.bench_with_input(BenchmarkId::new("encode", size), &payload, |b, p| {
            let mut out = Vec::with_capacity(size + 8);
            b.iter(|| {
                out.clear();
                framing.write_frame(&mut out, black_box(p)).unwrap();
                black_box(out.len())
            })
        });
        g.bench_with_input(BenchmarkId::new("decode", size), &wire, |b, w| {
            b.iter(|| {
                let frame = framing.read_frame(&mut black_box(&w[..])).unwrap();
                black_box(frame.map(|f| f.len()))
            })
        });
        g.bench_with_input(BenchmarkId::new("decode_into", size), &wire, |b, w| {
            let mut buf = Vec::new();
            b.iter(|| {
                let ok = framing
                    .read_frame_into(&mut black_box(&w[..]), &mut buf)
                    .unwrap();
                black_box((ok, buf.len()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
