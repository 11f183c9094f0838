//! Deterministic test data shared by every kernel's tests: a tiny RNG, random static and
//! dynamic cases with outputs spread over the u8 range (not all saturated), worst-case
//! cases, and the edge catalogue of shapes around a kernel's tile sizes.
//!
//! With the `kernel-harness` feature, `testkit::kernel` is the kernel-level test harness
//! built on them: it calls a kernel's entry points through its
//! descriptor on these cases, in canaried strided outputs, whole and split into row and
//! column pieces, and compares them bit for bit with the oracle.

#[cfg(feature = "kernel-harness")]
pub mod kernel;

use crate::params::{ActQParams, Profile, WeightQParams};

/// splitmix64: small, fast, good enough for test data, identical on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in `[lo, hi]`.
    pub fn range_i32(&mut self, lo: i32, hi: i32) -> i32 {
        lo + self.below((hi - lo + 1) as usize) as i32
    }
    /// Uniform in `[0, 1)`.
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Log-uniform positive value in `[lo, hi]`.
    pub fn log_uniform(&mut self, lo: f32, hi: f32) -> f32 {
        (lo.ln() + (hi.ln() - lo.ln()) * self.unit_f32()).exp()
    }
    /// A coin flip.
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
    /// `len` random i8.
    pub fn i8s(&mut self, len: usize) -> Vec<i8> {
        (0..len).map(|_| self.next_u64() as i8).collect()
    }
    /// `len` floats in `[-amp, amp]`.
    pub fn f32s(&mut self, len: usize, amp: f32) -> Vec<f32> {
        (0..len)
            .map(|_| (self.unit_f32() * 2.0 - 1.0) * amp)
            .collect()
    }
}

/// A complete static-layer test case (u8 activations with a row stride).
#[derive(Debug, Clone)]
pub struct StaticCase {
    /// Rows.
    pub m: usize,
    /// in_features.
    pub k: usize,
    /// out_features.
    pub n: usize,
    /// Activations, `m` rows of `a_stride` bytes (only the first `k` of each are used).
    pub a: Vec<u8>,
    /// Row stride of `a`.
    pub a_stride: usize,
    /// Input qparams.
    pub x: ActQParams,
    /// `n x k` weight.
    pub w: Vec<i8>,
    /// Weight qparams.
    pub wq: WeightQParams,
    /// Optional bias.
    pub bias: Option<Vec<f32>>,
    /// Output qparams.
    pub y: ActQParams,
    /// Fused ReLU.
    pub relu: bool,
    /// Arithmetic profile.
    pub profile: Profile,
    /// Magnitude of the f32 input that [`StaticCase::dynamic_input`] derives for the
    /// dynamic path (0.031 for ordinary cases; tiny or huge in the edge-scale sweep).
    pub dyn_amp: f32,
}

/// The signature [`crate::dynamic_linear`] and [`crate::dynamic_linear_per_row`] share.
type DynamicLayerFn = fn(
    &crate::MatRef<'_, f32>,
    &[i8],
    usize,
    &crate::WeightQParams,
    Option<&[f32]>,
    bool,
    bool,
    crate::Profile,
) -> crate::Result<Vec<f32>>;

impl StaticCase {
    /// Random parameters of every kind; the output scale is chosen so outputs spread
    /// over the u8 range.
    pub fn random(rng: &mut Rng, m: usize, k: usize, n: usize) -> Self {
        let a_stride = k + if rng.coin() { rng.below(9) } else { 0 };
        let a = rng.bytes(m.saturating_sub(1) * a_stride + k.max(1) * (m > 0) as usize);
        let x = ActQParams {
            scale: rng.log_uniform(1e-3, 1.0),
            zero_point: rng.range_i32(0, 255),
        };
        let w = rng.i8s(n * k);
        let wq = random_weight_qparams(rng, n);
        let spread = 5476.0 * (k as f32).sqrt() * x.scale * wq.scale(0);
        let bias_amp = spread * 0.02 * rng.log_uniform(0.1, 10.0);
        let bias = rng.coin().then(|| rng.f32s(n, bias_amp));
        let y = ActQParams {
            scale: spread / 40.0 * rng.log_uniform(0.3, 3.0),
            zero_point: rng.range_i32(0, 255),
        };
        let profile = if rng.coin() {
            Profile::Fbgemm
        } else {
            Profile::Qnnpack
        };
        StaticCase {
            m,
            k,
            n,
            a,
            a_stride,
            x,
            w,
            wq,
            bias,
            y,
            relu: rng.coin(),
            profile,
            dyn_amp: 0.031,
        }
    }

