//! # `avx2/gemm_6x8c4`: exact AVX2, 6 x 8 register tile
//!
//! fbgemm, MLAS and oneDNN run u8 x i8 on AVX2 with `vpmaddubsw`, which adds two
//! u8 x i8 products into a *saturating* i16: `255 * 127 * 2 = 64_770 > 32_767`, so
//! full-range activations give wrong sums. This kernel never uses it. Activations are
//! widened to i16 one row block at a time (`vpmovzxbw`), weights are sign-extended to
//! i16 as they are loaded (`vpmovsxbw`), and `vpmaddwd` adds two i16 x i16 products into
//! an i32 lane:
//! `|255 * 128 * 2| < 2^31`, exact. `vpaddd` accumulates.
//!
//! ## Register budget (16 ymm)
//!
//! ```text
//! accumulators  6 rows x 2 ymm                  12   (lane pairs, see below)
//! weights       2 ymm (one k-group, i16)         2
//! activation    1 ymm (4 x i16 broadcast)        1   -> 15 of 16
//! ```
//!
//! A k-group of 8 columns is 32 bytes = `[c0 k0..k3] .. [c7 k0..k3]`. Sign-extending its
//! halves gives `w_lo = (c0..c3) x (k0..k3)` and `w_hi = (c4..c7) x (k0..k3)` as 16 i16.
//! The activation `(a0, a1, a2, a3)` is broadcast as one 64-bit value, so `vpmaddwd`
//! yields per column two lanes, `a0 w0 + a1 w1` and `a2 w2 + a3 w3`. After the K loop one
//! `vphaddd` + `vpermq` folds the lane pairs into 8 column sums.
//!
//! Per k-group and 6 rows: 2 `vpmovsxbw` (with load), 6 `vpbroadcastq` loads, 12
//! `vpmaddwd` + 12 `vpaddd` for 192 MACs: the core mix is one `vpmaddwd` + `vpaddd` pair
//! per 16 MACs, which is what `qlinear bench` probes as this backend's peak.
//!
//! ## Packed layout (`nr = 8`, `kr = 4`)
//!
//! ```text
//! panel p (columns 8p .. 8p+7), kpad = round_up(K, 4):
//!   byte 0  : [c0 k0..k3][c1 k0..k3][c2 ..][c3 ..] | [c4 k0..k3] .. [c7 k0..k3]
//!             \____ 16 B -> vpmovsxbw -> w_lo ___/   \___ 16 B -> w_hi _____/
//!   byte 32 : k4..k7, ...; panel size kpad * 8 bytes, zero padded
//! ```
//!
//! Memory: the widened rows of one row block (`blocking::block_rows`, about
//! `2 * A_BLOCK_BYTES`) are the only allocation, reused for every block of the call.
//!
//! Reads: each activation row's `k` bytes (copied into a zero-padded i16 scratch), whole
//! k-groups of whole panels, whole panels of the epilogue arrays. Writes: only columns
//! `[n_begin, n_end)`.

use core::arch::x86_64::*;

use qlinear_reference::contract::{DynamicEpilogue, GemmArgs, RowQParams, StaticEpilogue};

use crate::blocking::{block_rows, Tile, Tiles};
use crate::epilogue256::{store_f32, store_f32_per_row, store_u8};
use crate::isa::kernel_descriptor;

/// Rows of the register tile.
pub const MR: usize = 6;
/// Columns of the register tile.
pub const NR: usize = 8;
/// K values per column in a k-group.
pub const KR: usize = 4;
const K_GROUP_BYTES: usize = NR * KR;
const _: () = assert!(MR * 2 + 2 < 16, "tile must fit the 16 ymm registers");
const _: () = assert!(K_GROUP_BYTES == 32, "one k-group is two 16-byte halves");

kernel_descriptor! {
    #[target_feature(enable = "avx2,fma")]
    features: crate::isa::AVX2,
    name: "avx2/gemm_6x8c4",
    isa: Avx2,
    mr: MR,
    nr: NR,
    kr: KR,
}

