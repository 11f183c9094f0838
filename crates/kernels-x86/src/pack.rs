//! The x86 packer for the c4 layouts (`kr = 4`, `nr` a multiple of 8), AVX2.
//!
//! Packing is a transpose of 4-byte groups: row `c` of the weight holds column `c`'s
//! k-groups `g0, g1, ..`; the panel wants, per k-group, the columns side by side. Eight
//! rows of 32 bytes (8 k-groups each) are one 8 x 8 matrix of u32, transposed in
//! registers (`vpunpck{l,h}dq`, `vpunpck{l,h}qdq`, `vperm2i128`: 24 shuffles per 256
//! bytes) and stored as 8 rows of 32 bytes into 8 consecutive k-groups of the panel:
//!
//! ```text
//! weight rows (columns c0..c7)         panel, k-groups g0..g7, columns cb..cb+7
//!   c0: [g0][g1]..[g7]                   g0: [c0][c1]..[c7]
//!   c1: [g0][g1]..[g7]        ->         g1: [c0][c1]..[c7]
//!   ..                                   ..
//! ```
//!
//! Columns past `N` are zero vectors; the k-groups past the last multiple of 8 and the
//! K tail are left to the portable packer (`pack_panel_from`), which also owns the
//! zero padding there. The result is byte-identical to `qlinear_reference::pack`.
//!
//! Loop order: K in blocks of 64 k-groups (256 bytes of each of the panel's rows), and
//! inside a block the 8-column strips one after the other. Walking all `NR` rows in step
//! 32 bytes at a time (the first version) kept 32 read streams open for `NR = 32` and
//! ran at ~60% of the `NR = 8` speed; with the blocks every row is read four whole cache
//! lines at a time and the 32-column packer comes within ~10% of the 8-column one
//! (`PackedWeights::new` at 4096 x 4096, one thread, output memory already mapped:
//! ~10 -> ~16 GB/s on a Zen 5 VM). An AVX-512 variant (16 x 16 transposes in zmm,
//! `vpdpbusd` column sums) and software prefetching measured no faster: the loop waits
//! on memory, not on shuffles.
//!
//! The column sums come from the transposed vectors for free: in a k-group vector each
//! u32 lane is one column's 4 bytes, so `vpmaddubsw` against ones (pairs, |sum| <= 256,
//! no saturation) then `vpmaddwd` against ones gives each column's 4-byte sum; the
//! remaining bytes are added in scalar code.

use core::arch::x86_64::*;

use qlinear_reference::contract::PackedLayout;

/// The widest panel the c4 packer handles (its column-sum accumulators are a fixed array).
const MAX_NR: usize = 32;

/// k-groups per K block: 256 bytes (four cache lines) of each source row.
const BLOCK_GROUPS: usize = 64;

