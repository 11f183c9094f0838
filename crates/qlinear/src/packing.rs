//! Packing a row-major int8 weight into an engine's layout, with its column sums.

use aligned_vec::{AVec, ConstAlign};
use qlinear_reference::contract::PackedLayout;
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

/// Packs the `n x k` row-major weight `w` (already validated: `w.len() == n * k`,
/// dimensions in range) for `engine`.
pub(crate) fn pack_weight(w: &[i8], n: usize, k: usize, engine: Engine) -> Packed {
    let layout = match engine {
        Engine::Reference => PackedLayout::ROW_MAJOR,
        Engine::Kernel(k) => k.layout,
    };
    // Built panel by panel in a small (cache-resident) buffer and appended, so the
    // big buffer is written exactly once.
    let mut data = AlignedBytes::with_capacity(64, layout.packed_len(n, k));
    let mut panel = vec![0u8; layout.panel_bytes(k)];
    let fast = match engine {
        Engine::Kernel(desc) => desc.pack_panel,
        Engine::Reference => None,
    };
    let n_pad = layout.n_padded(n);
    let mut col_sums = vec![0i32; n_pad];
    for (p, sums) in col_sums.chunks_exact_mut(layout.nr).enumerate() {
        match fast {
            // SAFETY: a kernel engine is only built for kernels this CPU supports
            // (`resolve`); `w` holds n * k values (the caller's precondition),
            // `panel` holds one panel of this layout, `sums` nr values, and
            // p < n_pad / nr.
            Some(f) => unsafe { f(w, n, k, p, &mut panel, sums) },
            None => {
                pack::pack_panel(w, n, k, layout, p, &mut panel);
                let cols = (p * layout.nr..((p + 1) * layout.nr).min(n)).len();
                let rows = &w[p * layout.nr * k..(p * layout.nr + cols) * k];
                sums[..cols].copy_from_slice(&pack::column_sums(rows, cols, k));
            }
        }
        data.extend_from_slice(&panel);
    }
    Packed {
        layout,
        data,
        col_sums,
    }
}
