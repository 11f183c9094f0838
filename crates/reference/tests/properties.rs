//! Property tests of the oracle (`qlinear-reference`): the integer core, the error bound
//! of the static requantization, ReLU, packing, per-channel/per-tensor agreement, the
//! folded kernel epilogues against the literal formulas, dynamic qparams and observers.
//!
//! Every property runs proptest's default number of cases (256, or `PROPTEST_CASES`).
//! Bulk data (activations, weights) comes from `testkit::Rng` seeded by proptest, so
//! cases stay small to describe and fast to generate.

use proptest::prelude::*;
use qlinear_reference::contract::{DynamicEpilogue, DynamicFold, PackedLayout, StaticEpilogue};
use qlinear_reference::quantize::{dynamic_qparams_from_min_max, quantize_u8};
use qlinear_reference::testkit::{Rng, StaticCase};
use qlinear_reference::{
    choose_dynamic_qparams, dequantize, dynamic_linear, integer_core, observe_weight, pack,
    quantize_activations, quantize_weight, static_linear, ActQParams, MatRef, Observer, Profile,
    WeightQParams, K_LIMIT,
};

// ---------------------------------------------------------------------------------------
// Strategies and helpers
// ---------------------------------------------------------------------------------------

/// Activation zero point with the extremes over-represented.
fn act_zp() -> impl Strategy<Value = i32> {
    prop_oneof![Just(0), Just(255), Just(128), 0..=255i32]
}

/// Weight zero point with the extremes over-represented.
fn weight_zp() -> impl Strategy<Value = i32> {
    prop_oneof![Just(0), Just(-128), Just(127), -128..=127i32]
}

fn profile() -> impl Strategy<Value = Profile> {
    prop_oneof![Just(Profile::Fbgemm), Just(Profile::Qnnpack)]
}

/// Random weight qparams drawn from `rng`, zero points from `zps` (cycled).
fn random_wq(rng: &mut Rng, n: usize, per_channel: bool, zps: &[i32]) -> WeightQParams {
    if per_channel {
        WeightQParams::PerChannel {
            scales: (0..n).map(|_| rng.log_uniform(1e-4, 1e-1)).collect(),
            zero_points: (0..n).map(|j| zps[j % zps.len()]).collect(),
        }
    } else {
        WeightQParams::PerTensor {
            scale: rng.log_uniform(1e-4, 1e-1),
            zero_point: zps[0],
        }
    }
}

/// `acc[i][j] = sum_k a[i,k] * w[j,k]` with no zero points (what a kernel computes).
fn plain_acc(a: &MatRef<'_, u8>, w: &[i8], n: usize) -> Vec<i32> {
    let k = a.cols();
    let mut acc = vec![0i32; a.rows() * n];
    for i in 0..a.rows() {
        for j in 0..n {
            acc[i * n + j] = a
                .row(i)
                .iter()
                .zip(&w[j * k..(j + 1) * k])
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
        }
    }
    acc
}

/// Rounds `n` up to a random-ish panel multiple so the epilogue padding is exercised.
fn n_pad(n: usize, nr: usize) -> usize {
    n.div_ceil(nr) * nr
}

