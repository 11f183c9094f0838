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
//!
//! The end of a call has the same cost the other way round. A caller outside the pool
//! that finds the scope unfinished sleeps on a condition variable, and the helper that
//! finishes last has to wake it: measured on a 2-core VM, that alone added about 20 µs
//! to every two-thread call (a 40 µs layer gained nothing from its second thread).
//! So the caller, once no piece is left to take, spins until every piece it did not run
//! has finished ([`wait_for_pieces`]), which takes at most one piece's time while the
//! helpers run, and sleeps as before only past [`SPIN_LIMIT`] (a helper that was
//! descheduled, an oversubscribed machine).

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
#[cfg(feature = "rayon")]
use std::time::{Duration, Instant};

use qlinear_reference::contract::{GemmArgs, KernelDesc};
use qlinear_reference::Result;

/// Fills the inputs of rows `[range.start, range.end)` before any kernel reads them
/// (see [`run`]).
pub(crate) type Prepare<'a> = dyn Fn(Range<usize>) -> Result<()> + Sync + 'a;

/// Rows per piece below which splitting M is not worth it (then N is split).
const MIN_ROWS_PER_PIECE: usize = 32;
/// Pieces per thread when splitting N (a piece re-reads only the small activations).
const PANEL_PIECES_PER_THREAD: usize = 4;
/// Pieces per thread when splitting M: fewer, since each piece streams the weight panels
/// again and reuses each over fewer rows.
const ROW_PIECES_PER_THREAD: usize = 2;
/// How long the caller spins for the helpers' last pieces before it falls back to
/// rayon's sleeping wait: far longer than a wake-up (tens of µs), short enough that an
/// oversubscribed machine loses little to the spinning.
#[cfg(feature = "rayon")]
const SPIN_LIMIT: Duration = Duration::from_micros(200);

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

/// One piece of a call: the kernel arguments and the rows `[rows.start, rows.end)` of
/// the whole call they cover.
struct Piece<T> {
    rows: Range<usize>,
    args: GemmArgs<T>,
}

// SAFETY: a piece is a bundle of pointers into buffers that outlive the parallel call
// (the caller's views and the layer's packed data). Pieces write disjoint output rows or
// columns, and a row cut's `prepare` writes only its own piece's rows of the caller's
// scratch, which no other piece reads; so moving or sharing them between threads
// cannot create a data race.
unsafe impl<T> Send for Piece<T> {}
// SAFETY: as above; a shared piece is only read.
unsafe impl<T> Sync for Piece<T> {}

/// How a call was cut.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Pieces cover disjoint row ranges (a single piece counts as one).
    Rows,
    /// Every piece covers all rows and its own column panels.
    Panels,
}

/// Cuts `args` (covering all rows and columns) into disjoint pieces for `threads`.
fn pieces<T>(desc: &KernelDesc, args: GemmArgs<T>, threads: usize) -> (Cut, Vec<Piece<T>>) {
    let all = |args: GemmArgs<T>| Piece {
        rows: 0..args.m,
        args,
    };
    if threads == 1 {
        return (Cut::Rows, vec![all(args)]);
    }
    let nr = desc.layout.nr;
    let panels = args.n_end.div_ceil(nr);
    if args.m >= threads * MIN_ROWS_PER_PIECE {
        let count = (threads * ROW_PIECES_PER_THREAD)
            .min(args.m / MIN_ROWS_PER_PIECE)
            .max(threads);
        let rows = args.m.div_ceil(count).div_ceil(desc.mr) * desc.mr;
        let pieces = (0..args.m)
            .step_by(rows)
            .map(|r0| {
                let r1 = args.m.min(r0 + rows);
                Piece {
                    rows: r0..r1,
                    // Pointer offsets stay inside the caller's validated buffers: r0 < m.
                    args: args.rows(r0, r1 - r0),
                }
            })
            .collect();
        (Cut::Rows, pieces)
    } else {
        let per = panels.div_ceil((threads * PANEL_PIECES_PER_THREAD).min(panels));
        let pieces = (0..panels)
            .step_by(per)
            .map(|p0| {
                let mut c = args;
                c.n_begin = p0 * nr;
                c.n_end = ((p0 + per) * nr).min(args.n_end);
                all(c)
            })
            .collect();
        (Cut::Panels, pieces)
    }
}

/// Runs `call` on every piece of `args`, on up to `threads` threads (the caller and
/// `threads - 1` rayon tasks) when the `rayon` feature is on.
///
/// `prepare`, if given, fills the inputs of a range of rows (the dynamic layer
/// quantizes them there). Every row range is prepared exactly once and before any
/// `call` reads it: with a row cut, each piece prepares its own rows right before its
/// kernel call (on its thread, while they are hot in cache); with a panel cut, every
/// piece reads every row, so the caller prepares all rows first. A piece whose
/// `prepare` fails is not computed, and the call returns that error.
pub(crate) fn run<T>(
    desc: &KernelDesc,
    args: GemmArgs<T>,
    threads: usize,
    prepare: Option<&Prepare<'_>>,
    call: &(dyn Fn(&GemmArgs<T>) + Sync),
) -> Result<()> {
    if args.m == 0 {
        return Ok(());
    }
    let threads = effective_threads(threads);
    let (cut, pieces) = pieces(desc, args, threads);
    let (prepare_whole, prepare_piece) = match prepare {
        Some(f) if cut == Cut::Rows => (None, Some(f)),
        other => (other, None),
    };
    if let Some(f) = prepare_whole {
        f(0..args.m)?;
    }
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let failure = OnceLock::new();
    let work = || {
        while let Some(piece) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) {
            match prepare_piece.map_or(Ok(()), |f| f(piece.rows.clone())) {
                Ok(()) => call(&piece.args),
                Err(e) => {
                    let _ = failure.set(e);
                }
            }
            finished.fetch_add(1, Ordering::Release);
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
                wait_for_pieces(&finished, pieces.len());
            });
        } else {
            work();
        }
    }
    #[cfg(not(feature = "rayon"))]
    work();
    failure.into_inner().map_or(Ok(()), Err)
}

