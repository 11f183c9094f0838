//! Whole layers as users build them (`Backend::Auto`, one thread): `Linear` (static)
//! and `DynamicLinear` on a few BERT-base and Llama shapes. Throughput is in MACs.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qlinear::Backend;
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
            let name = shape_name(shape);
            bench_static(&mut group, BenchmarkId::new("Linear", &name), &layer, m);
            drop(layer);
            let layer = dynamic_layer(k, n, Backend::Auto).expect("dynamic layer");
            bench_dynamic(
                &mut group,
                BenchmarkId::new("DynamicLinear", &name),
                &layer,
                m,
            );
        }
        group.finish();
    }
}

criterion_group!(benches, layers);
criterion_main!(benches);
