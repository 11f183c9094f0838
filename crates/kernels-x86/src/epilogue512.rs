//! The 512-bit epilogues of the 32-column kernels (`avx512vnni/*`, `amx/*`): a tile row
//! of 32 exact i32 accumulators, as two zmm, in; u8 or f32 outputs of the valid columns
//! out, through AVX-512 store masks.
//!
//! One shape for every kernel whose tile is 32 columns wide, whatever produced the
//! accumulators: the AVX-512 VNNI kernels hand over the zmm registers they accumulated
//! in, the AMX kernel loads each row of the i32 tile it stored (`tilestored`) back from
//! memory. The arithmetic is the folded epilogue of [`qlinear_reference::contract`],
//! instruction for instruction (`vcvtdq2ps` / `vcvtps2dq` round half to even under the
//! default MXCSR, `vfmadd` is one rounding).
//!
//! [`Output`] splits the work per tile: `columns` loads the per-column parameters of
//! the tile's 32 columns once, `store` writes one row.

use core::arch::x86_64::*;

use qlinear_reference::contract::{DynamicEpilogue, GemmArgs, RowQParams, StaticEpilogue};

/// Columns of a tile row, in zmm vectors of 16 i32.
pub(crate) const VECS: usize = 2;
/// Columns of a tile row.
pub(crate) const COLUMNS: usize = 16 * VECS;

/// How a finished tile row becomes output: the static and dynamic epilogues. A tile
/// loads its columns' parameters once (`columns`), then stores each row (`store`).
pub(crate) trait Output {
    type T;
    /// Per-column parameters of one tile, kept in registers across its rows.
    type Cols: Copy;
    /// Loads the parameters of columns `[n0, n0 + COLUMNS)`.
    ///
    /// # Safety
    /// AVX-512 enabled in the caller; epilogue arrays hold at least `n0 + COLUMNS` entries.
    unsafe fn columns(&self, n0: usize) -> Self::Cols;
    /// Writes one row of a tile; `row_q` is the row's input qparams (per-row dynamic
    /// mode only, else `None`).
    ///
    /// # Safety
    /// AVX-512 enabled in the caller; `out_row` valid for the masked columns of
    /// `[n0, n0 + COLUMNS)`; `cols` loaded for this `n0`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn store(
        &self,
        cols: &Self::Cols,
        acc: [__m512i; VECS],
        row_sum: Option<i32>,
        row_q: Option<RowQParams>,
        n0: usize,
        masks: [__mmask16; VECS],
        out_row: *mut Self::T,
    );
}

pub(crate) struct StaticOut<'a> {
    epi: &'a StaticEpilogue,
}

impl<'a> StaticOut<'a> {
    pub(crate) fn new(epi: &'a StaticEpilogue) -> Self {
        StaticOut { epi }
    }
}

/// The static epilogue's per-column vectors.
#[derive(Clone, Copy)]
pub(crate) struct StaticCols {
    col_offset: [__m512i; VECS],
    row_zp: [__m512i; VECS],
    bias_a: [__m512; VECS],
    bias_b: [__m512; VECS],
    mult: [__m512; VECS],
}

/// `raw = acc + col_offset - row_zp * row_sum` for one vector of 16 columns.
///
/// # Safety
/// AVX-512F enabled.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn fold_raw(
    acc: __m512i,
    col_offset: __m512i,
    row_zp: __m512i,
    row_sum: Option<i32>,
) -> __m512i {
    let raw = _mm512_add_epi32(acc, col_offset);
    match row_sum {
        None => raw,
        Some(s) => _mm512_sub_epi32(raw, _mm512_mullo_epi32(row_zp, _mm512_set1_epi32(s))),
    }
}

/// 16 loads of `i32` at `p + n` as a vector.
///
/// # Safety
/// AVX-512F enabled; 16 readable values at `p + n`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn load_i32(p: &[i32], n: usize) -> __m512i {
    // SAFETY: the caller guarantees 16 readable entries at `n`.
    unsafe { _mm512_loadu_si512(p.as_ptr().add(n).cast()) }
}

