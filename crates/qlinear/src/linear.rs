//! The layers users build: [`Linear`] (static, u8 -> u8, optional fused ReLU) and
//! [`DynamicLinear`] (f32 -> f32), mirroring `torch.ao.nn.quantized.Linear`,
//! `LinearReLU` and `torch.ao.nn.quantized.dynamic.Linear`.
//!
//! A layer owns its [`PackedWeights`] (packed once, at build time, for the kernel chosen
//! at build time) and, for the static layer, its folded epilogue. `forward` takes
//! `&self`, allocates only per-call scratch, and layers are `Send + Sync` and `Clone`
//! (a clone copies the packed weight). Their `Debug` output is a one-line summary
//! (shape, kernel, qparams), never the weight bytes.
//!
//! The static layer also has an f32 face, [`Linear::forward_f32`]: torch's
//! `QuantStub -> Linear -> DeQuantStub`, i.e. [`ActQParams::quantize`] with the input
//! qparams, the u8 layer, [`ActQParams::dequantize`] with the output qparams; each step
//! is exactly torch's, so the composition is too.
//!
//! `reduce_range` of the dynamic layer defaults per profile, like torch's
//! `nn.quantized.dynamic.Linear` module: `true` for [`Profile::Fbgemm`] (the module
//! passes `reduce_range=True` and fbgemm honours it), `false` for [`Profile::Qnnpack`]
//! (torch's qnnpack ignores it). [`DynamicLinearBuilder::reduce_range`] overrides it.
//!
//! ## Per-row input quantization
//!
//! [`InputQuantization::PerRow`] (opt-in) gives every input row its own scale and zero
//! point, chosen from that row's range alone, like XNNPACK's `qd8` operators and the
//! per-token activation quantization of LLM runtimes. Normatively, output row `m` is
//! bit for bit what the per-tensor layer gives for row `m` alone
//! ([`qlinear_reference::dynamic_linear_per_row`]). Design:
//!
//! * The layer quantizes each row with the kernel's own `min_max` / `quantize` (one-row
//!   views), so the quantized bytes are the per-tensor path's bytes for that row.
//! * The kernels take the row's `(s_m, zp_m)` through `GemmArgs::row_qparams` and fold
//!   `zp_m` on the row side (`raw -= zp_m * col_sum`, row sums adjusted by `- K zp_m`),
//!   forming the multiplier `f(s_m * scale_w[n])` per row (see
//!   `qlinear_reference::contract`). The driver splits `row_qparams` with the rows.
//! * The per-row epilogue depends only on the layer, so it is folded once, at build, in
//!   the layer's [`DynamicFold`]; the per-tensor one is completed per call from the
//!   same fold (only `col_offset` and `mult` depend on the input qparams). Folding
//!   every column per call cost as much as a whole GEMV at N = 3072.
//!
//! ## Where a dynamic call quantizes
//!
//! The range (`min_max`) is taken on the calling thread first: the per-tensor scale
//! needs every row, and a non-finite input is reported before anything is written. The
//! quantization itself is the driver's `prepare` step (`DynamicLinear::run_quantized`):
//! with a row cut each piece quantizes its own rows into the call's scratch on its own
//! thread, right before its kernel reads them, so it runs in parallel and the bytes are
//! still in cache; with a panel cut (few rows, every piece reads all of them) the
//! caller quantizes all rows first.

use qlinear_reference::contract::{
    DynamicEpilogue, DynamicFold, GemmArgs, RowQParams, StaticEpilogue,
};
use qlinear_reference::params::check_finite;
use qlinear_reference::{
    ActQParams, Error, MatMut, MatRef, Observer, Profile, Result, WeightQParams,
};

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::backend::{Backend, Engine};
use crate::driver;
use crate::packed::{PackedWeights, QuantizedWeight};

fn check_bias(bias: Option<&[f32]>, n: usize) -> Result<()> {
    if let Some(b) = bias {
        if b.len() != n {
            return Err(Error::Shape {
                what: "bias length",
                expected: n,
                got: b.len(),
            });
        }
        check_finite("bias", b)?;
    }
    Ok(())
}

fn check_io<A, B>(k: usize, n: usize, input: &MatRef<'_, A>, output: &MatMut<'_, B>) -> Result<()> {
    if input.cols() != k {
        return Err(Error::Shape {
            what: "input columns (in_features)",
            expected: k,
            got: input.cols(),
        });
    }
    if output.rows() != input.rows() {
        return Err(Error::Shape {
            what: "output rows",
            expected: input.rows(),
            got: output.rows(),
        });
    }
    if output.cols() != n {
        return Err(Error::Shape {
            what: "output columns (out_features)",
            expected: n,
            got: output.cols(),
        });
    }
    Ok(())
}

/// `m * n` for an allocating forward, or an error when it overflows.
fn output_len(m: usize, n: usize) -> Result<usize> {
    m.checked_mul(n)
        .ok_or(Error::Dimension("output size m * n overflows"))
}

/// The allocating `*_vec` conveniences: views `input` as `m` dense rows of `k`, runs
/// `forward` into a fresh `m x n` buffer and returns it. The input view comes first: it
/// bounds `m` by the input's length before any allocation is sized by it.
fn forward_into_vec<T, U: Copy + Default>(
    input: &[T],
    m: usize,
    k: usize,
    n: usize,
    forward: impl FnOnce(MatRef<'_, T>, MatMut<'_, U>) -> Result<()>,
) -> Result<Vec<U>> {
    let input = MatRef::dense(input, m, k)?;
    let mut out = vec![U::default(); output_len(m, n)?];
    forward(input, MatMut::dense(&mut out, m, n)?)?;
    Ok(out)
}

/// Row sums of the activations when some weight zero point is non-zero, else empty.
fn row_sums_if_needed(a: &MatRef<'_, u8>, wq: &WeightQParams) -> Vec<i32> {
    if wq.all_zero_points_zero() {
        return Vec::new();
    }
    (0..a.rows())
        .map(|i| qlinear_reference::pack::row_sum(a.row(i)))
        .collect()
}

