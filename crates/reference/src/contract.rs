//! # The kernel contract
//!
//! What every optimized kernel (x86 or ARM) implements, and nothing more. The API crate
//! validates user input, packs the weight once with the kernel's [`PackedLayout`], folds
//! all quantization parameters into per-column constants ([`StaticEpilogue`],
//! [`DynamicEpilogue`]) and then makes one indirect call per thread chunk through the
//! [`KernelDesc`] function pointers.
//!
//! ## Integer core, folded
//!
//! A kernel never subtracts zero points inside its inner loop. It computes the plain
//! product `acc[m,n] = sum_k a[m,k] * w[n,k]` (u8 x i8, exact in i32: at most
//! `255 * 128 * 33_025 < 2^31`) and recovers the contract's `raw` with
//!
//! ```text
//! raw[m,n] = acc[m,n] + col_offset[n] - row_zp[n] * row_sum[m]        (i32, wrapping)
//!   col_offset[n] = qbias[n] - zp_x * col_sum[n] + K * zp_x * zp_w[n]
//!   row_zp[n]     = zp_w[n],   row_sum[m] = sum_k a[m,k]
//! ```
//!
//! Wrapping arithmetic is a ring, and the true `raw` fits an i32, so this is exact.
//! `col_sum` depends on the weight only (pack time); `row_sum` is computed per call and
//! only when some `zp_w != 0` (otherwise the kernel gets a null pointer and skips the
//! term). qnnpack's quantized bias rides along in `col_offset` for free.
//!
//! ## Epilogues, folded
//!
//! Static (u8 out), both profiles in one formula:
//!
//! ```text
//! xf  = fma(bias_a[n], bias_b[n], i2f(raw))     fbgemm per-tensor: (bias, rcp)
//!                                               fbgemm per-channel: (f(bias/atws), 1.0)
//!                                               qnnpack / no bias:  (0, 0)
//! y   = f(xf * mult[n])
//! out = clamp(cvt(y) + zp_y, lo, 255)
//! ```
//!
//! `fma(b, 1, x) = f(x + b)` and `fma(0, 0, x) = x` exactly, so this equals the literal
//! formulas; [`StaticEpilogue::apply`] is the scalar statement of it and this crate's
//! tests check it against [`crate::static_linear`]. For a vector kernel: clamping `y` to
//! `[-512, 512]` before converting changes no output, and NaN (possible only with
//! absurd scales) must convert to 0 as Rust's `as` does.
//!
//! Dynamic (f32 out): `out = fma(i2f(raw), mult[n], bias[n])` when `fused_bias`
//! (fbgemm; bias `-0.0` when absent, which equals the unfused `f(i2f(raw) * m)` even
//! when the product underflows to `-0.0`: `+0.0` there would give `+0.0`), else
//! `out = f(f(mult[n] * i2f(raw)) + bias[n])` (qnnpack); ReLU is `x > 0 ? x : 0`.
//!
//! ## Per-row dynamic input quantization
//!
//! In per-row mode ([`DynamicEpilogue::new_per_row`]) every input row `m` has its own
//! scale `s_m` and zero point `zp_m` ([`RowQParams`], passed through
//! [`GemmArgs::row_qparams`]). The terms of `col_offset` that involve the input zero
//! point then differ per row, so they move to the row side. With
//! `sum_k (q - zp_m)(w - zw) = acc - zw * row_sum - zp_m * col_sum + K * zp_m * zw`:
//!
//! ```text
//! raw[m,n]  = acc[m,n] + col_offset[n] - row_zp[n] * row_sum'[m] - zp_m * col_sum[n]
//!   col_offset[n] = 0                         (dynamic: no quantized bias; a kernel
//!                                              may skip adding it in this mode)
//!   row_sum'[m]   = row_sum[m] - K * zp_m     (i32, wrapping; null when every zw is 0)
//! mult[m,n] = f(s_m * weight_scale[n])        (qnnpack's f(scale_w * s_m): same product)
//! ```
//!
//! and the float part is the per-tensor one with `mult[m,n]` for `mult[n]`.
//! [`DynamicEpilogue::apply_row`] states it in scalar code. A kernel tells the modes
//! apart once per row (or tile), by whether `row_qparams` is null: the per-tensor path
//! is unchanged.
//!
//! ## Kernel calls
//!
//! A kernel entry computes rows `[0, m)` and columns `[n_begin, n_end)` of the output
//! ([`GemmArgs`]); it picks its own loop order, tile and M = 1 (GEMV) path. The API
//! splits work across threads by calling it on disjoint row / column ranges, and since
//! every output element is a function of its own row and column only, any split gives
//! identical bits.
//!
//! ## Several kernels per packed layout
//!
//! Kernels that share a [`PackedLayout`] consume the same packed bytes, so a layer packed
//! once may call any of them. Each kernel states which row counts it is best at in
//! [`KernelDesc::m_pref`] ([`MPreference`]: an inclusive range `m_min..=m_max` and a
//! `rank`). The range is a preference, never a restriction: every kernel computes every
//! `m >= 1` bit for bit (the kernel tests check all of them on every M path), so which
//! one runs changes only the speed.
//!
//! **Selection rule.** Given the kernels a layer may call (same layout, supported by this
//! CPU, allowed by the layer's backend choice; the API crate's `kernel_set` module builds
//! that set once per layer) and a call of `m` rows: the kernel whose range contains `m`
//! with the lowest `rank` runs; equal ranks go to the earlier kernel in registry order;
//! when no range contains `m`, the layer's primary kernel (the one its packing was made
//! for) runs. The pick is made once per call from the call's total `m`, before the
//! threads split the work.