/// Spins until `finished` reaches `total` or [`SPIN_LIMIT`] has passed (the module
/// doc says why). Correctness never depends on it: the rayon scope around it still
/// waits for every task.
#[cfg(feature = "rayon")]
fn wait_for_pieces(finished: &AtomicUsize, total: usize) {
    let start = Instant::now();
    loop {
        // A few hundred polls between clock reads keep the clock off the hot path.
        for _ in 0..256 {
            if finished.load(Ordering::Acquire) >= total {
                return;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN_LIMIT {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use qlinear_reference::Error;

    use super::*;

    const STRIDE: usize = 1000;

    fn desc() -> &'static KernelDesc {
        crate::backend::compiled_kernels()
            .next()
            .expect("every build registers a kernel")
    }

    /// Arguments over `m` rows and `n` columns whose pointers are never dereferenced:
    /// the calls below only record which rows (from `a`'s offset) and columns they got.
    fn args(m: usize, n: usize) -> GemmArgs<u8> {
        GemmArgs {
            a: std::ptr::null(),
            a_stride: STRIDE,
            m,
            k: 1,
            packed: std::ptr::null(),
            n_begin: 0,
            n_end: n,
            row_sums: std::ptr::null(),
            row_qparams: std::ptr::null(),
            out: std::ptr::null_mut(),
            out_stride: n,
        }
    }

    #[derive(Debug)]
    enum Event {
        Prepared(Range<usize>),
        Called {
            rows: Range<usize>,
            cols: Range<usize>,
        },
    }

    /// Runs the driver with recording `prepare` and `call`; `fail_row` makes the
    /// preparation of the range holding that row fail.
    fn record(
        m: usize,
        n: usize,
        threads: usize,
        fail_row: Option<usize>,
    ) -> (Vec<Event>, Result<()>) {
        let events = Mutex::new(Vec::new());
        let prepare = |rows: Range<usize>| -> Result<()> {
            events.lock().unwrap().push(Event::Prepared(rows.clone()));
            match fail_row {
                Some(r) if rows.contains(&r) => Err(Error::NonFinite {
                    what: "test",
                    index: r,
                }),
                _ => Ok(()),
            }
        };
        let call = |a: &GemmArgs<u8>| {
            let r0 = a.a as usize / STRIDE;
            events.lock().unwrap().push(Event::Called {
                rows: r0..r0 + a.m,
                cols: a.n_begin..a.n_end,
            });
        };
        let result = run(desc(), args(m, n), threads, Some(&prepare), &call);
        (events.into_inner().unwrap(), result)
    }

    const SPLITS: [(usize, usize, usize); 8] = [
        (1, 100, 1),
        (300, 100, 1),
        (20, 100, 2),
        (64, 100, 2),
        (130, 33, 3),
        (451, 64, 7),
        (40, 300, 7),
        (97, 1, 2),
    ];

    #[test]
    fn every_row_is_prepared_once_before_any_call_reads_it() {
        for (m, n, threads) in SPLITS {
            let (events, result) = record(m, n, threads, None);
            assert!(result.is_ok());
            let mut prepared = vec![0u32; m];
            let mut covered = vec![0u32; m * n];
            for e in &events {
                match e {
                    Event::Prepared(rows) => rows.clone().for_each(|r| prepared[r] += 1),
                    Event::Called { rows, cols } => {
                        for r in rows.clone() {
                            assert_eq!(
                                prepared[r], 1,
                                "m={m} threads={threads}: row {r} read unprepared"
                            );
                            cols.clone().for_each(|c| covered[r * n + c] += 1);
                        }
                    }
                }
            }
            assert!(
                prepared.iter().all(|&p| p == 1),
                "m={m} threads={threads}: {prepared:?}"
            );
            assert!(
                covered.iter().all(|&c| c == 1),
                "m={m} threads={threads}: coverage"
            );
        }
    }

    #[test]
    fn a_failed_preparation_skips_its_rows_and_is_returned() {
        for (m, n, threads) in SPLITS {
            let fail = m - 1;
            let (events, result) = record(m, n, threads, Some(fail));
            assert!(
                matches!(result, Err(Error::NonFinite { index, .. }) if index == fail),
                "m={m} threads={threads}: {result:?}"
            );
            for e in &events {
                if let Event::Called { rows, .. } = e {
                    assert!(!rows.contains(&fail), "m={m} threads={threads}: {e:?}");
                }
            }
            // A cut into several row pieces still computes the others; a single piece
            // or a panel cut (all rows prepared first) computes nothing.
            let calls = events
                .iter()
                .filter(|e| matches!(e, Event::Called { .. }))
                .count();
            let t = effective_threads(threads);
            let several_row_pieces = t > 1 && m >= t * MIN_ROWS_PER_PIECE;
            assert_eq!(
                calls > 0,
                several_row_pieces,
                "m={m} threads={threads}: {calls} calls"
            );
        }
    }
}
