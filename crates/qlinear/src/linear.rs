//! The layers users build: [`Linear`] (static, u8 -> u8, optional fused ReLU) and
//! [`DynamicLinear`] (f32 -> f32), mirroring `torch.ao.nn.quantized.Linear`,
//! `LinearReLU` and `torch.ao.nn.quantized.dynamic.Linear`.
//!
//! A layer owns its [`PackedWeights`] (packed once, at build time, for the kernel chosen
//! at build time) and, for the static layer, its folded epilogue. `forward` takes
//! `&self`, allocates only per-call scratch, and layers are `Send + Sync`.

use qlinear_reference::contract::{DynamicEpilogue, GemmArgs, StaticEpilogue};
use qlinear_reference::params::check_finite;
use qlinear_reference::{
    ActQParams, Error, MatMut, MatRef, Observer, Profile, Result, WeightQParams,
};

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
    GemmArgs {
        a: a.as_slice().as_ptr(),
        a_stride: a.stride(),
        m: a.rows(),
        k: p.k,
        packed: p.data.as_ptr(),
        n_begin: 0,
        n_end: p.n,
        row_sums: if row_sums.is_empty() {
            std::ptr::null()
        } else {
            row_sums.as_ptr()
        },
        out: out.as_mut_slice().as_mut_ptr(),
        out_stride: out.stride(),
    }
}

fn as_i8(bytes: &[u8]) -> Vec<i8> {
    bytes.iter().map(|&b| b as i8).collect()
}

/// Options shared by both layer builders.
#[derive(Debug, Clone)]
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

enum WeightSource {
    Plain(QuantizedWeight),
    Packed(PackedWeights),
}

impl WeightSource {
    fn into_packed(self, backend: Backend) -> Result<PackedWeights> {
        match self {
            WeightSource::Plain(w) => PackedWeights::new(&w, backend),
            // An explicit backend different from the packing's repacks; Auto keeps it.
            WeightSource::Packed(p) if backend == Backend::Auto || backend == p.backend() => Ok(p),
            WeightSource::Packed(p) => p.repack(backend),
        }
    }
}

/// Builder of a static [`Linear`].
pub struct LinearBuilder {
    weight: WeightSource,
    input: ActQParams,
    output: ActQParams,
    common: Common,
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
/// # Ok(()) }
/// ```
pub struct Linear {
    packed: PackedWeights,
    input: ActQParams,
    output: ActQParams,
    common: Common,
    epilogue: Option<StaticEpilogue>,
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