    /// The literal [`static_linear`](crate::static_linear) on `a` (this case's input
    /// rows, or some of them) with the case's weights, qparams, bias, ReLU and profile.
    pub fn oracle(&self, a: &crate::MatRef<'_, u8>) -> crate::Result<Vec<u8>> {
        crate::static_linear(
            a,
            self.x,
            &self.w,
            self.n,
            &self.wq,
            self.bias.as_deref(),
            self.y,
            self.relu,
            self.profile,
        )
    }

    /// The dynamic layer of this case's weights, bias, ReLU and profile on the f32
    /// input `x` ([`crate::dynamic_linear`]: one input scale per call).
    pub fn dynamic_oracle(
        &self,
        x: &crate::MatRef<'_, f32>,
        reduce_range: bool,
    ) -> crate::Result<Vec<f32>> {
        self.dynamic_oracle_by(crate::dynamic_linear, x, reduce_range)
    }

    /// [`StaticCase::dynamic_oracle`] quantizing each row with its own qparams
    /// ([`crate::dynamic_linear_per_row`]).
    pub fn dynamic_oracle_per_row(
        &self,
        x: &crate::MatRef<'_, f32>,
        reduce_range: bool,
    ) -> crate::Result<Vec<f32>> {
        self.dynamic_oracle_by(crate::dynamic_linear_per_row, x, reduce_range)
    }

    /// `layer` (one of the two dynamic layers, which share their signature) on this
    /// case.
    fn dynamic_oracle_by(
        &self,
        layer: DynamicLayerFn,
        x: &crate::MatRef<'_, f32>,
        reduce_range: bool,
    ) -> crate::Result<Vec<f32>> {
        layer(
            x,
            &self.w,
            self.n,
            &self.wq,
            self.bias.as_deref(),
            reduce_range,
            self.relu,
            self.profile,
        )
    }

    /// The f32 input the kernel harnesses feed the dynamic path: the case's activation
    /// bytes, centred and scaled by `dyn_amp`, with every 13th element a `-0.0` (same
    /// length and row stride as `a`).
    pub fn dynamic_input(&self) -> Vec<f32> {
        self.a
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if i % 13 == 12 {
                    -0.0
                } else {
                    (v as f32 - 117.0) * self.dyn_amp
                }
            })
            .collect()
    }

    /// Largest magnitudes everywhere: activations 255 with zero point 0, weights
    /// alternating -128 / 127 (sign chosen per column) with zero point 0 or 127,
    /// so `|raw|` approaches `65_025 * K`.
    pub fn extreme(m: usize, k: usize, n: usize, rng: &mut Rng) -> Self {
        let mut c = StaticCase::random(rng, m, k, n);
        c.a.iter_mut()
            .for_each(|v| *v = if rng.below(8) == 0 { 0 } else { 255 });
        c.x.zero_point = if rng.coin() { 0 } else { 255 };
        let high_zp = rng.coin();
        for (idx, v) in c.w.iter_mut().enumerate() {
            let col = idx / k.max(1);
            *v = if high_zp || col.is_multiple_of(2) {
                -128
            } else {
                127
            };
        }
        c.wq = WeightQParams::PerTensor {
            scale: 1e-3,
            zero_point: if high_zp { 127 } else { 0 },
        };
        c.y.scale = 65_025.0 * k as f32 * c.x.scale * 1e-3 / 100.0;
        c
    }
}

/// Scales at the edges of the f32 range, smallest first: the smallest subnormal, a
/// subnormal, the smallest normal, tiny, ordinary, large, and `f32::MAX`. Products of two
/// of them underflow to (signed) zero or overflow to infinity, so the folded
/// multipliers and bias terms of a layer built from them take every special value.
pub const EDGE_SCALES: [f32; 9] = [
    1e-45,
    1e-40,
    f32::MIN_POSITIVE,
    1e-30,
    1e-3,
    1.0,
    1e30,
    1e38,
    f32::MAX,
];

