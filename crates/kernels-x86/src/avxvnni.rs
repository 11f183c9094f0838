//! # `avxvnni/gemm_6x16c4`: AVX-VNNI (VEX `vpdpbusd ymm`), 6 x 16 register tile
//!
//! For CPUs with AVX-VNNI but no AVX-512 (Alder Lake and later client cores, Zen 5
//! client parts with AVX-512 fused off). Same exact instruction as the AVX-512 kernel on
//! 8 lanes: `vpdpbusd ymm` adds four u8 x i8 products into each i32 lane without
//! saturation.
//!
//! ## Register budget (16 ymm)
//!
//! ```text
//! accumulators  6 rows x 2 ymm (16 columns)   12
//! weights       2 ymm (one k-group)            2
//! activation    1 ymm (4 bytes broadcast)      1   -> 15 of 16
//! ```
//!
//! Per k-group: 2 weight loads + 6 broadcast loads feed 12 `vpdpbusd` (384 MACs),
//! 0.67 loads per `vpdpbusd`.
//!
//! ## Packed layout (`nr = 16`, `kr = 4`)
//!
//! ```text
//! panel p (columns 16p .. 16p+15), kpad = round_up(K, 4):
//!   byte 0   : [c0 k0..k3] ... [c7 k0..k3] | [c8 k0..k3] ... [c15 k0..k3]
//!              \______ ymm 0 (32 B) ____/   \______ ymm 1 (32 B) _____/
//!   byte 64  : k4..k7, and so on; panel size kpad * 16 bytes, zero padded
//! ```
//!
//! Reads: the `k` bytes of each activation row, whole k-groups of whole panels, whole
//! panels of the epilogue arrays. Writes: only columns `[n_begin, n_end)`.

use core::arch::x86_64::*;

use qlinear_reference::contract::{DynamicEpilogue, GemmArgs, RowQParams, StaticEpilogue};

use crate::blocking::{load_tail_u32, Tile, Tiles};
use crate::epilogue256::{store_f32, store_f32_per_row, store_u8};
use crate::isa::kernel_descriptor;

/// Rows of the register tile.
pub const MR: usize = 6;
/// Columns of the register tile (two ymm of 8 i32 lanes).
pub const NR: usize = 16;
/// K values per column in a k-group.
pub const KR: usize = 4;
const VECS: usize = NR / 8;
const K_GROUP_BYTES: usize = NR * KR;
const _: () = assert!(MR * VECS + VECS < 16, "tile must fit the 16 ymm registers");
const _: () = assert!(
    K_GROUP_BYTES == VECS * 32,
    "one k-group is VECS full ymm loads"
);

kernel_descriptor! {
    #[target_feature(enable = "avx2,fma,avxvnni")]
    features: crate::isa::AVXVNNI,
    name: "avxvnni/gemm_6x16c4",
    isa: AvxVnni,
    mr: MR,
    nr: NR,
    kr: KR,
}

/// Static entry point (see [`qlinear_reference::contract::GemmU8Fn`]).
///
/// # Safety
/// The CPU supports AVX2, FMA and AVX-VNNI; `args`, the packing and `epi` satisfy
/// the contract of [`qlinear_reference::contract::GemmU8Fn`].
#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn gemm_u8(args: &GemmArgs<u8>, epi: &StaticEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled here.
    unsafe { drive(args, &StaticOut(epi)) }
}

/// Dynamic entry point (see [`qlinear_reference::contract::GemmF32Fn`]).
///
/// # Safety
/// As for [`gemm_u8`].
#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn gemm_f32(args: &GemmArgs<f32>, epi: &DynamicEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled here. The mode is
    // chosen once per call: the per-tensor loop nest carries no per-row code.
    unsafe {
        if epi.is_per_row() {
            drive(args, &DynamicPerRowOut(epi))
        } else {
            drive(args, &DynamicOut(epi))
        }
    }
}

/// How a finished tile row becomes output.
trait Output {
    type T;
    /// Writes one row of a tile (columns `[n0, n0 + nc)`); `row_q` is the row's input
    /// qparams in per-row dynamic mode.
    ///
    /// # Safety
    /// AVX2 + FMA enabled; `out_row` valid for columns `[n0, n0 + nc)`; epilogue arrays
    /// hold at least `n0 + NR` entries.
    unsafe fn store(
        &self,
        acc: [__m256i; VECS],
        row_sum: Option<i32>,
        row_q: Option<RowQParams>,
        n0: usize,
        nc: usize,
        out_row: *mut Self::T,
    );
}

struct StaticOut<'a>(&'a StaticEpilogue);
struct DynamicOut<'a>(&'a DynamicEpilogue);
/// The dynamic epilogue in per-row mode (see [`store_f32_per_row`]).
struct DynamicPerRowOut<'a>(&'a DynamicEpilogue);