fn gemm_args<T>(
    p: &PackedWeights,
    a: &MatRef<'_, u8>,
    row_sums: &[i32],
    out: &mut MatMut<'_, T>,
) -> GemmArgs<T> {
    let row_sums = if row_sums.is_empty() {
        std::ptr::null()
    } else {
        row_sums.as_ptr()
    };
    gemm_args_at(
        p,
        a.as_slice().as_ptr(),
        a.stride(),
        a.rows(),
        row_sums,
        out,
    )
}

/// [`gemm_args`] for activations given by pointer (`m` rows at `a_stride`; the dynamic
/// scratch, which pieces write while kernels read it) and row sums by pointer (null
/// when the kernels need none).
fn gemm_args_at<T>(
    p: &PackedWeights,
    a: *const u8,
    a_stride: usize,
    m: usize,
    row_sums: *const i32,
    out: &mut MatMut<'_, T>,
) -> GemmArgs<T> {
    GemmArgs {
        a,
        a_stride,
        m,
        k: p.k,
        packed: p.data.as_ptr(),
        n_begin: 0,
        n_end: p.n,
        row_sums,
        row_qparams: std::ptr::null(),
        out: out.as_mut_slice().as_mut_ptr(),
        out_stride: out.stride(),
    }
}

fn as_i8(bytes: &[u8]) -> Vec<i8> {
    bytes.iter().map(|&b| b as i8).collect()
}

/// Options shared by both layer builders.
#[derive(Clone)]
struct Common {
    bias: Option<Vec<f32>>,
    relu: bool,
    profile: Profile,
    backend: Backend,
    threads: usize,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            bias: None,
            relu: false,
            profile: Profile::Fbgemm,
            backend: Backend::Auto,
            threads: 0,
        }
    }
}

macro_rules! common_setters {
    () => {
        /// Adds an f32 bias (`out_features` finite values).
        pub fn bias(mut self, bias: Vec<f32>) -> Self {
            self.common.bias = Some(bias);
            self
        }
        /// Sets or clears the bias.
        pub fn maybe_bias(mut self, bias: Option<Vec<f32>>) -> Self {
            self.common.bias = bias;
            self
        }
        /// Fuses a ReLU (torch's `LinearReLU`).
        pub fn relu(mut self, relu: bool) -> Self {
            self.common.relu = relu;
            self
        }
        /// The arithmetic profile to reproduce (default [`Profile::Fbgemm`]).
        pub fn profile(mut self, profile: Profile) -> Self {
            self.common.profile = profile;
            self
        }
        /// The backend (default [`Backend::Auto`], which honours `QLINEAR_BACKEND`).
        pub fn backend(mut self, backend: Backend) -> Self {
            self.common.backend = backend;
            self
        }
        /// Worker threads for `forward` (0, the default, means all of rayon's pool).
        pub fn threads(mut self, threads: usize) -> Self {
            self.common.threads = threads;
            self
        }
    };
}

#[derive(Clone)]
enum WeightSource {
    Plain(QuantizedWeight),
    Packed(PackedWeights),
}

/// `Debug` of weight qparams without per-channel vectors.
struct QParamsSummary<'a>(&'a WeightQParams);

impl fmt::Debug for QParamsSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            WeightQParams::PerTensor { scale, zero_point } => f
                .debug_struct("PerTensor")
                .field("scale", scale)
                .field("zero_point", zero_point)
                .finish(),
            WeightQParams::PerChannel { scales, .. } => write!(
                f,
                "PerChannel({} channels{})",
                scales.len(),
                if self.0.all_zero_points_zero() {
                    ", symmetric"
                } else {
                    ""
                }
            ),
        }
    }
}

/// `Debug` of an optional bias: its length, not its values.
struct BiasSummary<'a>(Option<&'a [f32]>);

impl fmt::Debug for BiasSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("None"),
            Some(b) => write!(f, "Some({} values)", b.len()),
        }
    }
}

impl fmt::Debug for WeightSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightSource::Plain(w) => f
                .debug_struct("QuantizedWeight")
                .field("out_features", &w.out_features())
                .field("in_features", &w.in_features())
                .field("qparams", &QParamsSummary(w.qparams()))
                .finish_non_exhaustive(),
            WeightSource::Packed(p) => f
                .debug_struct("PackedWeights")
                .field("out_features", &p.n)
                .field("in_features", &p.k)
                .field("kernel", &p.kernel_name())
                .field("qparams", &QParamsSummary(&p.qparams))
                .finish_non_exhaustive(),
        }
    }
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Common")
            .field("bias", &BiasSummary(self.bias.as_deref()))
            .field("relu", &self.relu)
            .field("profile", &self.profile)
            .field("backend", &self.backend)
            .field("threads", &self.threads)
            .finish()
    }
}

impl WeightSource {
    fn into_packed(self, backend: Backend) -> Result<PackedWeights> {
        match self {
            WeightSource::Plain(w) => PackedWeights::new(&w, backend),
            // An explicit backend different from the packing's repacks; Auto keeps it
            // (with its kernel set); the packing's own backend keeps the bytes and
            // narrows the set to that backend's kernels.
            WeightSource::Packed(p) if backend == Backend::Auto => Ok(p),
            WeightSource::Packed(p) if backend == p.backend() => Ok(p.restricted_to(backend)),
            WeightSource::Packed(p) => p.repack(backend),
        }
    }
}

/// Builder of a static [`Linear`].
///
/// `Clone`; `Debug` prints a summary (shape, qparams, options), not the weight.
#[derive(Clone)]
pub struct LinearBuilder {
    weight: WeightSource,
    input: ActQParams,
    output: ActQParams,
    common: Common,
}

impl fmt::Debug for LinearBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinearBuilder")
            .field("weight", &self.weight)
            .field("input", &self.input)
            .field("output", &self.output)
            .field("bias", &BiasSummary(self.common.bias.as_deref()))
            .field("relu", &self.common.relu)
            .field("profile", &self.common.profile)
            .field("backend", &self.common.backend)
            .field("threads", &self.common.threads)
            .finish()
    }
}

impl LinearBuilder {
    common_setters!();