pub use crate::isa::Isa;
use crate::params::{ActQParams, Profile, Result, WeightQParams};
use crate::MatRef;
use crate::{cvt, relu_f32};

/// How a kernel family lays out the packed weight.
///
/// ```text
/// N x K weight (row n = output channel)      packed: panels of NR columns, K in groups of KR
///
///  n0 [w00 w01 w02 w03 w04 ...]              panel 0 = columns 0..NR, kpad = round_up(K, KR)
///  n1 [w10 w11 w12 w13 w14 ...]              +------------------------------------------+
///  ..                                        | k-group 0: n0[k0..k3] n1[k0..k3] .. nNR-1  |  NR*KR bytes
///                                            | k-group 1: n0[k4..k7] n1[k4..k7] ..        |
///                                            | ...                                      |
///                                            +------------------------------------------+
///                                            panel 1 = columns NR..2NR, same shape ...
/// ```
///
/// Bytes past `K` in the last k-group and columns past `N` in the last panel are zero,
/// so a kernel may always read whole k-groups and whole panels. With `KR = 4` one
/// k-group of 16 columns is exactly one `vpdpbusd zmm` operand (16 lanes x 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackedLayout {
    /// Columns per panel.
    pub nr: usize,
    /// Consecutive K values per column inside a k-group.
    pub kr: usize,
}

impl PackedLayout {
    /// Plain row-major `N x K` (the reference backend's layout).
    pub const ROW_MAJOR: PackedLayout = PackedLayout { nr: 1, kr: 1 };

    /// `K` rounded up to whole k-groups.
    pub fn k_padded(&self, k: usize) -> usize {
        k.div_ceil(self.kr) * self.kr
    }
    /// `N` rounded up to whole panels.
    pub fn n_padded(&self, n: usize) -> usize {
        n.div_ceil(self.nr) * self.nr
    }
    /// Bytes of one panel.
    pub fn panel_bytes(&self, k: usize) -> usize {
        self.k_padded(k) * self.nr
    }
    /// Total packed bytes for an `n x k` weight.
    ///
    /// # Panics
    /// If the size overflows `usize` (validated layers never ask; sizes from user input
    /// go through [`PackedLayout::checked_packed_len`]).
    pub fn packed_len(&self, n: usize, k: usize) -> usize {
        self.checked_packed_len(n, k)
            .expect("packed size overflows usize")
    }
    /// Total packed bytes for an `n x k` weight, or `None` when the padded sizes or their
    /// product overflow `usize`.
    pub fn checked_packed_len(&self, n: usize, k: usize) -> Option<usize> {
        let n_pad = n.checked_next_multiple_of(self.nr)?;
        let k_pad = k.checked_next_multiple_of(self.kr)?;
        n_pad.checked_mul(k_pad)
    }
    /// Byte offset of weight element `(n, k)` in a packing of in_features `k_total`.
    #[inline]
    pub fn offset(&self, n: usize, k: usize, k_total: usize) -> usize {
        (n / self.nr) * self.panel_bytes(k_total)
            + (k / self.kr) * (self.nr * self.kr)
            + (n % self.nr) * self.kr
            + k % self.kr
    }
}