/// Random f32 activations of mixed magnitude and sign (all finite).
fn f32_input(rng: &mut Rng, len: usize) -> Vec<f32> {
    let amp = rng.log_uniform(1e-3, 1e3);
    let shift = match rng.below(3) {
        0 => 0.0,        // straddles zero
        1 => amp * 0.9,  // mostly positive
        _ => -amp * 0.9, // mostly negative
    };
    rng.f32s(len, amp)
        .into_iter()
        .map(|v| if rng.below(16) == 0 { 0.0 } else { v + shift })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Integer core
// ---------------------------------------------------------------------------------------

proptest! {
    /// `integer_core` equals the textbook sum computed in i64.
    #[test]
    fn integer_core_matches_naive_i64(
        m in 0usize..5, k in 1usize..40, n in 1usize..7,
        zp_x in act_zp(),
        zps in prop::collection::vec(weight_zp(), 1..7),
        per_channel: bool,
        stride_extra in 0usize..4,
        seed: u64,
    ) {
        let mut rng = Rng::new(seed);
        let stride = k + stride_extra;
        let a = rng.bytes(m * stride);
        let w = rng.i8s(n * k);
        let wq = random_wq(&mut rng, n, per_channel, &zps);
        let av = MatRef::new(&a, m, k, stride).unwrap();
        let raw = integer_core(&av, zp_x, &w, n, &wq).unwrap();
        prop_assert_eq!(raw.len(), m * n);
        for i in 0..m {
            for j in 0..n {
                let want: i64 = (0..k)
                    .map(|kk| {
                        (a[i * stride + kk] as i64 - zp_x as i64)
                            * (w[j * k + kk] as i64 - wq.zero_point(j) as i64)
                    })
                    .sum();
                prop_assert_eq!(raw[i * n + j] as i64, want, "m={} n={}", i, j);
            }
        }
    }
}

/// The worst case at the K limit: the integer core stays exact (no wrap) at
/// `|raw| = 255 * 255 * K_LIMIT`, the largest magnitude the contract allows.
#[test]
fn integer_core_exact_at_k_limit() {
    let k = K_LIMIT;
    let a = vec![255u8; k];
    let w = vec![-128i8; k];
    let wq = WeightQParams::PerTensor {
        scale: 1.0,
        zero_point: 127,
    };
    let av = MatRef::dense(&a, 1, k).unwrap();
    // (255 - 0) * (-128 - 127) = -65_025 per term.
    let raw = integer_core(&av, 0, &w, 1, &wq).unwrap();
    assert_eq!(raw[0] as i64, -65_025i64 * k as i64);
    // (0 - 255) * (-128 - 127) = +65_025 per term.
    let a0 = vec![0u8; k];
    let raw = integer_core(&MatRef::dense(&a0, 1, k).unwrap(), 255, &w, 1, &wq).unwrap();
    assert_eq!(raw[0] as i64, 65_025i64 * k as i64);
}

// ---------------------------------------------------------------------------------------
// Static output: error bound against exact real arithmetic
// ---------------------------------------------------------------------------------------

// The bound. Let y_real = (sx*sw*raw + bias) / sy in exact (f64) arithmetic, with the f32
// parameter values taken exactly. The profile computes y = f(xf * mult) with
//   fbgemm : mult = f(f(sx*sw)/sy), xf = raw (exact: |raw| <= 65_025*63 < 2^24) plus the
//            bias term fma(bias, f32(1/f64(atws)), raw) or f(raw + f(bias/atws)),
//   qnnpack: rq = f(f(sw*sx) * f(1/sy)), xf = i2f(raw + qbias), qbias = rne(bias/(sw*sx)).
// Each f() is one rounding with relative error <= u = 2^-24, and there are at most ~6 of
// them on any path, so |y - y_real| <= 6u * (|raw_term| + |bias_term|) (the sum of
// magnitudes, not |y_real|: the two terms may cancel). qnnpack additionally rounds the
// bias to an integer number of (sw*sx) units before scaling: up to 0.5 * sx*sw/sy more.
// cvt() then rounds to the nearest integer: another 0.5. Hence, when no clamp is active,
//   |out - zp_y - y_real| <= 0.5 + 1e-5 * (|raw_term| + |bias_term|) + 1e-6
//                            (+ 0.5 * sx*sw/sy for qnnpack with bias).
// 1e-5 is ~170x the derived 6u, still tiny next to any real mistake: a wrong zero-point
// sign, a missing bias or an inverted scale all move outputs by whole units.
proptest! {
    #[test]
    fn static_output_within_rounding_of_exact_math(
        m in 1usize..5, k in 1usize..64, n in 2usize..7,
        zp_x in act_zp(),
        zps in prop::collection::vec(weight_zp(), 1..7),
        zp_y in 20i32..=235,
        fill in 0.2f64..1.0,
        per_channel: bool,
        with_bias: bool,
        profile in profile(),
        seed: u64,
    ) {
        let mut rng = Rng::new(seed);
        let a = rng.bytes(m * k);
        let w = rng.i8s(n * k);
        let wq = random_wq(&mut rng, n, per_channel, &zps);
        let sx = rng.log_uniform(1e-3, 1.0);
        let av = MatRef::dense(&a, m, k).unwrap();
        let raw = integer_core(&av, zp_x, &w, n, &wq).unwrap();
        let real = |idx: usize, bias: Option<&[f32]>| {
            let j = idx % n;
            let raw_term = sx as f64 * wq.scale(j) as f64 * raw[idx] as f64;
            let bias_term = bias.map_or(0.0, |b| b[j] as f64);
            (raw_term, bias_term)
        };
        let max_raw = (0..m * n).map(|i| real(i, None).0.abs()).fold(0.0, f64::max);
        let bias = with_bias.then(|| {
            let amp = (max_raw.max(1e-6) * 0.5) as f32;
            rng.f32s(n, amp)
        });
        let max_abs = (0..m * n)
            .map(|i| { let (r, b) = real(i, bias.as_deref()); (r + b).abs() })
            .fold(0.0, f64::max);
        // Most outputs land inside [0, 255] - zp_y, some are clamped (and skipped).
        let sy = ((max_abs.max(1e-9)) / (100.0 * fill)) as f32;
        prop_assume!(sy.is_finite() && sy > 0.0);
        let y = ActQParams { scale: sy, zero_point: zp_y };
        let x = ActQParams { scale: sx, zero_point: zp_x };
        let out = static_linear(&av, x, &w, n, &wq, bias.as_deref(), y, false, profile).unwrap();
        let mut checked = 0;
        for (idx, &o) in out.iter().enumerate() {
            let j = idx % n;
            let (raw_term, bias_term) = real(idx, bias.as_deref());
            let y_real = (raw_term + bias_term) / sy as f64;
            // Skip outputs the clamp may touch (1 unit of margin dwarfs the error).
            if !(1.0..=254.0).contains(&(y_real + zp_y as f64)) {
                continue;
            }
            checked += 1;
            let mut bound = 0.5 + 1e-5 * (raw_term.abs() + bias_term.abs()) / sy as f64 + 1e-6;
            if profile == Profile::Qnnpack && bias.is_some() {
                bound += 0.5 * sx as f64 * wq.scale(j) as f64 / sy as f64 * (1.0 + 1e-5);
            }
            let err = (o as f64 - zp_y as f64 - y_real).abs();
            prop_assert!(
                err <= bound,
                "element {}: out {} zp_y {} y_real {} err {} > bound {}",
                idx, o, zp_y, y_real, err, bound
            );
        }
        prop_assume!(checked > 0);
    }
}

// ---------------------------------------------------------------------------------------
// ReLU
// ---------------------------------------------------------------------------------------

proptest! {
    /// With fused ReLU every static output is at least `zp_y` (the real zero).
    #[test]
    fn static_relu_never_below_zero_point(
        m in 1usize..5, k in 1usize..48, n in 1usize..9,
        profile in profile(),
        zp_y in act_zp(),
        seed: u64,
    ) {
        let mut rng = Rng::new(seed);
        let mut c = StaticCase::random(&mut rng, m, k, n);
        c.relu = true;
        c.profile = profile;
        c.y.zero_point = zp_y;
        let av = MatRef::new(&c.a, m, k, c.a_stride).unwrap();
        let out = static_linear(&av, c.x, &c.w, n, &c.wq, c.bias.as_deref(), c.y, true, profile)
            .unwrap();
        for &o in &out {
            prop_assert!(o as i32 >= zp_y, "output {} < zp_y {}", o, zp_y);
        }
        // And without ReLU the same case is allowed below zp_y, equal above it.
        let plain = static_linear(&av, c.x, &c.w, n, &c.wq, c.bias.as_deref(), c.y, false, profile)
            .unwrap();
        for (&r, &p) in out.iter().zip(&plain) {
            prop_assert_eq!(r as i32, (p as i32).max(zp_y));
        }
    }

    /// With fused ReLU every dynamic output is >= 0, never NaN, and never -0.0.
    #[test]
    fn dynamic_relu_non_negative_and_no_negative_zero(
        m in 1usize..5, k in 1usize..48, n in 1usize..9,
        profile in profile(),
        per_channel: bool,
        with_bias: bool,
        reduce_range: bool,
        zps in prop::collection::vec(weight_zp(), 1..9),
        seed: u64,
    ) {
        let mut rng = Rng::new(seed);
        let x = f32_input(&mut rng, m * k);
        let w = rng.i8s(n * k);
        let wq = random_wq(&mut rng, n, per_channel, &zps);
        // Negative biases make negative (and -0.0 candidate) pre-activations common.
        let bias = with_bias.then(|| rng.f32s(n, 2.0).into_iter().map(|b| b - 1.0).collect::<Vec<_>>());
        let xv = MatRef::dense(&x, m, k).unwrap();
        let out = dynamic_linear(&xv, &w, n, &wq, bias.as_deref(), reduce_range, true, profile)
            .unwrap();
        let plain = dynamic_linear(&xv, &w, n, &wq, bias.as_deref(), reduce_range, false, profile)
            .unwrap();
        for (&r, &p) in out.iter().zip(&plain) {
            prop_assert!(r >= 0.0, "relu output {} < 0", r);
            prop_assert!(r.to_bits() != (-0.0f32).to_bits(), "relu produced -0.0");
            let want = if p > 0.0 { p } else { 0.0 };
            prop_assert_eq!(r.to_bits(), want.to_bits());
        }
    }
}

/// A pre-activation of exactly -0.0 must come out as +0.0: bias -0.0 and a zero input.
#[test]
fn dynamic_relu_maps_negative_zero_to_positive_zero() {
    for profile in [Profile::Fbgemm, Profile::Qnnpack] {
        let x = [0.0f32; 3];
        let w = [1i8, -2, 3];
        let wq = WeightQParams::PerTensor {
            scale: 0.5,
            zero_point: 0,
        };
        let xv = MatRef::dense(&x, 1, 3).unwrap();
        let bias = [-0.0f32];
        let plain = dynamic_linear(&xv, &w, 1, &wq, Some(&bias), false, false, profile).unwrap();
        let relu = dynamic_linear(&xv, &w, 1, &wq, Some(&bias), false, true, profile).unwrap();
        assert_eq!(plain[0], 0.0);
        assert_eq!(relu[0].to_bits(), 0, "{profile:?}: relu must give +0.0");
    }
}

// ---------------------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------------------

proptest! {
    /// `unpack(pack(w)) == w` for every layout; every byte not holding a weight is zero.
    #[test]
    fn pack_unpack_round_trip_and_zero_padding(
        n in 1usize..80, k in 1usize..40,
        nr in prop::sample::select(vec![1usize, 4, 8, 16, 32, 64]),
        kr in prop::sample::select(vec![1usize, 2, 4, 8]),
        seed: u64,
    ) {
        let mut rng = Rng::new(seed);
        // No zero weights, so a weight byte can never be mistaken for padding.
        let w: Vec<i8> = rng.i8s(n * k).into_iter().map(|v| if v == 0 { 1 } else { v }).collect();
        let layout = PackedLayout { nr, kr };
        let packed = pack::pack(&w, n, k, layout);
        prop_assert_eq!(packed.len(), layout.packed_len(n, k));
        prop_assert_eq!(packed.len(), n.div_ceil(nr) * nr * k.div_ceil(kr) * kr);
        prop_assert_eq!(pack::unpack(&packed, n, k, layout), w.clone());
        let mut is_weight = vec![false; packed.len()];
        for col in 0..n {
            for kk in 0..k {
                let off = layout.offset(col, kk, k);
                prop_assert!(!is_weight[off], "offset {} used twice", off);
                is_weight[off] = true;
                prop_assert_eq!(packed[off] as i8, w[col * k + kk]);
            }
        }
        for (off, (&b, &used)) in packed.iter().zip(&is_weight).enumerate() {
            if !used {
                prop_assert_eq!(b, 0, "padding byte {} is {}", off, b);
            }
        }
        // pack_into must overwrite stale bytes (padding included), not assume zeroed memory.
        let mut dirty = vec![0xA5u8; packed.len()];
        pack::pack_into(&w, n, k, layout, &mut dirty);
        prop_assert_eq!(dirty, packed);
    }
}

// ---------------------------------------------------------------------------------------
// Per-channel with equal parameters == per-tensor
// ---------------------------------------------------------------------------------------

proptest! {
    /// Per-channel qparams that are all equal give the per-tensor result: static without
    /// bias (both profiles), static qnnpack with bias (the bias is quantized the same way),
    /// and dynamic with or without bias (both profiles). fbgemm static with bias differs by
    /// design (per-tensor: fma with an f64-rounded reciprocal; per-channel: a division).
    #[test]
    fn equal_per_channel_equals_per_tensor(
        m in 1usize..5, k in 1usize..48, n in 1usize..9,
        zp_w in weight_zp(),
        profile in profile(),
        relu: bool,
        with_bias: bool,
        reduce_range: bool,
        seed: u64,
    ) {
        let mut rng = Rng::new(seed);
        let c = StaticCase::random(&mut rng, m, k, n);
        let scale = rng.log_uniform(1e-4, 1e-1);
        let pt = WeightQParams::PerTensor { scale, zero_point: zp_w };
        let pc = WeightQParams::PerChannel { scales: vec![scale; n], zero_points: vec![zp_w; n] };
        let bias = with_bias.then(|| rng.f32s(n, 5.0));
        let av = MatRef::new(&c.a, m, k, c.a_stride).unwrap();
        let static_bias = if profile == Profile::Qnnpack { bias.as_deref() } else { None };
        let a = static_linear(&av, c.x, &c.w, n, &pt, static_bias, c.y, relu, profile).unwrap();
        let b = static_linear(&av, c.x, &c.w, n, &pc, static_bias, c.y, relu, profile).unwrap();
        prop_assert_eq!(a, b);

        let x = f32_input(&mut rng, m * k);
        let xv = MatRef::dense(&x, m, k).unwrap();
        let a = dynamic_linear(&xv, &c.w, n, &pt, bias.as_deref(), reduce_range, relu, profile)
            .unwrap();
        let b = dynamic_linear(&xv, &c.w, n, &pc, bias.as_deref(), reduce_range, relu, profile)
            .unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&a), bits(&b));
    }
}

