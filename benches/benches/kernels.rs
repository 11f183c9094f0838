//! One criterion group per compiled kernel this CPU supports, found by iterating
//! `qlinear::unstable::compiled_kernels()`: a new kernel is benched without new bench code.
//! Each kernel is forced through its backend name; static and dynamic layers, one
//! thread, over `KERNEL_SHAPES` (M = 1 GEMV included). Throughput is in MACs.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qlinear::Backend;
use qlinear_benches::*;

fn kernels(c: &mut Criterion) {
    for desc in qlinear::unstable::compiled_kernels().filter(|d| (d.is_supported)()) {
        let backend = Backend::from_isa(desc.isa);
        let mut group = c.benchmark_group(desc.name);
        group
            .sample_size(SAMPLE_SIZE)
            .measurement_time(MEASUREMENT_TIME)
            .warm_up_time(WARM_UP_TIME);
        for shape in KERNEL_SHAPES {
            let (m, k, n) = shape;
            group.throughput(Throughput::Elements(macs(shape)));
            let layer = static_layer(k, n, backend).expect("static layer");
            // Forcing a backend picks its preferred kernel; a second kernel of the same
            // backend is not reachable this way and is skipped.
            if layer.kernel_name() != desc.name {
                continue;
            }
            let name = shape_name(shape);
            bench_static(&mut group, BenchmarkId::new("static", &name), &layer, m);
            drop(layer);
            let layer = dynamic_layer(k, n, backend).expect("dynamic layer");
            bench_dynamic(&mut group, BenchmarkId::new("dynamic", &name), &layer, m);
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
