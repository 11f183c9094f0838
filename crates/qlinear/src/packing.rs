//! Packing a row-major int8 weight into an engine's layout, with its column sums.
//!
//! Packing is a one-off transpose of the whole weight (tens of MiB for an LLM layer), so
//! its speed is set by memory, not arithmetic. What it costs, measured on a Zen 5 VM at
//! 14336 x 4096 (56 MiB), one thread:
//!
//! * **Page faults** of the fresh output buffer. An allocation this big is a fresh `mmap`,
//!   and first-touching it 4 KiB at a time cost ~25 of the ~31 ms the packing took. On
//!   Linux the buffer is advised `MADV_HUGEPAGE` before it is written, so (when the
//!   system's transparent huge pages are in `madvise` or `always` mode) it faults in
//!   2 MiB pages: ~30 faults instead of ~14 000, and the whole packing takes ~8 ms, most
//!   of it the kernel zeroing the new pages. [`advise_huge_pages`] is the only system
//!   call here and it is advisory: if it fails or THP is off, packing is merely slower.
//!   (In a VM whose host reclaims the guest's free memory, e.g. free page reporting,
//!   memory the guest has not touched lately costs a host fault per 4 KiB whatever the
//!   guest page size: packing many GiB there ran at ~0.4 GB/s with huge pages and
//!   ~0.3-0.5 GB/s without; the advice does not make that case worse.)
//! * **The transpose itself**, done by the kernel's vector packer (`KernelDesc::pack_panel`,
//!   e.g. `qlinear_kernels_x86`'s `pack.rs`) or, for layouts without one, the portable
//!   `qlinear_reference::pack::pack_panel`. The reference engine's row-major layout is a
//!   plain copy and takes its own path (one block of rows at a time: column sums, then a
//!   copy from cache), not one panel per column.
//! * **Threads**: with the `rayon` feature the panels are split into blocks of about
//!   [`BLOCK_BYTES`] and packed on rayon's pool (`RAYON_NUM_THREADS=1` for one thread);
//!   each block owns a disjoint range of the output and of the column sums, so the bytes
//!   do not depend on the split (a test checks 1 against 2 threads).
//!
//! The output is written once, panel by panel: each panel is built in a small
//! cache-resident buffer (the kernel packers' contract takes an initialized `&mut [u8]`)
//! and copied into the big buffer's uninitialized memory, which is only given a length
//! once every byte has been written. Writing the panels in place instead measured ~5%
//! faster at 56 MiB (the copy is ~10% of the profile at 4096 x 4096) but would need the
//! packer contract to take uninitialized memory.

use core::mem::MaybeUninit;

use aligned_vec::{AVec, ConstAlign};
use qlinear_reference::contract::{PackPanelFn, PackedLayout};
use qlinear_reference::pack;

use crate::backend::Engine;

/// Packed buffers are 64-byte aligned (one cache line, one zmm).
pub type AlignedBytes = AVec<u8, ConstAlign<64>>;

/// A weight in one engine's packed layout.
pub(crate) struct Packed {
    pub(crate) layout: PackedLayout,
    pub(crate) data: AlignedBytes,
    /// `n_pad` column sums (zeros past `n`).
    pub(crate) col_sums: Vec<i32>,
}

/// Output bytes per unit of work: whole panels (at least one), about this many bytes, so
/// a block's source rows and output stay in L2 while it is built, and a 16 MiB weight
/// still splits into dozens of tasks.
const BLOCK_BYTES: usize = 256 << 10;

/// Below this many output bytes packing stays on the calling thread (a task costs a few
/// microseconds; 1 MiB packs in ~100 us).
#[cfg(feature = "rayon")]
const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// Packs the `n x k` row-major weight `w` (already validated: `w.len() == n * k`,
/// dimensions in range) for `engine`.
pub(crate) fn pack_weight(w: &[i8], n: usize, k: usize, engine: Engine) -> Packed {
    let (layout, fast) = match engine {
        Engine::Reference => (PackedLayout::ROW_MAJOR, None),
        Engine::Kernel(desc) => (desc.layout, desc.pack_panel),
    };
    let len = layout.packed_len(n, k);
    let mut data = AlignedBytes::with_capacity(64, len);
    let mut col_sums = vec![0i32; layout.n_padded(n)];
    {
        // SAFETY: `with_capacity` allocated at least `len` bytes at `as_mut_ptr()` (a
        // dangling, aligned, non-null pointer when `len == 0`); `MaybeUninit<u8>` has no
        // validity requirement, and the slice borrows `data` mutably until the block ends.
        let out: &mut [MaybeUninit<u8>] =
            unsafe { core::slice::from_raw_parts_mut(data.as_mut_ptr().cast(), len) };
        advise_huge_pages(out);
        let job = Job {
            w,
            n,
            k,
            layout,
            fast,
        };
        job.run(out, &mut col_sums);
    }
    // SAFETY: `Job::run` wrote all `len` bytes (every block writes its whole range, see
    // `Job::block`), and `len <= capacity`.
    unsafe { data.set_len(len) };
    Packed {
        layout,
        data,
        col_sums,
    }
}