impl Output for StaticOut<'_> {
    type T = u8;
    #[inline]
    #[target_feature(enable = "avx2,fma,avxvnni")]
    unsafe fn store(
        &self,
        acc: [__m256i; VECS],
        row_sum: Option<i32>,
        _row_q: Option<RowQParams>,
        n0: usize,
        nc: usize,
        out_row: *mut u8,
    ) {
        for (v, acc) in acc.into_iter().enumerate() {
            let valid = nc.saturating_sub(8 * v).min(8);
            if valid > 0 {
                // SAFETY: forwarded contract; `valid` columns at `n0 + 8v` are inside `nc`.
                unsafe { store_u8(acc, row_sum, self.0, n0 + 8 * v, valid, out_row) };
            }
        }
    }
}

impl Output for DynamicOut<'_> {
    type T = f32;
    #[inline]
    #[target_feature(enable = "avx2,fma,avxvnni")]
    unsafe fn store(
        &self,
        acc: [__m256i; VECS],
        row_sum: Option<i32>,
        _row_q: Option<RowQParams>,
        n0: usize,
        nc: usize,
        out_row: *mut f32,
    ) {
        for (v, acc) in acc.into_iter().enumerate() {
            let valid = nc.saturating_sub(8 * v).min(8);
            if valid > 0 {
                // SAFETY: as above.
                unsafe { store_f32(acc, row_sum, self.0, n0 + 8 * v, valid, out_row) };
            }
        }
    }
}

impl Output for DynamicPerRowOut<'_> {
    type T = f32;
    #[inline]
    #[target_feature(enable = "avx2,fma,avxvnni")]
    unsafe fn store(
        &self,
        acc: [__m256i; VECS],
        row_sum: Option<i32>,
        row_q: Option<RowQParams>,
        n0: usize,
        nc: usize,
        out_row: *mut f32,
    ) {
        debug_assert!(row_q.is_some(), "per-row epilogue without row qparams");
        // A caller that breaks the contract (no row qparams) gets NaN, not a guess.
        let q = row_q.unwrap_or(RowQParams {
            scale: f32::NAN,
            zero_point: 0,
        });
        for (v, acc) in acc.into_iter().enumerate() {
            let valid = nc.saturating_sub(8 * v).min(8);
            if valid > 0 {
                // SAFETY: as above; the per-row arrays are padded like the others.
                unsafe { store_f32_per_row(acc, row_sum, q, self.0, n0 + 8 * v, valid, out_row) };
            }
        }
    }
}

/// The register tile: `R` rows x 16 columns over the whole of K; with `PREFETCH`
/// the next panel is prefetched towards L2 (one line per k-group).
///
/// # Safety
/// AVX-VNNI enabled; rows `a + r * a_stride` hold `k` readable bytes for `r < R`;
/// `panel` (and `next_panel` when `PREFETCH`) points at a full packed panel.
#[inline]
#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn accumulate<const R: usize, const PREFETCH: bool>(
    a: *const u8,
    a_stride: usize,
    k: usize,
    panel: *const u8,
    next_panel: *const u8,
) -> [[__m256i; VECS]; R] {
    // SAFETY: all reads stay inside the rows (first `k` bytes) and the panel.
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); VECS]; R];
        let groups = k / KR;
        let mut b = panel;
        let rows: [*const u8; R] = core::array::from_fn(|r| a.add(r * a_stride));
        for g in 0..groups {
            if PREFETCH {
                _mm_prefetch::<_MM_HINT_T1>(next_panel.add(g * K_GROUP_BYTES).cast());
            }
            let w0 = _mm256_loadu_si256(b.cast());
            let w1 = _mm256_loadu_si256(b.add(32).cast());
            for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                let x = _mm256_set1_epi32(row.add(g * KR).cast::<i32>().read_unaligned());
                acc[0] = _mm256_dpbusd_avx_epi32(acc[0], x, w0);
                acc[1] = _mm256_dpbusd_avx_epi32(acc[1], x, w1);
            }
            b = b.add(K_GROUP_BYTES);
        }
        let tail = k % KR;
        if tail != 0 {
            let w0 = _mm256_loadu_si256(b.cast());
            let w1 = _mm256_loadu_si256(b.add(32).cast());
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_epi32(load_tail_u32(a.add(r * a_stride + groups * KR), tail));
                acc[0] = _mm256_dpbusd_avx_epi32(acc[0], x, w0);
                acc[1] = _mm256_dpbusd_avx_epi32(acc[1], x, w1);
            }
        }
        acc
    }
}