/// One input row's dynamic quantization parameters (per-row mode): the scale and zero
/// point torch's `choose_qparams` gives for that row alone.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowQParams {
    /// `f32(scale)` of the row.
    pub scale: f32,
    /// Zero point of the row, in `[0, 255]`.
    pub zero_point: i32,
}

/// Arguments of one kernel call: output rows `[0, m)`, columns `[n_begin, n_end)`.
///
/// All pointers address element (0, 0) of their matrix; the kernel indexes absolute
/// columns. `T` is `u8` (static) or `f32` (dynamic).
#[derive(Debug)]
pub struct GemmArgs<T> {
    /// Activations: row `i` is `k` bytes at `a + i * a_stride`. Kernels read no byte
    /// outside those rows.
    pub a: *const u8,
    /// Row stride of `a` in bytes.
    pub a_stride: usize,
    /// Rows to compute (may be any value >= 1).
    pub m: usize,
    /// Logical in_features.
    pub k: usize,
    /// Start of the packed weight (panel 0), in the kernel's [`PackedLayout`].
    pub packed: *const u8,
    /// First output column, a multiple of the layout's `nr`.
    pub n_begin: usize,
    /// One past the last output column (`<= N`).
    pub n_end: usize,
    /// `m` row sums of `a`, or null when every weight zero point is 0. In per-row mode
    /// these are the adjusted sums `row_sum[m] - K * zp_m` (wrapping).
    pub row_sums: *const i32,
    /// `m` per-row input qparams (per-row dynamic mode, with a
    /// [`DynamicEpilogue::new_per_row`] epilogue), or null (static calls and per-tensor
    /// dynamic calls). Split into row pieces exactly like `row_sums`.
    pub row_qparams: *const RowQParams,
    /// Output: element `(i, n)` at `out + i * out_stride + n`. Only columns
    /// `[n_begin, n_end)` of rows `[0, m)` are written.
    pub out: *mut T,
    /// Row stride of `out` in elements.
    pub out_stride: usize,
}

impl<T> Clone for GemmArgs<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for GemmArgs<T> {}

impl<T> GemmArgs<T> {
    /// The same call on rows `[first, first + rows)` only: the activation, output,
    /// row-sum and row-qparam pointers advanced by `first` rows (null ones stay null).
    /// Forming the pointers is safe (`wrapping_add`); they describe valid memory when
    /// `first + rows <= self.m`, which the caller keeps.
    pub fn rows(&self, first: usize, rows: usize) -> Self {
        let mut c = *self;
        c.a = self.a.wrapping_add(first * self.a_stride);
        c.out = self.out.wrapping_add(first * self.out_stride);
        if !self.row_sums.is_null() {
            c.row_sums = self.row_sums.wrapping_add(first);
        }
        if !self.row_qparams.is_null() {
            c.row_qparams = self.row_qparams.wrapping_add(first);
        }
        c.m = rows;
        c
    }
}

/// A static (u8 output) kernel entry point.
///
/// # Safety
/// The CPU supports the kernel's ISA; `args` describes valid memory as documented on
/// [`GemmArgs`], `packed` is a packing of at least `n_end` columns in the kernel's
/// layout, and the epilogue's column arrays hold at least `round_up(n_end, nr)` entries.
pub type GemmU8Fn = unsafe fn(args: &GemmArgs<u8>, epi: &StaticEpilogue);

/// A dynamic (f32 output) kernel entry point. Same contract as [`GemmU8Fn`].
///
/// # Safety
/// As for [`GemmU8Fn`]; in addition, an epilogue built by
/// [`DynamicEpilogue::new_per_row`] comes with a non-null `row_qparams` of `m` entries
/// (and a per-tensor one with a null `row_qparams`).
pub type GemmF32Fn = unsafe fn(args: &GemmArgs<f32>, epi: &DynamicEpilogue);