    fn refold(&mut self) {
        let p = &self.packed;
        self.epilogue = match p.engine {
            Engine::Reference => None,
            Engine::Kernel(_) => Some(StaticEpilogue::new(
                self.common.profile,
                self.input,
                &p.qparams,
                &p.col_sums[..p.n],
                p.k,
                self.common.bias.as_deref(),
                self.output,
                self.common.relu,
                p.col_sums.len(),
            )),
        };
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
        mut output: MatMut<'_, u8>,
        threads: usize,
    ) -> Result<()> {
        let p = &self.packed;
        check_io(p.k, p.n, &input, &output)?;
        match (&p.engine, &self.epilogue) {
            (Engine::Kernel(desc), Some(epi)) => {
                let row_sums = row_sums_if_needed(&input, &p.qparams);
                let args = gemm_args(p, &input, &row_sums, &mut output);
                let gemm = desc.gemm_u8;
                driver::run(desc, args, threads, &|chunk: &GemmArgs<u8>| {
                    // SAFETY: the engine was chosen by `resolve`, which checked the CPU
                    // supports this kernel; `check_io` and the view constructors proved
                    // that `a` covers m x k with its stride and `out` covers m x n with
                    // its stride; `packed` and the epilogue were built for this kernel's
                    // layout over n columns (padded to whole panels). The driver hands
                    // each call a disjoint sub-range of rows or columns.
                    unsafe { gemm(chunk, epi) }
                });
            }
            _ => {
                let y = qlinear_reference::static_linear(
                    &input,
                    self.input,
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
        // The input view first: it bounds `m` by the input's length before any
        // allocation is sized by it.
        let input = MatRef::dense(input, m, self.packed.k)?;
        let mut out = vec![0u8; output_len(m, self.packed.n)?];
        self.forward(input, MatMut::dense(&mut out, m, self.packed.n)?)?;
        Ok(out)
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
    /// Input qparams.
    pub fn input_qparams(&self) -> ActQParams {
        self.input
    }
    /// Output qparams.
    pub fn output_qparams(&self) -> ActQParams {
        self.output
    }
    /// The kernel that runs this layer, e.g. `"avx512vnni/gemm_8x32c4"`.
    pub fn kernel_name(&self) -> &'static str {
        self.packed.kernel_name()
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

/// Builder of a [`DynamicLinear`].
pub struct DynamicLinearBuilder {
    weight: WeightSource,
    reduce_range: bool,
    common: Common,
}

impl DynamicLinearBuilder {
    common_setters!();

    /// PyTorch's `reduce_range` for the input qparams (range [0, 127] instead of
    /// [0, 255]). Default `false`, like the functional op; torch's
    /// `nn.quantized.dynamic.Linear` module passes `true`. qlinear never saturates, so
    /// this is only for bit parity with torch. Ignored by [`Profile::Qnnpack`], as torch
    /// does.
    pub fn reduce_range(mut self, reduce_range: bool) -> Self {
        self.reduce_range = reduce_range;
        self
    }

    /// Validates, packs.
    pub fn build(self) -> Result<DynamicLinear> {
        let packed = self.weight.into_packed(self.common.backend)?;
        check_bias(self.common.bias.as_deref(), packed.n)?;
        Ok(DynamicLinear {
            packed,
            reduce_range: self.reduce_range,
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
/// # Ok(()) }
/// ```
pub struct DynamicLinear {
    packed: PackedWeights,
    reduce_range: bool,
    common: Common,
}

impl DynamicLinear {
    /// Starts a layer from int8 weights and qparams.
    pub fn builder(weight: QuantizedWeight) -> DynamicLinearBuilder {
        DynamicLinearBuilder {
            weight: WeightSource::Plain(weight),
            reduce_range: false,
            common: Common::default(),
        }
    }

    /// Starts a layer from packed weights.
    pub fn from_packed(packed: PackedWeights) -> DynamicLinearBuilder {
        DynamicLinearBuilder {
            weight: WeightSource::Packed(packed),
            reduce_range: false,
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
        let Engine::Kernel(desc) = p.engine else {
            let y = qlinear_reference::dynamic_linear(
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
        let rr = self.reduce_range && self.common.profile == Profile::Fbgemm;
        // SAFETY: the kernel was resolved for this CPU, so its ISA is available.
        let (lo, hi) = unsafe { (desc.min_max)(&input)? };
        let qp = qlinear_reference::quantize::dynamic_qparams_from_min_max(lo, hi, rr);
        let m = input.rows();
        QUANTIZED.with(|cell| -> Result<()> {
            // Reuse this thread's buffer: a fresh allocation per call costs page faults
            // comparable to the quantization itself.
            let mut q = cell.take();
            q.resize(m * p.k, 0);
            // SAFETY: as above; `q` holds m * k bytes.
            let mut row_sums = unsafe { (desc.quantize)(&input, qp.scale, qp.zero_point, &mut q) };
            if p.qparams.all_zero_points_zero() {
                row_sums.clear();
            }
            let qa = MatRef::dense(&q, m, p.k)?;
            let epi = DynamicEpilogue::new(
                self.common.profile,
                qp.scale,
                qp.zero_point,
                &p.qparams,
                &p.col_sums[..p.n],
                p.k,
                self.common.bias.as_deref(),
                self.common.relu,
                p.col_sums.len(),
            );
            let args = gemm_args(p, &qa, &row_sums, &mut output);
            let gemm = desc.gemm_f32;
            driver::run(desc, args, threads, &|chunk: &GemmArgs<f32>| {
                // SAFETY: as in `Linear::forward_with_threads`: supported kernel, `q` is a
                // dense m x k buffer, `output` was validated as m x n with its stride, the
                // packing and epilogue match this kernel, chunks are disjoint.
                unsafe { gemm(chunk, &epi) }
            });
            // Keep the buffer for the next call unless it is large (SCRATCH_KEEP_BYTES).
            if q.capacity() <= SCRATCH_KEEP_BYTES {
                cell.set(q);
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Allocating convenience: `input` holds `m` dense rows of `in_features` floats.
    pub fn forward_vec(&self, input: &[f32], m: usize) -> Result<Vec<f32>> {
        // The input view first: it bounds `m` by the input's length before any
        // allocation is sized by it.
        let input = MatRef::dense(input, m, self.packed.k)?;
        let mut out = vec![0f32; output_len(m, self.packed.n)?];
        self.forward(input, MatMut::dense(&mut out, m, self.packed.n)?)?;
        Ok(out)
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
    /// The kernel that runs this layer.
    pub fn kernel_name(&self) -> &'static str {
        self.packed.kernel_name()
    }
    /// The arithmetic profile.
    pub fn profile(&self) -> Profile {
        self.common.profile
    }
    /// Whether the input range is reduced to [0, 127].
    pub fn reduce_range(&self) -> bool {
        self.reduce_range
    }
}

// Accessors for layer serialization (`layer_io.rs`).
impl Linear {
    pub(crate) fn relu_flag(&self) -> bool {
        self.common.relu
    }
}
impl DynamicLinear {
    pub(crate) fn relu_flag(&self) -> bool {
        self.common.relu
    }
}
