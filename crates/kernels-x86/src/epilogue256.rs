//! 256-bit epilogues shared by the AVX-VNNI and AVX2 kernels: one ymm of 8 i32
//! accumulators (8 consecutive output columns) in, u8 or f32 outputs out.
//!
//! The arithmetic is the folded epilogue of [`qlinear_reference::contract`] instruction
//! for instruction (`vcvtdq2ps` and `vcvtps2dq` round half to even under the default
//! MXCSR, `vfmadd` is a single rounding). Without AVX-512 store masks, a partial group
//! of columns goes through a small stack buffer so nothing outside `nc` is written.

use core::arch::x86_64::*;

use qlinear_reference::contract::{DynamicEpilogue, RowQParams, StaticEpilogue};

/// `raw = acc + col_offset - row_zp * row_sum` for 8 columns at `n`.
///
/// # Safety
/// AVX2 enabled; both arrays valid for 8 reads at `n`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn fold_raw(
    acc: __m256i,
    col_offset: *const i32,
    row_zp: *const i32,
    row_sum: Option<i32>,
    n: usize,
) -> __m256i {
    // SAFETY: the caller guarantees 8 readable entries at `n` in both arrays.
    unsafe {
        let raw = _mm256_add_epi32(acc, _mm256_loadu_si256(col_offset.add(n).cast()));
        match row_sum {
            None => raw,
            Some(s) => _mm256_sub_epi32(
                raw,
                _mm256_mullo_epi32(
                    _mm256_loadu_si256(row_zp.add(n).cast()),
                    _mm256_set1_epi32(s),
                ),
            ),
        }
    }
}

/// Static epilogue for 8 columns `[n, n + 8)`, writing the first `nc` of them.
///
/// # Safety
/// AVX2 + FMA enabled; epilogue arrays valid for 8 reads at `n`; `out_row + n`
/// valid for `nc <= 8` writes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn store_u8(
    acc: __m256i,
    row_sum: Option<i32>,
    e: &StaticEpilogue,
    n: usize,
    nc: usize,
    out_row: *mut u8,
) {
    // SAFETY: reads are inside the padded epilogue arrays; writes are the first
    // `nc` bytes at `out_row + n`, which the caller guarantees.
    unsafe {
        let raw = fold_raw(acc, e.col_offset.as_ptr(), e.row_zp.as_ptr(), row_sum, n);
        let xf = _mm256_fmadd_ps(
            _mm256_loadu_ps(e.bias_a.as_ptr().add(n)),
            _mm256_loadu_ps(e.bias_b.as_ptr().add(n)),
            _mm256_cvtepi32_ps(raw),
        );
        let y = _mm256_mul_ps(xf, _mm256_loadu_ps(e.mult.as_ptr().add(n)));
        // NaN -> 0 (Rust `as`), unless the parameters cannot produce NaN.
        let y = if e.nan_free {
            y
        } else {
            _mm256_and_ps(y, _mm256_cmp_ps::<_CMP_ORD_Q>(y, y))
        };
        // Clamp from above at 512; below, an out-of-range y converts to i32::MIN,
        // which ends at `lo` just as the saturated value would.
        let y = _mm256_min_ps(y, _mm256_set1_ps(512.0));
        let q = _mm256_add_epi32(_mm256_cvtps_epi32(y), _mm256_set1_epi32(e.zp_y));
        let q = _mm256_min_epi32(
            _mm256_max_epi32(q, _mm256_set1_epi32(e.lo)),
            _mm256_set1_epi32(255),
        );
        // 8 x i32 in [0, 255] -> 8 bytes, in column order.
        let words = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
        let bytes = _mm_packus_epi16(words, words);
        if nc >= 8 {
            _mm_storel_epi64(out_row.add(n).cast(), bytes);
        } else {
            let mut tmp = [0u8; 16];
            _mm_storeu_si128(tmp.as_mut_ptr().cast(), bytes);
            core::ptr::copy_nonoverlapping(tmp.as_ptr(), out_row.add(n), nc);
        }
    }
}