    /// Validates everything, packs the weight and folds the epilogue.
    pub fn build(self) -> Result<Linear> {
        self.input.validate("input")?;
        self.output.validate("output")?;
        let packed = self.weight.into_packed(self.common.backend)?;
        check_bias(self.common.bias.as_deref(), packed.n)?;
        let mut layer = Linear {
            epilogue: None,
            foreign: ForeignEpilogue::default(),
            packed,
            input: self.input,
            output: self.output,
            common: self.common,
        };
        layer.refold();
        Ok(layer)
    }
}

/// A static quantized linear layer: u8 activations in, u8 out
/// (`torch.ao.nn.quantized.Linear`, or `LinearReLU` with [`LinearBuilder::relu`]).
///
/// ```
/// use qlinear::{ActQParams, Linear, QuantizedWeight, WeightQParams, MatRef, MatMut};
/// # fn main() -> Result<(), qlinear::Error> {
/// let (n, k) = (3, 4);
/// let w = QuantizedWeight::new(
///     vec![1, -2, 3, -4, 5, 6, -7, 8, 0, 1, 0, -1],
///     n, k,
///     WeightQParams::PerTensor { scale: 0.05, zero_point: 0 },
/// )?;
/// let layer = Linear::builder(w, ActQParams::new(0.1, 128)?, ActQParams::new(0.2, 10)?)
///     .bias(vec![0.5, -0.5, 0.0])
///     .build()?;
/// let x: Vec<u8> = vec![128, 140, 100, 255, 0, 128, 128, 128];
/// let y = layer.forward_vec(&x, 2)?;
/// assert_eq!(y.len(), 2 * n);
/// // Strided views work too: the second row alone, written into a wider buffer.
/// let mut buf = [0u8; 8];
/// layer.forward(MatRef::new(&x[4..], 1, k, k)?, MatMut::new(&mut buf, 1, n, 8)?)?;
/// assert_eq!(&buf[..n], &y[n..]);
/// println!("{} ran {:?}", layer.kernel_name(), y);
/// // The same layer on f32 tensors: QuantStub -> Linear -> DeQuantStub.
/// let yf = layer.forward_f32_vec(&[0.0, 1.2, -2.8, 12.7], 1)?;
/// assert_eq!(yf, layer.output_qparams().dequantize_vec(&y[..n]));
/// # Ok(()) }
/// ```
///
/// `Clone` copies the packed weight; `Debug` prints a summary:
/// `Linear { out_features: 3, in_features: 4, kernel: "...", profile: Fbgemm, ... }`.
#[derive(Clone)]
pub struct Linear {
    packed: PackedWeights,
    input: ActQParams,
    output: ActQParams,
    common: Common,
    epilogue: Option<StaticEpilogue>,
    /// The epilogue folded for the last call whose input qparams were not the layer's
    /// own ([`Linear::forward_with_input_qparams`]): a stream of inputs with the same
    /// foreign qparams (a torch module fed quantized tensors) folds once.
    foreign: ForeignEpilogue,
}

/// A one-entry cache of an epilogue folded for foreign input qparams. `Clone` starts
/// empty (the cache is a speed-up, never state).
#[derive(Default)]
struct ForeignEpilogue(Mutex<Option<(ActQParams, Arc<StaticEpilogue>)>>);

impl Clone for ForeignEpilogue {
    fn clone(&self) -> Self {
        ForeignEpilogue::default()
    }
}

impl fmt::Debug for Linear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Linear")
            .field("out_features", &self.packed.n)
            .field("in_features", &self.packed.k)
            .field("kernel", &self.kernel_name())
            .field("profile", &self.common.profile)
            .field("weight_qparams", &QParamsSummary(&self.packed.qparams))
            .field("input", &self.input)
            .field("output", &self.output)
            .field("bias", &BiasSummary(self.common.bias.as_deref()))
            .field("relu", &self.common.relu)
            .field("threads", &self.common.threads)
            .finish()
    }
}

impl Linear {
    /// Starts a layer from int8 weights and qparams (torch's `from_reference`).
    pub fn builder(
        weight: QuantizedWeight,
        input: ActQParams,
        output: ActQParams,
    ) -> LinearBuilder {
        LinearBuilder {
            weight: WeightSource::Plain(weight),
            input,
            output,
            common: Common::default(),
        }
    }

    /// Starts a layer from already packed weights (no repacking unless a different
    /// backend is requested).
    pub fn from_packed(
        packed: PackedWeights,
        input: ActQParams,
        output: ActQParams,
    ) -> LinearBuilder {
        LinearBuilder {
            weight: WeightSource::Packed(packed),
            input,
            output,
            common: Common::default(),
        }
    }

    /// Starts a layer from f32 weights quantized by `observer` (torch's `from_float`).
    /// To choose `input` and `output` from calibration data as torch's observers do,
    /// use [`crate::Calibrator`] (or [`crate::MinMaxObserver`] by hand).
    pub fn from_float(
        weight: &[f32],
        out_features: usize,
        in_features: usize,
        observer: Observer,
        input: ActQParams,
        output: ActQParams,
    ) -> Result<LinearBuilder> {
        let w = QuantizedWeight::from_float(weight, out_features, in_features, observer)?;
        Ok(Linear::builder(w, input, output))
    }

    /// The folded epilogue for input qparams `input` (none for the reference engine).
    fn fold(&self, input: ActQParams) -> Option<StaticEpilogue> {
        let p = &self.packed;
        match p.engine {
            Engine::Reference => None,
            Engine::Kernel(_) => Some(StaticEpilogue::new(
                self.common.profile,
                input,
                &p.qparams,
                &p.col_sums[..p.n],
                p.k,
                self.common.bias.as_deref(),
                self.output,
                self.common.relu,
                p.col_sums.len(),
            )),
        }
    }

    fn refold(&mut self) {
        self.epilogue = self.fold(self.input);
        // A cached foreign epilogue folded the old settings in.
        self.foreign = ForeignEpilogue::default();
    }

    /// Changes the output qparams; the folded epilogue is rebuilt (never stale).
    pub fn set_output_qparams(&mut self, output: ActQParams) -> Result<()> {
        output.validate("output")?;
        self.output = output;
        self.refold();
        Ok(())
    }