/// Static entry point (see [`qlinear_reference::contract::GemmU8Fn`]).
///
/// # Safety
/// The CPU supports AVX2 and FMA; `args`, the packing and `epi` satisfy the contract
/// of [`qlinear_reference::contract::GemmU8Fn`].
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_u8(args: &GemmArgs<u8>, epi: &StaticEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled here.
    unsafe {
        drive(args, |acc, row_sum, _row_q, n, nc, out: *mut u8| {
            store_u8(acc, row_sum, epi, n, nc, out)
        })
    }
}

/// Dynamic entry point (see [`qlinear_reference::contract::GemmF32Fn`]).
///
/// # Safety
/// As for [`gemm_u8`].
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_f32(args: &GemmArgs<f32>, epi: &DynamicEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled here. The mode is
    // chosen once per call: the per-tensor loop nest carries no per-row code.
    unsafe {
        if epi.is_per_row() {
            gemm_f32_per_row(args, epi)
        } else {
            gemm_f32_per_tensor(args, epi)
        }
    }
}

/// The per-tensor dynamic loop nest, out of line (like the per-row one) so it is
/// compiled exactly as the single dynamic loop nest was before the per-row mode.
///
/// # Safety
/// As for [`gemm_f32`].
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_f32_per_tensor(args: &GemmArgs<f32>, epi: &DynamicEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled here.
    unsafe {
        drive(args, |acc, row_sum, _row_q, n, nc, out: *mut f32| {
            store_f32(acc, row_sum, epi, n, nc, out)
        })
    }
}

/// The per-row dynamic loop nest (an epilogue from [`DynamicEpilogue::new_per_row`]).
///
/// # Safety
/// As for [`gemm_f32`], with `args.row_qparams` holding `m` entries.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_f32_per_row(args: &GemmArgs<f32>, epi: &DynamicEpilogue) {
    // SAFETY: forwarded caller contract; the features are enabled here.
    unsafe {
        drive(args, |acc, row_sum, row_q, n, nc, out: *mut f32| {
            // A caller that breaks the contract (no row qparams) gets NaN, not a guess.
            let q = row_q.unwrap_or(RowQParams {
                scale: f32::NAN,
                zero_point: 0,
            });
            store_f32_per_row(acc, row_sum, q, epi, n, nc, out)
        })
    }
}

/// Widens `rows` activation rows starting at row `first` to i16, `kpad` per row,
/// zero padded, into `wide` (which holds at least `rows * kpad` values).
///
/// # Safety
/// AVX2 enabled; `args.a` rows `first .. first + rows` hold `k` readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn widen_rows<T>(
    args: &GemmArgs<T>,
    first: usize,
    rows: usize,
    kpad: usize,
    wide: &mut [i16],
) {
    for (i, dst) in wide.chunks_exact_mut(kpad).take(rows).enumerate() {
        // SAFETY: row `first + i < m` has `k` readable bytes at `a + row * a_stride`.
        let row =
            unsafe { core::slice::from_raw_parts(args.a.add((first + i) * args.a_stride), args.k) };
        let (body, pad) = dst.split_at_mut(args.k);
        for (d, &s) in body.iter_mut().zip(row) {
            *d = s as i16;
        }
        pad.fill(0);
    }
}

/// The register tile: `R` rows x 8 columns over the padded K, returning the 8 column
/// sums of each row.
///
/// # Safety
/// AVX2 enabled; `wide` rows hold `kpad` i16 for `r < R`; `panel` points at a full
/// packed panel of `kpad / 4` k-groups.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate<const R: usize, const PREFETCH: bool>(
    wide: *const i16,
    kpad: usize,
    panel: *const u8,
    next_panel: *const u8,
) -> [__m256i; R] {
    // SAFETY: reads stay inside the widened rows and the panel.
    unsafe {
        let mut lo = [_mm256_setzero_si256(); R];
        let mut hi = [_mm256_setzero_si256(); R];
        let mut b = panel;
        for g in 0..kpad / KR {
            if PREFETCH && g % 2 == 0 {
                _mm_prefetch::<_MM_HINT_T1>(next_panel.add(g * K_GROUP_BYTES).cast());
            }
            let w_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.cast()));
            let w_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(16).cast()));
            for r in 0..R {
                let x =
                    _mm256_set1_epi64x(wide.add(r * kpad + g * KR).cast::<i64>().read_unaligned());
                lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(w_lo, x));
                hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(w_hi, x));
            }
            b = b.add(K_GROUP_BYTES);
        }
        let mut out = [_mm256_setzero_si256(); R];
        for r in 0..R {
            // Lane pairs -> columns: hadd gives [c0 c1 c4 c5 | c2 c3 c6 c7].
            out[r] = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(lo[r], hi[r]));
        }
        out
    }
}