/// One packing: the source, the layout and the packer.
#[derive(Clone, Copy)]
struct Job<'a> {
    w: &'a [i8],
    n: usize,
    k: usize,
    layout: PackedLayout,
    /// The kernel's packer; `None` for the portable one.
    fast: Option<PackPanelFn>,
}

impl Job<'_> {
    /// Writes every byte of `out` (`packed_len` bytes) and every column sum.
    fn run(self, out: &mut [MaybeUninit<u8>], col_sums: &mut [i32]) {
        let panel_bytes = self.layout.panel_bytes(self.k);
        if out.is_empty() || panel_bytes == 0 {
            return;
        }
        let panels_per_block = (BLOCK_BYTES / panel_bytes).max(1);
        let block_bytes = panels_per_block * panel_bytes;
        let block_cols = panels_per_block * self.layout.nr;
        // The panel scratch buffer: one per thread (per rayon job), not per block.
        let scratch = || {
            let bytes = if self.layout == PackedLayout::ROW_MAJOR {
                0
            } else {
                panel_bytes
            };
            vec![0u8; bytes]
        };
        #[cfg(feature = "rayon")]
        if out.len() >= PARALLEL_MIN_BYTES && rayon::current_num_threads() > 1 {
            use rayon::prelude::*;
            out.par_chunks_mut(block_bytes)
                .zip(col_sums.par_chunks_mut(block_cols))
                .enumerate()
                .for_each_init(scratch, |panel, (b, (out, sums))| {
                    self.block(b * panels_per_block, out, sums, panel)
                });
            return;
        }
        let mut panel = scratch();
        for (b, (out, sums)) in out
            .chunks_mut(block_bytes)
            .zip(col_sums.chunks_mut(block_cols))
            .enumerate()
        {
            self.block(b * panels_per_block, out, sums, &mut panel);
        }
    }

    /// Packs the whole panels `first..` that `out` holds (and their `sums`), writing every
    /// byte of `out`; `panel` is scratch space of one panel (empty for the row-major
    /// layout, which needs none).
    fn block(self, first: usize, out: &mut [MaybeUninit<u8>], sums: &mut [i32], panel: &mut [u8]) {
        let Job {
            w,
            n,
            k,
            layout,
            fast,
        } = self;
        if layout == PackedLayout::ROW_MAJOR {
            // Panels are rows: a copy. (All rows are real here: nr = 1, so n_pad = n.)
            let src = &w[first * k..first * k + out.len()];
            sums.copy_from_slice(&pack::column_sums(src, sums.len(), k));
            out.write_copy_of_slice(as_bytes(src));
            return;
        }
        let nr = layout.nr;
        for (i, (dst, sums)) in out
            .chunks_exact_mut(panel.len())
            .zip(sums.chunks_exact_mut(nr))
            .enumerate()
        {
            let p = first + i;
            match fast {
                // SAFETY: a kernel engine is only built for kernels this CPU supports
                // (`resolve`); `w` holds n * k values (the caller's precondition),
                // `panel` holds one panel of this layout, `sums` nr values, and
                // p < n_pad / nr (`dst` is a whole panel of the output).
                Some(f) => unsafe { f(w, n, k, p, panel, sums) },
                None => {
                    pack::pack_panel(w, n, k, layout, p, panel);
                    let cols = (p * nr..((p + 1) * nr).min(n)).len();
                    let rows = &w[p * nr * k..(p * nr + cols) * k];
                    sums[..cols].copy_from_slice(&pack::column_sums(rows, cols, k));
                }
            }
            dst.write_copy_of_slice(panel);
        }
    }
}

/// The weight's bytes as `u8` (two's complement), as the packed layouts store them.
fn as_bytes(w: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size and alignment and every bit pattern is valid
    // for both; the new slice covers exactly `w` and borrows it.
    unsafe { core::slice::from_raw_parts(w.as_ptr().cast(), w.len()) }
}

/// Bytes read as `i8` (two's complement): a weight borrowed from a file's bytes (a
/// safetensors `I8` tensor) packs without an intermediate copy.
#[cfg_attr(not(feature = "safetensors"), allow(dead_code))]
pub(crate) fn bytes_as_i8(b: &[u8]) -> &[i8] {
    // SAFETY: u8 and i8 have the same size and alignment and every bit pattern is valid
    // for both; the new slice covers exactly `b` and borrows it.
    unsafe { core::slice::from_raw_parts(b.as_ptr().cast(), b.len()) }
}

