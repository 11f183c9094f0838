//! Packing throughput: `PackedWeights::new` per available backend, in int8 weight bytes
//! (`n * k` input bytes per pack; criterion reports GB/s).
//!
//! Shapes: a Llama-style MLP projection (14336 x 4096, 56 MiB) and a square attention
//! projection (4096 x 4096, 16 MiB), both far larger than the caches, so the figure
//! includes the fresh output buffer's page faults as a real `PackedWeights::new` pays them.
//! Packing runs on rayon's pool when the `rayon` feature is on: `RAYON_NUM_THREADS=1`
//! gives the single-thread figure.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qlinear::{available_backends, PackedWeights};
use qlinear_benches::weight;

/// `(n, k)`: out_features x in_features.
const SHAPES: [(usize, usize); 2] = [(4096, 4096), (14336, 4096)];

fn pack(c: &mut Criterion) {
    let mut group = c.benchmark_group("pack");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    for (n, k) in SHAPES {
        let w = weight(k, n);
        group.throughput(Throughput::Bytes((k * n) as u64));
        for backend in available_backends() {
            group.bench_with_input(
                BenchmarkId::new(backend.name(), format!("{n}x{k}")),
                &w,
                |b, w| b.iter(|| PackedWeights::new(black_box(w), backend).unwrap()),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, pack);
criterion_main!(benches);
