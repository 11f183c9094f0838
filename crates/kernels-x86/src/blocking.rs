//! The loop nest every x86 kernel shares, outside its register tile.
//!
//! ```text
//! for each block of MC rows of A          (MC * K bytes of A kept in L2, <= A_BLOCK_BYTES)
//!   for each panel of NR columns          (the panel streams from L2/L3 once per block)
//!     for each tile of MR rows in the block
//!       tile(rows, panel)                 (full K in registers, then the epilogue)
//! ```
//!
//! Full K per tile: no partial sums ever leave registers, so the epilogue runs once per
//! output element. A row block is sized so its activations stay in L2 while every panel
//! passes by; a panel (`K * NR` bytes, 128 KiB at K = 4096, NR = 32) is re-read from L2
//! by each tile of the block.

/// Activation bytes kept hot per row block.
pub(crate) const A_BLOCK_BYTES: usize = 192 * 1024;

/// One register tile's work: rows `[row, row + rows)`, columns `[n0, n0 + nc)`, reading
/// packed panel `panel` (an index).
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    pub row: usize,
    pub rows: usize,
    pub n0: usize,
    pub nc: usize,
    pub panel: usize,
}

/// Calls `f` for every tile of rows `[0, m)` x columns `[n_begin, n_end)` in the order
/// above. `n_begin` must be a multiple of `nr`.
#[inline(always)]
pub(crate) fn for_each_tile(
    m: usize,
    k: usize,
    n_begin: usize,
    n_end: usize,
    mr: usize,
    nr: usize,
    mut f: impl FnMut(Tile),
) {
    let mc = ((A_BLOCK_BYTES / k.max(1)) / mr * mr).max(mr);
    let mut m0 = 0;
    while m0 < m {
        let m1 = (m0 + mc).min(m);
        let mut n0 = n_begin;
        while n0 < n_end {
            let nc = nr.min(n_end - n0);
            let mut row = m0;
            while row < m1 {
                let rows = mr.min(m1 - row);
                f(Tile {
                    row,
                    rows,
                    n0,
                    nc,
                    panel: n0 / nr,
                });
                row += rows;
            }
            n0 += nr;
        }
        m0 = m1;
    }
}

/// Reads the `len < 4` trailing activation bytes of a row as one zero-padded
/// little-endian u32 (the packed weights are zero there, so the padding adds nothing).
///
/// # Safety
/// `p` must be valid for reading `len` bytes.
#[inline(always)]
pub(crate) unsafe fn load_tail_u32(p: *const u8, len: usize) -> i32 {
    let mut bytes = [0u8; 4];
    // SAFETY: the caller guarantees `len` readable bytes at `p`; `len < 4` fits `bytes`.
    unsafe { core::ptr::copy_nonoverlapping(p, bytes.as_mut_ptr(), len.min(4)) };
    i32::from_le_bytes(bytes)
}
