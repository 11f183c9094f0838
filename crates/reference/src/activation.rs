//! Per-call activation work of the dynamic layer, written so the compiler vectorizes it:
//! one pass for finiteness + min/max, one pass to quantize.

use qlinear_reference::{Error, MatRef, Result};

/// `(min(all x, 0), max(all x, 0))`, or the index of the first non-finite value.
pub(crate) fn min_max_finite(x: &MatRef<'_, f32>) -> Result<(f32, f32)> {
    let mut lo = 0.0f32;
    let mut hi = 0.0f32;
    for i in 0..x.rows() {
        let row = x.row(i);
        // Branch-free reduction: NaN/inf show up as a non-finite sum of |x| flags.
        let mut bad = false;
        for &v in row {
            bad |= !v.is_finite();
            lo = if v < lo { v } else { lo };
            hi = if v > hi { v } else { hi };
        }
        if bad {
            let index = row.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(Error::NonFinite {
                what: "input",
                index: i * x.cols() + index,
            });
        }
    }
    Ok((lo, hi))
}

/// Quantizes to dense u8 rows, bit-identical to `qlinear_reference::quantize_u8`:
/// clamping `x * inv` to `[-1024, 1024]` changes no clamped result (the output is
/// clamped to [0, 255] and `|zp| <= 255`), and adding then subtracting `1.5 * 2^23`
/// rounds half to even exactly for `|v| < 2^22`.
pub(crate) fn quantize_rows(x: &MatRef<'_, f32>, scale: f32, zp: i32, out: &mut [u8]) {
    const MAGIC: f32 = 12_582_912.0;
    let inv = 1.0f32 / scale;
    let k = x.cols();
    for i in 0..x.rows() {
        let row = x.row(i);
        for (o, &v) in out[i * k..(i + 1) * k].iter_mut().zip(row) {
            let p = v * inv;
            let p = if p < 1024.0 { p } else { 1024.0 };
            let p = if p > -1024.0 { p } else { -1024.0 };
            let r = (p + MAGIC) - MAGIC;
            *o = (r as i32 + zp).clamp(0, 255) as u8;
        }
    }
}
