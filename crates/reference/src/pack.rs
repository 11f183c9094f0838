//! The portable packer: any [`PackedLayout`], safe scalar code.
//!
//! Kernels share it (their layouts differ only in `nr`/`kr`); it writes rows of the
//! weight in order so reads stream and writes stay inside one panel (a few hundred KiB).

use crate::contract::PackedLayout;

/// Packs an `n x k` row-major i8 weight into `out` (length `layout.packed_len(n, k)`),
/// zero-filling padding. Bytes are the i8 values' two's complement.
pub fn pack_into(w: &[i8], n: usize, k: usize, layout: PackedLayout, out: &mut [u8]) {
    assert_eq!(w.len(), n * k, "weight length");
    assert_eq!(out.len(), layout.packed_len(n, k), "packed length");
    let (nr, kr) = (layout.nr, layout.kr);
    let panel = layout.panel_bytes(k);
    let full_groups = k / kr;
    for (p, panel_out) in out.chunks_exact_mut(panel.max(1)).enumerate() {
        panel_out.fill(0);
        for j in 0..nr {
            let col = p * nr + j;
            if col >= n {
                break;
            }
            let row = &w[col * k..(col + 1) * k];
            for g in 0..full_groups {
                let dst = g * nr * kr + j * kr;
                for (d, &s) in panel_out[dst..dst + kr]
                    .iter_mut()
                    .zip(&row[g * kr..(g + 1) * kr])
                {
                    *d = s as u8;
                }
            }
            for kk in full_groups * kr..k {
                panel_out[(kk / kr) * nr * kr + j * kr + kk % kr] = row[kk] as u8;
            }
        }
    }
}

/// Allocating form of [`pack_into`].
pub fn pack(w: &[i8], n: usize, k: usize, layout: PackedLayout) -> Vec<u8> {
    let mut out = vec![0u8; layout.packed_len(n, k)];
    pack_into(w, n, k, layout, &mut out);
    out
}

/// Recovers the exact `n x k` weight from a packing.
pub fn unpack(packed: &[u8], n: usize, k: usize, layout: PackedLayout) -> Vec<i8> {
    let mut w = Vec::with_capacity(n * k);
    for col in 0..n {
        for kk in 0..k {
            w.push(packed[layout.offset(col, kk, k)] as i8);
        }
    }
    w
}

/// `col_sum[n] = sum_k w[n,k]`, the pack-time half of the zero-point correction.
pub fn column_sums(w: &[i8], n: usize, k: usize) -> Vec<i32> {
    (0..n)
        .map(|col| w[col * k..(col + 1) * k].iter().map(|&v| v as i32).sum())
        .collect()
}

/// Row sums of u8 activations (`row_sum[m] = sum_k a[m,k]`).
pub fn row_sum(row: &[u8]) -> i32 {
    row.iter().map(|&v| v as u32).sum::<u32>() as i32
}