// ---------------------------------------------------------------------------------------
// Folded epilogues == literal formulas
// ---------------------------------------------------------------------------------------

/// Runs the folded static epilogue over a case, exactly as a kernel would.
fn folded_static(c: &StaticCase, nr: usize, garbage_row_sum: bool) -> Vec<u8> {
    let av = MatRef::new(&c.a, c.m, c.k, c.a_stride).unwrap();
    let acc = plain_acc(&av, &c.w, c.n);
    let col_sums = pack::column_sums(&c.w, c.n, c.k);
    let epi = StaticEpilogue::new(
        c.profile,
        c.x,
        &c.wq,
        &col_sums,
        c.k,
        c.bias.as_deref(),
        c.y,
        c.relu,
        n_pad(c.n, nr),
    );
    assert_eq!(epi.mult.len(), n_pad(c.n, nr));
    let mut out = Vec::with_capacity(c.m * c.n);
    for i in 0..c.m {
        // Kernels get no row sums when every weight zero point is 0; apply must not care.
        let rs = if garbage_row_sum && c.wq.all_zero_points_zero() {
            0x1234_5678
        } else {
            pack::row_sum(av.row(i))
        };
        for j in 0..c.n {
            out.push(epi.apply(acc[i * c.n + j], rs, j));
        }
    }
    out
}

