//! The literal static and dynamic linear layers of `docs/semantics.md`.
//!
//! Each function follows the normative formulas one operation at a time; comments quote
//! the formula they implement. No folding, no reordering: that is the kernels' business,
//! and [`crate::contract`] proves its folding equal to this.

use crate::matrix::MatRef;
use crate::params::{check_finite, check_layer_dims, ActQParams, Profile, Result, WeightQParams};
use crate::quantize::{choose_dynamic_qparams, quantize_activations};
use crate::{cvt, relu_f32};

/// `raw[m,n] = sum_k (a[m,k] - zp_x) * (w[n,k] - zp_w[n])`, i32 with wrap-around, as the
/// contract states (the K limit makes the true value fit, so wrapping never shows).
///
/// `w` is the `n x k` row-major weight. Returns `m x n` row-major, or an error when the
/// sizes are inconsistent (every product of them is checked, nothing is trusted).
pub fn integer_core(
    a: &MatRef<'_, u8>,
    zp_x: i32,
    w: &[i8],
    n: usize,
    wq: &WeightQParams,
) -> Result<Vec<i32>> {
    let k = a.cols();
    check_sizes(a.rows(), k, w, n)?;
    wq.validate(n)?;
    let mut raw = vec![0i32; a.rows() * n];
    for i in 0..a.rows() {
        let row = a.row(i);
        for j in 0..n {
            let zw = wq.zero_point(j);
            let wrow = &w[j * k..(j + 1) * k];
            let mut acc = 0i32;
            for (&x, &y) in row.iter().zip(wrow) {
                acc = acc.wrapping_add((x as i32 - zp_x).wrapping_mul(y as i32 - zw));
            }
            raw[i * n + j] = acc;
        }
    }
    Ok(raw)
}

/// The size products a layer call derives from its arguments, checked: `n * k` must
/// equal the weight's length and `m * n` (the output) must fit `usize`.
fn check_sizes(m: usize, k: usize, w: &[i8], n: usize) -> Result<()> {
    check_layer_dims(n, k)?;
    let nk = n
        .checked_mul(k)
        .ok_or(crate::Error::Dimension("n * k overflows"))?;
    if w.len() != nk {
        return Err(crate::Error::Shape {
            what: "weight elements (n * k)",
            expected: nk,
            got: w.len(),
        });
    }
    m.checked_mul(n)
        .ok_or(crate::Error::Dimension("m * n overflows"))?;
    Ok(())
}

fn check_common(
    m: usize,
    k: usize,
    w: &[i8],
    n: usize,
    wq: &WeightQParams,
    bias: Option<&[f32]>,
) -> Result<()> {
    check_sizes(m, k, w, n)?;
    wq.validate(n)?;
    if let Some(b) = bias {
        if b.len() != n {
            return Err(crate::Error::Shape {
                what: "bias length",
                expected: n,
                got: b.len(),
            });
        }
        check_finite("bias", b)?;
    }
    Ok(())
}

/// Static quantized linear (u8 -> u8), `torch.ops.quantized.linear[_relu]`.
///
/// `a` is `m x k`, `w` is `n x k` row-major. Returns `m x n` row-major.
#[allow(clippy::too_many_arguments)]
pub fn static_linear(
    a: &MatRef<'_, u8>,
    x: ActQParams,
    w: &[i8],
    n: usize,
    wq: &WeightQParams,
    bias: Option<&[f32]>,
    y: ActQParams,
    relu: bool,
    profile: Profile,
) -> Result<Vec<u8>> {
    check_common(a.rows(), a.cols(), w, n, wq, bias)?;
    x.validate("input")?;
    y.validate("output")?;
    let raw = integer_core(a, x.zero_point, w, n, wq)?;
    let lo = if relu { y.zero_point as i64 } else { 0 };
    let finish = |yv: f32| (cvt(yv) as i64 + y.zero_point as i64).clamp(lo, 255) as u8;
    let sx = x.scale;
    let mut out = vec![0u8; raw.len()];
    for (idx, o) in out.iter_mut().enumerate() {
        let j = idx % n;
        let r = raw[idx];
        let sw = wq.scale(j);
        let yv = match profile {
            Profile::Fbgemm => {
                // atws[j] = f(sx * scale_w[j]); mult[j] = f(atws[j] / scale_y)
                let atws = sx * sw;
                let mult = atws / y.scale;
                // xf = i2f(raw)
                let mut xf = r as f32;
                if let Some(b) = bias {
                    if wq.is_per_channel() {
                        // xf = f(xf + f(bias[n] / atws[n]))
                        xf += b[j] / atws;
                    } else {
                        // rcp = f32(1.0 / (atws[0] as f64)); xf = fma(bias[n], rcp, xf)
                        let rcp = (1.0f64 / atws as f64) as f32;
                        xf = b[j].mul_add(rcp, xf);
                    }
                }
                // y = f(xf * mult[j])
                xf * mult
            }
            Profile::Qnnpack => {
                let qbias = match bias {
                    Some(b) => qnnpack_quantized_bias(b[j], sw, sx),
                    None => 0,
                };
                // acc = qbias[n] + raw (wrapping)
                let acc = qbias.wrapping_add(r);
                // rq[j] = f( f(scale_w[j] * sx) * f(1.0 / scale_y) )
                let rq = (sw * sx) * (1.0f32 / y.scale);
                // y = f(i2f(acc) * rq[j])
                acc as f32 * rq
            }
        };
        *o = finish(yv);
    }
    Ok(out)
}