/// Asks Linux to back `buf` with transparent huge pages (`MADV_HUGEPAGE`), before its
/// first touch, so a big packed buffer faults in 2 MiB pages rather than 4 KiB ones.
/// Advisory: the result is ignored (the call only fails on bad ranges, which we do not
/// pass, or on kernels without THP, where it changes nothing). Skipped under Miri, which
/// does not model the call, and for buffers that cannot hold one aligned huge page.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn advise_huge_pages(buf: &mut [MaybeUninit<u8>]) {
    const HUGE_PAGE: usize = 2 << 20;
    if buf.len() < 2 * HUGE_PAGE {
        return;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let Ok(page) = usize::try_from(page) else {
        return;
    };
    if !page.is_power_of_two() {
        return;
    }
    // The whole pages inside `buf` (madvise wants a page-aligned start).
    let begin = buf.as_mut_ptr() as usize;
    let start = (begin + page - 1) & !(page - 1);
    let end = (begin + buf.len()) & !(page - 1);
    if end > start {
        // SAFETY: [start, end) lies inside `buf`, memory this function borrows mutably;
        // MADV_HUGEPAGE changes only how the kernel backs the pages (their contents,
        // uninitialized here, and their mapping stay valid), never the program's view.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(all(target_os = "linux", not(miri))))]
pub(crate) fn advise_huge_pages(_buf: &mut [MaybeUninit<u8>]) {}

/// [`advise_huge_pages`] for the unused capacity of `buf` (call it on a fresh buffer,
/// before it is filled).
pub(crate) fn advise_spare_capacity(buf: &mut AlignedBytes) {
    let (len, capacity) = (buf.len(), buf.capacity());
    // SAFETY: the allocation holds `capacity` bytes at `as_mut_ptr()`, of which the
    // first `len` are initialized; the slice covers the other `capacity - len` as
    // `MaybeUninit<u8>` (no validity requirement) and borrows `buf` mutably while it
    // lives, as `Vec::spare_capacity_mut` does.
    let spare: &mut [MaybeUninit<u8>] = unsafe {
        core::slice::from_raw_parts_mut(buf.as_mut_ptr().add(len).cast(), capacity - len)
    };
    advise_huge_pages(spare);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::compiled_kernels;
    use qlinear_reference::contract::KernelDesc;
    use qlinear_reference::testkit::Rng;
    use std::sync::OnceLock;

    /// Every engine this CPU runs, plus the portable packer (`pack_panel: None`, as the
    /// ARM kernels have) on the layouts of the ARM kernels and an x86 one.
    fn engines() -> Vec<Engine> {
        // Descriptors that are never run: only their layout and (absent) packer are used.
        // In a static rather than leaked, so LeakSanitizer (.ci/asan.sh) stays quiet.
        static PORTABLE: OnceLock<Vec<KernelDesc>> = OnceLock::new();
        let portable = PORTABLE.get_or_init(|| {
            let Some(base) = compiled_kernels().next() else {
                return Vec::new();
            };
            [(16, 1), (16, 4), (16, 8), (32, 4)]
                .into_iter()
                .map(|(nr, kr)| KernelDesc {
                    layout: PackedLayout { nr, kr },
                    pack_panel: None,
                    ..*base
                })
                .collect()
        });
        let mut engines = vec![Engine::Reference];
        engines.extend(
            compiled_kernels()
                .filter(|d| (d.is_supported)())
                .chain(portable)
                .map(Engine::Kernel),
        );
        engines
    }

    fn check(engine: Engine, w: &[i8], n: usize, k: usize) {
        let packed = pack_weight(w, n, k, engine);
        let layout = packed.layout;
        let what = format!("{} {layout:?} n={n} k={k}", engine.kernel_name());
        assert!(
            packed.data[..] == pack::pack(w, n, k, layout)[..],
            "{what}: packed bytes differ from the reference packer"
        );
        assert_eq!(packed.data.as_ptr() as usize % 64, 0, "{what}: alignment");
        let mut want_sums = pack::column_sums(w, n, k);
        want_sums.resize(layout.n_padded(n), 0);
        assert_eq!(packed.col_sums, want_sums, "{what}: column sums");
    }

    /// Small edge shapes (one block) and shapes over several blocks and over the
    /// parallel threshold with partial last blocks and K tails, on random and extreme
    /// weights.
    #[test]
    fn pack_weight_matches_reference_packer() {
        let mut rng = Rng::new(0x2a);
        let mut shapes = vec![];
        for n in [1, 15, 16, 17, 31, 32, 33, 100] {
            for k in [1, 3, 4, 5, 63, 64, 65, 1000] {
                shapes.push((n, k));
            }
        }
        shapes.extend([(700, 1500), (333, 4099), (2, 300_001)]);
        for engine in engines() {
            for &(n, k) in &shapes {
                check(engine, &rng.i8s(n * k), n, k);
            }
            for (n, k) in [(33, 65), (700, 1500)] {
                check(engine, &vec![i8::MIN; n * k], n, k);
                check(engine, &vec![i8::MAX; n * k], n, k);
            }
        }
    }

    /// The same bytes on one thread and on two (the parallel split is by whole blocks).
    #[cfg(feature = "rayon")]
    #[test]
    fn pack_weight_is_the_same_on_one_and_two_threads() {
        let mut rng = Rng::new(7);
        let (n, k) = (1000, 2051);
        let w = rng.i8s(n * k);
        for engine in engines() {
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("thread pool");
                pool.install(|| pack_weight(&w, n, k, engine))
            };
            let (one, two) = (run(1), run(2));
            assert!(one.data[..] == two.data[..], "{}", engine.kernel_name());
            assert_eq!(one.col_sums, two.col_sums, "{}", engine.kernel_name());
            check(engine, &w, n, k);
        }
    }
}
