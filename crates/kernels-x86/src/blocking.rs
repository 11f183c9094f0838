//! The loop nest every x86 kernel shares, outside its register tile.
//!
//! ```text
//! for each block of MC rows of A          (MC * K bytes of A kept in L2, <= A_BLOCK_BYTES)
//!   for each panel of NR columns          (the panel streams from L2/L3 once per block)
//!     for each tile of MR rows in the block
//!       tile(rows, panel)                 (full K in registers, then the epilogue;
//!                                         the first tile also prefetches the next panel)
//! ```
//!
//! Full K per tile: no partial sums ever leave registers, so the epilogue runs once per
//! output element. A row block is sized so its activations stay in L2 while every panel
//! passes by; a panel (`K * NR` bytes, 128 KiB at K = 4096, NR = 32) is re-read from L2
//! by each tile of the block.

/// Activation bytes kept hot per row block.
pub(crate) const A_BLOCK_BYTES: usize = 384 * 1024;

/// Rows per row block at in_features `k`: as many whole `mr`-row tiles as fit
/// [`A_BLOCK_BYTES`], at least one tile.
pub(crate) fn block_rows(k: usize, mr: usize) -> usize {
    ((A_BLOCK_BYTES / k.max(1)) / mr * mr).max(mr)
}

/// One register tile's work: rows `[row, row + rows)`, columns `[n0, n0 + nc)`, reading
/// packed panel `panel` (an index).
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    pub row: usize,
    pub rows: usize,
    pub n0: usize,
    pub nc: usize,
    pub panel: usize,
    /// Set on the first tile of each panel in a row block when another panel follows:
    /// that tile prefetches the next panel towards L2 while it computes, so the next
    /// panel's first tile does not wait on L3 / DRAM.
    pub prefetch_panel: Option<usize>,
}

/// Every tile of rows `[0, m)` x columns `[n_begin, n_end)`, in the order above.
/// `n_begin` must be a multiple of `nr`. (An iterator rather than a closure-taking
/// function: the tile body must live in the `#[target_feature]` entry point itself so
/// that the SIMD intrinsics inline into it.)
pub(crate) struct Tiles {
    m: usize,
    n_begin: usize,
    n_end: usize,
    mr: usize,
    nr: usize,
    mc: usize,
    m0: usize,
    n0: usize,
    row: usize,
}

impl Tiles {
    pub(crate) fn new(
        m: usize,
        k: usize,
        n_begin: usize,
        n_end: usize,
        mr: usize,
        nr: usize,
    ) -> Self {
        let mc = block_rows(k, mr);
        Tiles {
            m,
            n_begin,
            n_end,
            mr,
            nr,
            mc,
            m0: 0,
            n0: n_begin,
            row: 0,
        }
    }
}

impl Iterator for Tiles {
    type Item = Tile;
    #[inline]
    fn next(&mut self) -> Option<Tile> {
        loop {
            if self.m0 >= self.m || self.n_begin >= self.n_end {
                return None;
            }
            let m1 = (self.m0 + self.mc).min(self.m);
            if self.n0 >= self.n_end {
                // Next row block.
                self.m0 = m1;
                self.n0 = self.n_begin;
                self.row = self.m0;
                continue;
            }
            if self.row >= m1 {
                // Next panel of this row block.
                self.n0 += self.nr;
                self.row = self.m0;
                continue;
            }
            let rows = self.mr.min(m1 - self.row);
            let panel = self.n0 / self.nr;
            let tile = Tile {
                row: self.row,
                rows,
                n0: self.n0,
                nc: self.nr.min(self.n_end - self.n0),
                panel,
                prefetch_panel: (self.row == self.m0 && self.n0 + self.nr < self.n_end)
                    .then_some(panel + 1),
            };
            self.row += rows;
            return Some(tile);
        }
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
    for (i, b) in bytes.iter_mut().enumerate().take(len) {
        // SAFETY: the caller guarantees `len` readable bytes at `p`.
        *b = unsafe { p.add(i).read() };
    }
    i32::from_le_bytes(bytes)
}
