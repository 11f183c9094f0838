//! Packed-weights I/O throughput, in bytes of the serialized file (criterion reports
//! GB/s): `to_bytes`, `from_bytes` for the same kernel (checksum, padding and column-sum
//! checks, copy into an aligned buffer), and the borrowed load `from_shared` (checks
//! only: the packed data is used in place), for the best local kernel.
//!
//! Shapes as in `pack.rs`: 14336 x 4096 (56 MiB) and 4096 x 4096 (16 MiB), far larger
//! than the caches; fresh buffers' page faults are part of the figures, as a real load
//! pays them.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qlinear::{Backend, PackedWeights};
use qlinear_benches::weight;

/// `(n, k)`: out_features x in_features.
const SHAPES: [(usize, usize); 2] = [(4096, 4096), (14336, 4096)];

/// The file in a buffer whose start is 64-byte aligned, so the packed data is too.
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for Aligned {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

fn aligned(bytes: &[u8]) -> Aligned {
    let mut buf = vec![0u8; bytes.len() + 64];
    let start = (64 - buf.as_ptr() as usize % 64) % 64;
    buf[start..start + bytes.len()].copy_from_slice(bytes);
    Aligned {
        buf,
        start,
        len: bytes.len(),
    }
}

fn packed_io(c: &mut Criterion) {
    let mut group = c.benchmark_group("packed_io");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for (n, k) in SHAPES {
        let w = weight(k, n);
        let p = PackedWeights::new(&w, Backend::Auto).unwrap();
        let bytes = p.to_bytes();
        let shape = format!("{n}x{k}");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::new("to_bytes", &shape), |b| {
            b.iter(|| black_box(&p).to_bytes())
        });
        group.bench_function(BenchmarkId::new("from_bytes", &shape), |b| {
            b.iter(|| {
                let (q, r) = PackedWeights::from_bytes_with_report(black_box(&bytes)).unwrap();
                assert!(!r.repacked);
                q
            })
        });
        let owner = Arc::new(aligned(&bytes));
        group.bench_function(BenchmarkId::new("from_shared", &shape), |b| {
            b.iter(|| {
                let (q, r) = PackedWeights::from_shared(black_box(owner.clone())).unwrap();
                assert!(r.zero_copy);
                q
            })
        });
    }
    group.finish();
}

criterion_group!(benches, packed_io);
criterion_main!(benches);