/// 16 loads of `f32` at `p + n` as a vector.
///
/// # Safety
/// AVX-512F enabled; 16 readable values at `p + n`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn load_f32(p: &[f32], n: usize) -> __m512 {
    // SAFETY: the caller guarantees 16 readable entries at `n`.
    unsafe { _mm512_loadu_ps(p.as_ptr().add(n)) }
}

impl Output for StaticOut<'_> {
    type T = u8;
    type Cols = StaticCols;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn columns(&self, n0: usize) -> StaticCols {
        let e = self.epi;
        // SAFETY: the epilogue arrays are padded to whole panels (>= n0 + COLUMNS entries).
        unsafe {
            StaticCols {
                col_offset: core::array::from_fn(|v| load_i32(&e.col_offset, n0 + 16 * v)),
                row_zp: core::array::from_fn(|v| load_i32(&e.row_zp, n0 + 16 * v)),
                bias_a: core::array::from_fn(|v| load_f32(&e.bias_a, n0 + 16 * v)),
                bias_b: core::array::from_fn(|v| load_f32(&e.bias_b, n0 + 16 * v)),
                mult: core::array::from_fn(|v| load_f32(&e.mult, n0 + 16 * v)),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn store(
        &self,
        c: &StaticCols,
        acc: [__m512i; VECS],
        row_sum: Option<i32>,
        _row_q: Option<RowQParams>,
        n0: usize,
        masks: [__mmask16; VECS],
        out_row: *mut u8,
    ) {
        let e = self.epi;
        for v in 0..VECS {
            // Masks are a prefix: once a vector has no valid column, none after it has.
            // Stop before forming `out_row + n0 + 16 v`, which for the last row of a
            // buffer would point more than one past its end (UB for `ptr::add`, even
            // though a zero-mask store touches nothing).
            if masks[v] == 0 {
                break;
            }
            // SAFETY: the store is masked to the valid columns of this row, and
            // `n0 + 16 v` is one of them (its mask is non-zero).
            unsafe {
                let raw = fold_raw(acc[v], c.col_offset[v], c.row_zp[v], row_sum);
                // xf = fma(bias_a, bias_b, i2f(raw)); y = f(xf * mult)
                let xf = _mm512_fmadd_ps(c.bias_a[v], c.bias_b[v], _mm512_cvtepi32_ps(raw));
                let mut y = _mm512_mul_ps(xf, c.mult[v]);
                if !e.nan_free {
                    // NaN -> 0, as Rust's `as` converts it.
                    y = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(y, y), y);
                }
                // Clamp from above at 512 (no clamped output changes). Below, an
                // out-of-range y converts to i32::MIN, which ends at `lo` just as the
                // saturated value would.
                let y = _mm512_min_ps(y, _mm512_set1_ps(512.0));
                let q = _mm512_add_epi32(_mm512_cvtps_epi32(y), _mm512_set1_epi32(e.zp_y));
                // Non-negative after the lower clamp, so the unsigned-saturating narrow
                // (vpmovusdb) is the upper clamp at 255.
                let q = _mm512_max_epi32(q, _mm512_set1_epi32(e.lo));
                debug_assert!(
                    masks[v] != 0,
                    "pointer formed for a vector with no valid column"
                );
                _mm_mask_storeu_epi8(
                    out_row.add(n0 + 16 * v).cast(),
                    masks[v],
                    _mm512_cvtusepi32_epi8(q),
                );
            }
        }
    }
}

pub(crate) struct DynamicOut<'a>(pub(crate) &'a DynamicEpilogue);

/// The dynamic epilogue's per-column vectors.
#[derive(Clone, Copy)]
pub(crate) struct DynamicCols {
    col_offset: [__m512i; VECS],
    row_zp: [__m512i; VECS],
    mult: [__m512; VECS],
    bias: [__m512; VECS],
}

