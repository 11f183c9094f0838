//! The dynamic layer quantizes its input inside the driver's pieces: with a row cut,
//! each piece quantizes its own rows on its own thread right before its kernel reads
//! them (module `driver`, `DynamicLinear::run_quantized`). These tests hold that path to
//! the reference bit for bit where the unit-sized kernel tests do not reach: row cuts
//! on 2, 3 and 7 threads (M up to 451, pieces of unequal height), K from 1 to 300,
//! strided inputs, weight zero points zero (no row sums) and non-zero (row sums written
//! by the pieces), per-tensor and per-row input quantization; and a non-finite value
//! in the last piece's rows is an error that leaves the output untouched.

mod kernel_checks;

use kernel_checks::check_dynamic_view;
use qlinear::{
    available_backends, Backend, DynamicLinear, Error, InputQuantization, MatMut, MatRef,
    QuantizedWeight, WeightQParams,
};
use qlinear_reference::testkit::Rng;

struct Setup {
    k: usize,
    n: usize,
    w: Vec<i8>,
    wq: WeightQParams,
    bias: Vec<f32>,
}

fn setup(rng: &mut Rng, k: usize, n: usize, zero_points: bool) -> Setup {
    let zp = |rng: &mut Rng| {
        if zero_points {
            rng.range_i32(-128, 127)
        } else {
            0
        }
    };
    Setup {
        k,
        n,
        w: rng.i8s(n * k),
        wq: WeightQParams::PerChannel {
            scales: (0..n).map(|_| rng.log_uniform(1e-3, 1e-1)).collect(),
            zero_points: (0..n).map(|_| zp(rng)).collect(),
        },
        bias: rng.f32s(n, 2.0),
    }
}

fn layer(s: &Setup, backend: Backend, mode: InputQuantization) -> DynamicLinear {
    let weight = QuantizedWeight::new(s.w.clone(), s.n, s.k, s.wq.clone()).unwrap();
    DynamicLinear::builder(weight)
        .bias(s.bias.clone())
        .input_quantization(mode)
        .backend(backend)
        .build()
        .unwrap()
}

/// `m` rows of `k` floats at `stride`, rows of different magnitudes (so per-row and
/// per-tensor quantization differ), with junk in the gaps.
fn input(rng: &mut Rng, m: usize, k: usize, stride: usize) -> Vec<f32> {
    let mut x = rng.f32s(m.saturating_sub(1) * stride + k, 1.0);
    for (i, v) in x.iter_mut().enumerate() {
        *v *= 1.0 + ((i / stride) % 5) as f32 * 7.0;
    }
    x
}

const MODES: [InputQuantization; 2] = [InputQuantization::PerTensor, InputQuantization::PerRow];

#[test]
fn row_cut_quantization_is_exact_on_every_backend() {
    let mut rng = Rng::new(41);
    let mut checked = 0;
    for (k, n, zero_points) in [(1, 40, true), (67, 33, false), (300, 70, true)] {
        let s = setup(&mut rng, k, n, zero_points);
        for backend in available_backends() {
            for mode in MODES {
                let l = layer(&s, backend, mode);
                for (m, threads) in [(64, 2), (97, 3), (224, 7), (451, 7), (451, 2)] {
                    let stride = k + 3;
                    let data = input(&mut rng, m, k, stride);
                    let x = MatRef::new(&data, m, k, stride).unwrap();
                    let what = format!("{backend} k={k}");
                    check_dynamic_view(&l, &x, (&s.w, &s.wq, Some(&s.bias)), threads, &what);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 3 * 2 * 5 * 2, "only {checked} calls checked");
}

#[test]
fn non_finite_in_the_last_piece_is_an_error_and_writes_nothing() {
    let mut rng = Rng::new(42);
    let (m, k, n) = (300, 50, 40);
    let s = setup(&mut rng, k, n, true);
    for backend in available_backends() {
        for mode in MODES {
            let l = layer(&s, backend, mode);
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut data = input(&mut rng, m, k, k);
                let index = (m - 2) * k + 17;
                data[index] = bad;
                let x = MatRef::dense(&data, m, k).unwrap();
                let mut got = vec![-7.5f32; m * n];
                let err = l
                    .forward_with_threads(x, MatMut::dense(&mut got, m, n).unwrap(), 7)
                    .unwrap_err();
                assert!(
                    matches!(err, Error::NonFinite { index: i, .. } if i == index),
                    "{backend} {mode:?} {bad}: {err:?}"
                );
                assert!(
                    got.iter().all(|&v| v == -7.5),
                    "{backend} {mode:?} {bad}: output written on error"
                );
            }
        }
    }
}