    /// Changes the number of worker threads (0 = all of rayon's pool).
    pub fn set_threads(&mut self, threads: usize) {
        self.common.threads = threads;
    }

    /// Computes `output = linear(input)` for an `m x in_features` view into an
    /// `m x out_features` view, with the layer's thread setting.
    pub fn forward(&self, input: MatRef<'_, u8>, output: MatMut<'_, u8>) -> Result<()> {
        self.forward_with_threads(input, output, self.common.threads)
    }

    /// [`Linear::forward`] with an explicit thread count for this call.
    pub fn forward_with_threads(
        &self,
        input: MatRef<'_, u8>,
        output: MatMut<'_, u8>,
        threads: usize,
    ) -> Result<()> {
        self.forward_folded(self.input, self.epilogue.as_ref(), input, output, threads)
    }

    /// [`Linear::forward_with_threads`] for an input quantized with `input_qparams`
    /// instead of the layer's own: what torch's quantized Linear does, whose input
    /// tensor carries its qparams. The epilogue is folded for these qparams
    /// (`O(out_features)` work and memory, no weight copy) and kept for the next call
    /// with the same ones; with the layer's own qparams it is the plain call. The layer's
    /// settings are unchanged, so calls with different qparams may run at once.
    ///
    /// # Errors
    /// As [`Linear::forward`], and [`Error::InvalidScale`] /
    /// [`Error::ZeroPointOutOfRange`] for invalid `input_qparams`.
    pub fn forward_with_input_qparams(
        &self,
        input_qparams: ActQParams,
        input: MatRef<'_, u8>,
        output: MatMut<'_, u8>,
        threads: usize,
    ) -> Result<()> {
        if input_qparams == self.input {
            return self.forward_with_threads(input, output, threads);
        }
        input_qparams.validate("input")?;
        let epi = self.foreign_epilogue(input_qparams);
        self.forward_folded(input_qparams, epi.as_deref(), input, output, threads)
    }

    /// The epilogue for foreign input qparams `q`: the cached one when the last foreign
    /// call had the same, else a new fold (`O(out_features)`), cached for the next call.
    fn foreign_epilogue(&self, q: ActQParams) -> Option<Arc<StaticEpilogue>> {
        let mut cache = self
            .foreign
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((cq, epi)) = cache.as_ref() {
            if *cq == q {
                return Some(Arc::clone(epi));
            }
        }
        let epi = Arc::new(self.fold(q)?);
        *cache = Some((q, Arc::clone(&epi)));
        Some(epi)
    }

    /// The forward call with input qparams `in_q` and its folded epilogue `epi`.
    fn forward_folded(
        &self,
        in_q: ActQParams,
        epi: Option<&StaticEpilogue>,
        input: MatRef<'_, u8>,
        mut output: MatMut<'_, u8>,
        threads: usize,
    ) -> Result<()> {
        let p = &self.packed;
        check_io(p.k, p.n, &input, &output)?;
        // The kernel for this call's M (module `kernel_set`): every piece runs it.
        match (&p.kernels.pick(input.rows()), epi) {
            (Engine::Kernel(desc), Some(epi)) => {
                let row_sums = row_sums_if_needed(&input, &p.qparams);
                let args = gemm_args(p, &input, &row_sums, &mut output);
                let gemm = desc.gemm_u8;
                driver::run(desc, args, threads, None, &|chunk: &GemmArgs<u8>| {
                    // SAFETY: the engine was chosen by `resolve`, which checked the CPU
                    // supports this kernel; `check_io` and the view constructors proved
                    // that `a` covers m x k with its stride and `out` covers m x n with
                    // its stride; `packed` and the epilogue were built for this kernel's
                    // layout over n columns (padded to whole panels). The driver hands
                    // each call a disjoint sub-range of rows or columns.
                    unsafe { gemm(chunk, epi) }
                })?;
            }
            _ => {
                let y = qlinear_reference::static_linear(
                    &input,
                    in_q,
                    &as_i8(&p.data),
                    p.n,
                    &p.qparams,
                    self.common.bias.as_deref(),
                    self.output,
                    self.common.relu,
                    self.common.profile,
                )?;
                for i in 0..input.rows() {
                    output
                        .row_mut(i)
                        .copy_from_slice(&y[i * p.n..(i + 1) * p.n]);
                }
            }
        }
        Ok(())
    }

    /// Allocating convenience: `input` holds `m` dense rows of `in_features` bytes.
    pub fn forward_vec(&self, input: &[u8], m: usize) -> Result<Vec<u8>> {
        forward_into_vec(input, m, self.packed.k, self.packed.n, |x, y| {
            self.forward(x, y)
        })
    }

    /// f32 in, f32 out, exactly torch's `QuantStub -> Linear -> DeQuantStub` (eager
    /// mode static quantization after `convert`): the input is quantized with the
    /// layer's input qparams ([`ActQParams::quantize`], torch's `quantize_per_tensor`),
    /// the u8 layer runs ([`Linear::forward`], any kernel, the layer's threads), and the
    /// u8 output is dequantized with the output qparams ([`ActQParams::dequantize`]).
    /// Every step is exact, so the result equals composing the three by hand, bit for
    /// bit, on every backend.
    ///
    /// Allocates `m * (in_features + out_features)` bytes of u8 scratch per call.
    ///
    /// # Errors
    /// Shape errors as [`Linear::forward`]; [`Error::NonFinite`] (flat index
    /// `row * in_features + col` of the first NaN or infinity in the input; torch has no
    /// defined result there); [`Error::ScaleTooSmall`] when the input scale is so small
    /// (below about 2.9e-39) that `1 / scale` overflows f32. `output` is untouched on
    /// error.
    pub fn forward_f32(&self, input: MatRef<'_, f32>, output: MatMut<'_, f32>) -> Result<()> {
        self.forward_f32_with_threads(input, output, self.common.threads)
    }

    /// [`Linear::forward_f32`] with an explicit thread count for this call.
    pub fn forward_f32_with_threads(
        &self,
        input: MatRef<'_, f32>,
        output: MatMut<'_, f32>,
        threads: usize,
    ) -> Result<()> {
        self.forward_f32_with_input_qparams(self.input, input, output, threads)
    }

