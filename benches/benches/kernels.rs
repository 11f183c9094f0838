//! One criterion group per compiled kernel this CPU supports, found by iterating
//! `qlinear::unstable::compiled_kernels()`: a new kernel is benched without new bench code.
//! Each kernel is forced alone (`qlinear::unstable::pack_for_kernel`, as `qlinear bench
//! --kernel` does), so every kernel runs every shape, including kernels that share a
//! packed layout with another and would otherwise only run the M they prefer (the
//! `avx512vnni/gemv_1x32c4` GEMV kernel beside `avx512vnni/gemm_8x32c4`); static and
//! dynamic layers, one thread, over `KERNEL_SHAPES` (M = 1 GEMV included). Throughput is
//! in MACs.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qlinear::unstable::pack_for_kernel;
use qlinear::{DynamicLinear, Linear};
use qlinear_benches::*;

fn kernels(c: &mut Criterion) {
    for desc in qlinear::unstable::compiled_kernels().filter(|d| (d.is_supported)()) {
        let mut group = c.benchmark_group(desc.name);
        group
            .sample_size(SAMPLE_SIZE)
            .measurement_time(MEASUREMENT_TIME)
            .warm_up_time(WARM_UP_TIME);
        for shape in KERNEL_SHAPES {
            let (m, k, n) = shape;
            group.throughput(Throughput::Elements(macs(shape)));
            let packed = pack_for_kernel(&weight(k, n), desc.name).expect("supported kernel");
            let layer = Linear::from_packed(packed.clone(), input_qparams(), output_qparams(k))
                .bias(bias(n))
                .threads(1)
                .build()
                .expect("static layer");
            assert_eq!(layer.kernel_name_for(m), desc.name);
            let name = shape_name(shape);
            bench_static(&mut group, BenchmarkId::new("static", &name), &layer, m);
            drop(layer);
            let layer = DynamicLinear::from_packed(packed)
                .bias(bias(n))
                .reduce_range(false)
                .threads(1)
                .build()
                .expect("dynamic layer");
            bench_dynamic(&mut group, BenchmarkId::new("dynamic", &name), &layer, m);
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
