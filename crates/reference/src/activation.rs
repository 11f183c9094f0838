//! Per-call activation work of the dynamic layer (finiteness + range, quantize + row
//! sums), bit-identical to [`crate::quantize`] but written for the auto-vectorizer:
//! fixed 16-lane chunks updated lane-wise (no floating-point reassociation needed) and a
//! float -> int rounding done with integer arithmetic on the bits.
//!
//! Both functions are `#[inline(always)]`: a kernel crate instantiates them inside its
//! own `#[target_feature]` wrapper (see [`crate::contract::KernelDesc::quantize`]), and
//! the same source then compiles to AVX-512, AVX2 or NEON code.

use crate::{Error, MatRef, Result};

/// Lanes of one vertical reduction (one AVX-512 vector).
const LANES: usize = 16;
/// Independent reductions in flight (separate variables, so the compiler keeps each in
/// one register), so the `min`/`max` latency chains overlap.
const WAYS: usize = 2;
const EXP_MASK: u32 = 0x7F80_0000;

/// `(min(all x, 0), max(all x, 0))`, or the flat index of the first non-finite value.
#[inline(always)]
pub fn min_max_finite(x: &MatRef<'_, f32>) -> Result<(f32, f32)> {
    #[inline(always)]
    fn update(c: &[f32], lo: &mut [f32; LANES], hi: &mut [f32; LANES], bad: &mut [u32; LANES]) {
        for l in 0..LANES {
            let v = c[l];
            lo[l] = if v < lo[l] { v } else { lo[l] };
            hi[l] = if v > hi[l] { v } else { hi[l] };
            // All exponent bits set: infinity or NaN.
            bad[l] |= ((v.to_bits() & EXP_MASK) == EXP_MASK) as u32;
        }
    }
    let (mut lo0, mut hi0, mut bad0) = ([0.0f32; LANES], [0.0f32; LANES], [0u32; LANES]);
    let (mut lo1, mut hi1, mut bad1) = ([0.0f32; LANES], [0.0f32; LANES], [0u32; LANES]);
    let mut scalar = (0.0f32, 0.0f32, false);
    for i in 0..x.rows() {
        let row = x.row(i);
        let chunks = row.chunks_exact(LANES * WAYS);
        for &v in chunks.remainder() {
            scalar.0 = if v < scalar.0 { v } else { scalar.0 };
            scalar.1 = if v > scalar.1 { v } else { scalar.1 };
            scalar.2 |= !v.is_finite();
        }
        for c in chunks {
            update(&c[..LANES], &mut lo0, &mut hi0, &mut bad0);
            update(&c[LANES..], &mut lo1, &mut hi1, &mut bad1);
        }
        if scalar.2 || bad0.iter().chain(&bad1).any(|&b| b != 0) {
            let index = row.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(Error::NonFinite {
                what: "input",
                index: i * x.cols() + index,
            });
        }
    }
    let lo = lo0
        .iter()
        .chain(&lo1)
        .fold(scalar.0, |a, &b| if b < a { b } else { a });
    let hi = hi0
        .iter()
        .chain(&hi1)
        .fold(scalar.1, |a, &b| if b > a { b } else { a });
    Ok((lo, hi))
}

/// Quantizes to dense u8 rows and returns each row's sum (the zero-point correction's
/// row term), bit-identical to `qlinear_reference::quantize_u8`:
///
/// * clamping `x * inv` to `[-1024, 1024]` changes no result (the output is clamped to
///   [0, 255] and `0 <= zp <= 255`);
/// * for `|p| <= 1024`, `p + 1.5 * 2^23` rounds `p` half to even into the low mantissa
///   bits (one ulp is 1 there and every such sum has the same exponent), so subtracting
///   the bits of `1.5 * 2^23` yields `round_half_even(p)` as an integer.
#[inline(always)]
pub fn quantize_rows(x: &MatRef<'_, f32>, scale: f32, zp: i32, out: &mut [u8]) -> Vec<i32> {
    const MAGIC: f32 = 12_582_912.0;
    let magic_bits = MAGIC.to_bits() as i32;
    let inv = 1.0f32 / scale;
    let k = x.cols();
    let quantize = |v: f32| -> u8 {
        let p = v * inv;
        let p = if p < 1024.0 { p } else { 1024.0 };
        let p = if p > -1024.0 { p } else { -1024.0 };
        let r = (p + MAGIC).to_bits() as i32 - magic_bits;
        (r + zp).clamp(0, 255) as u8
    };
    let mut sums = Vec::with_capacity(x.rows());
    for i in 0..x.rows() {
        let dst = &mut out[i * k..(i + 1) * k];
        // Two simple passes vectorize better than one fused loop: a pure map (float ops,
        // then a saturating narrow), then a byte sum (`psadbw`), on a row that is still
        // in L1.
        for (d, &s) in dst.iter_mut().zip(x.row(i)) {
            *d = quantize(s);
        }
        sums.push(dst.iter().map(|&v| v as u32).sum::<u32>() as i32);
    }
    sums
}

/// [`min_max_finite`] as a plain function, for descriptors without a vector build.
pub fn min_max_finite_portable(x: &MatRef<'_, f32>) -> Result<(f32, f32)> {
    min_max_finite(x)
}

/// [`quantize_rows`] as a plain function, for descriptors without a vector build.
pub fn quantize_rows_portable(
    x: &MatRef<'_, f32>,
    scale: f32,
    zp: i32,
    out: &mut [u8],
) -> Vec<i32> {
    quantize_rows(x, scale, zp, out)
}
