//! Memory per call (issue 12, D8), measured with a counting global allocator: the extra
//! bytes a forward call allocates at its peak, and the bytes it leaves allocated.
//!
//! * A dynamic layer keeps one quantized-activation scratch buffer per thread, but never
//!   more than `SCRATCH_KEEP_BYTES`: a large call must not leave its buffer behind.
//! * The AVX2 kernel widens activations to i16 one row block at a time, so its extra
//!   memory does not grow with M.
//!
//! Run with `--nocapture` to see the figures per backend.

// Test code: printing the measured figures is the point.
#![allow(clippy::print_stderr)]

mod counting_alloc;

use counting_alloc::measure;
use std::sync::Mutex;

use qlinear::{
    available_backends, ActQParams, Backend, DynamicLinear, Linear, MatMut, MatRef,
    QuantizedWeight, WeightQParams,
};

/// Tests in this file measure the whole process: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn weight(n: usize, k: usize, zero_point: i32) -> QuantizedWeight {
    let w: Vec<i8> = (0..n * k).map(|i| (i * 31 % 251) as i8).collect();
    QuantizedWeight::new(
        w,
        n,
        k,
        WeightQParams::PerTensor {
            scale: 0.01,
            zero_point,
        },
    )
    .unwrap()
}

const MIB: f64 = 1024.0 * 1024.0;

/// After one large dynamic call a thread keeps at most `SCRATCH_KEEP_BYTES` of scratch;
/// a small call afterwards still works and keeps its (small) buffer.
#[test]
fn dynamic_scratch_does_not_stay_large() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let keep = qlinear::SCRATCH_KEEP_BYTES;
    for b in available_backends() {
        let (m, k, n) = (3000, 4000, 16); // 12 MB of quantized activations
        let layer = DynamicLinear::builder(weight(n, k, 0))
            .backend(b)
            .build()
            .unwrap();
        let x: Vec<f32> = (0..m * k).map(|i| (i % 97) as f32 * 0.1 - 4.0).collect();
        let mut y = vec![0f32; m * n];
        let (peak, kept) = measure(|| {
            layer
                .forward_with_threads(
                    MatRef::dense(&x, m, k).unwrap(),
                    MatMut::dense(&mut y, m, n).unwrap(),
                    1,
                )
                .unwrap()
        });
        eprintln!(
            "{b}: dynamic {m}x{k}x{n}: peak extra {:.2} MiB, kept {kept} bytes",
            peak as f64 / MIB
        );
        assert!(peak >= m * k, "{b}: the quantized input must be counted");
        assert!(
            kept <= keep as isize,
            "{b}: {kept} bytes kept after a large call (cap {keep})"
        );
        // A small call reuses (or creates) a small buffer, and its results are right.
        let small = layer.forward_vec(&x[..4 * k], 4).unwrap();
        assert_eq!(small[..], y[..4 * n]);
    }
}

/// Peak extra memory of one call is bounded independently of M for static calls on
/// every backend (the AVX2 kernel once widened the whole input to i16: 2x its bytes).
#[test]
fn static_call_extra_memory_is_bounded() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for b in available_backends() {
        for &(m, k, n, zp) in &[(4096usize, 1024usize, 64usize, 0), (4096, 1024, 64, 3)] {
            let layer = Linear::builder(
                weight(n, k, zp),
                ActQParams::new(0.05, 7).unwrap(),
                ActQParams::new(0.5, 128).unwrap(),
            )
            .backend(b)
            .build()
            .unwrap();
            let a: Vec<u8> = (0..m * k).map(|i| (i * 7 % 256) as u8).collect();
            let mut y = vec![0u8; m * n];
            for threads in [1, 2] {
                // Warm-up: the thread pool's first use allocates its threads' state.
                layer
                    .forward_with_threads(
                        MatRef::dense(&a, m, k).unwrap(),
                        MatMut::dense(&mut y, m, n).unwrap(),
                        threads,
                    )
                    .unwrap();
                let (peak, kept) = measure(|| {
                    layer
                        .forward_with_threads(
                            MatRef::dense(&a, m, k).unwrap(),
                            MatMut::dense(&mut y, m, n).unwrap(),
                            threads,
                        )
                        .unwrap()
                });
                eprintln!(
                    "{b}: static {m}x{k}x{n} zp_w={zp} threads={threads}: peak extra {:.3} MiB ({:.1}% of the input), kept {kept} bytes",
                    peak as f64 / MIB,
                    100.0 * peak as f64 / (m * k) as f64
                );
                // Kernels: row sums (4 bytes a row) and at most one 1 MiB block of
                // scratch per thread; the input itself is 4 MiB. The reference: its i32
                // accumulators and u8 result, 5 bytes per output element.
                let bound = if b == Backend::Reference {
                    5 * m * n + 64 * 1024
                } else {
                    4 * m + threads * (1 << 20) + 64 * 1024
                };
                assert!(peak <= bound, "{b}: peak extra {peak} > {bound}");
                // Nothing sized by the call stays; a pool thread's first use of a
                // thread-local may register its destructor (a few bytes).
                assert!(kept <= 1024, "{b}: a static call keeps {kept} bytes");
            }
        }
    }
}
