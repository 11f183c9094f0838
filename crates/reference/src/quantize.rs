//! Quantization helpers: PyTorch's dynamic input qparams (`ChooseQuantizationParams`),
//! quantize / dequantize, and the torch.ao weight observers used by `from_float`.

use crate::cvt;
use crate::matrix::MatRef;
use crate::params::{check_finite, Error, Result, WeightQParams};

/// Per-tensor input parameters chosen for one dynamic call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicQParams {
    /// The scale as torch keeps it (f64); kernels use `scale as f32`.
    pub scale_f64: f64,
    /// `f32(scale)`: the scale used for quantizing and for the output multiplier.
    pub scale: f32,
    /// Zero point in `[0, qmax]`.
    pub zero_point: i32,
}

/// The floor torch puts under a dynamic scale (`6.1e-5` as f32).
const SMALL_SCALE: f32 = 6.1e-5;

/// Finite check plus `min(all x, 0)` / `max(all x, 0)` over a view.
pub fn min_max_finite(x: &MatRef<'_, f32>) -> Result<(f32, f32)> {
    let mut lo = 0.0f32;
    let mut hi = 0.0f32;
    for i in 0..x.rows() {
        let row = x.row(i);
        if let Err(Error::NonFinite { index, .. }) = check_finite("input", row) {
            return Err(Error::NonFinite {
                what: "input",
                index: i * x.cols() + index,
            });
        }
        for &v in row {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    Ok((lo, hi))
}

/// PyTorch's `ChooseQuantizationParams` for a dynamic input (u8, qmin = 0,
/// qmax = 127 with `reduce_range`, else 255), as spelled out in `docs/semantics.md`.
pub fn choose_dynamic_qparams(x: &MatRef<'_, f32>, reduce_range: bool) -> Result<DynamicQParams> {
    let (min, max) = min_max_finite(x)?;
    Ok(dynamic_qparams_from_min_max(min, max, reduce_range))
}

/// The qparams formula given `min <= 0 <= max` (already folded with 0).
pub fn dynamic_qparams_from_min_max(
    mut min: f32,
    mut max: f32,
    reduce_range: bool,
) -> DynamicQParams {
    let qmin = 0i32;
    let qmax = if reduce_range { 127i32 } else { 255 };
    let range = (qmax - qmin) as f64;
    let mut scale = (max as f64 - min as f64) / range;
    if scale as f32 == 0.0 || (1.0f32 / scale as f32).is_infinite() {
        scale = 0.1;
    }
    if scale < SMALL_SCALE as f64 {
        let org = scale as f32;
        scale = SMALL_SCALE as f64;
        if min == 0.0 {
            max = SMALL_SCALE * (qmax - qmin) as f32;
        } else if max == 0.0 {
            min = -SMALL_SCALE * (qmax - qmin) as f32;
        } else {
            let amp = SMALL_SCALE / org;
            min *= amp;
            max *= amp;
        }
    }
    let zp_min = qmin as f64 - min as f64 / scale;
    let zp_max = qmax as f64 - max as f64 / scale;
    let err_min = (qmin as f64).abs() - (min as f64 / scale).abs();
    let err_max = (qmax as f64).abs() - (max as f64 / scale).abs();
    let init = if err_min < err_max { zp_min } else { zp_max };
    let zp = if init < qmin as f64 {
        qmin
    } else if init > qmax as f64 {
        qmax
    } else {
        init.round_ties_even() as i32
    };
    DynamicQParams {
        scale_f64: scale,
        scale: scale as f32,
        zero_point: zp,
    }
}

/// Quantizes one value to u8: `clamp(cvt(min(f(x * inv), 2147483520.0)) + zp, 0, 255)`.
#[inline]
pub fn quantize_u8(x: f32, inv: f32, zp: i32) -> u8 {
    let v = (x * inv).min(2_147_483_520.0);
    (cvt(v) as i64 + zp as i64).clamp(0, 255) as u8
}

/// Quantizes a view to a dense `rows x cols` u8 buffer with `scale` / `zp`
/// (the inverse `f(1 / scale)` is taken once, as torch does).
pub fn quantize_activations(x: &MatRef<'_, f32>, scale: f32, zp: i32) -> Vec<u8> {
    let inv = 1.0f32 / scale;
    let mut out = Vec::with_capacity(x.rows() * x.cols());
    for i in 0..x.rows() {
        out.extend(x.row(i).iter().map(|&v| quantize_u8(v, inv, zp)));
    }
    out
}

/// `(q - zp) * scale` for u8 data.
pub fn dequantize(q: &[u8], scale: f32, zp: i32) -> Vec<f32> {
    q.iter().map(|&v| (v as i32 - zp) as f32 * scale).collect()
}

/// A torch.ao weight observer (qint8) choice for `from_float`.
///
/// The four common ones are constants; the fields combine freely (affine per-channel,
/// reduce_range).
///
/// ```
/// use qlinear_reference::{observe_weight, Observer, WeightQParams};
/// # fn main() -> Result<(), qlinear_reference::Error> {
/// let w = [0.5f32, -1.0, 0.25, 2.0, 0.0, -0.75]; // 2 x 3
/// // torch's default weight observer for fbgemm: per-channel, symmetric.
/// match observe_weight(&w, 2, 3, Observer::PER_CHANNEL_SYMMETRIC)? {
///     WeightQParams::PerChannel { scales, zero_points } => {
///         assert_eq!(zero_points, vec![0, 0]);
///         assert_eq!(scales[1], 2.0 / 127.5); // max |w| of row 1 over (127 - (-128)) / 2
///     }
///     _ => unreachable!(),
/// }
/// assert_eq!(Observer::PER_TENSOR_SYMMETRIC.quant_range(), (-128, 127));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observer {
    /// `PerChannelMinMaxObserver` (axis 0) instead of `MinMaxObserver`.
    pub per_channel: bool,
    /// `per_*_symmetric` (zero point 0) instead of `per_*_affine`.
    pub symmetric: bool,
    /// Range `[-64, 63]` instead of `[-128, 127]`.
    pub reduce_range: bool,
}

impl Observer {
    /// torch's default weight observer for fbgemm/x86: per-channel symmetric.
    pub const PER_CHANNEL_SYMMETRIC: Observer = Observer {
        per_channel: true,
        symmetric: true,
        reduce_range: false,
    };
    /// `MinMaxObserver(qscheme=per_tensor_symmetric, dtype=qint8)`.
    pub const PER_TENSOR_SYMMETRIC: Observer = Observer {
        per_channel: false,
        symmetric: true,
        reduce_range: false,
    };

    /// The observer's `(quant_min, quant_max)`.
    pub fn quant_range(&self) -> (i32, i32) {
        if self.reduce_range {
            (-64, 63)
        } else {
            (-128, 127)
        }
    }

    /// torch's `_calculate_qparams` for one (min, max) pair of f32.
    fn qparams(&self, min_val: f32, max_val: f32) -> (f32, i32) {
        let (qmin, qmax) = self.quant_range();
        let eps = f32::EPSILON;
        let min_neg = min_val.min(0.0);
        let max_pos = max_val.max(0.0);
        if self.symmetric {
            let max_pos = (-min_neg).max(max_pos);
            let scale = (max_pos / ((qmax - qmin) as f32 / 2.0)).max(eps);
            (scale, 0)
        } else {
            affine_qparams(min_val, max_val, (qmin, qmax))
        }
    }
}

/// torch.ao's `_calculate_qparams` for `per_tensor_affine` (and per-channel affine, one
/// channel at a time), in f32 as torch computes it on 0-dim f32 tensors:
///
/// ```text
/// min_neg = min(min_val, 0), max_pos = max(max_val, 0)
/// scale   = max(f((max_pos - min_neg) / f32(qmax - qmin)), f32::EPSILON)
/// zp      = clamp(qmin - round_half_even(f(min_neg / scale)), qmin, qmax)
/// ```
///
/// Shared by the weight [`Observer`] (qint8) and the activation observers of
/// [`crate::observer`] (quint8), so both follow one conformance-checked formula. A
/// non-finite scale (an overflowing range) is returned as is; callers validate.
pub(crate) fn affine_qparams(min_val: f32, max_val: f32, (qmin, qmax): (i32, i32)) -> (f32, i32) {
    let min_neg = min_val.min(0.0);
    let max_pos = max_val.max(0.0);
    let scale = ((max_pos - min_neg) / (qmax - qmin) as f32).max(f32::EPSILON);
    let zp = qmin as i64 - (min_neg / scale).round_ties_even() as i64;
    (scale, zp.clamp(qmin as i64, qmax as i64) as i32)
}

/// Checks an `n x k` float weight: layer dimensions, element count, all finite.
fn check_float_weight(w: &[f32], n: usize, k: usize) -> Result<()> {
    crate::params::check_layer_dims(n, k)?;
    let expected = n
        .checked_mul(k)
        .ok_or(Error::Dimension("n * k overflows"))?;
    if w.len() != expected {
        return Err(Error::Shape {
            what: "float weight elements (n * k)",
            expected,
            got: w.len(),
        });
    }
    check_finite("float weight", w)
}

/// Runs the observer over an `n x k` float weight and returns the qparams it chooses.
pub fn observe_weight(w: &[f32], n: usize, k: usize, obs: Observer) -> Result<WeightQParams> {
    check_float_weight(w, n, k)?;
    let min_max = |s: &[f32]| {
        s.iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            })
    };
    if obs.per_channel {
        let (scales, zero_points) = w
            .chunks_exact(k)
            .map(|row| {
                let (lo, hi) = min_max(row);
                obs.qparams(lo, hi)
            })
            .unzip();
        Ok(WeightQParams::PerChannel {
            scales,
            zero_points,
        })
    } else {
        let (lo, hi) = min_max(w);
        let (scale, zero_point) = obs.qparams(lo, hi);
        Ok(WeightQParams::PerTensor { scale, zero_point })
    }
}

/// `quantize_per_tensor / per_channel` to qint8, clamped to `[qmin, qmax]`:
/// `q = clamp(cvt(f(w * f(1 / scale))) + zp, qmin, qmax)`.
pub fn quantize_weight(
    w: &[f32],
    n: usize,
    k: usize,
    wq: &WeightQParams,
    (qmin, qmax): (i32, i32),
) -> Result<Vec<i8>> {
    wq.validate(n)?;
    check_float_weight(w, n, k)?;
    let mut out = Vec::with_capacity(n * k);
    for (j, row) in w.chunks_exact(k.max(1)).enumerate().take(n) {
        let inv = 1.0f32 / wq.scale(j);
        let zp = wq.zero_point(j) as i64;
        out.extend(
            row.iter()
                .map(|&v| (cvt(v * inv) as i64 + zp).clamp(qmin as i64, qmax as i64) as i8),
        );
    }
    Ok(out)
}