/// Bias values at the edges: both signed zeros, subnormals, huge finite values.
pub const EDGE_BIASES: [f32; 10] = [
    0.0,
    -0.0,
    1e-45,
    -1e-45,
    0.75,
    -3.0,
    1e30,
    -1e38,
    f32::MAX,
    f32::MIN,
];

/// Input magnitudes for the dynamic path in the edge-scale sweep (tiny inputs hit the
/// dynamic scale's lower clamp, huge ones give huge scales).
const EDGE_DYN_AMPS: [f32; 4] = [1e-38, 0.031, 1e30, 1e36];

/// The edge-scale sweep for one shape: `2 * EDGE_SCALES.len()` cases whose weight scales
/// (per-tensor and per-channel), input and output scales, biases (absent, signed zeros,
/// subnormal, huge) and dynamic input magnitudes walk through [`EDGE_SCALES`],
/// [`EDGE_BIASES`] and tiny / huge inputs, with both profiles and ReLU on and off. Every
/// kernel must equal the reference on all of them (a kernel that adds `+0.0` for a
/// missing bias, for example, turns the reference's `-0.0` into `+0.0` here).
pub fn edge_scale_sweep(rng: &mut Rng, m: usize, k: usize, n: usize) -> Vec<StaticCase> {
    let len = EDGE_SCALES.len();
    (0..2 * len)
        .map(|i| {
            let mut c = StaticCase::random(rng, m, k, n);
            let pick = |j: usize| EDGE_SCALES[j % len];
            c.x.scale = pick(i * 4 + 3);
            c.y.scale = pick(i * 7 + 5);
            c.wq = if i < len {
                WeightQParams::PerTensor {
                    scale: pick(i),
                    zero_point: c.wq.zero_point(0),
                }
            } else {
                WeightQParams::PerChannel {
                    scales: (0..n).map(|j| pick(i + j)).collect(),
                    zero_points: (0..n).map(|j| c.wq.zero_point(j)).collect(),
                }
            };
            c.bias = match i % 3 {
                0 => None,
                1 => Some(
                    (0..n)
                        .map(|j| EDGE_BIASES[(i + j) % EDGE_BIASES.len()])
                        .collect(),
                ),
                _ => Some(
                    (0..n)
                        .map(|j| if (i + j) % 2 == 0 { 0.0 } else { -0.0 })
                        .collect(),
                ),
            };
            c.profile = if i % 2 == 0 {
                Profile::Fbgemm
            } else {
                Profile::Qnnpack
            };
            c.relu = i % 4 == 1;
            c.dyn_amp = EDGE_DYN_AMPS[i % EDGE_DYN_AMPS.len()];
            c
        })
        .collect()
}

/// Shapes around a kernel's tile: every partial M up to `2 * mr + 1`, N around `nr`
/// multiples, K below / at / above / multiples of the k-group and a few long K.
pub fn edge_shapes(mr: usize, nr: usize, kr: usize) -> Vec<(usize, usize, usize)> {
    let mut shapes = Vec::new();
    let ks = [
        1,
        kr.saturating_sub(1).max(1),
        kr,
        kr + 1,
        2 * kr + 3,
        16 * kr,
        16 * kr + 1,
        127,
        256,
        1000,
    ];
    let ns = [1, nr - 1, nr, nr + 1, 2 * nr + 3, 3 * nr];
    for m in 1..=(2 * mr + 1) {
        shapes.push((m, ks[m % ks.len()], ns[m % ns.len()]));
    }
    for &k in &ks {
        for &n in &ns {
            shapes.push((mr + 1, k, n));
        }
    }
    shapes.push((1, 4096, 2 * nr + 5));
    shapes.push((3 * mr + 2, 333, 5 * nr + 7));
    shapes.dedup();
    shapes
}