fn literal_static(c: &StaticCase) -> Vec<u8> {
    let av = MatRef::new(&c.a, c.m, c.k, c.a_stride).unwrap();
    c.oracle(&av).unwrap()
}

/// Forces the case's profile / per-channel / bias / relu choices.
fn shape_case(
    c: &mut StaticCase,
    rng: &mut Rng,
    profile: Profile,
    per_channel: bool,
    with_bias: bool,
    relu: bool,
) {
    c.profile = profile;
    c.relu = relu;
    if per_channel != c.wq.is_per_channel() {
        let zps: Vec<i32> = (0..c.n).map(|_| rng.range_i32(-128, 127)).collect();
        c.wq = random_wq(rng, c.n, per_channel, &zps);
    }
    if with_bias != c.bias.is_some() {
        c.bias = with_bias.then(|| {
            let amp = c.x.scale * c.wq.scale(0) * 2000.0 * (c.k as f32).sqrt();
            rng.f32s(c.n, amp)
        });
    }
}

/// K for the worst-case epilogue property: small, the K limit and just below, long.
#[cfg(not(miri))]
fn extreme_k() -> impl Strategy<Value = usize> {
    prop_oneof![
        1usize..64,
        Just(K_LIMIT),
        Just(K_LIMIT - 1),
        1000usize..20_000
    ]
}

