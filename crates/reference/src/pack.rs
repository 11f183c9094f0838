//! The portable packer: any [`PackedLayout`], safe scalar code.
//!
//! Kernels share it (their layouts differ only in `nr`/`kr`); it writes rows of the
//! weight in order so reads stream and writes stay inside one panel (a few hundred KiB).

use crate::contract::PackedLayout;

/// Packs an `n x k` row-major i8 weight into `out` (length `layout.packed_len(n, k)`),
/// zero-filling padding. Bytes are the i8 values' two's complement.
///
/// # Panics
/// If `w` or `out` has the wrong length (the API validates shapes before packing).
///
/// Writes are sequential inside a panel; reads walk `nr` rows in step, `kr` bytes at a
/// time (a few KiB apart, all in L1/L2). The common `kr` values get a constant-size copy
/// so each group is a single 1/2/4/8-byte move.
pub fn pack_into(w: &[i8], n: usize, k: usize, layout: PackedLayout, out: &mut [u8]) {
    assert_eq!(Some(w.len()), n.checked_mul(k), "weight length");
    assert_eq!(out.len(), layout.packed_len(n, k), "packed length");
    for (p, panel_out) in out
        .chunks_exact_mut(layout.panel_bytes(k).max(1))
        .enumerate()
    {
        pack_panel(w, n, k, layout, p, panel_out);
    }
}

/// Packs panel `p` (columns `p * nr ..`) into `out` (`layout.panel_bytes(k)` bytes),
/// zero-filling padding. [`pack_into`] is this for every panel; callers that build the
/// packed buffer panel by panel (appending each) avoid writing it twice.
pub fn pack_panel(w: &[i8], n: usize, k: usize, layout: PackedLayout, p: usize, out: &mut [u8]) {
    pack_panel_from(w, n, k, layout, p, 0, out);
}

/// [`pack_panel`] restricted to k-groups `first_group..` (and the K tail): the bytes of
/// earlier k-groups are left as they are. Vector packers do the bulk of a panel and hand
/// the rest to this.
pub fn pack_panel_from(
    w: &[i8],
    n: usize,
    k: usize,
    layout: PackedLayout,
    p: usize,
    first_group: usize,
    out: &mut [u8],
) {
    assert_eq!(out.len(), layout.panel_bytes(k), "panel length");
    let g = first_group;
    match layout.kr {
        1 => pack_panel_groups::<1>(w, n, k, layout.nr, p, g, out),
        2 => pack_panel_groups::<2>(w, n, k, layout.nr, p, g, out),
        4 => pack_panel_groups::<4>(w, n, k, layout.nr, p, g, out),
        8 => pack_panel_groups::<8>(w, n, k, layout.nr, p, g, out),
        _ => pack_panel_generic(w, n, k, layout, p, g, out),
    }
}

fn pack_panel_groups<const KR: usize>(
    w: &[i8],
    n: usize,
    k: usize,
    nr: usize,
    p: usize,
    first_group: usize,
    panel_out: &mut [u8],
) {
    let full_groups = k / KR;
    let group_bytes = nr * KR;
    let first = p * nr;
    let cols = nr.min(n.saturating_sub(first));
    let rows: Vec<&[i8]> = (first..first + cols)
        .map(|c| &w[c * k..(c + 1) * k])
        .collect();
    // Blocked transpose: 16 k-groups at a time, so each row contributes whole cache
    // lines (read once, sequentially) to a 16 * NR * KR-byte block of the panel that
    // stays in L1 while it fills.
    const BLOCK_GROUPS: usize = 16;
    let mut g0 = first_group.min(full_groups);
    while g0 < full_groups {
        let g1 = (g0 + BLOCK_GROUPS).min(full_groups);
        let block = &mut panel_out[g0 * group_bytes..g1 * group_bytes];
        for (j, row) in rows.iter().enumerate() {
            let src = &row[g0 * KR..g1 * KR];
            for (dst_group, s) in block
                .chunks_exact_mut(group_bytes)
                .zip(src.chunks_exact(KR))
            {
                let s: &[i8; KR] = s.try_into().expect("KR bytes");
                let d: &mut [u8; KR] = (&mut dst_group[j * KR..j * KR + KR])
                    .try_into()
                    .expect("KR bytes");
                for (d, &s) in d.iter_mut().zip(s) {
                    *d = s as u8;
                }
            }
        }
        if cols < nr {
            for dst_group in block.chunks_exact_mut(group_bytes) {
                dst_group[cols * KR..].fill(0);
            }
        }
        g0 = g1;
    }
    // The partial last k-group and everything after it: zero, then the tail bytes.
    panel_out[full_groups * group_bytes..].fill(0);
    for (j, row) in rows.iter().enumerate() {
        for kk in full_groups * KR..k {
            panel_out[(kk / KR) * group_bytes + j * KR + kk % KR] = row[kk] as u8;
        }
    }
}

fn pack_panel_generic(
    w: &[i8],
    n: usize,
    k: usize,
    layout: PackedLayout,
    p: usize,
    first_group: usize,
    out: &mut [u8],
) {
    let start = (first_group * layout.kr).min(k);
    let base = p * layout.panel_bytes(k);
    out[(start / layout.kr) * layout.nr * layout.kr..].fill(0);
    for col in p * layout.nr..((p + 1) * layout.nr).min(n) {
        for kk in start..k {
            out[layout.offset(col, kk, k) - base] = w[col * k + kk] as u8;
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
///
/// # Panics
/// If `n * k` overflows or `packed` is shorter than `layout.packed_len(n, k)` (the API
/// validates packed bytes before unpacking).
pub fn unpack(packed: &[u8], n: usize, k: usize, layout: PackedLayout) -> Vec<i8> {
    let mut w = Vec::with_capacity(n.checked_mul(k).expect("n * k overflows usize"));
    for col in 0..n {
        for kk in 0..k {
            w.push(packed[layout.offset(col, kk, k)] as i8);
        }
    }
    w
}

/// `col_sum[n] = sum_k w[n,k]`, the pack-time half of the zero-point correction.
///
/// # Panics
/// If `w` holds fewer than `n * k` values.
pub fn column_sums(w: &[i8], n: usize, k: usize) -> Vec<i32> {
    (0..n)
        .map(|col| row_sum_i8(&w[col * k..(col + 1) * k]))
        .collect()
}

/// Sum of i8 values: each i16 lane adds at most 255 values (`|sum| <= 255 * 128 =
/// 32_640`, exact), then the lanes are widened; this vectorizes far better than
/// widening every byte to i32.
fn row_sum_i8(row: &[i8]) -> i32 {
    const LANES: usize = 16;
    const BLOCK: usize = 255 * LANES;
    let mut total = 0i32;
    for block in row.chunks(BLOCK) {
        let mut lanes = [0i16; LANES];
        let chunks = block.chunks_exact(LANES);
        let rest: i32 = chunks.remainder().iter().map(|&v| v as i32).sum();
        for c in chunks {
            for l in 0..LANES {
                lanes[l] += c[l] as i16;
            }
        }
        total += lanes.iter().map(|&v| v as i32).sum::<i32>() + rest;
    }
    total
}

/// Row sums of u8 activations (`row_sum[m] = sum_k a[m,k]`).
pub fn row_sum(row: &[u8]) -> i32 {
    row.iter().map(|&v| v as u32).sum::<u32>() as i32
}
