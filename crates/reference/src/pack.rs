//! The portable packer: any [`PackedLayout`], safe scalar code.
//!
//! Kernels share it (their layouts differ only in `nr`/`kr`); it writes rows of the
//! weight in order so reads stream and writes stay inside one panel (a few hundred KiB).

use crate::contract::PackedLayout;

/// Packs an `n x k` row-major i8 weight into `out` (length `layout.packed_len(n, k)`),
/// zero-filling padding. Bytes are the i8 values' two's complement.
///
/// Writes are sequential inside a panel; reads walk `nr` rows in step, `kr` bytes at a
/// time (a few KiB apart, all in L1/L2). The common `kr` values get a constant-size copy
/// so each group is a single 1/2/4/8-byte move.
pub fn pack_into(w: &[i8], n: usize, k: usize, layout: PackedLayout, out: &mut [u8]) {
    assert_eq!(w.len(), n * k, "weight length");
    assert_eq!(out.len(), layout.packed_len(n, k), "packed length");
    match layout.kr {
        1 => pack_groups::<1>(w, n, k, layout.nr, out),
        2 => pack_groups::<2>(w, n, k, layout.nr, out),
        4 => pack_groups::<4>(w, n, k, layout.nr, out),
        8 => pack_groups::<8>(w, n, k, layout.nr, out),
        _ => pack_generic(w, n, k, layout, out),
    }
}

fn pack_groups<const KR: usize>(w: &[i8], n: usize, k: usize, nr: usize, out: &mut [u8]) {
    let layout = PackedLayout { nr, kr: KR };
    let panel = layout.panel_bytes(k);
    let full_groups = k / KR;
    let group_bytes = nr * KR;
    for (p, panel_out) in out.chunks_exact_mut(panel.max(1)).enumerate() {
        let first = p * nr;
        let cols = nr.min(n.saturating_sub(first));
        let rows: Vec<&[i8]> = (first..first + cols)
            .map(|c| &w[c * k..(c + 1) * k])
            .collect();
        for (g, dst) in panel_out
            .chunks_exact_mut(group_bytes)
            .enumerate()
            .take(full_groups)
        {
            for (d, row) in dst.chunks_exact_mut(KR).zip(&rows) {
                let src: &[i8; KR] = row[g * KR..g * KR + KR].try_into().expect("KR bytes");
                let d: &mut [u8; KR] = d.try_into().expect("KR bytes");
                for (d, &s) in d.iter_mut().zip(src) {
                    *d = s as u8;
                }
            }
            dst[cols * KR..].fill(0);
        }
        // The partial last k-group and everything after it: zero, then the tail bytes.
        panel_out[full_groups * group_bytes..].fill(0);
        for (j, row) in rows.iter().enumerate() {
            for kk in full_groups * KR..k {
                panel_out[(kk / KR) * group_bytes + j * KR + kk % KR] = row[kk] as u8;
            }
        }
    }
}

fn pack_generic(w: &[i8], n: usize, k: usize, layout: PackedLayout, out: &mut [u8]) {
    out.fill(0);
    for col in 0..n {
        for kk in 0..k {
            out[layout.offset(col, kk, k)] = w[col * k + kk] as u8;
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