/// Under Miri (interpreted: a K-limit case alone takes minutes) small and medium K only;
/// the K limit itself is covered by `integer_core_exact_at_k_limit`.
#[cfg(miri)]
fn extreme_k() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..64, 64usize..300]
}

proptest! {
    /// `StaticEpilogue::apply` on plain `sum a*w` reproduces `static_linear` bit for bit.
    #[test]
    fn static_epilogue_equals_literal(
        m in 1usize..5, k in 1usize..64, n in 1usize..20,
        profile in profile(),
        per_channel: bool, with_bias: bool, relu: bool,
        nr in prop::sample::select(vec![1usize, 8, 16]),
        seed: u64,
    ) {
        let mut rng = Rng::new(seed);
        let mut c = StaticCase::random(&mut rng, m, k, n);
        shape_case(&mut c, &mut rng, profile, per_channel, with_bias, relu);
        prop_assert_eq!(folded_static(&c, nr, true), literal_static(&c));
    }

    /// The same on worst-case magnitudes, up to the K limit.
    #[test]
    fn static_epilogue_equals_literal_extreme(
        m in 1usize..3, n in 1usize..5,
        k in extreme_k(),
        profile in profile(),
        with_bias: bool, relu: bool,
        seed: u64,
    ) {
        let mut rng = Rng::new(seed);
        let mut c = StaticCase::extreme(m, k, n, &mut rng);
        c.profile = profile;
        c.relu = relu;
        if !with_bias {
            c.bias = None;
        } else if c.bias.is_none() {
            c.bias = Some(rng.f32s(n, 10.0));
        }
        prop_assert_eq!(folded_static(&c, 16, false), literal_static(&c));
    }

    /// `DynamicEpilogue::apply` on plain `sum q*w` reproduces `dynamic_linear` bit for bit.
    #[test]
    fn dynamic_epilogue_equals_literal(
        m in 1usize..5, k in 1usize..64, n in 1usize..20,
        profile in profile(),
        per_channel: bool, with_bias: bool, relu: bool, reduce_range: bool,
        zps in prop::collection::vec(weight_zp(), 1..20),
        nr in prop::sample::select(vec![1usize, 8, 16]),
        seed: u64,
    ) {
        let mut rng = Rng::new(seed);
        let x = f32_input(&mut rng, m * k);
        let w = rng.i8s(n * k);
        let wq = random_wq(&mut rng, n, per_channel, &zps);
        let bias = with_bias.then(|| rng.f32s(n, 3.0));
        let xv = MatRef::dense(&x, m, k).unwrap();
        let want = dynamic_linear(&xv, &w, n, &wq, bias.as_deref(), reduce_range, relu, profile)
            .unwrap();

        // qnnpack ignores reduce_range, as torch does.
        let rr = reduce_range && profile == Profile::Fbgemm;
        let qp = choose_dynamic_qparams(&xv, rr).unwrap();
        let q = quantize_activations(&xv, qp.scale, qp.zero_point);
        let qv = MatRef::dense(&q, m, k).unwrap();
        let acc = plain_acc(&qv, &w, n);
        let col_sums = pack::column_sums(&w, n, k);
        let epi = DynamicEpilogue::new(
            profile, qp.scale, qp.zero_point, &wq, &col_sums, k, bias.as_deref(), relu,
            n_pad(n, nr),
        );
        for i in 0..m {
            let rs = pack::row_sum(qv.row(i));
            for j in 0..n {
                let got = epi.apply(acc[i * n + j], rs, j);
                prop_assert_eq!(
                    got.to_bits(), want[i * n + j].to_bits(),
                    "({}, {}): folded {} literal {}", i, j, got, want[i * n + j]
                );
            }
        }
    }
}

/// Deterministic sweep of the testkit generators through the same comparison (covers the
/// generators' own random profile / bias / relu mix, strided activations included).
#[test]
fn static_epilogue_equals_literal_testkit_sweep() {
    let mut rng = Rng::new(7);
    let mut shapes = qlinear_reference::testkit::edge_shapes(4, 16, 4);
    if cfg!(miri) {
        // The interpreter is far too slow for the long-K shapes: under Miri only the
        // catalogue's 11 shapes with at most 200 multiply-adds (M 1, 2, 5; K up to 11).
        shapes.retain(|&(m, k, n)| m * k * n <= 200);
    }
    for (m, k, n) in shapes {
        for _ in 0..2 {
            let c = StaticCase::random(&mut rng, m, k, n);
            assert_eq!(
                folded_static(&c, 16, true),
                literal_static(&c),
                "random {m}x{k}x{n}"
            );
            let c = StaticCase::extreme(m, k, n, &mut rng);
            assert_eq!(
                folded_static(&c, 16, false),
                literal_static(&c),
                "extreme {m}x{k}x{n}"
            );
        }
    }
}