/// Finiteness check and `(min(x, 0), max(x, 0))` of a dynamic input
/// ([`crate::activation::min_max_finite`]).
///
/// # Safety
/// The CPU supports the kernel's ISA.
pub type MinMaxFn = unsafe fn(x: &MatRef<'_, f32>) -> Result<(f32, f32)>;

/// Quantizes a dynamic input to dense u8 rows and returns the row sums
/// ([`crate::activation::quantize_rows`]); `out` holds `rows * cols` bytes.
///
/// # Safety
/// The CPU supports the kernel's ISA.
pub type QuantizeFn =
    unsafe fn(x: &MatRef<'_, f32>, scale: f32, zp: i32, out: &mut [u8]) -> Vec<i32>;

/// A kernel family's fast packer for one panel: writes exactly the bytes of
/// [`crate::pack::pack_panel`] for the kernel's layout into `out`, and the panel's `nr`
/// column sums ([`crate::pack::column_sums`], 0 past `n`) into `col_sums` (the kernel
/// tests check both).
///
/// # Safety
/// The CPU supports the kernel's ISA; `w` holds `n * k` values; `out` holds
/// `layout.panel_bytes(k)` bytes and `col_sums` `nr` values; panel `p` exists
/// (`p * nr < n`).
pub type PackPanelFn =
    unsafe fn(w: &[i8], n: usize, k: usize, p: usize, out: &mut [u8], col_sums: &mut [i32]);

/// Which calls a kernel is best at: row counts `m_min..=m_max` (inclusive), and its
/// rank among same-layout kernels whose ranges overlap (lower wins). See the module
/// docs' selection rule; a preference never limits what the kernel computes correctly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MPreference {
    /// Smallest preferred row count (at least 1).
    pub m_min: usize,
    /// Largest preferred row count (`usize::MAX`: no upper bound).
    pub m_max: usize,
    /// Order among same-layout kernels whose ranges contain the same `m`: lowest first.
    pub rank: u32,
}

impl MPreference {
    /// Every `m`, rank 0: a kernel that is the only one of its layout.
    pub const ALL: MPreference = MPreference {
        m_min: 1,
        m_max: usize::MAX,
        rank: 0,
    };

    /// Whether `m` lies in `m_min..=m_max`.
    #[inline]
    pub const fn contains(&self, m: usize) -> bool {
        self.m_min <= m && m <= self.m_max
    }
}

/// One optimized kernel: the only interface between the API and a kernel file.
#[derive(Debug, Clone, Copy)]
pub struct KernelDesc {
    /// `"<isa>/gemm_<MR>x<NR>c<KR>"` (`gemv_...` for a one-row kernel), the one name
    /// used in tests, benches, logs and `qlinear bench --kernel`.
    pub name: &'static str,
    /// The instruction set it needs (typed; [`Isa::name`] is the backend name a user
    /// selects, `avx512vnni`, `neondot`, ...). Its detection is the ISA table's entry.
    pub isa: Isa,
    /// Rows of the register tile.
    pub mr: usize,
    /// Packed weight layout (`nr`, `kr`).
    pub layout: PackedLayout,
    /// The row counts this kernel is picked for among same-layout kernels (module docs:
    /// "Several kernels per packed layout"). [`MPreference::ALL`] for a kernel alone on
    /// its layout.
    pub m_pref: MPreference,
    /// Runtime check that this CPU can run the kernel (cached by the caller).
    pub is_supported: fn() -> bool,
    /// Static u8 entry.
    pub gemm_u8: GemmU8Fn,
    /// Dynamic f32 entry.
    pub gemm_f32: GemmF32Fn,
    /// The dynamic input's range check, built for this kernel's ISA.
    pub min_max: MinMaxFn,
    /// The dynamic input's quantization, built for this kernel's ISA.
    pub quantize: QuantizeFn,
    /// A vectorized packer, or `None` for the portable [`crate::pack::pack_panel`].
    pub pack_panel: Option<PackPanelFn>,
}

fn padded<T: Copy>(mut v: Vec<T>, n_pad: usize, fill: T) -> Vec<T> {
    v.resize(n_pad.max(v.len()), fill);
    v
}

/// `col_offset[n] = qbias[n] - zp_x * col_sum[n] + K * zp_x * zp_w[n]`, wrapping.
fn column_offsets(
    k: usize,
    zp_x: i32,
    col_sums: &[i32],
    wq: &WeightQParams,
    qbias: impl Fn(usize) -> i32,
) -> Vec<i32> {
    let k = k as i32;
    col_sums
        .iter()
        .enumerate()
        .map(|(j, &cs)| {
            qbias(j)
                .wrapping_sub(zp_x.wrapping_mul(cs))
                .wrapping_add(k.wrapping_mul(zp_x).wrapping_mul(wq.zero_point(j)))
        })
        .collect()
}

/// Folded parameters of a static (u8 -> u8) layer. Column arrays are padded with
/// zeros to `n_pad` so vector kernels may read whole panels.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticEpilogue {
    /// Integer correction per column (zero points and qnnpack bias folded).
    pub col_offset: Vec<i32>,
    /// Weight zero point per column, multiplied by the row sum.
    pub row_zp: Vec<i32>,
    /// First fma operand of the bias term.
    pub bias_a: Vec<f32>,
    /// Second fma operand of the bias term.
    pub bias_b: Vec<f32>,
    /// Requantization multiplier per column.
    pub mult: Vec<f32>,
    /// Output zero point.
    pub zp_y: i32,
    /// Lower clamp: `zp_y` with fused ReLU, else 0.
    pub lo: i32,
    /// True when no `y` can be NaN: every `bias_a`, `bias_b`, `mult` of a real column is
    /// finite and every `mult` is non-zero (then `y` is finite or +-inf). Vector kernels
    /// may skip their NaN -> 0 step when this holds.
    pub nan_free: bool,
}