    /// [`Linear::forward_f32_with_threads`] quantizing the input with `input_qparams`
    /// instead of the layer's own (see [`Linear::forward_with_input_qparams`]).
    pub fn forward_f32_with_input_qparams(
        &self,
        input_qparams: ActQParams,
        input: MatRef<'_, f32>,
        output: MatMut<'_, f32>,
        threads: usize,
    ) -> Result<()> {
        let (k, n) = (self.packed.k, self.packed.n);
        check_io(k, n, &input, &output)?;
        input_qparams.validate("input")?;
        let m = input.rows();
        // Both products are bounded by the views' buffer lengths (stride >= cols), so
        // neither overflows nor sizes an allocation beyond the caller's own data.
        let mut qx = vec![0u8; output_len(m, k)?];
        input_qparams
            .quantize_mat(input, MatMut::dense(&mut qx, m, k)?)
            .map_err(|e| match e {
                // Name the scale as the layer's input scale.
                Error::ScaleTooSmall { value, .. } => Error::ScaleTooSmall {
                    what: "input",
                    value,
                },
                other => other,
            })?;
        let mut qy = vec![0u8; output_len(m, n)?];
        self.forward_with_input_qparams(
            input_qparams,
            MatRef::dense(&qx, m, k)?,
            MatMut::dense(&mut qy, m, n)?,
            threads,
        )?;
        self.output
            .dequantize_mat(MatRef::dense(&qy, m, n)?, output)
    }

    /// Allocating convenience for [`Linear::forward_f32`]: `input` holds `m` dense rows
    /// of `in_features` floats; returns `m` dense rows of `out_features`.
    pub fn forward_f32_vec(&self, input: &[f32], m: usize) -> Result<Vec<f32>> {
        forward_into_vec(input, m, self.packed.k, self.packed.n, |x, y| {
            self.forward_f32(x, y)
        })
    }

    /// The exact int8 weight and qparams (torch's `weight()` / unpack).
    pub fn weight(&self) -> QuantizedWeight {
        self.packed.unpack()
    }
    /// The packed weight.
    pub fn packed(&self) -> &PackedWeights {
        &self.packed
    }
    /// The bias, if any.
    pub fn bias(&self) -> Option<&[f32]> {
        self.common.bias.as_deref()
    }
    /// Whether a ReLU is fused (torch's `LinearReLU`).
    pub fn relu(&self) -> bool {
        self.common.relu
    }
    /// Input qparams.
    pub fn input_qparams(&self) -> ActQParams {
        self.input
    }
    /// Output qparams.
    pub fn output_qparams(&self) -> ActQParams {
        self.output
    }
    /// The layer's primary kernel, e.g. `"avx512vnni/gemm_8x32c4"`: the one its
    /// packing was made for ([`PackedWeights::kernel_name`]). A call may run another
    /// kernel of the same packed layout chosen by its row count; that one is
    /// [`Linear::kernel_name_for`].
    pub fn kernel_name(&self) -> &'static str {
        self.packed.kernel_name()
    }
    /// The kernel that runs a call of `m` rows, e.g. `"avx512vnni/gemv_1x32c4"` for
    /// `m = 1` on an AVX-512 VNNI CPU ([`PackedWeights::kernel_name_for`]).
    pub fn kernel_name_for(&self, m: usize) -> &'static str {
        self.packed.kernel_name_for(m)
    }
    /// The arithmetic profile.
    pub fn profile(&self) -> Profile {
        self.common.profile
    }
}

/// The most bytes of quantized-activation scratch a thread keeps between dynamic calls.
///
/// Each thread reuses one buffer for the quantized input of its dynamic calls (a fresh
/// allocation per call costs page faults comparable to the quantization itself). A call
/// whose input needs more than this gets its own buffer, freed when the call returns,
/// so one large call does not pin its memory for the life of the thread. 4 MiB covers
/// every activation of the bert / llm suites up to 512 x 8192; above it the call's
/// GEMM dwarfs one allocation.
pub const SCRATCH_KEEP_BYTES: usize = 4 << 20;

thread_local! {
    /// Per-thread scratch for a dynamic call's quantized activations.
    static QUANTIZED: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A run of a dynamic call's input rows, handed to the quantization step.
struct InputRows<'a> {
    view: MatRef<'a, f32>,
    /// The index of `view`'s first row in the whole input.
    first_row: usize,
}

/// Quantizes a run of input rows into their `rows * k` scratch bytes and returns the
/// rows' sums as the kernels expect them ([`DynamicLinear::run_quantized`]).
type QuantizeRows<'a> = dyn Fn(&InputRows<'_>, &mut [u8]) -> Result<Vec<i32>> + Sync + 'a;

/// A dynamic call's quantized rows (dense `m x k`) and row sums (`m` entries, or null
/// when no weight zero point needs them), shared by the driver's pieces: each writes
/// its own rows through [`Scratch::rows_mut`] while kernels read others.
#[derive(Clone, Copy)]
struct Scratch {
    q: *mut u8,
    sums: *mut i32,
    k: usize,
}

// SAFETY: the pointers refer to buffers owned by the caller for the whole driver run;
// concurrent users touch disjoint rows (the contract of `rows_mut`).
unsafe impl Sync for Scratch {}

impl Scratch {
    /// The bytes and row sums of `rows`.
    ///
    /// # Safety
    /// `rows` lies inside the buffers' `m` rows, and while the returned slices live no
    /// other reference or kernel touches those rows.
    #[allow(clippy::mut_from_ref)]
    unsafe fn rows_mut(&self, rows: std::ops::Range<usize>) -> (&mut [u8], Option<&mut [i32]>) {
        let count = rows.end - rows.start;
        // SAFETY: in bounds and exclusive by the caller's promise; a zero `k` gives an
        // empty slice at a pointer that is non-null (the Vec's dangling one).
        unsafe {
            let q = std::slice::from_raw_parts_mut(self.q.add(rows.start * self.k), count * self.k);
            let sums = (!self.sums.is_null())
                .then(|| std::slice::from_raw_parts_mut(self.sums.add(rows.start), count));
            (q, sums)
        }
    }
}