impl Output for DynamicOut<'_> {
    type T = f32;
    type Cols = DynamicCols;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn columns(&self, n0: usize) -> DynamicCols {
        let e = self.0;
        // SAFETY: the epilogue arrays are padded to whole panels (>= n0 + COLUMNS entries).
        unsafe {
            DynamicCols {
                col_offset: core::array::from_fn(|v| load_i32(&e.col_offset, n0 + 16 * v)),
                row_zp: core::array::from_fn(|v| load_i32(&e.row_zp, n0 + 16 * v)),
                mult: core::array::from_fn(|v| load_f32(&e.mult, n0 + 16 * v)),
                bias: core::array::from_fn(|v| load_f32(&e.bias, n0 + 16 * v)),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn store(
        &self,
        c: &DynamicCols,
        acc: [__m512i; VECS],
        row_sum: Option<i32>,
        _row_q: Option<RowQParams>,
        n0: usize,
        masks: [__mmask16; VECS],
        out_row: *mut f32,
    ) {
        let e = self.0;
        for v in 0..VECS {
            // Masks are a prefix: once a vector has no valid column, none after it has.
            // Stop before forming `out_row + n0 + 16 v`, which for the last row of a
            // buffer would point more than one past its end (UB for `ptr::add`, even
            // though a zero-mask store touches nothing).
            if masks[v] == 0 {
                break;
            }
            // SAFETY: the store is masked to the valid columns of this row, and
            // `n0 + 16 v` is one of them (its mask is non-zero).
            unsafe {
                let raw = fold_raw(acc[v], c.col_offset[v], c.row_zp[v], row_sum);
                let xf = _mm512_cvtepi32_ps(raw);
                let mut out = if e.fused_bias {
                    _mm512_fmadd_ps(xf, c.mult[v], c.bias[v])
                } else {
                    _mm512_add_ps(_mm512_mul_ps(c.mult[v], xf), c.bias[v])
                };
                if e.relu {
                    // maxps returns the second operand for NaN and for +-0: x > 0 ? x : +0.
                    out = _mm512_max_ps(out, _mm512_setzero_ps());
                }
                debug_assert!(
                    masks[v] != 0,
                    "pointer formed for a vector with no valid column"
                );
                _mm512_mask_storeu_ps(out_row.add(n0 + 16 * v), masks[v], out);
            }
        }
    }
}

/// The per-row dynamic epilogue (an epilogue from [`DynamicEpilogue::new_per_row`]):
/// each row brings its own scale and zero point, so `raw` gains `- zp_m * col_sum` and
/// the multiplier is `f(s_m * weight_scale)`, formed per row.
///
/// A tile keeps four column arrays in registers, as many as [`DynamicOut`]: `col_offset`
/// is all zero in per-row mode (the contract's fold puts every input zero point term on
/// the row side), so it is not loaded; five arrays next to an 8-row tile's accumulators
/// made the compiler spill.
pub(crate) struct DynamicPerRowOut<'a>(pub(crate) &'a DynamicEpilogue);

/// The per-row dynamic epilogue's per-column vectors.
#[derive(Clone, Copy)]
pub(crate) struct DynamicPerRowCols {
    row_zp: [__m512i; VECS],
    col_sum: [__m512i; VECS],
    weight_scale: [__m512; VECS],
    bias: [__m512; VECS],
}

impl Output for DynamicPerRowOut<'_> {
    type T = f32;
    type Cols = DynamicPerRowCols;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn columns(&self, n0: usize) -> DynamicPerRowCols {
        let e = self.0;
        debug_assert!(e.col_offset.iter().all(|&o| o == 0), "per-row col_offset");
        debug_assert!(e.col_sum.len() >= n0 + COLUMNS && e.weight_scale.len() >= n0 + COLUMNS);
        // SAFETY: the epilogue arrays, `col_sum` and `weight_scale` included, are padded
        // to whole panels (>= n0 + COLUMNS entries).
        unsafe {
            DynamicPerRowCols {
                row_zp: core::array::from_fn(|v| load_i32(&e.row_zp, n0 + 16 * v)),
                col_sum: core::array::from_fn(|v| load_i32(&e.col_sum, n0 + 16 * v)),
                weight_scale: core::array::from_fn(|v| load_f32(&e.weight_scale, n0 + 16 * v)),
                bias: core::array::from_fn(|v| load_f32(&e.bias, n0 + 16 * v)),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn store(
        &self,
        c: &DynamicPerRowCols,
        acc: [__m512i; VECS],
        row_sum: Option<i32>,
        row_q: Option<RowQParams>,
        n0: usize,
        masks: [__mmask16; VECS],
        out_row: *mut f32,
    ) {
        let e = self.0;
        debug_assert!(row_q.is_some(), "per-row epilogue without row qparams");
        // A caller that breaks the contract (no row qparams) gets NaN, not a guess.
        let q = row_q.unwrap_or(RowQParams {
            scale: f32::NAN,
            zero_point: 0,
        });
        let zp = _mm512_set1_epi32(q.zero_point);
        let scale = _mm512_set1_ps(q.scale);
        for v in 0..VECS {
            // As in `DynamicOut::store`: stop before forming a pointer past the row.
            if masks[v] == 0 {
                break;
            }
            // SAFETY: the store is masked to the valid columns of this row, and
            // `n0 + 16 v` is one of them (its mask is non-zero).
            unsafe {
                // raw = acc - row_zp * row_sum' - zp_m * col_sum   (col_offset is 0)
                let raw = fold_raw(acc[v], _mm512_setzero_si512(), c.row_zp[v], row_sum);
                let raw = _mm512_sub_epi32(raw, _mm512_mullo_epi32(zp, c.col_sum[v]));
                // mult = f(s_m * weight_scale)
                let mult = _mm512_mul_ps(scale, c.weight_scale[v]);
                let xf = _mm512_cvtepi32_ps(raw);
                let mut out = if e.fused_bias {
                    _mm512_fmadd_ps(xf, mult, c.bias[v])
                } else {
                    _mm512_add_ps(_mm512_mul_ps(mult, xf), c.bias[v])
                };
                if e.relu {
                    // x > 0 ? x : +0, as in `DynamicOut::store`.
                    out = _mm512_max_ps(out, _mm512_setzero_ps());
                }
                _mm512_mask_storeu_ps(out_row.add(n0 + 16 * v), masks[v], out);
            }
        }
    }
}

/// Store masks for the first `nc` of `COLUMNS` columns.
#[inline]
pub(crate) fn column_masks(nc: usize) -> [__mmask16; VECS] {
    let mut m = [0; VECS];
    for (v, mask) in m.iter_mut().enumerate() {
        let valid = nc.saturating_sub(16 * v).min(16);
        *mask = ((1u32 << valid) - 1) as __mmask16;
    }
    m
}

/// Writes row `i` of a call: its accumulators `acc` for the tile's columns from `n0`
/// (parameters `cols`, store masks `masks`), with the row's sum and input qparams read
/// from `args` when the call has them.
///
/// # Safety
/// AVX-512 enabled; `i < args.m`; `cols` loaded by `o.columns(n0)`; `masks` cover only
/// columns of `[args.n_begin, args.n_end)`; `args` satisfies the kernel contract.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(crate) unsafe fn store_row<O: Output>(
    o: &O,
    args: &GemmArgs<O::T>,
    cols: &O::Cols,
    acc: [__m512i; VECS],
    i: usize,
    n0: usize,
    masks: [__mmask16; VECS],
) {
    // SAFETY: row `i` is a row of the call, so `row_sums` / `row_qparams` (when not
    // null) hold it and `out + i * out_stride` is its output row (caller).
    unsafe {
        // Plain `if`s, not `bool::then` closures: a closure is not inlined through
        // `then` (which lacks this function's target features) and became a call per
        // row in the per-row instantiation.
        let row_sum = if args.row_sums.is_null() {
            None
        } else {
            Some(*args.row_sums.add(i))
        };
        let row_q = if args.row_qparams.is_null() {
            None
        } else {
            Some(*args.row_qparams.add(i))
        };
        o.store(
            cols,
            acc,
            row_sum,
            row_q,
            n0,
            masks,
            args.out.add(i * args.out_stride),
        );
    }
}
