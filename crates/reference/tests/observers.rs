//! Property tests of the activation observers and of `ActQParams::quantize` /
//! `dequantize`, cross-checked against the functions the rest of the oracle already
//! trusts:
//!
//! * the activation observers' qparams against the weight [`Observer`]'s (one shared
//!   `_calculate_qparams`, whose qint8 results the torch conformance vectors pin down):
//!   for per-tensor affine the scale is the same f32 and the zero point is shifted by the
//!   range offset (128, or 64 with reduce_range);
//! * batching: a `MinMaxObserver` fed batch by batch equals one fed everything at once;
//! * the moving average's limits (constant 0 and 1);
//! * torch's guarantee that zero is exactly representable;
//! * the `ActQParams` quantize forms against `quantize_activations` / `dequantize`, the
//!   functions the dynamic path uses.
//!
//! Bit-for-bit comparisons only.

use proptest::prelude::*;
use qlinear_reference::observer::{
    ActivationObserver, MinMaxObserver, MovingAverageMinMaxObserver,
};
use qlinear_reference::{
    dequantize, observe_weight, quantize_activations, ActQParams, MatMut, MatRef, Observer,
    WeightQParams,
};

/// Finite values of every magnitude, zeros of both signs included.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(0.0f32),
        Just(-0.0f32),
        -1e3f32..1e3,
        -1e-3f32..1e-3,
        -1e30f32..1e30,
    ]
}

proptest! {
    #[test]
    fn activation_qparams_are_the_weight_observers_shifted(
        data in prop::collection::vec(value(), 1..50),
        reduce_range in any::<bool>(),
    ) {
        let mut obs = MinMaxObserver::new().reduce_range(reduce_range);
        obs.observe(&data).unwrap();
        let weight_obs = Observer { per_channel: false, symmetric: false, reduce_range };
        let wq = observe_weight(&data, 1, data.len(), weight_obs).unwrap();
        let WeightQParams::PerTensor { scale, zero_point } = wq else {
            unreachable!("per-tensor observer")
        };
        // [0, 255] is [-128, 127] shifted by 128; [0, 127] is [-64, 63] shifted by 64.
        let shift = if reduce_range { 64 } else { 128 };
        match obs.qparams() {
            Ok(q) => {
                prop_assert_eq!(q.scale.to_bits(), scale.to_bits());
                prop_assert_eq!(q.zero_point, zero_point + shift);
            }
            // Only an overflowing range is refused (the weight observer keeps the inf).
            Err(_) => prop_assert!(!scale.is_finite()),
        }
    }

    #[test]
    fn batches_fold_like_one_tensor(
        data in prop::collection::vec(value(), 1..60),
        cuts in prop::collection::vec(0usize..60, 0..6),
    ) {
        let mut whole = MinMaxObserver::new();
        whole.observe(&data).unwrap();
        let mut parts = MinMaxObserver::new();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        cuts.push(0);
        cuts.push(data.len());
        cuts.sort_unstable();
        for w in cuts.windows(2) {
            parts.observe(&data[w[0]..w[1]]).unwrap();
        }
        let (a, b) = (whole.min_max().unwrap(), parts.min_max().unwrap());
        // min/max of equal values may pick either zero sign; compare as numbers there.
        prop_assert!(a.0 == b.0 && a.1 == b.1);
        prop_assert_eq!(whole.qparams(), parts.qparams());
    }

    #[test]
    fn moving_average_limits(
        first in prop::collection::vec(value(), 1..20),
        second in prop::collection::vec(value(), 1..20),
    ) {
        let mut mm1 = MinMaxObserver::new();
        mm1.observe(&first).unwrap();
        let mut mm2 = MinMaxObserver::new();
        mm2.observe(&second).unwrap();
        let mut frozen = MovingAverageMinMaxObserver::with_averaging_constant(0.0).unwrap();
        frozen.observe(&first).unwrap();
        frozen.observe(&second).unwrap();
        prop_assert_eq!(frozen.qparams(), mm1.qparams());
        // With constant 1: min + 1 * (cur - min) is cur unless the subtraction rounds.
        let mut last = MovingAverageMinMaxObserver::with_averaging_constant(1.0).unwrap();
        last.observe(&first).unwrap();
        last.observe(&second).unwrap();
        let (lo, hi) = last.min_max().unwrap();
        let (lo0, hi0) = mm1.min_max().unwrap();
        let (lo2, hi2) = mm2.min_max().unwrap();
        prop_assert_eq!(lo.to_bits(), (lo0 + (lo2 - lo0)).to_bits());
        prop_assert_eq!(hi.to_bits(), (hi0 + (hi2 - hi0)).to_bits());
    }

    /// torch's observers make zero exactly representable: quantize(0) is the zero
    /// point and dequantizes to 0.
    #[test]
    fn zero_is_exact(data in prop::collection::vec(value(), 1..40), rr in any::<bool>()) {
        let mut obs = MinMaxObserver::new().reduce_range(rr);
        obs.observe(&data).unwrap();
        if let Ok(q) = obs.qparams() {
            if q.quantize(0.0).is_ok() {
                prop_assert_eq!(q.quantize(0.0).unwrap() as i32, q.zero_point);
                prop_assert_eq!(q.dequantize(q.zero_point as u8), 0.0);
            }
            let qmax = if rr { 127 } else { 255 };
            prop_assert!(q.zero_point <= qmax);
        }
    }

    #[test]
    fn quantize_forms_equal_the_dynamic_paths_functions(
        data in prop::collection::vec(value(), 0..64),
        scale in prop_oneof![1e-6f32..1e3, Just(1.0f32), Just(f32::MIN_POSITIVE)],
        zp in prop_oneof![Just(0), Just(255), 0..=255i32],
        cols in 1usize..9,
    ) {
        let p = ActQParams::new(scale, zp).unwrap();
        let rows = data.len() / cols;
        let data = &data[..rows * cols];
        let want = quantize_activations(&MatRef::dense(data, rows, cols).unwrap(), scale, zp);
        prop_assert_eq!(&p.quantize_vec(data).unwrap(), &want);
        let mut q = vec![0u8; rows * cols];
        p.quantize_mat(
            MatRef::dense(data, rows, cols).unwrap(),
            MatMut::dense(&mut q, rows, cols).unwrap(),
        )
        .unwrap();
        prop_assert_eq!(&q, &want);
        for (&x, &w) in data.iter().zip(&want) {
            prop_assert_eq!(p.quantize(x).unwrap(), w);
        }
        let back = dequantize(&want, scale, zp);
        let got = p.dequantize_vec(&want);
        prop_assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}
