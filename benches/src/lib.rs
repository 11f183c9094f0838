//! criterion benches for qlinear; see `benches/benches/`:
//!
//! * `kernels`: one group per compiled kernel this CPU supports (found by iterating
//!   `qlinear::unstable::compiled_kernels()`, forced through its backend name), static and
//!   dynamic layers over a few shapes including M = 1.
//! * `pack`: `PackedWeights::new` per available backend (throughput in weight bytes).
//! * `layers`: whole `Linear` / `DynamicLinear` layers (Auto backend) on BERT and
//!   Llama shapes.
//!
//! This library holds the shared shape tables (a small subset of `qlinear bench`'s
//! suites, so a short run stays feasible) and the data generators: the same kind of
//! data as `qlinear bench` (random i8 weight, per-channel symmetric scales, outputs
//! spread over the u8 range).
#![deny(clippy::print_stdout, clippy::print_stderr)]
#![warn(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId};
use qlinear::{
    ActQParams, Backend, DynamicLinear, Linear, MatMut, MatRef, QuantizedWeight, WeightQParams,
};
use qlinear_reference::testkit::Rng;

/// `(M, K, N)`.
pub type Shape = (usize, usize, usize);

/// Shapes of the per-kernel benches: GEMV (M = 1), small M and compute-bound M.
pub const KERNEL_SHAPES: [Shape; 4] = [
    (1, 4096, 4096),
    (1, 768, 3072),
    (8, 768, 3072),
    (128, 768, 768),
];

/// BERT-base layer shapes of the layer benches.
pub const BERT_SHAPES: [Shape; 3] = [(1, 768, 3072), (32, 768, 768), (128, 3072, 768)];

/// Llama-style layer shapes of the layer benches.
pub const LLM_SHAPES: [Shape; 2] = [(1, 4096, 11008), (8, 4096, 4096)];

/// Criterion settings for every group: small samples, short measurements.
pub const SAMPLE_SIZE: usize = 10;
/// Measurement time per benchmark.
pub const MEASUREMENT_TIME: Duration = Duration::from_secs(1);
/// Warm-up time per benchmark.
pub const WARM_UP_TIME: Duration = Duration::from_millis(300);

/// `MxKxN`.
pub fn shape_name((m, k, n): Shape) -> String {
    format!("{m}x{k}x{n}")
}

/// Multiply-accumulates of one call.
pub fn macs((m, k, n): Shape) -> u64 {
    (m * k * n) as u64
}

/// A random `n x k` i8 weight with per-channel symmetric qparams (scales in
/// [2e-3, 1e-2], zero points 0).
pub fn weight(k: usize, n: usize) -> QuantizedWeight {
    let mut rng = Rng::new(((k as u64) << 32) ^ n as u64);
    let data = rng.i8s(n * k);
    let scales = (0..n).map(|_| rng.log_uniform(2e-3, 1e-2)).collect();
    QuantizedWeight::new(
        data,
        n,
        k,
        WeightQParams::PerChannel {
            scales,
            zero_points: vec![0; n],
        },
    )
    .expect("valid generated weight")
}

/// Input qparams of the static layers.
pub fn input_qparams() -> ActQParams {
    ActQParams::new(0.05, 128).expect("valid qparams")
}

/// Output qparams spreading a `K`-deep layer's outputs over the u8 range.
pub fn output_qparams(k: usize) -> ActQParams {
    let sigma = 74.0 * 74.0 * (k as f32).sqrt() * 0.05 * 1e-2;
    ActQParams::new(4.0 * sigma / 127.0, 128).expect("valid qparams")
}

/// A random bias of `n` values.
pub fn bias(n: usize) -> Vec<f32> {
    Rng::new(n as u64).f32s(n, 0.5)
}

/// A static layer of `k -> n` on `backend` (single-threaded by default).
pub fn static_layer(k: usize, n: usize, backend: Backend) -> qlinear::Result<Linear> {
    Linear::builder(weight(k, n), input_qparams(), output_qparams(k))
        .bias(bias(n))
        .backend(backend)
        .threads(1)
        .build()
}

/// A dynamic layer of `k -> n` on `backend` (single-threaded by default).
pub fn dynamic_layer(k: usize, n: usize, backend: Backend) -> qlinear::Result<DynamicLinear> {
    dynamic_layer_with(k, n, backend, qlinear::InputQuantization::PerTensor)
}

/// [`dynamic_layer`] with the given input quantization mode.
pub fn dynamic_layer_with(
    k: usize,
    n: usize,
    backend: Backend,
    mode: qlinear::InputQuantization,
) -> qlinear::Result<DynamicLinear> {
    DynamicLinear::builder(weight(k, n))
        .bias(bias(n))
        .reduce_range(false)
        .input_quantization(mode)
        .backend(backend)
        .threads(1)
        .build()
}

/// `m x k` random u8 activations.
pub fn acts_u8(m: usize, k: usize) -> Vec<u8> {
    Rng::new(7 + (m * k) as u64).bytes(m * k)
}

/// `m x k` random f32 activations in [-4, 4].
pub fn acts_f32(m: usize, k: usize) -> Vec<f32> {
    Rng::new(11 + (m * k) as u64).f32s(m * k, 4.0)
}

/// Benchmarks `layer.forward` (one thread) on `m` rows of [`acts_u8`] as `id` of `group`.
pub fn bench_static(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    layer: &Linear,
    m: usize,
) {
    let (k, n) = (layer.packed().in_features(), layer.packed().out_features());
    let a = acts_u8(m, k);
    let mut out = vec![0u8; m * n];
    group.bench_function(id, |b| {
        b.iter(|| {
            let input = MatRef::dense(black_box(&a), m, k).unwrap();
            let output = MatMut::dense(&mut out, m, n).unwrap();
            layer.forward_with_threads(input, output, 1).unwrap()
        })
    });
}

/// Benchmarks `layer.forward` (one thread) on `m` rows of [`acts_f32`] as `id` of `group`.
pub fn bench_dynamic(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    layer: &DynamicLinear,
    m: usize,
) {
    let (k, n) = (layer.packed().in_features(), layer.packed().out_features());
    let x = acts_f32(m, k);
    let mut out = vec![0f32; m * n];
    group.bench_function(id, |b| {
        b.iter(|| {
            let input = MatRef::dense(black_box(&x), m, k).unwrap();
            let output = MatMut::dense(&mut out, m, n).unwrap();
            layer.forward_with_threads(input, output, 1).unwrap()
        })
    });
}
