//! The f32-friendly API (issue 9, item 3), bit for bit:
//!
//! * `ActQParams::quantize` / `dequantize` against values derived by hand from torch's
//!   rule (`q = clamp(round_half_even(f(x * f(1 / scale))) + zp, 0, 255)`,
//!   `x = f(f32(q - zp) * scale)`): rounding ties, the multiply-by-inverse choice,
//!   clamping, extreme scales, non-finite input;
//! * `Linear::forward_f32` equals quantize -> forward -> dequantize composed by hand on
//!   every backend, thread count and strided view;
//! * the activation observers and `Calibrator` against torch's formulas, worked by hand;
//! * `Debug` is a summary (no weight dump), `Clone` gives an equal layer;
//! * `DynamicLinear`'s `reduce_range` default follows the profile;
//! * error messages say what was wrong, the value and what was expected.
//!
//! Every float comparison is on `to_bits()`, never a tolerance.

use proptest::prelude::*;
use qlinear::{
    available_backends, ActQParams, ActivationObserver, Backend, Calibrator, DynamicLinear, Error,
    Linear, MatMut, MatRef, MinMaxObserver, MovingAverageMinMaxObserver, Observer, Profile,
    QuantizedWeight, WeightQParams,
};
use qlinear_reference::testkit::{Rng, StaticCase};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Reference, Auto, then every other backend this CPU runs (each once).
fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Reference, Backend::Auto];
    for b in available_backends() {
        if !v.contains(&b) {
            v.push(b);
        }
    }
    v
}

fn act(scale: f32, zp: i32) -> ActQParams {
    ActQParams::new(scale, zp).unwrap()
}

// ---------------------------------------------------------------------------------------
// quantize / dequantize
// ---------------------------------------------------------------------------------------

#[test]
fn quantize_rounds_ties_to_even_after_the_multiply() {
    // scale 0.5: inv = 2 exactly, so x * inv is exact and x = k/4 lands on ties.
    let p = act(0.5, 10);
    for (x, want) in [
        (0.25f32, 10u8), // 0.5 -> 0
        (0.75, 12),      // 1.5 -> 2
        (1.25, 12),      // 2.5 -> 2
        (1.75, 14),      // 3.5 -> 4
        (-0.25, 10),     // -0.5 -> -0
        (-0.75, 8),      // -1.5 -> -2
        (-1.25, 8),      // -2.5 -> -2
        (0.0, 10),
        (-0.0, 10),
    ] {
        assert_eq!(p.quantize(x).unwrap(), want, "{x}");
    }
    // The zero point is added after rounding (fbgemm's non-legacy Quantize): with
    // zp = 1, 0.5 rounds to 0 and gives 1; rounding 0.5 + 1 = 1.5 would give 2.
    assert_eq!(act(0.5, 1).quantize(0.25).unwrap(), 1);
    assert_eq!(act(0.5, 1).quantize(0.75).unwrap(), 3); // 1.5 -> 2, + 1

    // fbgemm's own example for multiplying by the inverse: x / scale = 127.49999 would
    // round to 127; x * f(1 / scale) = 127.5 exactly, a tie, to even: 128.
    // The digits as fbgemm's comment spells them (more than f32 holds).
    #[allow(clippy::excessive_precision)]
    let (scale, x) = (0.002_148_548_61f32, 0.273_939_937f32);
    assert_eq!(x * (1.0 / scale), 127.5);
    assert_eq!((x / scale).round_ties_even(), 127.0);
    assert_eq!(act(scale, 0).quantize(x).unwrap(), 128);
}