impl StaticEpilogue {
    /// Folds a static layer's parameters (already validated) for `n` columns.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        profile: Profile,
        x: ActQParams,
        wq: &WeightQParams,
        col_sums: &[i32],
        k: usize,
        bias: Option<&[f32]>,
        y: ActQParams,
        relu: bool,
        n_pad: usize,
    ) -> Self {
        let n = col_sums.len();
        let sx = x.scale;
        let (col_offset, bias_a, bias_b, mult) = match profile {
            Profile::Fbgemm => {
                let atws = |j: usize| sx * wq.scale(j);
                let mult = (0..n).map(|j| atws(j) / y.scale).collect();
                let (ba, bb) = match bias {
                    None => (vec![0.0; n], vec![0.0; n]),
                    Some(b) if wq.is_per_channel() => {
                        ((0..n).map(|j| b[j] / atws(j)).collect(), vec![1.0; n])
                    }
                    Some(b) => {
                        let rcp = (1.0f64 / atws(0) as f64) as f32;
                        (b.to_vec(), vec![rcp; n])
                    }
                };
                let off = column_offsets(k, x.zero_point, col_sums, wq, |_| 0);
                (off, ba, bb, mult)
            }
            Profile::Qnnpack => {
                let inv_y = 1.0f32 / y.scale;
                let mult = (0..n).map(|j| (wq.scale(j) * sx) * inv_y).collect();
                let off = column_offsets(k, x.zero_point, col_sums, wq, |j| {
                    bias.map_or(0, |b| {
                        crate::linear::qnnpack_quantized_bias(b[j], wq.scale(j), sx)
                    })
                });
                (off, vec![0.0; n], vec![0.0; n], mult)
            }
        };
        let finite = |v: &Vec<f32>| v.iter().all(|x| x.is_finite());
        let nan_free =
            finite(&bias_a) && finite(&bias_b) && finite(&mult) && mult.iter().all(|&m| m != 0.0);
        StaticEpilogue {
            nan_free,
            col_offset: padded(col_offset, n_pad, 0),
            row_zp: padded((0..n).map(|j| wq.zero_point(j)).collect(), n_pad, 0),
            bias_a: padded(bias_a, n_pad, 0.0),
            bias_b: padded(bias_b, n_pad, 0.0),
            mult: padded(mult, n_pad, 0.0),
            zp_y: y.zero_point,
            lo: if relu { y.zero_point } else { 0 },
        }
    }

    /// The folded epilogue for one element, in scalar code: the statement every vector
    /// epilogue reproduces. `row_sum` is ignored when `row_zp[n] == 0`.
    #[inline]
    pub fn apply(&self, acc: i32, row_sum: i32, n: usize) -> u8 {
        let raw = acc
            .wrapping_add(self.col_offset[n])
            .wrapping_sub(self.row_zp[n].wrapping_mul(row_sum));
        let xf = self.bias_a[n].mul_add(self.bias_b[n], raw as f32);
        let y = xf * self.mult[n];
        (cvt(y) as i64 + self.zp_y as i64).clamp(self.lo as i64, 255) as u8
    }
}