/// The edge-scale sweep (scales from the smallest subnormal to `f32::MAX`, signed-zero,
/// subnormal and huge biases, tiny and huge inputs): folded static and dynamic epilogues
/// equal the literal layers bit for bit, signs of zero included.
#[test]
fn epilogues_equal_literal_on_edge_scales() {
    let mut rng = Rng::new(11);
    // Under Miri the last shape has K = 5, not 64 (interpreted, it alone took minutes).
    let k_last = if cfg!(miri) { 5 } else { 64 };
    for (m, k, n) in [(1, 1, 1), (3, 5, 17), (2, k_last, 33)] {
        for c in qlinear_reference::testkit::edge_scale_sweep(&mut rng, m, k, n) {
            assert_eq!(folded_static(&c, 16, true), literal_static(&c), "{c:?}");
            let x = c.dynamic_input();
            let xv = MatRef::new(&x, m, k, c.a_stride).unwrap();
            let want = c.dynamic_oracle(&xv, false).unwrap();
            let qp = choose_dynamic_qparams(&xv, false).unwrap();
            let q = quantize_activations(&xv, qp.scale, qp.zero_point);
            let qv = MatRef::dense(&q, m, k).unwrap();
            let acc = plain_acc(&qv, &c.w, n);
            let col_sums = pack::column_sums(&c.w, n, k);
            let epi = DynamicEpilogue::new(
                c.profile,
                qp.scale,
                qp.zero_point,
                &c.wq,
                &col_sums,
                k,
                c.bias.as_deref(),
                c.relu,
                n_pad(n, 16),
            );
            for i in 0..m {
                let rs = pack::row_sum(qv.row(i));
                for j in 0..n {
                    let got = epi.apply(acc[i * n + j], rs, j);
                    assert_eq!(
                        got.to_bits(),
                        want[i * n + j].to_bits(),
                        "({i}, {j}): folded {got:e} literal {:e} {c:?}",
                        want[i * n + j]
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Dynamic qparams
// ---------------------------------------------------------------------------------------

/// A float of random sign and a magnitude anywhere from 1e-30 to 1e30, or 0.
fn wide_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        1 => Just(0.0f32),
        6 => (-30.0f32..30.0, any::<bool>()).prop_map(|(e, neg)| {
            let v = 10f32.powf(e);
            if neg { -v } else { v }
        }),
        3 => -10.0f32..10.0,
    ]
}

proptest! {
    /// Zero point in [0, qmax], scale finite and > 0, and values on the grid survive a
    /// dequantize -> quantize round trip.
    #[test]
    fn dynamic_qparams_valid_and_grid_round_trips(
        x in prop::collection::vec(wide_f32(), 1..40),
        reduce_range: bool,
    ) {
        let xv = MatRef::dense(&x, 1, x.len()).unwrap();
        let qp = choose_dynamic_qparams(&xv, reduce_range).unwrap();
        let min = x.iter().fold(0.0f32, |a, &b| a.min(b));
        let max = x.iter().fold(0.0f32, |a, &b| a.max(b));
        prop_assert_eq!(qp, dynamic_qparams_from_min_max(min, max, reduce_range));
        let qmax = if reduce_range { 127 } else { 255 };
        prop_assert!((0..=qmax).contains(&qp.zero_point), "zp {}", qp.zero_point);
        prop_assert!(qp.scale.is_finite() && qp.scale > 0.0, "scale {}", qp.scale);
        prop_assert!(qp.scale_f64.is_finite() && qp.scale_f64 > 0.0);
        prop_assert_eq!(qp.scale, qp.scale_f64 as f32);
        // Real zero is exactly representable.
        let inv = 1.0f32 / qp.scale;
        prop_assert_eq!(quantize_u8(0.0, inv, qp.zero_point) as i32, qp.zero_point);
        // Every grid value round-trips.
        let grid: Vec<u8> = (0..=qmax as u8).collect();
        let deq = dequantize(&grid, qp.scale, qp.zero_point);
        let back: Vec<u8> = deq.iter().map(|&v| quantize_u8(v, inv, qp.zero_point)).collect();
        prop_assert_eq!(&back, &grid);
        // And quantize_activations agrees with quantize_u8.
        let dv = MatRef::dense(&deq, 1, deq.len()).unwrap();
        prop_assert_eq!(quantize_activations(&dv, qp.scale, qp.zero_point), grid);
    }

    /// The input's extremes quantize to the ends of (or inside) the range: nothing that
    /// the qparams were chosen for saturates by more than rounding.
    #[test]
    fn dynamic_qparams_cover_the_input(
        lo in -1e6f32..=0.0, hi in 0.0f32..=1e6,
        reduce_range: bool,
    ) {
        let qp = dynamic_qparams_from_min_max(lo, hi, reduce_range);
        let qmax = if reduce_range { 127.0 } else { 255.0 };
        let s = qp.scale as f64;
        // Real-valued positions of lo and hi on the grid.
        let plo = lo as f64 / s + qp.zero_point as f64;
        let phi = hi as f64 / s + qp.zero_point as f64;
        // Tiny ranges are widened to the 6.1e-5 floor, never narrowed.
        prop_assert!(plo >= -1.0 && phi <= qmax + 1.0, "lo -> {}, hi -> {}", plo, phi);
    }
}

// ---------------------------------------------------------------------------------------
// Observers
// ---------------------------------------------------------------------------------------

proptest! {
    /// Symmetric observers give zero point 0; affine zero points are in range; scales are
    /// finite and > 0; every quantized value lies in the observer's quant_range.
    #[test]
    fn observers_produce_valid_qparams_and_values(
        n in 1usize..8, k in 1usize..24,
        per_channel: bool, symmetric: bool, reduce_range: bool,
        shift in prop_oneof![Just(0.0f32), -5.0f32..5.0],
        seed: u64,
    ) {
        let mut rng = Rng::new(seed);
        let amp = rng.log_uniform(1e-6, 1e3);
        let w: Vec<f32> = rng
            .f32s(n * k, amp)
            .into_iter()
            .map(|v| if rng.below(10) == 0 { 0.0 } else { v + shift * amp })
            .collect();
        let obs = Observer { per_channel, symmetric, reduce_range };
        let (qmin, qmax) = obs.quant_range();
        prop_assert_eq!((qmin, qmax), if reduce_range { (-64, 63) } else { (-128, 127) });
        let wq = observe_weight(&w, n, k, obs).unwrap();
        prop_assert_eq!(wq.is_per_channel(), per_channel);
        wq.validate(n).unwrap();
        for j in 0..n {
            let s = wq.scale(j);
            prop_assert!(s.is_finite() && s > 0.0, "scale {}", s);
            let zp = wq.zero_point(j);
            if symmetric {
                prop_assert_eq!(zp, 0);
            } else {
                prop_assert!((qmin..=qmax).contains(&zp), "zp {} outside [{}, {}]", zp, qmin, qmax);
            }
        }
        let q = quantize_weight(&w, n, k, &wq, (qmin, qmax)).unwrap();
        prop_assert_eq!(q.len(), n * k);
        for &v in &q {
            prop_assert!((qmin..=qmax).contains(&(v as i32)), "value {} out of range", v);
        }
        // Dequantized weights are within half a step of the input, for values inside the
        // range (away from the clamp). The quantizer rounds f(w * f(1 / scale)), not the
        // exact w / scale: the two f32 roundings move the product by up to
        // |w / scale| * 2u (u = 2^-24) steps, i.e. |w| * 2u in absolute terms, which can
        // exceed any margin relative to the scale alone when |w / scale| is near 255 (an
        // affine range far from zero). So: |w - (q - zp) * scale| <= scale / 2 + |w| * 4u.
        for (idx, (&wv, &qv)) in w.iter().zip(&q).enumerate() {
            let j = idx / k;
            let s = wq.scale(j) as f64;
            let zp = wq.zero_point(j) as f64;
            let pos = wv as f64 / s + zp;
            if pos > qmin as f64 + 1.0 && pos < qmax as f64 - 1.0 {
                let err = (wv as f64 - (qv as f64 - zp) * s).abs();
                let bound = 0.5 * s + (wv as f64).abs() * 4.0 * f64::from(f32::EPSILON / 2.0);
                prop_assert!(err <= bound, "w {} q {} err {} bound {}", wv, qv, err, bound);
            }
        }
    }
}

proptest! {
    /// `StaticEpilogue::nan_free` is a promise vector kernels rely on to skip their
    /// NaN handling: whenever it holds, no accumulator value (down to i32::MIN/MAX and
    /// any row sum) yields a NaN `y`. Scales span the whole f32 range so that the flag
    /// is false (overflowing or vanishing multipliers) in a good share of cases.
    #[test]
    fn nan_free_epilogues_never_produce_nan(
        sx in 1e-30f32..1e30, sw in 1e-30f32..1e30, sy in 1e-30f32..1e30,
        bias in -1e30f32..1e30, per_channel in any::<bool>(), qnnpack in any::<bool>(),
        acc in prop_oneof![Just(i32::MIN), Just(i32::MAX), Just(0), any::<i32>()],
        row_sum in any::<i32>(), zp_w in -128i32..=127, zp_x in 0i32..=255,
    ) {
        let n = 3;
        let wq = if per_channel {
            WeightQParams::PerChannel { scales: vec![sw; n], zero_points: vec![zp_w; n] }
        } else {
            WeightQParams::PerTensor { scale: sw, zero_point: zp_w }
        };
        let profile = if qnnpack { Profile::Qnnpack } else { Profile::Fbgemm };
        let x = ActQParams { scale: sx, zero_point: zp_x };
        let y = ActQParams { scale: sy, zero_point: 7 };
        let bias = vec![bias; n];
        let e = StaticEpilogue::new(profile, x, &wq, &[11, -5, 0], 17, Some(&bias), y, false, 8);
        if e.nan_free {
            for j in 0..n {
                let raw = acc
                    .wrapping_add(e.col_offset[j])
                    .wrapping_sub(e.row_zp[j].wrapping_mul(row_sum));
                let yv = e.bias_a[j].mul_add(e.bias_b[j], raw as f32) * e.mult[j];
                prop_assert!(!yv.is_nan(), "column {j}: y is NaN with nan_free set");
            }
        }
    }
}

proptest! {
    /// The vectorizable activation helpers kernels instantiate equal the literal
    /// quantization: same bytes, row sums of those bytes, same range (or the same
    /// non-finite error index).
    #[test]
    fn activation_helpers_equal_literal_quantization(
        rows in 0usize..5, cols in 1usize..80, pad in 0usize..4,
        scale_exp in -30i32..30, zp in 0i32..=255, seed in any::<u64>(),
        poison in proptest::option::of(0usize..400),
    ) {
        let mut rng = Rng::new(seed);
        let stride = cols + pad;
        let len = rows.saturating_sub(1) * stride + cols * (rows > 0) as usize;
        let mut data: Vec<f32> = (0..len)
            .map(|_| match rng.below(6) {
                0 => 0.0,
                1 => f32::MAX * (rng.unit_f32() - 0.5),
                2 => (rng.unit_f32() - 0.5) * 1e-38,
                3 => (rng.below(2048) as f32 - 1024.0) * 0.5, // ties after scaling by 2
                _ => (rng.unit_f32() - 0.5) * 2000.0,
            })
            .collect();
        if let Some(p) = poison {
            if !data.is_empty() {
                let at = p % data.len();
                data[at] = if p % 2 == 0 { f32::NAN } else { f32::NEG_INFINITY };
            }
        }
        let x = MatRef::new(&data, rows, cols, stride).unwrap();
        let literal = qlinear_reference::quantize::min_max_finite(&x);
        prop_assert_eq!(qlinear_reference::activation::min_max_finite(&x), literal.clone());
        if literal.is_ok() {
            let scale = 2f32.powi(scale_exp);
            let want = qlinear_reference::quantize_activations(&x, scale, zp);
            let mut got = vec![0u8; rows * cols];
            let sums = qlinear_reference::activation::quantize_rows(&x, scale, zp, &mut got);
            prop_assert_eq!(&got, &want);
            let want_sums: Vec<i32> = want
                .chunks(cols)
                .map(|r| r.iter().map(|&v| v as i32).sum())
                .collect();
            prop_assert_eq!(sums, want_sums);
        }
    }
}

/// Bit-for-bit equality of two dynamic epilogues (`==` would equate `-0.0` and `+0.0`).
fn same_dynamic_epilogue(a: &DynamicEpilogue, b: &DynamicEpilogue) -> bool {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    a.col_offset == b.col_offset
        && a.row_zp == b.row_zp
        && bits(&a.mult) == bits(&b.mult)
        && bits(&a.bias) == bits(&b.bias)
        && a.fused_bias == b.fused_bias
        && a.relu == b.relu
        && a.col_sum == b.col_sum
        && bits(&a.weight_scale) == bits(&b.weight_scale)
}

proptest! {
    /// The layer-time fold completed per call (`DynamicFold::epilogue`) is exactly
    /// `DynamicEpilogue::new`, and its per-row half exactly `new_per_row`: any column
    /// sums (wrapping included), K up to the limit, both profiles, with and without bias.
    #[test]
    fn dynamic_fold_equals_per_call_fold(
        n in 1usize..40,
        k in prop_oneof![1usize..300, Just(K_LIMIT)],
        profile in profile(),
        per_channel: bool, with_bias: bool, relu: bool,
        zps in prop::collection::vec(weight_zp(), 1..20),
        zp_x in act_zp(),
        nr in prop::sample::select(vec![1usize, 8, 16, 32]),
        seed: u64,
    ) {
        let mut rng = Rng::new(seed);
        let wq = random_wq(&mut rng, n, per_channel, &zps);
        let col_sums: Vec<i32> = (0..n)
            .map(|_| if rng.coin() { rng.range_i32(-40_000, 40_000) } else { i32::from_le_bytes([rng.bytes(1)[0], rng.bytes(1)[0], rng.bytes(1)[0], rng.bytes(1)[0]]) })
            .collect();
        let bias = with_bias.then(|| rng.f32s(n, 3.0));
        let fold = DynamicFold::new(profile, &wq, &col_sums, k, bias.as_deref(), relu, n_pad(n, nr));
        for scale_x in [rng.log_uniform(1e-30, 1e30), f32::MIN_POSITIVE, 1.0, f32::MAX] {
            let want = DynamicEpilogue::new(
                profile, scale_x, zp_x, &wq, &col_sums, k, bias.as_deref(), relu, n_pad(n, nr),
            );
            prop_assert!(
                same_dynamic_epilogue(&fold.epilogue(scale_x, zp_x), &want),
                "scale {} zp {}", scale_x, zp_x
            );
        }
        let per_row = DynamicEpilogue::new_per_row(profile, &wq, &col_sums, k, bias.as_deref(), relu, n_pad(n, nr));
        prop_assert!(same_dynamic_epilogue(fold.per_row(), &per_row));
    }
}