/// How a [`DynamicLinear`] quantizes its f32 input (default
/// [`InputQuantization::PerTensor`]).
///
/// With [`InputQuantization::PerRow`] each input row (token) gets its own scale and zero
/// point from its own min / max, so a row of small values is not quantized on the
/// grid of the largest row: better accuracy when rows differ in magnitude (LLM tokens,
/// batched requests). The cost is one min / max and one qparams choice per row, and a
/// per-row multiplier in the epilogue. Output row `m` is exactly what the per-tensor
/// layer gives on row `m` alone.
///
/// ```
/// use qlinear::{DynamicLinear, InputQuantization, Observer, QuantizedWeight};
/// # fn main() -> Result<(), qlinear::Error> {
/// let w: Vec<f32> = (0..4 * 3).map(|i| (i as f32 * 0.37).sin()).collect();
/// let qw = QuantizedWeight::from_float(&w, 4, 3, Observer::PER_CHANNEL_SYMMETRIC)?;
/// let per_row = DynamicLinear::builder(qw.clone())
///     .input_quantization(InputQuantization::PerRow)
///     .build()?;
/// let per_tensor = DynamicLinear::builder(qw).build()?;
/// // A tiny row next to a large one.
/// let x = [0.001, -0.002, 0.003, 100.0, -50.0, 25.0];
/// let both = per_row.forward_vec(&x, 2)?;
/// // Row 0 is the per-tensor layer's answer for row 0 alone.
/// assert_eq!(both[..4], per_tensor.forward_vec(&x[..3], 1)?[..]);
/// assert_eq!(per_row.input_quantization(), InputQuantization::PerRow);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum InputQuantization {
    /// One scale and zero point for the whole input (torch's `linear_dynamic`).
    #[default]
    PerTensor,
    /// One scale and zero point per input row.
    PerRow,
}

/// Builder of a [`DynamicLinear`].
///
/// `reduce_range` defaults per profile, like torch's `nn.quantized.dynamic.Linear`
/// module: `true` with [`Profile::Fbgemm`], `false` with [`Profile::Qnnpack`]; set it
/// with [`DynamicLinearBuilder::reduce_range`]. `Clone`; `Debug` prints a summary.
#[derive(Clone)]
pub struct DynamicLinearBuilder {
    weight: WeightSource,
    /// `None`: the profile's default, resolved at `build`.
    reduce_range: Option<bool>,
    input_quantization: InputQuantization,
    common: Common,
}

impl fmt::Debug for DynamicLinearBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamicLinearBuilder")
            .field("weight", &self.weight)
            .field("reduce_range", &self.reduce_range)
            .field("input_quantization", &self.input_quantization)
            .field("bias", &BiasSummary(self.common.bias.as_deref()))
            .field("relu", &self.common.relu)
            .field("profile", &self.common.profile)
            .field("backend", &self.common.backend)
            .field("threads", &self.common.threads)
            .finish()
    }
}

impl DynamicLinearBuilder {
    common_setters!();

    /// PyTorch's `reduce_range` for the input qparams (range [0, 127] instead of
    /// [0, 255]).
    ///
    /// When not set, it follows the profile as torch's `nn.quantized.dynamic.Linear`
    /// module does: `true` for [`Profile::Fbgemm`] (the module calls
    /// `linear_dynamic(x, reduce_range=True)`), `false` for [`Profile::Qnnpack`]
    /// (torch's qnnpack ignores the flag). The functional op
    /// `torch.ops.quantized.linear_dynamic` defaults to `false`: pass `false` here to
    /// match it. qlinear never saturates, so this only matters for bit parity with
    /// torch. [`Profile::Qnnpack`] ignores an explicit `true` too, as torch does.
    pub fn reduce_range(mut self, reduce_range: bool) -> Self {
        self.reduce_range = Some(reduce_range);
        self
    }

    /// How the input is quantized: one scale and zero point per call
    /// ([`InputQuantization::PerTensor`], the default, torch's behaviour) or per row
    /// ([`InputQuantization::PerRow`]); see [`InputQuantization`].
    pub fn input_quantization(mut self, mode: InputQuantization) -> Self {
        self.input_quantization = mode;
        self
    }

    /// Validates, packs.
    pub fn build(self) -> Result<DynamicLinear> {
        let packed = self.weight.into_packed(self.common.backend)?;
        check_bias(self.common.bias.as_deref(), packed.n)?;
        let fold = Arc::new(DynamicFold::new(
            self.common.profile,
            &packed.qparams,
            &packed.col_sums[..packed.n],
            packed.k,
            self.common.bias.as_deref(),
            self.common.relu,
            packed.col_sums.len(),
        ));
        Ok(DynamicLinear {
            fold,
            packed,
            input_quantization: self.input_quantization,
            reduce_range: self
                .reduce_range
                .unwrap_or(self.common.profile == Profile::Fbgemm),
            common: self.common,
        })
    }
}

/// A dynamic quantized linear layer: f32 in, f32 out; the input is quantized per call
/// with PyTorch's qparams choice (`torch.ao.nn.quantized.dynamic.Linear`).
///
/// ```
/// use qlinear::{DynamicLinear, QuantizedWeight, Observer};
/// # fn main() -> Result<(), qlinear::Error> {
/// let w: Vec<f32> = (0..6 * 5).map(|i| (i as f32 * 0.37).sin()).collect();
/// let qw = QuantizedWeight::from_float(&w, 6, 5, Observer::PER_CHANNEL_SYMMETRIC)?;
/// let layer = DynamicLinear::builder(qw).relu(true).build()?;
/// let y = layer.forward_vec(&[0.5, -1.0, 2.0, 0.0, 0.25], 1)?;
/// assert!(y.iter().all(|&v| v >= 0.0));
/// // Like torch's module on fbgemm, the input range is reduced by default.
/// assert!(layer.reduce_range());
/// # Ok(()) }
/// ```
///
/// `reduce_range` defaults per profile (`true` for [`Profile::Fbgemm`], `false` for
/// [`Profile::Qnnpack`]); see [`DynamicLinearBuilder::reduce_range`]. `Clone` copies
/// the packed weight; `Debug` prints a summary, not the weight.
#[derive(Clone)]
pub struct DynamicLinear {
    packed: PackedWeights,
    reduce_range: bool,
    input_quantization: InputQuantization,
    common: Common,
    /// The epilogue's call-independent columns, folded once at build: a call adds
    /// only what its input qparams change. (Shared by clones; boxed so a layer stays
    /// small to move.)
    fold: Arc<DynamicFold>,
}