/// Folded parameters of one dynamic call (they depend on the call's input qparams).
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicEpilogue {
    /// Integer correction per column.
    pub col_offset: Vec<i32>,
    /// Weight zero point per column.
    pub row_zp: Vec<i32>,
    /// Output multiplier per column (`f(s * scale_w)`).
    pub mult: Vec<f32>,
    /// Bias per column. A layer without bias gets `-0.0` under the fused (fbgemm) form,
    /// the additive identity that keeps the sign of a zero product, and `+0.0` under
    /// qnnpack's, which adds its zero bias literally.
    pub bias: Vec<f32>,
    /// fbgemm: `fma(i2f(raw), mult, bias)`; qnnpack: `f(f(mult * i2f(raw)) + bias)`.
    pub fused_bias: bool,
    /// Fused ReLU.
    pub relu: bool,
    /// Per-row mode only (empty otherwise): the weight's column sums, padded with 0.
    pub col_sum: Vec<i32>,
    /// Per-row mode only (empty otherwise): the weight scale per column, padded with 0.
    pub weight_scale: Vec<f32>,
}

impl DynamicEpilogue {
    /// Folds a dynamic call's parameters for `n` columns.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        profile: Profile,
        scale_x: f32,
        zp_x: i32,
        wq: &WeightQParams,
        col_sums: &[i32],
        k: usize,
        bias: Option<&[f32]>,
        relu: bool,
        n_pad: usize,
    ) -> Self {
        let n = col_sums.len();
        let mult = match profile {
            Profile::Fbgemm => (0..n).map(|j| scale_x * wq.scale(j)).collect(),
            Profile::Qnnpack => (0..n).map(|j| wq.scale(j) * scale_x).collect(),
        };
        DynamicEpilogue {
            col_offset: padded(column_offsets(k, zp_x, col_sums, wq, |_| 0), n_pad, 0),
            row_zp: padded((0..n).map(|j| wq.zero_point(j)).collect(), n_pad, 0),
            mult: padded(mult, n_pad, 0.0),
            // No bias: fbgemm computes `f(i2f(raw) * m)`, which the fused form reproduces
            // only with a `-0.0` addend (`x + -0.0 == x` for every x, signed zeros
            // included, while `-0.0 + +0.0 == +0.0` would lose the sign of a product
            // that underflows to zero). qnnpack adds its `+0.0` bias literally.
            bias: padded(
                bias.map_or_else(
                    || {
                        vec![
                            if profile == Profile::Fbgemm {
                                -0.0
                            } else {
                                0.0
                            };
                            n
                        ]
                    },
                    |b| b.to_vec(),
                ),
                n_pad,
                0.0,
            ),
            fused_bias: profile == Profile::Fbgemm,
            relu,
            col_sum: Vec::new(),
            weight_scale: Vec::new(),
        }
    }

    /// Folds a per-row dynamic layer's parameters for `n` columns: the input qparams
    /// come per row at call time ([`GemmArgs::row_qparams`]), so `col_offset` is 0 (always:
    /// per-row kernels may skip it),
    /// `mult` is unused (kept, padded, so no vector load of it can go out of bounds) and `col_sum` / `weight_scale` carry the per-column
    /// factors of the row terms (see the module docs).
    #[allow(clippy::too_many_arguments)]
    pub fn new_per_row(
        profile: Profile,
        wq: &WeightQParams,
        col_sums: &[i32],
        k: usize,
        bias: Option<&[f32]>,
        relu: bool,
        n_pad: usize,
    ) -> Self {
        let n = col_sums.len();
        // A per-tensor fold with input zero point 0 gives col_offset = 0 and the bias
        // and flags this mode shares; its `mult` (scale 1) is replaced below.
        let base = DynamicEpilogue::new(profile, 1.0, 0, wq, col_sums, k, bias, relu, n_pad);
        DynamicEpilogue {
            col_sum: padded(col_sums.to_vec(), n_pad, 0),
            weight_scale: padded((0..n).map(|j| wq.scale(j)).collect(), n_pad, 0.0),
            ..base
        }
    }

    /// Whether this epilogue was built by [`DynamicEpilogue::new_per_row`].
    #[inline]
    pub fn is_per_row(&self) -> bool {
        !self.col_sum.is_empty()
    }

    /// `K * zp` subtracted from a row sum for the per-row fold: the `row_sum'` a
    /// per-row kernel call receives is `row_sum.wrapping_sub(row_sum_adjustment(k, zp))`.
    #[inline]
    pub fn row_sum_adjustment(k: usize, zero_point: i32) -> i32 {
        (k as i32).wrapping_mul(zero_point)
    }

    /// The folded epilogue for one element in either mode, in scalar code: `row` is
    /// `None` in per-tensor mode (then this is [`DynamicEpilogue::apply`]) and the row's
    /// qparams in per-row mode, where `row_sum` is the adjusted `row_sum'`.
    #[inline]
    pub fn apply_row(&self, acc: i32, row_sum: i32, row: Option<RowQParams>, n: usize) -> f32 {
        let Some(q) = row else {
            return self.apply(acc, row_sum, n);
        };
        let raw = acc
            .wrapping_add(self.col_offset[n])
            .wrapping_sub(self.row_zp[n].wrapping_mul(row_sum))
            .wrapping_sub(q.zero_point.wrapping_mul(self.col_sum[n]));
        let mult = q.scale * self.weight_scale[n];
        self.finish(raw, mult, n)
    }

    /// The float part shared by both modes: bias, then ReLU.
    #[inline]
    fn finish(&self, raw: i32, mult: f32, n: usize) -> f32 {
        let xf = raw as f32;
        let v = if self.fused_bias {
            xf.mul_add(mult, self.bias[n])
        } else {
            mult * xf + self.bias[n]
        };
        if self.relu {
            relu_f32(v)
        } else {
            v
        }
    }

    /// The folded epilogue for one element, in scalar code.
    #[inline]
    pub fn apply(&self, acc: i32, row_sum: i32, n: usize) -> f32 {
        let raw = acc
            .wrapping_add(self.col_offset[n])
            .wrapping_sub(self.row_zp[n].wrapping_mul(row_sum));
        self.finish(raw, self.mult[n], n)
    }
}