/// Packs panel `p` of an `n x k` weight for the layout `(NR, 4)` into `out`.
///
/// # Safety
/// AVX2 enabled; `w.len() == n * k`; `out.len()` is the panel size; `p * NR < n`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn pack_panel_c4<const NR: usize>(
    w: &[i8],
    n: usize,
    k: usize,
    p: usize,
    out: &mut [u8],
    col_sums: &mut [i32],
) {
    // One i16 column-sum vector per 8 columns, in a fixed array: a wider panel would
    // be silently truncated by the `zip` below, so it is rejected at compile time.
    const {
        assert!(
            NR.is_multiple_of(8) && NR <= MAX_NR,
            "c4 packer: NR must be 8, 16, 24 or 32"
        )
    };
    let layout = PackedLayout { nr: NR, kr: 4 };
    assert_eq!(Some(w.len()), n.checked_mul(k), "weight length");
    assert_eq!(out.len(), layout.panel_bytes(k), "panel length");
    assert_eq!(col_sums.len(), NR, "column sums length");
    let full_groups = k / 4;
    let vector_groups = full_groups / 8 * 8;
    let ones_u8 = _mm256_set1_epi8(1);
    let ones_i16 = _mm256_set1_epi16(1);
    let mut sums = [_mm256_setzero_si256(); MAX_NR / 8];
    // K in blocks of BLOCK_GROUPS k-groups, each finished for all NR columns before
    // the next (see the module docs).
    for gb in (0..vector_groups).step_by(BLOCK_GROUPS) {
        let ge = (gb + BLOCK_GROUPS).min(vector_groups);
        for (cb, sum) in (0..NR).step_by(8).zip(sums.iter_mut()) {
            for g0 in (gb..ge).step_by(8) {
                let rows: [__m256i; 8] = core::array::from_fn(|i| {
                    let c = p * NR + cb + i;
                    if c < n {
                        let src = &w[c * k + g0 * 4..c * k + g0 * 4 + 32];
                        // SAFETY: `src` is 32 in-bounds bytes (g0 + 8 <= k / 4).
                        unsafe { _mm256_loadu_si256(src.as_ptr().cast()) }
                    } else {
                        _mm256_setzero_si256()
                    }
                });
                // SAFETY: AVX2 is enabled in this function.
                let t: [__m256i; 8] = unsafe { transpose_8x8(rows) };
                for (g, v) in t.iter().enumerate() {
                    let at = (g0 + g) * NR * 4 + cb * 4;
                    let dst = &mut out[at..at + 32];
                    // SAFETY: `dst` is 32 in-bounds bytes.
                    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), *v) };
                    let pairs = _mm256_maddubs_epi16(ones_u8, *v);
                    *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, ones_i16));
                }
            }
        }
    }
    for (cb, sum) in (0..NR).step_by(8).zip(sums) {
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` is 32 writable bytes.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), sum) };
        col_sums[cb..cb + 8].copy_from_slice(&lanes);
    }
    for (j, s) in col_sums.iter_mut().enumerate() {
        let c = p * NR + j;
        *s = if c < n {
            let rest = &w[c * k + vector_groups * 4..(c + 1) * k];
            *s + rest.iter().map(|&v| v as i32).sum::<i32>()
        } else {
            0
        };
    }
    qlinear_reference::pack::pack_panel_from(w, n, k, layout, p, vector_groups, out);
}

/// Transposes an 8 x 8 matrix of u32 held as 8 rows.
///
/// # Safety
/// AVX2 enabled.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_8x8(r: [__m256i; 8]) -> [__m256i; 8] {
    // [a0 b0 a1 b1 | a4 b4 a5 b5], [a2 b2 a3 b3 | a6 b6 a7 b7], ...
    let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
    let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
    let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
    let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    // [a0 b0 c0 d0 | a4 b4 c4 d4], [a1 b1 c1 d1 | a5 ..], ...
    let u0 = _mm256_unpacklo_epi64(t0, t2);
    let u1 = _mm256_unpackhi_epi64(t0, t2);
    let u2 = _mm256_unpacklo_epi64(t1, t3);
    let u3 = _mm256_unpackhi_epi64(t1, t3);
    let u4 = _mm256_unpacklo_epi64(t4, t6);
    let u5 = _mm256_unpackhi_epi64(t4, t6);
    let u6 = _mm256_unpacklo_epi64(t5, t7);
    let u7 = _mm256_unpackhi_epi64(t5, t7);
    [
        _mm256_permute2x128_si256::<0x20>(u0, u4),
        _mm256_permute2x128_si256::<0x20>(u1, u5),
        _mm256_permute2x128_si256::<0x20>(u2, u6),
        _mm256_permute2x128_si256::<0x20>(u3, u7),
        _mm256_permute2x128_si256::<0x31>(u0, u4),
        _mm256_permute2x128_si256::<0x31>(u1, u5),
        _mm256_permute2x128_si256::<0x31>(u2, u6),
        _mm256_permute2x128_si256::<0x31>(u3, u7),
    ]
}
