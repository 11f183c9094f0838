//! The forward driver: validated views in, one kernel call per thread chunk out.
//!
//! The work split is decided here and nowhere else. With `t` threads it cuts M into `t`
//! row ranges when there are enough rows (each chunk then streams the whole packed
//! weight, which is what a compute-bound GEMM wants), and otherwise cuts the N panels
//! (small M, where the weight bytes are the cost and must be read once in total).
//! Every output element depends only on its own row and column, so every split, and
//! every thread count, produces identical bits.

use qlinear_reference::contract::{GemmArgs, KernelDesc};

/// Rows per chunk below which splitting M is not worth it (then N is split).
const MIN_ROWS_PER_THREAD: usize = 16;

/// The number of worker threads `requested` means (0 = all of rayon's pool).
pub(crate) fn effective_threads(requested: usize) -> usize {
    #[cfg(feature = "rayon")]
    {
        if requested == 0 {
            rayon::current_num_threads()
        } else {
            requested
        }
    }
    #[cfg(not(feature = "rayon"))]
    {
        let _ = requested;
        1
    }
}

/// Splits `args` (covering all rows and columns) into at most `threads` disjoint chunks
/// and runs `call` on each, in parallel when the `rayon` feature is on.
pub(crate) fn run<T>(
    desc: &KernelDesc,
    args: GemmArgs<T>,
    threads: usize,
    call: &(dyn Fn(&GemmArgs<T>) + Sync),
) {
    if args.m == 0 {
        return;
    }
    let threads = effective_threads(threads).max(1);
    let nr = desc.layout.nr;
    let panels = args.n_end.div_ceil(nr);
    let chunks: Vec<GemmArgs<T>> = if threads == 1 {
        vec![args]
    } else if args.m >= threads * MIN_ROWS_PER_THREAD {
        let rows = args.m.div_ceil(threads).div_ceil(desc.mr) * desc.mr;
        (0..args.m)
            .step_by(rows)
            .map(|r0| {
                let mut c = args;
                c.m = rows.min(args.m - r0);
                // Pointer offsets stay inside the caller's validated buffers: row r0 < m.
                c.a = args.a.wrapping_add(r0 * args.a_stride);
                c.out = args.out.wrapping_add(r0 * args.out_stride);
                if !args.row_sums.is_null() {
                    c.row_sums = args.row_sums.wrapping_add(r0);
                }
                c
            })
            .collect()
    } else {
        let per = panels.div_ceil(threads.min(panels));
        (0..panels)
            .step_by(per)
            .map(|p0| {
                let mut c = args;
                c.n_begin = p0 * nr;
                c.n_end = ((p0 + per) * nr).min(args.n_end);
                c
            })
            .collect()
    };
    #[cfg(feature = "rayon")]
    {
        if chunks.len() > 1 {
            use rayon::prelude::*;
            let chunks: Vec<Chunk<T>> = chunks.into_iter().map(Chunk).collect();
            chunks.par_iter().for_each(|c| call(&c.0));
            return;
        }
    }
    chunks.iter().for_each(call);
}

/// A chunk's arguments, shareable across rayon workers.
#[cfg(feature = "rayon")]
struct Chunk<T>(GemmArgs<T>);

// SAFETY: a chunk is a bundle of pointers into buffers that outlive the parallel call
// (the caller's views and the layer's packed data). Chunks write disjoint output rows or
// columns and only read the shared inputs, so moving or sharing them between threads
// cannot create a data race.
#[cfg(feature = "rayon")]
unsafe impl<T> Send for Chunk<T> {}
// SAFETY: as above; a shared chunk is only read.
#[cfg(feature = "rayon")]
unsafe impl<T> Sync for Chunk<T> {}