/// Random weight qparams for `n` output channels: per channel or per tensor (a coin),
/// scales from 1e-4 to 1e-1, zero points 0, -128, 127 or anything between.
pub fn random_weight_qparams(rng: &mut Rng, n: usize) -> WeightQParams {
    let per_channel = rng.coin();
    let zp = |rng: &mut Rng| match rng.below(4) {
        0 => 0,
        1 => -128,
        2 => 127,
        _ => rng.range_i32(-128, 127),
    };
    if per_channel {
        WeightQParams::PerChannel {
            scales: (0..n).map(|_| rng.log_uniform(1e-4, 1e-1)).collect(),
            zero_points: (0..n).map(|_| zp(rng)).collect(),
        }
    } else {
        WeightQParams::PerTensor {
            scale: rng.log_uniform(1e-4, 1e-1),
            zero_point: zp(rng),
        }
    }
}

/// The folded per-row epilogue on one input row `x` (`1 x k`) against the `n x k`
/// weights `w`: the row quantized with its own `choose_dynamic_qparams(x, reduce_range)`,
/// its row sum adjusted by [`DynamicEpilogue::row_sum_adjustment`], and each column's
/// plain `sum q*w` through [`DynamicEpilogue::apply_row`]. `n` outputs, to compare with
/// the literal `dynamic_linear_per_row`.
///
/// [`DynamicEpilogue::row_sum_adjustment`]: crate::contract::DynamicEpilogue::row_sum_adjustment
/// [`DynamicEpilogue::apply_row`]: crate::contract::DynamicEpilogue::apply_row
pub fn folded_per_row(
    epi: &crate::contract::DynamicEpilogue,
    x: &crate::MatRef<'_, f32>,
    w: &[i8],
    n: usize,
    reduce_range: bool,
) -> Vec<f32> {
    use crate::contract::{DynamicEpilogue, RowQParams};
    use crate::quantize::{choose_dynamic_qparams, quantize_activations};
    let k = x.cols();
    let qp = choose_dynamic_qparams(x, reduce_range).unwrap();
    let q = quantize_activations(x, qp.scale, qp.zero_point);
    let rs = crate::pack::row_sum(&q)
        .wrapping_sub(DynamicEpilogue::row_sum_adjustment(k, qp.zero_point));
    let rq = RowQParams {
        scale: qp.scale,
        zero_point: qp.zero_point,
    };
    (0..n)
        .map(|j| {
            let acc = q
                .iter()
                .zip(&w[j * k..(j + 1) * k])
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum::<i32>();
            epi.apply_row(acc, rs, Some(rq), j)
        })
        .collect()
}

/// A dynamic input of `m` rows (`stride` floats apart, `k` used) whose rows differ in
/// magnitude, for per-row quantization tests: row `i` is scaled by a magnitude drawn
/// from 1e-30 to 1e30 and is sometimes all zeros, all positive or all negative, with
/// signed zeros sprinkled in. Padding past `k` is NaN (a kernel must never read it).
pub fn per_row_input(rng: &mut Rng, m: usize, k: usize, stride: usize) -> Vec<f32> {
    let mut x = vec![f32::NAN; m.saturating_sub(1) * stride + k];
    for i in 0..m {
        let row = &mut x[i * stride..i * stride + k];
        let amp = match rng.below(6) {
            0 => 0.0,
            1 => rng.log_uniform(1e-30, 1e-3),
            2 => rng.log_uniform(1e3, 1e30),
            _ => rng.log_uniform(1e-2, 1e2),
        };
        let shift = match rng.below(3) {
            0 => 0.0,
            1 => amp,
            _ => -amp,
        };
        for v in row.iter_mut() {
            *v = match rng.below(17) {
                0 => -0.0,
                1 => 0.0,
                _ => (rng.unit_f32() - 0.5) * 2.0 * amp + shift,
            };
        }
    }
    x
}

/// Random per-row input qparams for kernel tests: scales from subnormal through tiny
/// and ordinary to huge, zero points 0, 255 or anything between.
pub fn random_row_qparams(rng: &mut Rng, m: usize) -> Vec<crate::contract::RowQParams> {
    (0..m)
        .map(|_| crate::contract::RowQParams {
            scale: match rng.below(6) {
                0 => 1e-45,
                1 => rng.log_uniform(1e-30, 1e-6),
                2 => rng.log_uniform(1e6, 1e30),
                _ => rng.log_uniform(1e-4, 1.0),
            },
            zero_point: match rng.below(4) {
                0 => 0,
                1 => 255,
                _ => rng.range_i32(0, 255),
            },
        })
        .collect()
}