/// The call-independent half of a per-tensor dynamic fold, built once per layer.
///
/// [`DynamicEpilogue::new`] derives every column array from the weight's qparams on
/// each call, which cost about 8 µs at N = 3072 and 70 µs at N = 14,336 (AMD Zen 5):
/// as much as the whole GEMV it feeds. Only `col_offset` and `mult` depend on the
/// call's input qparams; [`DynamicFold::epilogue`] computes just those two from the
/// columns kept here, and gives bit for bit what [`DynamicEpilogue::new`] gives for
/// the same arguments (tests/properties.rs).
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicFold {
    k: usize,
    /// The per-row fold of the same layer: `row_zp`, `bias`, the flags, and the
    /// weight's column sums and scales (`col_sum`, `weight_scale`), all padded.
    per_row: DynamicEpilogue,
}

impl DynamicFold {
    /// Folds what does not depend on the call (same arguments as
    /// [`DynamicEpilogue::new`] less the input qparams).
    pub fn new(
        profile: Profile,
        wq: &WeightQParams,
        col_sums: &[i32],
        k: usize,
        bias: Option<&[f32]>,
        relu: bool,
        n_pad: usize,
    ) -> Self {
        DynamicFold {
            k,
            per_row: DynamicEpilogue::new_per_row(profile, wq, col_sums, k, bias, relu, n_pad),
        }
    }

    /// The per-row epilogue of this layer ([`DynamicEpilogue::new_per_row`]), which
    /// depends on nothing per call.
    pub fn per_row(&self) -> &DynamicEpilogue {
        &self.per_row
    }

    /// [`DynamicEpilogue::new`] for input scale `scale_x` and zero point `zp_x`:
    /// `col_offset = K * zp_x * zp_w - zp_x * col_sum` and `mult = scale_x * scale_w`
    /// per column (the multiplication commutes, so both profiles' operand orders give
    /// these bits); padding columns have zero sums, zero points and scales, hence the
    /// zeros `new` pads with.
    pub fn epilogue(&self, scale_x: f32, zp_x: i32) -> DynamicEpilogue {
        let e = &self.per_row;
        let kz = (self.k as i32).wrapping_mul(zp_x);
        DynamicEpilogue {
            col_offset: e
                .col_sum
                .iter()
                .zip(&e.row_zp)
                .map(|(&cs, &zw)| kz.wrapping_mul(zw).wrapping_sub(zp_x.wrapping_mul(cs)))
                .collect(),
            row_zp: e.row_zp.clone(),
            mult: e.weight_scale.iter().map(|&sw| scale_x * sw).collect(),
            bias: e.bias.clone(),
            fused_bias: e.fused_bias,
            relu: e.relu,
            col_sum: Vec::new(),
            weight_scale: Vec::new(),
        }
    }
}