/// Dynamic epilogue (per-tensor mode) for 8 columns `[n, n + 8)`, writing the first
/// `nc` of them.
///
/// # Safety
/// As for [`store_u8`], with `out_row + n` valid for `nc` f32 writes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn store_f32(
    acc: __m256i,
    row_sum: Option<i32>,
    e: &DynamicEpilogue,
    n: usize,
    nc: usize,
    out_row: *mut f32,
) {
    // SAFETY: as in `store_u8`; `finish_f32` writes only the first `nc` lanes.
    unsafe {
        let raw = fold_raw(acc, e.col_offset.as_ptr(), e.row_zp.as_ptr(), row_sum, n);
        let mult = _mm256_loadu_ps(e.mult.as_ptr().add(n));
        finish_f32(raw, mult, e, n, nc, out_row);
    }
}

/// Dynamic epilogue in per-row mode (an epilogue from
/// [`DynamicEpilogue::new_per_row`]) for 8 columns `[n, n + 8)` of a row whose input
/// qparams are `row_q`: `raw -= zp_m * col_sum`, `mult = f(s_m * weight_scale)`. A
/// separate function from [`store_f32`], so the per-tensor path carries no mode test.
///
/// # Safety
/// As for [`store_f32`]; `col_sum` and `weight_scale` are valid for 8 reads at `n`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn store_f32_per_row(
    acc: __m256i,
    row_sum: Option<i32>,
    row_q: RowQParams,
    e: &DynamicEpilogue,
    n: usize,
    nc: usize,
    out_row: *mut f32,
) {
    debug_assert!(e.col_sum.len() >= n + 8 && e.weight_scale.len() >= n + 8);
    // SAFETY: as in `store_f32`; the per-row arrays are padded like the others.
    unsafe {
        let raw = fold_raw(acc, e.col_offset.as_ptr(), e.row_zp.as_ptr(), row_sum, n);
        let raw = _mm256_sub_epi32(
            raw,
            _mm256_mullo_epi32(
                _mm256_set1_epi32(row_q.zero_point),
                _mm256_loadu_si256(e.col_sum.as_ptr().add(n).cast()),
            ),
        );
        let mult = _mm256_mul_ps(
            _mm256_set1_ps(row_q.scale),
            _mm256_loadu_ps(e.weight_scale.as_ptr().add(n)),
        );
        finish_f32(raw, mult, e, n, nc, out_row);
    }
}

/// The float part of the dynamic epilogue shared by both modes: bias, ReLU, store of
/// the first `nc` lanes at `out_row + n`.
///
/// # Safety
/// AVX2 + FMA enabled; `e.bias` valid for 8 reads at `n`; `out_row + n` valid for `nc`
/// f32 writes.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn finish_f32(
    raw: __m256i,
    mult: __m256,
    e: &DynamicEpilogue,
    n: usize,
    nc: usize,
    out_row: *mut f32,
) {
    // SAFETY: the masked store touches only the first `nc` lanes; see the caller.
    unsafe {
        let xf = _mm256_cvtepi32_ps(raw);
        let bias = _mm256_loadu_ps(e.bias.as_ptr().add(n));
        let mut out = if e.fused_bias {
            _mm256_fmadd_ps(xf, mult, bias)
        } else {
            _mm256_add_ps(_mm256_mul_ps(mult, xf), bias)
        };
        if e.relu {
            // maxps returns the second operand for NaN and for +-0: x > 0 ? x : +0.
            out = _mm256_max_ps(out, _mm256_setzero_ps());
        }
        if nc >= 8 {
            _mm256_storeu_ps(out_row.add(n), out);
        } else {
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(nc as i32), lanes);
            _mm256_maskstore_ps(out_row.add(n), mask, out);
        }
    }
}
