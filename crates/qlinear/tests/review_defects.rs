//! Regression tests for the defects of the adversarial review (issue 12), one test per
//! defect of the library (D1-D4, D8); each failed before its fix. The CLI's defects (D5,
//! D9) are tested in `qlinear-cli/tests`, the kernels' pointer arithmetic (D6) by the
//! kernel suites under Miri and AddressSanitizer (see `docs/reliability.md`).

use qlinear::{
    available_backends, ActQParams, DynamicLinear, Error, Linear, MatMut, MatRef, Profile,
    QuantizedWeight, WeightQParams,
};

fn per_tensor(scale: f32) -> WeightQParams {
    WeightQParams::PerTensor {
        scale,
        zero_point: 0,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// D1: a dynamic layer without bias whose folded multiplier underflows to zero gives the
/// reference's `-0.0` for a negative accumulator, not `+0.0`.
#[test]
fn d1_dynamic_sign_of_zero_without_bias() {
    // The review's repro: weight [-1], 1 x 1, per-tensor scale 1e-45, input [1.0].
    let want = qlinear_reference::dynamic_linear(
        &MatRef::dense(&[1.0f32], 1, 1).unwrap(),
        &[-1],
        1,
        &per_tensor(1e-45),
        None,
        false,
        false,
        Profile::Fbgemm,
    )
    .unwrap();
    assert_eq!(
        want[0].to_bits(),
        (-0.0f32).to_bits(),
        "reference gives -0.0"
    );
    for b in available_backends() {
        let w = QuantizedWeight::new(vec![-1], 1, 1, per_tensor(1e-45)).unwrap();
        // Full range: the reference above is called with reduce_range = false.
        let layer = DynamicLinear::builder(w)
            .reduce_range(false)
            .backend(b)
            .build()
            .unwrap();
        let got = layer.forward_vec(&[1.0], 1).unwrap();
        assert_eq!(bits(&got), bits(&want), "{b}: {got:?}");
    }
    // Wider: several columns, both profiles, tiny scales, a few rows and threads.
    let (m, k, n) = (5, 7, 37);
    let w: Vec<i8> = (0..n * k)
        .map(|i| (i as i32 * 53 % 255 - 127) as i8)
        .collect();
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 29 % 17) as f32 - 8.0) * 0.3)
        .collect();
    for profile in [Profile::Fbgemm, Profile::Qnnpack] {
        for scale in [1e-45f32, 1e-44, 1e-41] {
            let want = qlinear_reference::dynamic_linear(
                &MatRef::dense(&x, m, k).unwrap(),
                &w,
                n,
                &per_tensor(scale),
                None,
                false,
                false,
                profile,
            )
            .unwrap();
            for b in available_backends() {
                let qw = QuantizedWeight::new(w.clone(), n, k, per_tensor(scale)).unwrap();
                let layer = DynamicLinear::builder(qw)
                    .profile(profile)
                    .reduce_range(false)
                    .backend(b)
                    .build()
                    .unwrap();
                for t in [1, 2] {
                    let mut out = vec![0f32; m * n];
                    layer
                        .forward_with_threads(
                            MatRef::dense(&x, m, k).unwrap(),
                            MatMut::dense(&mut out, m, n).unwrap(),
                            t,
                        )
                        .unwrap();
                    assert_eq!(
                        bits(&out),
                        bits(&want),
                        "{b} {profile:?} scale {scale:e} t={t}"
                    );
                }
            }
        }
    }
}