/// qnnpack's bias quantization: `sb = (scale_w as f64) * (sx as f64)`,
/// `inv = f(1 / f32(sb))`, `qbias = saturate_i32(round_half_even(f(bias * inv)))`.
pub fn qnnpack_quantized_bias(bias: f32, scale_w: f32, sx: f32) -> i32 {
    let sb = scale_w as f64 * sx as f64;
    let inv = 1.0f32 / (sb as f32);
    cvt(bias * inv)
}

/// Dynamic quantized linear (f32 -> f32), `torch.ops.quantized.linear_dynamic` /
/// `linear_relu_dynamic`: the input is quantized per call with PyTorch's qparams choice.
///
/// `reduce_range` only matters for [`Profile::Fbgemm`] (torch's qnnpack ignores it).
#[allow(clippy::too_many_arguments)]
pub fn dynamic_linear(
    xin: &MatRef<'_, f32>,
    w: &[i8],
    n: usize,
    wq: &WeightQParams,
    bias: Option<&[f32]>,
    reduce_range: bool,
    relu: bool,
    profile: Profile,
) -> Result<Vec<f32>> {
    check_common(xin.rows(), xin.cols(), w, n, wq, bias)?;
    let rr = reduce_range && profile == Profile::Fbgemm;
    let qp = choose_dynamic_qparams(xin, rr)?;
    let q = quantize_activations(xin, qp.scale, qp.zero_point);
    let qa = MatRef::dense(&q, xin.rows(), xin.cols())?;
    let raw = integer_core(&qa, qp.zero_point, w, n, wq)?;
    let s = qp.scale;
    let mut out = vec![0f32; raw.len()];
    for (idx, o) in out.iter_mut().enumerate() {
        *o = dynamic_epilogue(raw[idx], s, idx % n, wq, bias, relu, profile);
    }
    Ok(out)
}

/// The dynamic layers' f32 epilogue for output column `j`, from the integer sum `raw`
/// and the input scale `s` (the tensor's, or the row's for per-row input):
///
/// - fbgemm: `m = f(s * scale_w[j])`; `out = bias ? fma(i2f(raw), m, bias) : f(i2f(raw) * m)`
/// - qnnpack: `m = f(scale_w[j] * s)`; `out = f( f(m * i2f(raw)) + bias )`
///
/// then ReLU if asked.
fn dynamic_epilogue(
    raw: i32,
    s: f32,
    j: usize,
    wq: &WeightQParams,
    bias: Option<&[f32]>,
    relu: bool,
    profile: Profile,
) -> f32 {
    let xf = raw as f32;
    let v = match profile {
        Profile::Fbgemm => {
            let m = s * wq.scale(j);
            match bias {
                Some(b) => xf.mul_add(m, b[j]),
                None => xf * m,
            }
        }
        Profile::Qnnpack => {
            let m = wq.scale(j) * s;
            let b = bias.map_or(0.0, |b| b[j]);
            m * xf + b
        }
    };
    if relu {
        relu_f32(v)
    } else {
        v
    }
}

/// Dynamic quantized linear with **per-row** input quantization (XNNPACK's `qd8`,
/// per-token LLM quantization): output row `m` is exactly [`dynamic_linear`] on row `m`
/// alone. Each row gets its own min / max, torch's `choose_qparams` (with the same
/// `reduce_range` rule), its own scale `s_m` and zero point `zp_m`, is quantized with
/// them, and the epilogue multiplies by `f(s_m * scale_w[n])`.
///
/// Same arguments and errors as [`dynamic_linear`]; a non-finite input reports its flat
/// index `row * cols + col` over the whole view, as the per-tensor layer does.
#[allow(clippy::too_many_arguments)]
pub fn dynamic_linear_per_row(
    xin: &MatRef<'_, f32>,
    w: &[i8],
    n: usize,
    wq: &WeightQParams,
    bias: Option<&[f32]>,
    reduce_range: bool,
    relu: bool,
    profile: Profile,
) -> Result<Vec<f32>> {
    check_common(xin.rows(), xin.cols(), w, n, wq, bias)?;
    let rr = reduce_range && profile == Profile::Fbgemm;
    let k = xin.cols();
    let mut out = vec![0f32; xin.rows() * n];
    for i in 0..xin.rows() {
        // The row alone, as a 1 x k view.
        let row = MatRef::dense(xin.row(i), 1, k)?;
        // (s_m, zp_m) = choose_qparams(min(row, 0), max(row, 0))
        let qp = match choose_dynamic_qparams(&row, rr) {
            Err(crate::Error::NonFinite { what, index }) => {
                return Err(crate::Error::NonFinite {
                    what,
                    index: i * k + index,
                })
            }
            other => other?,
        };
        // q[k] = quantize(row[k], s_m, zp_m)
        let q = quantize_activations(&row, qp.scale, qp.zero_point);
        let qa = MatRef::dense(&q, 1, k)?;
        // raw[n] = sum_k (q[k] - zp_m) * (w[n,k] - zp_w[n])
        let raw = integer_core(&qa, qp.zero_point, w, n, wq)?;
        let s = qp.scale;
        for (j, o) in out[i * n..(i + 1) * n].iter_mut().enumerate() {
            // the epilogue with s = s_m
            *o = dynamic_epilogue(raw[j], s, j, wq, bias, relu, profile);
        }
    }
    Ok(out)
}