#[test]
fn quantize_clamps_and_handles_extreme_scales() {
    let p = act(0.1, 128);
    assert_eq!(p.quantize(12.7).unwrap(), 255); // 127 + 128
    assert_eq!(p.quantize(12.8).unwrap(), 255); // 128 + 128, clamped
    assert_eq!(p.quantize(-12.8).unwrap(), 0); // -128 + 128
    assert_eq!(p.quantize(-12.9).unwrap(), 0); // clamped
    for x in [1e30f32, f32::MAX, 3e9] {
        assert_eq!(p.quantize(x).unwrap(), 255, "{x}");
        assert_eq!(p.quantize(-x).unwrap(), 0, "{x}");
    }
    // A zero point >= 128 with x * inv near i32::MAX: torch's AVX2 path wraps to 0,
    // qlinear saturates (docs/semantics.md, deliberate differences).
    assert_eq!(act(1.0, 200).quantize(2_147_483_520.0).unwrap(), 255);

    // The largest scale: inv = f(1 / f32::MAX) is subnormal but finite.
    let big = act(f32::MAX, 3);
    let inv = 1.0f32 / f32::MAX;
    assert!(inv > 0.0 && !inv.is_normal());
    assert_eq!(
        big.quantize(f32::MAX).unwrap(),
        3 + (f32::MAX * inv).round_ties_even() as u8
    );
    assert_eq!(big.quantize(1e30).unwrap(), 3);
    // The smallest normal scale: inv = 2^126 exactly.
    let tiny = act(f32::MIN_POSITIVE, 0);
    assert_eq!(tiny.quantize(f32::MIN_POSITIVE * 2.5).unwrap(), 2); // 2.5 -> 2
    assert_eq!(tiny.quantize(f32::MIN_POSITIVE * 3.5).unwrap(), 4); // 3.5 -> 4
    assert_eq!(tiny.quantize(1.0).unwrap(), 255);
    // A subnormal scale whose inverse overflows cannot quantize: an error, not 0 * inf.
    let r = act(1e-45, 7).quantize(0.0);
    assert!(matches!(r, Err(Error::ScaleTooSmall { .. })), "{r:?}");
    // Just above the threshold it works.
    assert!(act(3e-39, 0).quantize(0.0).is_ok());
}

#[test]
fn quantize_rejects_non_finite_input_and_bad_fields() {
    let p = act(0.1, 128);
    for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
        assert!(matches!(p.quantize(x), Err(Error::NonFinite { .. })), "{x}");
    }
    let mut out = [9u8; 4];
    let r = p.quantize_slice(&[0.0, 1.0, f32::NAN, f32::INFINITY], &mut out);
    assert!(matches!(r, Err(Error::NonFinite { index: 2, .. })), "{r:?}");
    assert_eq!(out, [9; 4], "output untouched on error");
    let r = p.quantize_slice(&[0.0; 3], &mut out);
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                expected: 3,
                got: 4,
                ..
            })
        ),
        "{r:?}"
    );
    // Strided: the flat index counts columns, not the stride; padding is never read.
    let x = [0.0f32, 1.0, f32::NAN, 2.0, f32::INFINITY, f32::NAN];
    let mut q = [0u8; 4];
    let r = p.quantize_mat(
        MatRef::new(&x, 2, 2, 3).unwrap(),
        MatMut::dense(&mut q, 2, 2).unwrap(),
    );
    assert!(matches!(r, Err(Error::NonFinite { index: 3, .. })), "{r:?}");
    let x = [0.0f32, 1.0, f32::NAN, 2.0, -1.0, f32::NAN];
    p.quantize_mat(
        MatRef::new(&x, 2, 2, 3).unwrap(),
        MatMut::dense(&mut q, 2, 2).unwrap(),
    )
    .unwrap();
    assert_eq!(q, [128, 138, 148, 118]);
    // Fields are public: an out-of-range one is an error, not a panic.
    let bad = ActQParams {
        scale: 0.0,
        zero_point: 0,
    };
    assert!(matches!(bad.quantize(1.0), Err(Error::InvalidScale { .. })));
    let bad = ActQParams {
        scale: 1.0,
        zero_point: 256,
    };
    assert!(matches!(
        bad.quantize_vec(&[1.0]),
        Err(Error::ZeroPointOutOfRange { .. })
    ));
    let bad = ActQParams {
        scale: 1.0,
        zero_point: i32::MIN,
    };
    // dequantize never fails or overflows, even then.
    assert_eq!(bad.dequantize(255), 255.0 + 2_147_483_648.0);
}