/// The loop nest (see [`crate::blocking`]) with this kernel's tile; `store` writes
/// one row of 8 columns.
///
/// # Safety
/// AVX2 + FMA enabled; kernel contract on `args` / epilogue.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn drive<T>(
    args: &GemmArgs<T>,
    store: impl Fn(__m256i, Option<i32>, Option<RowQParams>, usize, usize, *mut T),
) {
    let kpad = args.k.div_ceil(KR) * KR;
    // Activations are widened one row block at a time (the blocks of
    // `crate::blocking`), into one buffer reused for every block: the extra memory is
    // at most a block's worth, whatever M is.
    let block = block_rows(args.k, MR).min(args.m);
    let mut wide = vec![0i16; block * kpad];
    for first in (0..args.m).step_by(block.max(1)) {
        let rows = block.min(args.m - first);
        // SAFETY: rows `first .. first + rows` are inside `[0, m)`.
        unsafe { widen_rows(args, first, rows, kpad, &mut wide) };
        // One block: `Tiles` over `rows` rows (no further row blocking), shifted by
        // `first`.
        for t in Tiles::new(rows, args.k, args.n_begin, args.n_end, MR, NR) {
            // SAFETY: `Tiles` yields tiles inside the block with 1 <= rows <= MR, so
            // the widened rows, the panel and the output rows are in bounds.
            unsafe { tile(args, &wide, kpad, first, t, &store) };
        }
    }
}

/// One register tile of a widened row block: `t.row` counts from the block's first
/// row, `first` is that row's index in the call.
///
/// # Safety
/// AVX2 + FMA enabled; kernel contract on `args`; `t` lies inside the block, whose
/// widened rows are in `wide`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<T>(
    args: &GemmArgs<T>,
    wide: &[i16],
    kpad: usize,
    first: usize,
    t: Tile,
    store: &impl Fn(__m256i, Option<i32>, Option<RowQParams>, usize, usize, *mut T),
) {
    // SAFETY: forwarded; see the caller.
    unsafe {
        let w = wide.as_ptr().add(t.row * kpad);
        let panel = args.packed.add(t.panel * kpad * NR);
        let mut sums = [_mm256_setzero_si256(); MR];
        let next = t.prefetch_panel.map(|p| args.packed.add(p * kpad * NR));
        macro_rules! tile {
            ($r:literal) => {
                match next {
                    None => accumulate::<$r, false>(w, kpad, panel, panel),
                    Some(p) => accumulate::<$r, true>(w, kpad, panel, p),
                }
            };
        }
        match t.rows {
            1 => sums[..1].copy_from_slice(&tile!(1)),
            2 => sums[..2].copy_from_slice(&tile!(2)),
            3 => sums[..3].copy_from_slice(&tile!(3)),
            4 => sums[..4].copy_from_slice(&tile!(4)),
            5 => sums[..5].copy_from_slice(&tile!(5)),
            _ => sums = tile!(6),
        }
        for (r, &acc) in sums.iter().enumerate().take(t.rows) {
            let i = first + t.row + r;
            let row_sum = (!args.row_sums.is_null()).then(|| *args.row_sums.add(i));
            let row_q = (!args.row_qparams.is_null()).then(|| *args.row_qparams.add(i));
            store(
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
