//! The forward driver: validated views in, kernel calls on disjoint pieces out.
//!
//! The work split is decided here and nowhere else. With `t` threads it cuts M into row
//! ranges when there are enough rows (each piece then streams the packed weight, which
//! is what a compute-bound GEMM wants), and otherwise cuts the N panels (small M, where
//! the weight bytes are the cost and must be read once in total). Every output element
//! depends only on its own row and column, so every split, and every thread count,
//! produces identical bits.
//!
//! Which kernel: the layer picks one per call from the call's total M (module
//! `kernel_set`) and hands it here; every piece of the call runs that kernel, and row
//! pieces are cut on its `mr`. (Picking per piece would give the same bits, since every
//! kernel is exact on any row range.)
//!
//! Scheduling: the work is cut into a few pieces per thread, and
//! the calling thread works through them together with `t - 1` rayon tasks, each taking
//! the next piece from a shared counter. The caller starts at once, so a pool thread
//! that wakes late (waking a sleeping thread costs tens of microseconds in a VM, a
//! sizeable part of a sub-millisecond layer) just takes fewer pieces.

use std::sync::atomic::{AtomicUsize, Ordering};

use qlinear_reference::contract::{GemmArgs, KernelDesc};

/// Rows per piece below which splitting M is not worth it (then N is split).
const MIN_ROWS_PER_PIECE: usize = 32;
/// Pieces per thread when splitting N (a piece re-reads only the small activations).
const PANEL_PIECES_PER_THREAD: usize = 4;
/// Pieces per thread when splitting M: fewer, since each piece streams the weight panels
/// again and reuses each over fewer rows.
const ROW_PIECES_PER_THREAD: usize = 2;

/// The most threads one call uses, whatever is requested: far above any core count,
/// and small enough that no piece count derived from it can overflow. (Without the
/// `rayon` feature every call runs on the calling thread.)
#[cfg(feature = "rayon")]
pub(crate) const MAX_THREADS: usize = 1 << 12;

/// The number of worker threads `requested` means (0 = all of rayon's pool), clamped to
/// `1..=MAX_THREADS`.
pub(crate) fn effective_threads(requested: usize) -> usize {
    #[cfg(feature = "rayon")]
    {
        if requested == 0 {
            rayon::current_num_threads().clamp(1, MAX_THREADS)
        } else {
            requested.min(MAX_THREADS)
        }
    }
    #[cfg(not(feature = "rayon"))]
    {
        let _ = requested;
        1
    }
}

/// Cuts `args` (covering all rows and columns) into disjoint pieces for `threads`.
fn pieces<T>(desc: &KernelDesc, args: GemmArgs<T>, threads: usize) -> Vec<GemmArgs<T>> {
    if threads == 1 {
        return vec![args];
    }
    let nr = desc.layout.nr;
    let panels = args.n_end.div_ceil(nr);
    if args.m >= threads * MIN_ROWS_PER_PIECE {
        let count = (threads * ROW_PIECES_PER_THREAD)
            .min(args.m / MIN_ROWS_PER_PIECE)
            .max(threads);
        let rows = args.m.div_ceil(count).div_ceil(desc.mr) * desc.mr;
        (0..args.m)
            .step_by(rows)
            // Pointer offsets stay inside the caller's validated buffers: row r0 < m.
            .map(|r0| args.rows(r0, rows.min(args.m - r0)))
            .collect()
    } else {
        let per = panels.div_ceil((threads * PANEL_PIECES_PER_THREAD).min(panels));
        (0..panels)
            .step_by(per)
            .map(|p0| {
                let mut c = args;
                c.n_begin = p0 * nr;
                c.n_end = ((p0 + per) * nr).min(args.n_end);
                c
            })
            .collect()
    }
}

/// Runs `call` on every piece of `args`, on up to `threads` threads (the caller and
/// `threads - 1` rayon tasks) when the `rayon` feature is on.
pub(crate) fn run<T>(
    desc: &KernelDesc,
    args: GemmArgs<T>,
    threads: usize,
    call: &(dyn Fn(&GemmArgs<T>) + Sync),
) {
    if args.m == 0 {
        return;
    }
    let threads = effective_threads(threads);
    let pieces: Vec<Piece<T>> = pieces(desc, args, threads).into_iter().map(Piece).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        while let Some(piece) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) {
            call(&piece.0);
        }
    };
    #[cfg(feature = "rayon")]
    {
        let helpers = threads.min(pieces.len()) - 1;
        if helpers > 0 {
            rayon::in_place_scope(|s| {
                for _ in 0..helpers {
                    s.spawn(|_| work());
                }
                work();
            });
            return;
        }
    }
    work();
}

/// A piece's arguments, shareable across threads.
struct Piece<T>(GemmArgs<T>);

// SAFETY: a piece is a bundle of pointers into buffers that outlive the parallel call
// (the caller's views and the layer's packed data). Pieces write disjoint output rows or
// columns and only read the shared inputs, so moving or sharing them between threads
// cannot create a data race.
unsafe impl<T> Send for Piece<T> {}
// SAFETY: as above; a shared piece is only read.
unsafe impl<T> Sync for Piece<T> {}