impl fmt::Debug for DynamicLinear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamicLinear")
            .field("out_features", &self.packed.n)
            .field("in_features", &self.packed.k)
            .field("kernel", &self.kernel_name())
            .field("profile", &self.common.profile)
            .field("weight_qparams", &QParamsSummary(&self.packed.qparams))
            .field("reduce_range", &self.reduce_range)
            .field("input_quantization", &self.input_quantization)
            .field("bias", &BiasSummary(self.common.bias.as_deref()))
            .field("relu", &self.common.relu)
            .field("threads", &self.common.threads)
            .finish()
    }
}

impl DynamicLinear {
    /// Starts a layer from int8 weights and qparams.
    pub fn builder(weight: QuantizedWeight) -> DynamicLinearBuilder {
        DynamicLinearBuilder {
            weight: WeightSource::Plain(weight),
            reduce_range: None,
            input_quantization: InputQuantization::PerTensor,
            common: Common::default(),
        }
    }

    /// Starts a layer from packed weights.
    pub fn from_packed(packed: PackedWeights) -> DynamicLinearBuilder {
        DynamicLinearBuilder {
            weight: WeightSource::Packed(packed),
            reduce_range: None,
            input_quantization: InputQuantization::PerTensor,
            common: Common::default(),
        }
    }

    /// Starts a layer from f32 weights quantized by `observer` (torch's `from_float`).
    pub fn from_float(
        weight: &[f32],
        out_features: usize,
        in_features: usize,
        observer: Observer,
    ) -> Result<DynamicLinearBuilder> {
        let w = QuantizedWeight::from_float(weight, out_features, in_features, observer)?;
        Ok(DynamicLinear::builder(w))
    }

    /// Changes the number of worker threads (0 = all of rayon's pool).
    pub fn set_threads(&mut self, threads: usize) {
        self.common.threads = threads;
    }

    /// Computes `output = linear(input)` (f32 views), with the layer's thread setting.
    /// A NaN or infinity in the input is an [`Error::NonFinite`].
    pub fn forward(&self, input: MatRef<'_, f32>, output: MatMut<'_, f32>) -> Result<()> {
        self.forward_with_threads(input, output, self.common.threads)
    }

    /// [`DynamicLinear::forward`] with an explicit thread count for this call.
    pub fn forward_with_threads(
        &self,
        input: MatRef<'_, f32>,
        mut output: MatMut<'_, f32>,
        threads: usize,
    ) -> Result<()> {
        let p = &self.packed;
        check_io(p.k, p.n, &input, &output)?;
        let per_row = self.input_quantization == InputQuantization::PerRow;
        // The kernel for this call's M (module `kernel_set`): every piece runs it.
        let Engine::Kernel(desc) = p.kernels.pick(input.rows()) else {
            let literal = if per_row {
                qlinear_reference::dynamic_linear_per_row
            } else {
                qlinear_reference::dynamic_linear
            };
            let y = literal(
                &input,
                &as_i8(&p.data),
                p.n,
                &p.qparams,
                self.common.bias.as_deref(),
                self.reduce_range,
                self.common.relu,
                self.common.profile,
            )?;
            for i in 0..input.rows() {
                output
                    .row_mut(i)
                    .copy_from_slice(&y[i * p.n..(i + 1) * p.n]);
            }
            return Ok(());
        };
        if per_row {
            return self.forward_per_row(desc, input, output, threads);
        }
        let rr = self.reduce_range && self.common.profile == Profile::Fbgemm;
        // SAFETY: the kernel was resolved for this CPU, so its ISA is available.
        let (lo, hi) = unsafe { (desc.min_max)(&input)? };
        let qp = qlinear_reference::quantize::dynamic_qparams_from_min_max(lo, hi, rr);
        let epi = self.fold.epilogue(qp.scale, qp.zero_point);
        let quantize = desc.quantize;
        self.run_quantized(desc, &input, &mut output, threads, None, &epi, &|x, q| {
            // SAFETY: the kernel was resolved for this CPU, so its ISA is available;
            // `q` holds the rows' `rows * k` bytes.
            Ok(unsafe { quantize(&x.view, qp.scale, qp.zero_point, q) })
        })
    }

    /// The per-row kernel path of [`DynamicLinear::forward_with_threads`] (views
    /// already validated): each row's qparams from the kernel's own `min_max`, then
    /// [`DynamicLinear::run_quantized`] quantizing each row with its own, and row sums
    /// adjusted by the row's zero point.
    fn forward_per_row(
        &self,
        desc: &'static qlinear_reference::contract::KernelDesc,
        input: MatRef<'_, f32>,
        mut output: MatMut<'_, f32>,
        threads: usize,
    ) -> Result<()> {
        let p = &self.packed;
        let (m, k) = (input.rows(), p.k);
        let rr = self.reduce_range && self.common.profile == Profile::Fbgemm;
        // Every row's range first, on the caller: a non-finite input is reported before
        // anything is written.
        let mut row_qparams = Vec::with_capacity(m);
        for i in 0..m {
            let row = input.row_range(i, i + 1)?;
            // SAFETY: the kernel was resolved for this CPU, so its ISA is available.
            let (lo, hi) = unsafe { (desc.min_max)(&row) }.map_err(|e| match e {
                // The row's index -> the flat index in the whole input.
                Error::NonFinite { what, index } => Error::NonFinite {
                    what,
                    index: i * k + index,
                },
                other => other,
            })?;
            let qp = qlinear_reference::quantize::dynamic_qparams_from_min_max(lo, hi, rr);
            row_qparams.push(RowQParams {
                scale: qp.scale,
                zero_point: qp.zero_point,
            });
        }
        let epi = self.fold.per_row();
        let quantize = desc.quantize;
        let qparams = &row_qparams[..];
        self.run_quantized(
            desc,
            &input,
            &mut output,
            threads,
            Some(qparams),
            epi,
            &|x, q| {
                // `x` holds input rows from `x.first_row` on, `q` exactly their bytes.
                let first = x.first_row;
                let mut sums = Vec::with_capacity(x.view.rows());
                for (r, dst) in q.chunks_exact_mut(k).enumerate() {
                    let qp = qparams[first + r];
                    let row = x.view.row_range(r, r + 1)?;
                    // SAFETY: as in the per-tensor path; `dst` holds the row's k bytes.
                    let s = unsafe { quantize(&row, qp.scale, qp.zero_point, dst) };
                    // row_sum' = row_sum - K * zp_m (wrapping), the per-row fold.
                    sums.push(
                        s[0].wrapping_sub(DynamicEpilogue::row_sum_adjustment(k, qp.zero_point)),
                    );
                }
                Ok(sums)
            },
        )
    }

