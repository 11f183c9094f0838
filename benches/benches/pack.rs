//! Packing throughput: `PackedWeights::new` per available backend, in int8 weight bytes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qlinear::{available_backends, PackedWeights};
use qlinear_benches::*;

fn pack(c: &mut Criterion) {
    let mut group = c.benchmark_group("pack");
    group
        .sample_size(SAMPLE_SIZE)
        .measurement_time(MEASUREMENT_TIME)
        .warm_up_time(WARM_UP_TIME);
    for (k, n) in PACK_WEIGHTS {
        let w = weight(k, n);
        group.throughput(Throughput::Bytes((k * n) as u64));
        for backend in available_backends() {
            group.bench_with_input(
                BenchmarkId::new(backend.name(), format!("{k}x{n}")),
                &w,
                |b, w| b.iter(|| PackedWeights::new(black_box(w), backend).unwrap()),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, pack);
criterion_main!(benches);