/// One row (GEMV): four k-groups in flight on separate accumulators.
///
/// # Safety
/// As for [`accumulate`] with `R = 1`.
#[inline]
#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn accumulate_row<const PREFETCH: bool>(
    a: *const u8,
    k: usize,
    panel: *const u8,
    next_panel: *const u8,
) -> [__m256i; VECS] {
    const UNROLL: usize = 4;
    // SAFETY: reads stay inside the row's `k` bytes and the panel.
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); VECS]; UNROLL];
        let groups = k / KR;
        let mut b = panel;
        let mut g = 0;
        while g + UNROLL <= groups {
            if PREFETCH {
                let p = next_panel.add(g * K_GROUP_BYTES);
                for line in 0..UNROLL * K_GROUP_BYTES / 64 {
                    _mm_prefetch::<_MM_HINT_T1>(p.add(64 * line).cast());
                }
            }
            for (u, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_epi32(a.add((g + u) * KR).cast::<i32>().read_unaligned());
                let wb = b.add(u * K_GROUP_BYTES);
                acc[0] = _mm256_dpbusd_avx_epi32(acc[0], x, _mm256_loadu_si256(wb.cast()));
                acc[1] = _mm256_dpbusd_avx_epi32(acc[1], x, _mm256_loadu_si256(wb.add(32).cast()));
            }
            b = b.add(UNROLL * K_GROUP_BYTES);
            g += UNROLL;
        }
        while g < groups {
            let x = _mm256_set1_epi32(a.add(g * KR).cast::<i32>().read_unaligned());
            acc[0][0] = _mm256_dpbusd_avx_epi32(acc[0][0], x, _mm256_loadu_si256(b.cast()));
            acc[0][1] = _mm256_dpbusd_avx_epi32(acc[0][1], x, _mm256_loadu_si256(b.add(32).cast()));
            b = b.add(K_GROUP_BYTES);
            g += 1;
        }
        let tail = k % KR;
        if tail != 0 {
            let x = _mm256_set1_epi32(load_tail_u32(a.add(groups * KR), tail));
            acc[1][0] = _mm256_dpbusd_avx_epi32(acc[1][0], x, _mm256_loadu_si256(b.cast()));
            acc[1][1] = _mm256_dpbusd_avx_epi32(acc[1][1], x, _mm256_loadu_si256(b.add(32).cast()));
        }
        let mut sum = [_mm256_setzero_si256(); VECS];
        for acc in &acc {
            for (s, &v) in sum.iter_mut().zip(acc) {
                *s = _mm256_add_epi32(*s, v);
            }
        }
        sum
    }
}

/// Runs one tile of `R` rows and writes its outputs.
///
/// # Safety
/// AVX-VNNI enabled; kernel contract on `args` / epilogue; `t` inside `args`.
#[inline]
#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn run_tile<const R: usize, O: Output>(args: &GemmArgs<O::T>, o: &O, t: Tile) {
    // SAFETY: `t` is inside the call's rows/columns, so every pointer formed here is
    // inside the caller's buffers.
    unsafe {
        let a = args.a.add(t.row * args.a_stride);
        let panel_bytes = args.k.div_ceil(KR) * KR * NR;
        let panel = args.packed.add(t.panel * panel_bytes);
        let next = t.prefetch_panel.map(|p| args.packed.add(p * panel_bytes));
        let acc = match (R, next) {
            (1, _) => {
                let mut acc = [[_mm256_setzero_si256(); VECS]; R];
                acc[0] = match next {
                    None => accumulate_row::<false>(a, args.k, panel, panel),
                    Some(p) => accumulate_row::<true>(a, args.k, panel, p),
                };
                acc
            }
            (_, None) => accumulate::<R, false>(a, args.a_stride, args.k, panel, panel),
            (_, Some(p)) => accumulate::<R, true>(a, args.a_stride, args.k, panel, p),
        };
        for (r, acc) in acc.into_iter().enumerate() {
            let i = t.row + r;
            let row_sum = (!args.row_sums.is_null()).then(|| *args.row_sums.add(i));
            let row_q = (!args.row_qparams.is_null()).then(|| *args.row_qparams.add(i));
            o.store(
                acc,
                row_sum,
                row_q,
                t.n0,
                t.nc,
                args.out.add(i * args.out_stride),
            );
        }
    }
}

/// The loop nest (see [`crate::blocking`]) with this kernel's tile.
///
/// # Safety
/// AVX-VNNI enabled; kernel contract on `args` / epilogue.
#[inline]
#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn drive<O: Output>(args: &GemmArgs<O::T>, o: &O) {
    for t in Tiles::new(args.m, args.k, args.n_begin, args.n_end, MR, NR) {
        // SAFETY: `Tiles` yields tiles inside the call's range with 1 <= rows <= MR.
        unsafe {
            match t.rows {
                1 => run_tile::<1, O>(args, o, t),
                2 => run_tile::<2, O>(args, o, t),
                3 => run_tile::<3, O>(args, o, t),
                4 => run_tile::<4, O>(args, o, t),
                5 => run_tile::<5, O>(args, o, t),
                _ => run_tile::<6, O>(args, o, t),
            }
        }
    }
}