#[test]
fn dequantize_is_one_rounding_of_q_minus_zp_times_scale() {
    let p = act(0.1, 128);
    // Hand values: f32(q - zp) is exact, then one f32 multiply.
    assert_eq!(p.dequantize(128).to_bits(), 0.0f32.to_bits());
    assert_eq!(p.dequantize(0).to_bits(), (-128.0f32 * 0.1f32).to_bits());
    assert_eq!(p.dequantize(255).to_bits(), (127.0f32 * 0.1f32).to_bits());
    assert_eq!(p.dequantize(129).to_bits(), 0.1f32.to_bits());
    assert_eq!(p.dequantize(131).to_bits(), (3.0f32 * 0.1f32).to_bits());
    // 7 * 0.1f32 rounds once in f32; the f64 product rounded to f32 would agree here,
    // but 0.7f32 is not what torch computes either way: check the one-rounding value.
    assert_eq!(p.dequantize(135).to_bits(), (7.0f32 * 0.1f32).to_bits());
    // A huge scale overflows to infinity, as torch's f32 multiply does.
    assert_eq!(act(f32::MAX, 0).dequantize(2), f32::INFINITY);
    let q: Vec<u8> = (0..=255).collect();
    let v = p.dequantize_vec(&q);
    let mut w = vec![0f32; 256];
    p.dequantize_slice(&q, &mut w).unwrap();
    assert_eq!(bits(&v), bits(&w));
    for (i, &x) in v.iter().enumerate() {
        assert_eq!(x.to_bits(), ((i as i32 - 128) as f32 * 0.1).to_bits());
    }
    assert!(matches!(
        p.dequantize_slice(&q, &mut w[..3]),
        Err(Error::Shape { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every element form agrees with torch's formula, written out here independently
    /// (in f64 after the one f32 multiply, so no overflow can hide a difference).
    #[test]
    fn quantize_forms_equal_the_formula(
        scale in 1e-30f32..1e30,
        zp in 0i32..=255,
        xs in prop::collection::vec(-1e32f32..1e32, 0..40),
        ties in prop::collection::vec(-600i32..600, 0..40),
    ) {
        let p = ActQParams::new(scale, zp).unwrap();
        // Mix arbitrary values with exact multiples of scale / 2 (ties when exact).
        let mut x = xs.clone();
        x.extend(ties.iter().map(|&t| t as f32 * 0.5 * scale));
        let inv = 1.0f32 / scale;
        let want: Vec<u8> = x
            .iter()
            .map(|&v| (((v * inv) as f64).round_ties_even() + zp as f64).clamp(0.0, 255.0) as u8)
            .collect();
        let got = p.quantize_vec(&x).unwrap();
        prop_assert_eq!(&got, &want);
        for (&v, &w) in x.iter().zip(&want) {
            prop_assert_eq!(p.quantize(v).unwrap(), w);
        }
    }

    /// For ordinary scales, quantize(dequantize(q)) == q for every q.
    #[test]
    fn dequantize_then_quantize_round_trips(scale in 1e-30f32..1e30, zp in 0i32..=255) {
        let p = ActQParams::new(scale, zp).unwrap();
        let q: Vec<u8> = (0..=255).collect();
        prop_assert_eq!(p.quantize_vec(&p.dequantize_vec(&q)).unwrap(), q);
    }
}

// ---------------------------------------------------------------------------------------
// Linear::forward_f32
// ---------------------------------------------------------------------------------------

fn static_layer(c: &StaticCase, backend: Backend) -> Linear {
    let w = QuantizedWeight::new(c.w.clone(), c.n, c.k, c.wq.clone()).unwrap();
    Linear::builder(w, c.x, c.y)
        .maybe_bias(c.bias.clone())
        .relu(c.relu)
        .profile(c.profile)
        .backend(backend)
        .build()
        .unwrap()
}

/// f32 inputs around the input qparams' range: in range, out of range, exact ties.
fn f32_input(rng: &mut Rng, x: ActQParams, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let level = rng.range_i32(-300, 300) as f32;
            match rng.below(3) {
                0 => (level + 0.5) * x.scale,
                1 => level * x.scale,
                _ => (level + rng.unit_f32()) * x.scale,
            }
        })
        .collect()
}

#[test]
fn forward_f32_equals_quantize_forward_dequantize_on_every_backend() {
    let mut rng = Rng::new(0xF32);
    for &(m, k, n) in &[(1, 1, 1), (3, 17, 5), (8, 64, 33), (13, 100, 70), (0, 9, 4)] {
        for _ in 0..3 {
            let c = StaticCase::random(&mut rng, m.max(1), k, n);
            let stride = k + 3;
            let mut x = f32_input(&mut rng, c.x, m * stride);
            // Padding past each row holds NaN: it must never be read.
            for i in 0..m {
                x[i * stride + k..(i + 1) * stride].fill(f32::NAN);
            }
            let dense: Vec<f32> = (0..m)
                .flat_map(|i| x[i * stride..i * stride + k].to_vec())
                .collect();
            // By hand: QuantStub, the u8 layer on the reference engine, DeQuantStub.
            let qx = c.x.quantize_vec(&dense).unwrap();
            let reference = static_layer(&c, Backend::Reference);
            let qy = reference.forward_vec(&qx, m).unwrap();
            let want = c.y.dequantize_vec(&qy);
            for b in backends() {
                let layer = static_layer(&c, b);
                let got = layer.forward_f32_vec(&dense, m).unwrap();
                assert_eq!(bits(&got), bits(&want), "{b} {m}x{k}x{n}");
                for threads in [1, 2, 3] {
                    let ostride = n + 2;
                    let mut out = vec![f32::from_bits(0x7fc0_dead); m * ostride];
                    layer
                        .forward_f32_with_threads(
                            MatRef::new(&x, m, k, stride).unwrap(),
                            MatMut::new(&mut out, m, n, ostride).unwrap(),
                            threads,
                        )
                        .unwrap();
                    for i in 0..m {
                        assert_eq!(
                            bits(&out[i * ostride..i * ostride + n]),
                            bits(&want[i * n..(i + 1) * n]),
                            "{b} t={threads} row {i}"
                        );
                        // The padding of the output is untouched.
                        if i * ostride + n < out.len() {
                            assert!(out[i * ostride + n..(i + 1) * ostride]
                                .iter()
                                .all(|v| v.to_bits() == 0x7fc0_dead));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn forward_f32_errors() {
    let c = StaticCase::random(&mut Rng::new(3), 2, 4, 3);
    for b in backends() {
        let layer = static_layer(&c, b);
        let mut x = vec![0.5f32; 8];
        x[6] = f32::NEG_INFINITY;
        let mut out = vec![7.0f32; 6];
        let r = layer.forward_f32(
            MatRef::dense(&x, 2, 4).unwrap(),
            MatMut::dense(&mut out, 2, 3).unwrap(),
        );
        assert!(
            matches!(
                r,
                Err(Error::NonFinite {
                    what: "input",
                    index: 6
                })
            ),
            "{b}: {r:?}"
        );
        assert_eq!(out, [7.0; 6], "{b}: output untouched");
        let r = layer.forward_f32_vec(&[0.0; 7], 2);
        assert!(matches!(r, Err(Error::BufferTooSmall { .. })), "{b}: {r:?}");
        let r = layer.forward_f32(
            MatRef::dense(&[0.0; 10], 2, 5).unwrap(),
            MatMut::dense(&mut out, 2, 3).unwrap(),
        );
        assert!(matches!(r, Err(Error::Shape { .. })), "{b}: {r:?}");
        let r = layer.forward_f32(
            MatRef::dense(&[0.0; 8], 2, 4).unwrap(),
            MatMut::dense(&mut out, 1, 3).unwrap(),
        );
        assert!(matches!(r, Err(Error::Shape { .. })), "{b}: {r:?}");
        // M = 0 is fine.
        assert!(layer.forward_f32_vec(&[], 0).unwrap().is_empty());
    }
    // An input scale too small to quantize with.
    let w = QuantizedWeight::new(
        vec![1; 4],
        1,
        4,
        WeightQParams::PerTensor {
            scale: 1.0,
            zero_point: 0,
        },
    )
    .unwrap();
    let layer = Linear::builder(w, act(1e-45, 0), act(1.0, 0))
        .build()
        .unwrap();
    let r = layer.forward_f32_vec(&[0.0; 4], 1);
    assert!(
        matches!(r, Err(Error::ScaleTooSmall { what: "input", .. })),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Activation observers, by hand from torch's `_calculate_qparams`
// ---------------------------------------------------------------------------------------

#[test]
fn min_max_observer_matches_torch_formula_by_hand() {
    let mut o = MinMaxObserver::new();
    assert!(matches!(o.qparams(), Err(Error::NotObserved(_))));
    o.observe(&[]).unwrap(); // numel() == 0: no change
    assert_eq!(o.min_max(), None);
    o.observe(&[-1.0, 0.5]).unwrap();
    o.observe(&[3.0, -0.25]).unwrap();
    assert_eq!(o.min_max(), Some((-1.0, 3.0)));
    // scale = f(4 / 255); -1 / scale = -63.75 -> round -64 -> zp = 0 - (-64) = 64.
    let q = o.qparams().unwrap();
    assert_eq!(q.scale.to_bits(), (4.0f32 / 255.0).to_bits());
    assert_eq!(q.zero_point, 64);

    let qp = |data: &[f32], rr: bool| {
        let mut o = MinMaxObserver::new().reduce_range(rr);
        o.observe(data).unwrap();
        o.qparams().unwrap()
    };
    // A tie in the zero point: range 255 -> scale 1 exactly; -0.5 / 1 rounds to -0
    // (half to even), so zp 0; round-half-away would give 1.
    assert_eq!(qp(&[-0.5, 254.5], false), act(1.0, 0));
    // -1.5 -> -2: zp 2.
    assert_eq!(qp(&[-1.5, 253.5], false), act(1.0, 2));
    // reduce_range: quant_max 127, so a range of 127 gives scale 1.
    assert_eq!(qp(&[-2.5, 124.5], true), act(1.0, 2));
    // All zeros: scale = max(0, eps) = f32::EPSILON, zp 0 (torch gives the same).
    assert_eq!(qp(&[0.0, -0.0, 0.0], false), act(f32::EPSILON, 0));
    // A tiny positive range is floored at eps too; min is folded with 0.
    assert_eq!(qp(&[1e-10, 2e-10], false), act(f32::EPSILON, 0));
    // Positive only: min folds to 0, zp 0, scale = f(max / 255).
    let q = qp(&[0.5, 2.0], false);
    assert_eq!(
        (q.scale.to_bits(), q.zero_point),
        ((2.0f32 / 255.0).to_bits(), 0)
    );
    // Negative only: max folds to 0; -2 / f(2 / 255) rounds to -255: zp 255.
    let q = qp(&[-2.0, -1.0], false);
    assert_eq!(
        (q.scale.to_bits(), q.zero_point),
        ((2.0f32 / 255.0).to_bits(), 255)
    );
    let q = qp(&[-2.0, -1.0], true);
    assert_eq!(
        (q.scale.to_bits(), q.zero_point),
        ((2.0f32 / 127.0).to_bits(), 127)
    );
}

#[test]
fn observers_refuse_non_finite_and_overflow() {
    let mut o = MinMaxObserver::new();
    o.observe(&[1.0, -1.0]).unwrap();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let r = o.observe(&[0.0, 5.0, bad]);
        assert!(matches!(r, Err(Error::NonFinite { index: 2, .. })), "{r:?}");
        assert_eq!(o.min_max(), Some((-1.0, 1.0)), "unchanged after an error");
    }
    // Strided: the padding (NaN) is not observed.
    let x = [1.0f32, 2.0, f32::NAN, -4.0, 0.5, f32::NAN];
    o.observe_mat(MatRef::new(&x, 2, 2, 3).unwrap()).unwrap();
    assert_eq!(o.min_max(), Some((-4.0, 2.0)));
    // A range whose scale overflows f32.
    let mut w = MinMaxObserver::new();
    w.observe(&[-3e38, 3e38]).unwrap();
    assert!(matches!(w.qparams(), Err(Error::InvalidScale { .. })));
    w.reset();
    assert_eq!(w.min_max(), None);
}

#[test]
fn moving_average_observer_matches_torch_steps() {
    let mut o = MovingAverageMinMaxObserver::new();
    assert_eq!(o.averaging_constant(), 0.01f32);
    o.observe(&[]).unwrap();
    assert_eq!(o.min_max(), None);
    // The first batch sets the range directly.
    o.observe(&[-2.0, 6.0, 1.0]).unwrap();
    assert_eq!(o.min_max(), Some((-2.0, 6.0)));
    // Then min = f(min + f(0.01f32 * f(cur - min))), each step rounded in f32.
    let (mut min, mut max) = (-2.0f32, 6.0f32);
    for batch in [[-4.0f32, 10.0], [0.5, 0.75], [-1e-3, 123.456]] {
        o.observe(&batch).unwrap();
        let d_min = batch[0] - min;
        let d_max = batch[1] - max;
        min += 0.01f32 * d_min;
        max += 0.01f32 * d_max;
        let (got_min, got_max) = o.min_max().unwrap();
        assert_eq!(
            (got_min.to_bits(), got_max.to_bits()),
            (min.to_bits(), max.to_bits())
        );
    }
    // Worked: after [-4, 10]: min = -2 + 0.01 * -2 = -2.02, max = 6 + 0.01 * 4 = 6.04
    // (both as f32 roundings); the qparams use the same formula as MinMaxObserver.
    let mut m = MinMaxObserver::new();
    m.observe(&[min, max]).unwrap();
    assert_eq!(o.qparams().unwrap(), m.qparams().unwrap());
    let mut mr = MovingAverageMinMaxObserver::new().reduce_range(true);
    mr.observe(&[min, max]).unwrap();
    let mut mm = MinMaxObserver::new().reduce_range(true);
    mm.observe(&[min, max]).unwrap();
    assert_eq!(mr.qparams().unwrap(), mm.qparams().unwrap());
    // A NaN leaves it unchanged.
    assert!(o.observe(&[f32::NAN]).is_err());
    assert_eq!(o.min_max(), Some((min, max)));
    // Averaging constants: 0 freezes after the first batch, 1 follows the last batch.
    let mut frozen = MovingAverageMinMaxObserver::with_averaging_constant(0.0).unwrap();
    frozen.observe(&[-1.0, 1.0]).unwrap();
    frozen.observe(&[-9.0, 9.0]).unwrap();
    assert_eq!(frozen.min_max(), Some((-1.0, 1.0)));
    let mut last = MovingAverageMinMaxObserver::with_averaging_constant(1.0).unwrap();
    last.observe(&[-1.0, 1.0]).unwrap();
    last.observe(&[-9.0, 9.0]).unwrap();
    assert_eq!(last.min_max(), Some((-9.0, 9.0)));
    for c in [-0.1f32, 1.5, f32::NAN] {
        assert!(MovingAverageMinMaxObserver::with_averaging_constant(c).is_err());
    }
}

/// The observers' formula and the dynamic layer's (`ChooseQuantizationParams`) are
/// different functions: on the same range they can disagree, and each is kept.
#[test]
fn observer_and_dynamic_qparams_differ_as_documented() {
    // All zeros: the observer floors at f32::EPSILON, the dynamic path uses 0.1.
    let mut o = MinMaxObserver::new();
    o.observe(&[0.0]).unwrap();
    let d = qlinear_reference::quantize::dynamic_qparams_from_min_max(0.0, 0.0, false);
    assert_eq!(o.qparams().unwrap().scale, f32::EPSILON);
    assert_eq!(d.scale, 0.1);
    // Search a few ranges for a zero point the two formulas choose differently.
    let mut rng = Rng::new(99);
    let differs = (0..2000).any(|_| {
        let lo = -rng.unit_f32() * 10.0;
        let hi = rng.unit_f32() * 10.0;
        let mut o = MinMaxObserver::new();
        o.observe(&[lo, hi]).unwrap();
        let d = qlinear_reference::quantize::dynamic_qparams_from_min_max(lo, hi, false);
        let q = o.qparams().unwrap();
        q.zero_point != d.zero_point || q.scale.to_bits() != d.scale.to_bits()
    });
    assert!(differs);
}

// ---------------------------------------------------------------------------------------
// Calibrator
// ---------------------------------------------------------------------------------------

#[test]
fn calibrator_observes_input_and_float_output() {
    let (n, k) = (5, 6);
    let mut rng = Rng::new(5);
    let w = rng.f32s(n * k, 1.0);
    let bias = rng.f32s(n, 0.5);
    let batches: Vec<Vec<f32>> = (0..4).map(|i| rng.f32s(3 * k, 1.0 + i as f32)).collect();
    for relu in [false, true] {
        let mut cal = Calibrator::new(&w, n, k, Some(&bias)).unwrap().relu(relu);
        assert!(matches!(
            cal.build(Observer::PER_CHANNEL_SYMMETRIC),
            Err(Error::NotObserved(_))
        ));
        let mut obs_in = MinMaxObserver::new();
        let mut obs_out = MinMaxObserver::new();
        for x in &batches {
            cal.observe_vec(x, 3).unwrap();
            obs_in.observe(x).unwrap();
            // The float layer, written out: exact products summed in f64, plus the
            // bias, one rounding to f32, then ReLU.
            let mut y = Vec::new();
            for i in 0..3 {
                for j in 0..n {
                    let mut acc = 0.0f64;
                    for kk in 0..k {
                        acc += x[i * k + kk] as f64 * w[j * k + kk] as f64;
                    }
                    let v = (acc + bias[j] as f64) as f32;
                    y.push(if relu && v <= 0.0 { 0.0 } else { v });
                }
            }
            let f = cal.float_forward(MatRef::dense(x, 3, k).unwrap()).unwrap();
            assert_eq!(bits(&f), bits(&y));
            obs_out.observe(&y).unwrap();
        }
        assert_eq!(cal.input_observer(), &obs_in);
        assert_eq!(cal.output_observer(), &obs_out);
        let (qi, qo) = cal.qparams().unwrap();
        assert_eq!(qi, obs_in.qparams().unwrap());
        assert_eq!(qo, obs_out.qparams().unwrap());
        if relu {
            assert_eq!(qo.zero_point, 0);
        }
        // convert: the layer torch's from_float would build.
        let layer = cal
            .build(Observer::PER_CHANNEL_SYMMETRIC)
            .unwrap()
            .build()
            .unwrap();
        let want = Linear::from_float(&w, n, k, Observer::PER_CHANNEL_SYMMETRIC, qi, qo)
            .unwrap()
            .bias(bias.clone())
            .relu(relu)
            .build()
            .unwrap();
        assert_eq!(layer.weight(), want.weight());
        assert_eq!(layer.bias(), Some(&bias[..]));
        assert_eq!(layer.relu(), relu);
        assert_eq!(
            bits(&layer.forward_f32_vec(&batches[0], 3).unwrap()),
            bits(&want.forward_f32_vec(&batches[0], 3).unwrap())
        );
    }
}

#[test]
fn calibrator_errors_leave_it_unchanged() {
    let w = [1.0f32, -1.0, 0.5, 2.0];
    assert!(matches!(
        Calibrator::new(&w, 2, 3, None),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        Calibrator::new(&w, 2, 2, Some(&[1.0])),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        Calibrator::new(&[1.0, f32::NAN, 0.0, 0.0], 2, 2, None),
        Err(Error::NonFinite { .. })
    ));
    let mut cal = Calibrator::new(&w, 2, 2, None)
        .unwrap()
        .with_observer(MovingAverageMinMaxObserver::new().reduce_range(true));
    cal.observe_vec(&[1.0, 2.0], 1).unwrap();
    let before = cal.clone();
    assert!(cal.observe_vec(&[1.0, f32::NAN], 1).is_err());
    // The float output overflows f32: an error, and the input observer is not updated.
    assert!(matches!(
        cal.observe_vec(&[3e38, -3e38], 1),
        Err(Error::NonFinite { .. })
    ));
    assert!(cal.observe_vec(&[1.0, 2.0, 3.0], 2).is_err());
    assert_eq!(cal.input_observer(), before.input_observer());
    assert_eq!(cal.output_observer(), before.output_observer());
    assert!(cal.input_observer().is_reduce_range());
}

// ---------------------------------------------------------------------------------------
// Debug, Clone
// ---------------------------------------------------------------------------------------

#[test]
fn debug_is_a_summary_and_clone_is_equal() {
    let (n, k) = (300, 500);
    let mut rng = Rng::new(1);
    let data = rng.i8s(n * k);
    let qp = WeightQParams::PerChannel {
        scales: vec![0.01; n],
        zero_points: vec![0; n],
    };
    let w = QuantizedWeight::new(data, n, k, qp).unwrap();
    let x: Vec<f32> = rng.f32s(2 * k, 3.0);
    for b in backends() {
        let builder = Linear::builder(w.clone(), act(0.05, 100), act(0.5, 7))
            .bias(vec![0.25; n])
            .backend(b);
        let dbuilder = DynamicLinear::builder(w.clone()).backend(b);
        let layer = builder.clone().build().unwrap();
        let dynamic = dbuilder.clone().build().unwrap();
        for (what, text) in [
            ("builder", format!("{builder:?}")),
            ("dynamic builder", format!("{dbuilder:?}")),
            ("layer", format!("{layer:?}")),
            ("dynamic", format!("{dynamic:?}")),
            ("layer pretty", format!("{layer:#?}")),
        ] {
            assert!(
                text.len() < 1000,
                "{b} {what}: {} chars: {text}",
                text.len()
            );
            assert!(
                text.contains("300") && text.contains("500"),
                "{b} {what}: {text}"
            );
        }
        let text = format!("{layer:?}");
        assert!(text.contains(layer.kernel_name()), "{text}");
        assert!(
            text.contains("scale: 0.05") && text.contains("zero_point: 100"),
            "{text}"
        );
        assert!(text.contains("Some(300 values)"), "{text}");
        assert!(format!("{dynamic:?}").contains("reduce_range: true"));

        let copy = layer.clone();
        assert_eq!(copy.kernel_name(), layer.kernel_name());
        assert_eq!(
            bits(&copy.forward_f32_vec(&x, 2).unwrap()),
            bits(&layer.forward_f32_vec(&x, 2).unwrap())
        );
        let dcopy = dynamic.clone();
        assert_eq!(
            bits(&dcopy.forward_vec(&x, 2).unwrap()),
            bits(&dynamic.forward_vec(&x, 2).unwrap())
        );
        drop(layer);
        drop(dynamic);
        // The clones own their weights.
        assert_eq!(copy.weight(), w);
        assert_eq!(dcopy.weight(), w);
    }
}

// ---------------------------------------------------------------------------------------
// reduce_range defaults
// ---------------------------------------------------------------------------------------

#[test]
fn dynamic_reduce_range_follows_the_profile() {
    let mut rng = Rng::new(8);
    let (m, k, n) = (4, 19, 6);
    let wd = rng.i8s(n * k);
    let wq = WeightQParams::PerTensor {
        scale: 0.02,
        zero_point: 0,
    };
    let w = QuantizedWeight::new(wd.clone(), n, k, wq.clone()).unwrap();
    // Values whose full-range and reduced-range quantizations differ.
    let x: Vec<f32> = rng.f32s(m * k, 5.0);
    let oracle = |rr: bool, profile: Profile| {
        qlinear_reference::dynamic_linear(
            &MatRef::dense(&x, m, k).unwrap(),
            &wd,
            n,
            &wq,
            None,
            rr,
            false,
            profile,
        )
        .unwrap()
    };
    assert_ne!(
        bits(&oracle(true, Profile::Fbgemm)),
        bits(&oracle(false, Profile::Fbgemm))
    );
    for b in backends() {
        let fb = DynamicLinear::builder(w.clone())
            .backend(b)
            .build()
            .unwrap();
        assert!(
            fb.reduce_range(),
            "fbgemm default: reduce_range = true, as torch's module"
        );
        assert_eq!(
            bits(&fb.forward_vec(&x, m).unwrap()),
            bits(&oracle(true, Profile::Fbgemm)),
            "{b}"
        );
        let qn = DynamicLinear::builder(w.clone())
            .profile(Profile::Qnnpack)
            .backend(b)
            .build()
            .unwrap();
        assert!(!qn.reduce_range(), "qnnpack default: false");
        assert_eq!(
            bits(&qn.forward_vec(&x, m).unwrap()),
            bits(&oracle(false, Profile::Qnnpack)),
            "{b}"
        );
        // Explicit settings win; qnnpack ignores an explicit true, as torch does.
        for rr in [false, true] {
            let l = DynamicLinear::builder(w.clone())
                .reduce_range(rr)
                .backend(b)
                .build()
                .unwrap();
            assert_eq!(l.reduce_range(), rr);
            assert_eq!(
                bits(&l.forward_vec(&x, m).unwrap()),
                bits(&oracle(rr, Profile::Fbgemm))
            );
            let q = DynamicLinear::builder(w.clone())
                .profile(Profile::Qnnpack)
                .reduce_range(rr)
                .backend(b)
                .build()
                .unwrap();
            assert_eq!(q.reduce_range(), rr);
            assert_eq!(
                bits(&q.forward_vec(&x, m).unwrap()),
                bits(&oracle(false, Profile::Qnnpack))
            );
        }
        // The default is resolved at build: setting the profile after is honoured too.
        let late = DynamicLinear::from_float(&rng.f32s(n * k, 1.0), n, k, Observer::default())
            .unwrap()
            .backend(b)
            .profile(Profile::Qnnpack)
            .build()
            .unwrap();
        assert!(!late.reduce_range());
    }
}

// ---------------------------------------------------------------------------------------
// Error messages
// ---------------------------------------------------------------------------------------

#[test]
fn error_messages_say_what_got_and_expected() {
    let msg = |e: Error| e.to_string();
    assert_eq!(
        msg(ActQParams::new(0.0, 0).unwrap_err()),
        "activation scale must be finite and > 0, got 0"
    );
    assert_eq!(
        msg(ActQParams::new(0.1, 300).unwrap_err()),
        "activation zero point 300 is outside [0, 255]"
    );
    assert_eq!(
        msg(MatRef::dense(&[0u8; 100], 8, 4096).unwrap_err()),
        "input buffer holds 100 elements, but 8 rows x 4096 columns (row stride 4096) need 32768"
    );
    let mut out = [0f32; 10];
    assert_eq!(
        msg(MatMut::new(&mut out, 3, 4, 5).unwrap_err()),
        "output buffer holds 10 elements, but 3 rows x 4 columns (row stride 5) need 14"
    );
    assert_eq!(
        msg(MatRef::new(&[0u8; 100], 3, 8, 4).unwrap_err()),
        "input row stride 4 is smaller than its row length 8 (the stride must be >= the \
         number of columns)"
    );
    let w = QuantizedWeight::new(
        vec![0; 6],
        2,
        3,
        WeightQParams::PerTensor {
            scale: -1.0,
            zero_point: 0,
        },
    );
    assert_eq!(
        msg(w.unwrap_err()),
        "weight scale must be finite and > 0, got -1"
    );
    let w = QuantizedWeight::new(
        vec![0; 5],
        2,
        3,
        WeightQParams::PerTensor {
            scale: 1.0,
            zero_point: 0,
        },
    );
    assert_eq!(
        msg(w.unwrap_err()),
        "shape mismatch: weight elements (n * k) is 5, expected 6"
    );
    let e = act(0.1, 0).quantize_vec(&[1.0, f32::NAN]).unwrap_err();
    assert_eq!(
        msg(e),
        "input holds a NaN or an infinity at flat index 1; every value must be finite"
    );
    let e = MovingAverageMinMaxObserver::with_averaging_constant(1.5).unwrap_err();
    assert_eq!(
        msg(e),
        "averaging_constant must be in [0, 1] (torch's default is 0.01), got 1.5"
    );
    let e = MinMaxObserver::new().qparams().unwrap_err();
    assert!(msg(e).contains("observed no values"));
    let e = act(1e-45, 0).quantize(1.0).unwrap_err();
    assert!(msg(e).contains("1 / scale overflows f32"));
}
