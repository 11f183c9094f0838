//! Whole layers as users build them (`Backend::Auto`, one thread): `Linear` (static)
//! and `DynamicLinear` on a few BERT-base and Llama shapes. Throughput is in MACs.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qlinear_api::{Backend, MatMut, MatRef};
use qlinear_benches::*;

fn layers(c: &mut Criterion) {
    for (suite, shapes) in [("bert", &BERT_SHAPES[..]), ("llm", &LLM_SHAPES[..])] {
        let mut group = c.benchmark_group(format!("layers_{suite}"));
        group
            .sample_size(SAMPLE_SIZE)
            .measurement_time(MEASUREMENT_TIME)
            .warm_up_time(WARM_UP_TIME);
        for &shape in shapes {
            let (m, k, n) = shape;
            group.throughput(Throughput::Elements(macs(shape)));
            let layer = static_layer(k, n, Backend::Auto).expect("static layer");
            let a = acts_u8(m, k);
            let mut out = vec![0u8; m * n];
            group.bench_with_input(
                BenchmarkId::new("Linear", shape_name(shape)),
                &shape,
                |b, _| {
                    b.iter(|| {
                        layer
                            .forward_with_threads(
                                MatRef::dense(black_box(&a), m, k).unwrap(),
                                MatMut::dense(&mut out, m, n).unwrap(),
                                1,
                            )
                            .unwrap()
                    })
                },
            );
            drop(layer);
            let layer = dynamic_layer(k, n, Backend::Auto).expect("dynamic layer");
            let x = acts_f32(m, k);
            let mut y = vec![0f32; m * n];
            group.bench_with_input(
                BenchmarkId::new("DynamicLinear", shape_name(shape)),
                &shape,
                |b, _| {
                    b.iter(|| {
                        layer
                            .forward_with_threads(
                                MatRef::dense(black_box(&x), m, k).unwrap(),
                                MatMut::dense(&mut y, m, n).unwrap(),
                                1,
                            )
                            .unwrap()
                    })
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, layers);
criterion_main!(benches);