/// D2: an absurd thread count is clamped, not multiplied into an overflow.
#[test]
fn d2_thread_count_overflow() {
    // Under Miri (interpreted) 20 rows instead of 200.
    let (m, k, n) = (if cfg!(miri) { 20 } else { 200 }, 3, 5);
    let w = QuantizedWeight::new(vec![3; n * k], n, k, per_tensor(0.1)).unwrap();
    let a: Vec<u8> = (0..m * k).map(|i| (i * 7) as u8).collect();
    let xf: Vec<f32> = a.iter().map(|&v| v as f32 * 0.01).collect();
    for b in available_backends() {
        let layer = Linear::builder(
            w.clone(),
            ActQParams::new(0.1, 3).unwrap(),
            ActQParams::new(0.5, 9).unwrap(),
        )
        .backend(b)
        .build()
        .unwrap();
        let want = layer.forward_vec(&a, m).unwrap();
        let dynamic = DynamicLinear::builder(w.clone())
            .backend(b)
            .build()
            .unwrap();
        for t in [usize::MAX, usize::MAX / 2, usize::MAX / 31, 1 << 40] {
            for rows in [1, if cfg!(miri) { 7 } else { 64 }, m] {
                let mut out = vec![0u8; rows * n];
                layer
                    .forward_with_threads(
                        MatRef::dense(&a[..rows * k], rows, k).unwrap(),
                        MatMut::dense(&mut out, rows, n).unwrap(),
                        t,
                    )
                    .unwrap();
                assert_eq!(out, want[..rows * n], "{b} threads {t} rows {rows}");
                let mut outf = vec![0f32; rows * n];
                dynamic
                    .forward_with_threads(
                        MatRef::dense(&xf[..rows * k], rows, k).unwrap(),
                        MatMut::dense(&mut outf, rows, n).unwrap(),
                        t,
                    )
                    .unwrap();
                // Dynamic qparams depend on the rows given: compare with the same rows.
                let want_f = dynamic.forward_vec(&xf[..rows * k], rows).unwrap();
                assert_eq!(bits(&outf), bits(&want_f), "{b} threads {t} rows {rows}");
            }
        }
        let mut layer = layer;
        layer.set_threads(usize::MAX);
        assert_eq!(
            layer.forward_vec(&a, m).unwrap(),
            want,
            "{b} set_threads(MAX)"
        );
    }
}

/// D3: the reference's public functions check `n * k` instead of trusting it.
#[test]
fn d3_reference_checks_size_products() {
    let a = [1u8; 2];
    let av = MatRef::dense(&a, 1, 2).unwrap();
    let xf = [1.0f32; 2];
    let xv = MatRef::dense(&xf, 1, 2).unwrap();
    let w = [1i8; 4];
    for n in [
        1usize << 63,
        usize::MAX,
        usize::MAX / 2 + 1,
        (usize::MAX / 2) + 2,
    ] {
        let act = ActQParams::new(0.1, 0).unwrap();
        let r = std::panic::catch_unwind(|| {
            qlinear_reference::static_linear(
                &av,
                act,
                &w,
                n,
                &per_tensor(0.1),
                None,
                act,
                false,
                Profile::Fbgemm,
            )
        });
        assert!(
            matches!(r, Ok(Err(Error::Dimension(_)))),
            "static n = {n}: {r:?}"
        );
        let r = std::panic::catch_unwind(|| {
            qlinear_reference::dynamic_linear(
                &xv,
                &w,
                n,
                &per_tensor(0.1),
                None,
                false,
                false,
                Profile::Qnnpack,
            )
        });
        assert!(
            matches!(r, Ok(Err(Error::Dimension(_)))),
            "dynamic n = {n}: {r:?}"
        );
    }
    // An empty weight with n * k wrapping to 0 must not reach the allocation of n outputs.
    let r = std::panic::catch_unwind(|| {
        let act = ActQParams::new(0.1, 0).unwrap();
        qlinear_reference::static_linear(
            &av,
            act,
            &[],
            1 << 63,
            &per_tensor(0.1),
            None,
            act,
            false,
            Profile::Fbgemm,
        )
    });
    assert!(matches!(r, Ok(Err(Error::Dimension(_)))), "{r:?}");
    // The packed size of an absurd layer is None, not a wrapped product.
    let layout = qlinear_reference::contract::PackedLayout { nr: 32, kr: 4 };
    assert_eq!(layout.checked_packed_len(usize::MAX / 8, 64), None);
    assert_eq!(layout.checked_packed_len(usize::MAX, 1), None);
    assert_eq!(layout.checked_packed_len(33, 5), Some(64 * 8));
}
