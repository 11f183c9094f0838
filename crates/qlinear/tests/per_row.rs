//! Per-row input quantization through the public API, on every available backend
//! (the reference engine included): the mode is plumbed (per-row differs from
//! per-tensor when row ranges differ, and equals per-tensor on each row alone), errors
//! keep their flat indices, views and special rows work, Debug and the getter show it.

use qlinear::{
    available_backends, DynamicLinear, Error, InputQuantization, MatMut, MatRef, Profile,
    QuantizedWeight, WeightQParams,
};
use qlinear_reference::testkit::Rng;

fn weight(rng: &mut Rng, n: usize, k: usize) -> QuantizedWeight {
    let wq = WeightQParams::PerChannel {
        scales: (0..n).map(|_| rng.log_uniform(1e-3, 1e-1)).collect(),
        zero_points: (0..n).map(|_| rng.range_i32(-128, 127)).collect(),
    };
    QuantizedWeight::new(rng.i8s(n * k), n, k, wq).unwrap()
}

fn layer(w: &QuantizedWeight, mode: InputQuantization, backend: qlinear::Backend) -> DynamicLinear {
    DynamicLinear::builder(w.clone())
        .bias(
            (0..w.out_features())
                .map(|j| j as f32 * 0.125 - 0.5)
                .collect(),
        )
        .input_quantization(mode)
        .backend(backend)
        .build()
        .unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Rows of wildly different magnitudes, one of them all zeros.
fn mixed_rows(m: usize, k: usize) -> Vec<f32> {
    (0..m * k)
        .map(|i| {
            let (r, c) = (i / k, i % k);
            let mag = [1e-4f32, 1.0, 3e3, 0.0, 2e-2, 7e5, 0.5][r % 7];
            mag * ((c as f32 * 0.731 + r as f32).sin() + if r % 2 == 0 { 0.3 } else { -0.2 })
        })
        .collect()
}

#[test]
fn default_is_per_tensor_and_debug_shows_the_mode() {
    let mut rng = Rng::new(1);
    let w = weight(&mut rng, 3, 4);
    let d = DynamicLinear::builder(w.clone()).build().unwrap();
    assert_eq!(d.input_quantization(), InputQuantization::PerTensor);
    assert_eq!(InputQuantization::default(), InputQuantization::PerTensor);
    let b = DynamicLinear::builder(w).input_quantization(InputQuantization::PerRow);
    assert!(
        format!("{b:?}").contains("input_quantization: PerRow"),
        "{b:?}"
    );
    let l = b.build().unwrap();
    assert_eq!(l.input_quantization(), InputQuantization::PerRow);
    assert!(
        format!("{l:?}").contains("input_quantization: PerRow"),
        "{l:?}"
    );
}

#[test]
fn per_row_equals_per_tensor_on_each_row_alone_every_backend() {
    let mut rng = Rng::new(2);
    let (m, k, n) = (9, 37, 21);
    let w = weight(&mut rng, n, k);
    let x = mixed_rows(m, k);
    for backend in available_backends() {
        let per_row = layer(&w, InputQuantization::PerRow, backend);
        let per_tensor = layer(&w, InputQuantization::PerTensor, backend);
        let all = per_row.forward_vec(&x, m).unwrap();
        for i in 0..m {
            let alone = per_tensor.forward_vec(&x[i * k..(i + 1) * k], 1).unwrap();
            assert_eq!(
                bits(&all[i * n..(i + 1) * n]),
                bits(&alone),
                "{backend} row {i}"
            );
        }
        // The all-zero row (row 3) is the bias exactly (raw is 0 for every column).
        let b = per_row.bias().unwrap();
        assert_eq!(bits(&all[3 * n..4 * n]), bits(b), "{backend}");
        // And the mode is really plumbed: the mixed rows quantize differently.
        let whole = per_tensor.forward_vec(&x, m).unwrap();
        assert_ne!(
            bits(&all),
            bits(&whole),
            "{backend}: per-row equals per-tensor"
        );
    }
}

#[test]
fn per_row_matches_literal_with_strided_views_and_threads() {
    let mut rng = Rng::new(3);
    let (m, k, n) = (70, 65, 33);
    let w = weight(&mut rng, n, k);
    let (xs, ys) = (k + 3, n + 5);
    let mut x = vec![f32::NAN; (m - 1) * xs + k];
    let mixed = mixed_rows(m, k);
    for i in 0..m {
        x[i * xs..i * xs + k].copy_from_slice(&mixed[i * k..(i + 1) * k]);
    }
    let xin = MatRef::new(&x, m, k, xs).unwrap();
    for profile in [Profile::Fbgemm, Profile::Qnnpack] {
        let want = qlinear_reference::dynamic_linear_per_row(
            &xin,
            w.data(),
            n,
            w.qparams(),
            None,
            true,
            true,
            profile,
        )
        .unwrap();
        for backend in available_backends() {
            let l = DynamicLinear::builder(w.clone())
                .input_quantization(InputQuantization::PerRow)
                .profile(profile)
                .reduce_range(true)
                .relu(true)
                .backend(backend)
                .build()
                .unwrap();
            for threads in [1, 2, 7] {
                let canary = f32::from_bits(0x7FC0_0BAD);
                let mut out = vec![canary; m * ys];
                l.forward_with_threads(xin, MatMut::new(&mut out, m, n, ys).unwrap(), threads)
                    .unwrap();
                for (idx, v) in out.iter().enumerate() {
                    let (i, j) = (idx / ys, idx % ys);
                    let expect = if j < n { want[i * n + j] } else { canary };
                    assert_eq!(
                        v.to_bits(),
                        expect.to_bits(),
                        "{backend} t{threads} ({i},{j})"
                    );
                }
            }
        }
    }
}

#[test]
fn nan_in_row_5_reports_its_flat_index() {
    let mut rng = Rng::new(4);
    let (m, k, n) = (8, 11, 6);
    let w = weight(&mut rng, n, k);
    for backend in available_backends() {
        let l = layer(&w, InputQuantization::PerRow, backend);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = mixed_rows(m, k);
            x[5 * k + 7] = bad;
            x[6 * k + 1] = f32::NAN;
            let err = l.forward_vec(&x, m).unwrap_err();
            assert!(
                matches!(err, Error::NonFinite { index, .. } if index == 5 * k + 7),
                "{backend}: {err:?}"
            );
            // Strided: the index stays `row * cols + col`.
            let xs = k + 2;
            let mut xv = vec![0.0f32; (m - 1) * xs + k];
            for i in 0..m {
                xv[i * xs..i * xs + k].copy_from_slice(&x[i * k..(i + 1) * k]);
            }
            let mut out = vec![0.0; m * n];
            let err = l
                .forward(
                    MatRef::new(&xv, m, k, xs).unwrap(),
                    MatMut::dense(&mut out, m, n).unwrap(),
                )
                .unwrap_err();
            assert!(
                matches!(err, Error::NonFinite { index, .. } if index == 5 * k + 7),
                "{backend} strided: {err:?}"
            );
        }
    }
}

#[test]
fn per_row_round_trips_through_bytes() {
    let mut rng = Rng::new(5);
    let (m, k, n) = (4, 9, 5);
    let w = weight(&mut rng, n, k);
    let x = mixed_rows(m, k);
    for backend in available_backends() {
        let l = layer(&w, InputQuantization::PerRow, backend);
        let back = DynamicLinear::from_bytes(&l.to_bytes()).unwrap();
        assert_eq!(back.input_quantization(), InputQuantization::PerRow);
        assert_eq!(
            bits(&back.forward_vec(&x, m).unwrap()),
            bits(&l.forward_vec(&x, m).unwrap())
        );
    }
}
