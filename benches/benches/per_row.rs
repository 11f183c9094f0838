//! `DynamicLinear` with per-row vs per-tensor input quantization (`Backend::Auto`, one
//! thread) on MiniLM-like shapes (M = 512 tokens, hidden 384, FFN 1536): the cost of a
//! min / max and qparams choice per row and of the per-row epilogue multiplier.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qlinear::{Backend, InputQuantization};
use qlinear_benches::*;

/// MiniLM-L6 (hidden 384, intermediate 1536) FFN up / down projections, 512 tokens.
const MINILM_SHAPES: [Shape; 2] = [(512, 384, 1536), (512, 1536, 384)];

fn per_row(c: &mut Criterion) {
    let mut group = c.benchmark_group("dynamic_input_quantization");
    group
        .sample_size(SAMPLE_SIZE)
        .measurement_time(MEASUREMENT_TIME)
        .warm_up_time(WARM_UP_TIME);
    for shape in MINILM_SHAPES {
        let (m, k, n) = shape;
        group.throughput(Throughput::Elements(macs(shape)));
        let name = shape_name(shape);
        for (id, mode) in [
            ("per_tensor", InputQuantization::PerTensor),
            ("per_row", InputQuantization::PerRow),
        ] {
            let layer = dynamic_layer_with(k, n, Backend::Auto, mode).expect("dynamic layer");
            bench_dynamic(&mut group, BenchmarkId::new(id, &name), &layer, m);
        }
    }
    group.finish();
}

criterion_group!(benches, per_row);
criterion_main!(benches);