    /// The kernel run shared by both input quantizations: quantizes `input` into this
    /// thread's scratch with `quantize` and multiplies it with the packed weight.
    ///
    /// The quantization happens inside the driver's pieces (its `prepare` step): with
    /// a row cut each piece quantizes its own rows right before its kernel reads them,
    /// on its own thread, so the quantization runs in parallel and its bytes are still
    /// in cache for the GEMM; with a panel cut (few rows) the caller quantizes all rows
    /// first. `quantize` gets a run of rows and their `rows * k` scratch bytes, and
    /// returns the rows' sums as the kernels expect them (used only when some weight
    /// zero point is non-zero).
    #[allow(clippy::too_many_arguments)]
    fn run_quantized(
        &self,
        desc: &'static qlinear_reference::contract::KernelDesc,
        input: &MatRef<'_, f32>,
        output: &mut MatMut<'_, f32>,
        threads: usize,
        row_qparams: Option<&[RowQParams]>,
        epi: &DynamicEpilogue,
        quantize: &QuantizeRows<'_>,
    ) -> Result<()> {
        let p = &self.packed;
        let (m, k) = (input.rows(), p.k);
        let need_sums = !p.qparams.all_zero_points_zero();
        let mut row_sums = vec![0i32; if need_sums { m } else { 0 }];
        QUANTIZED.with(|cell| -> Result<()> {
            // Reuse this thread's buffer: a fresh allocation per call costs page faults
            // comparable to the quantization itself.
            let mut q = cell.take();
            q.resize(m * k, 0);
            let scratch = Scratch {
                q: q.as_mut_ptr(),
                sums: if need_sums {
                    row_sums.as_mut_ptr()
                } else {
                    std::ptr::null_mut()
                },
                k,
            };
            let mut args = gemm_args_at(p, scratch.q, k, m, scratch.sums, output);
            if let Some(r) = row_qparams {
                args.row_qparams = r.as_ptr();
            }
            let prepare = |rows: std::ops::Range<usize>| -> Result<()> {
                let x = InputRows {
                    view: input.row_range(rows.start, rows.end)?,
                    first_row: rows.start,
                };
                // SAFETY: the driver prepares each row range once, on one thread, before
                // any kernel reads it, and its ranges are disjoint and inside [0, m).
                let (q_rows, sums) = unsafe { scratch.rows_mut(rows) };
                let s = quantize(&x, q_rows)?;
                if let Some(dst) = sums {
                    dst.copy_from_slice(&s);
                }
                Ok(())
            };
            let gemm = desc.gemm_f32;
            let result = driver::run(desc, args, threads, Some(&prepare), &|chunk| {
                // SAFETY: as in `Linear::forward_with_threads`: supported kernel; `a` is
                // the dense m x k scratch, whose rows the driver has prepared before this
                // call; `row_sums` (if any) and `row_qparams` (if any) hold m entries;
                // `output` was validated as m x n with its stride; the packing and
                // epilogue match this kernel; chunks are disjoint.
                unsafe { gemm(chunk, epi) }
            });
            // Keep the buffer for the next call unless it is large (SCRATCH_KEEP_BYTES).
            if q.capacity() <= SCRATCH_KEEP_BYTES {
                cell.set(q);
            }
            result
        })
    }

    /// Allocating convenience: `input` holds `m` dense rows of `in_features` floats.
    pub fn forward_vec(&self, input: &[f32], m: usize) -> Result<Vec<f32>> {
        forward_into_vec(input, m, self.packed.k, self.packed.n, |x, y| {
            self.forward(x, y)
        })
    }

    /// The exact int8 weight and qparams.
    pub fn weight(&self) -> QuantizedWeight {
        self.packed.unpack()
    }
    /// The packed weight.
    pub fn packed(&self) -> &PackedWeights {
        &self.packed
    }
    /// The bias, if any.
    pub fn bias(&self) -> Option<&[f32]> {
        self.common.bias.as_deref()
    }
    /// Whether a ReLU is fused.
    pub fn relu(&self) -> bool {
        self.common.relu
    }
    /// The layer's primary kernel (see [`Linear::kernel_name`]); a call of `m` rows
    /// runs [`DynamicLinear::kernel_name_for`].
    pub fn kernel_name(&self) -> &'static str {
        self.packed.kernel_name()
    }
    /// The kernel that runs a call of `m` rows ([`PackedWeights::kernel_name_for`]).
    pub fn kernel_name_for(&self, m: usize) -> &'static str {
        self.packed.kernel_name_for(m)
    }
    /// The arithmetic profile.
    pub fn profile(&self) -> Profile {
        self.common.profile
    }
    /// Whether the input range is reduced to [0, 127]: the builder's setting, or the
    /// profile's default (`true` for [`Profile::Fbgemm`], `false` for
    /// [`Profile::Qnnpack`]). [`Profile::Qnnpack`] ignores it even when `true`.
    pub fn reduce_range(&self) -> bool {
        self.reduce_range
    }
    /// How the input is quantized (per tensor, the default, or per row); see
    /// [`InputQuantization`].
    pub fn input_quantization(&self) -> InputQuantization {
        self.input_quantization
    }
}
