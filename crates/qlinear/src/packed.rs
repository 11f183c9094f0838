//! Quantized weights, and the same weights packed once for one kernel.
//!
//! [`PackedWeights`] depends on the weight only (bytes, qparams, column sums): never on
//! activation or output parameters, so one packing serves static, dynamic and M = 1
//! calls, and a layer's output scale can change without repacking.
//!
//! ## Serialized form
//!
//! [`PackedWeights::to_bytes`] writes format version 2, described byte by byte in
//! [`crate::packed_format`] (and `docs/packed-format.md`): a 64-byte fixed header, the
//! kernel name, qparams, column sums and an optional layer record, zero fill up to a
//! 64-byte-aligned offset, the packed data, and an xxh3-64 checksum. The loaders check
//! every field directly and return [`Error::CorruptPacked`] rather than trusting any
//! of it.
//!
//! ## Storage: owned or borrowed
//!
//! A packing's bytes live either in an owned 64-byte-aligned buffer (packing, copying
//! loads) or inside the caller's buffer: a `&'static [u8]`
//! ([`PackedWeights::from_static`]) or a shared owner such as an `Arc<Mmap>`
//! ([`PackedWeights::from_shared`]). Borrowing is safe code: the `PackedWeights` holds
//! the `&'static` slice or a clone of the `Arc`, so the bytes outlive it, and the
//! kernels see a `&[u8]` of exactly the validated length. The owner's `as_ref()` must
//! return the same bytes on every call (as `Vec<u8>`, `Box<[u8]>` or a read-only
//! memory map do); an owner that breaks this gets a panic (the slice no longer holds the
//! packed data) or wrong outputs, never out-of-bounds access. A memory map of a file
//! that another process modifies is the same situation, and the reason a map is created
//! with `unsafe` in the first place.

use std::ops::Deref;
use std::sync::Arc;

use qlinear_reference::contract::PackedLayout;
use qlinear_reference::params::check_layer_dims;
use qlinear_reference::{pack, Error, Observer, Result, WeightQParams};

use crate::backend::{available_backends, resolve, Backend, Engine};
use crate::kernel_set::{env_overrides_auto, scope_for, KernelSet, Scope};
use crate::packed_format::{self, LayerRecord, LoadReport, Parsed};
use crate::packing;

pub use crate::packing::AlignedBytes;

/// An `N x K` int8 weight (out_features x in_features, like torch) with its qparams:
/// what `from_reference` takes and what `weight()` / unpack gives back, exactly.
///
/// ```
/// use qlinear::{Observer, QuantizedWeight, WeightQParams};
/// # fn main() -> Result<(), qlinear::Error> {
/// // From int8 values and qparams (torch's `Linear.from_reference`)...
/// let w = QuantizedWeight::new(
///     vec![10, -20, 30, -40, 50, -60],
///     2, 3,
///     WeightQParams::PerChannel { scales: vec![0.01, 0.02], zero_points: vec![0, 0] },
/// )?;
/// assert_eq!(w.dequantize()[1], -20.0 * 0.01);
///
/// // ... or from f32 with a torch observer (`from_float`).
/// let f = [0.5f32, -1.0, 0.25, 2.0, 0.0, -0.75];
/// let q = QuantizedWeight::from_float(&f, 2, 3, Observer::PER_TENSOR_SYMMETRIC)?;
/// assert_eq!(q.data()[3], 127); // the largest magnitude maps to 127
///
/// // Bad input is an error, never a panic.
/// assert!(QuantizedWeight::new(vec![0; 5], 2, 3, WeightQParams::PerTensor {
///     scale: 0.1, zero_point: 0 }).is_err());
/// # Ok(()) }
/// ```
///
/// `Debug` prints the shape and qparams kind, not the values.
#[derive(Clone, PartialEq)]
pub struct QuantizedWeight {
    data: Vec<i8>,
    n: usize,
    k: usize,
    qparams: WeightQParams,
}

impl std::fmt::Debug for QuantizedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantizedWeight")
            .field("out_features", &self.n)
            .field("in_features", &self.k)
            .field(
                "qparams",
                &if self.qparams.is_per_channel() {
                    "per-channel"
                } else {
                    "per-tensor"
                },
            )
            .finish_non_exhaustive()
    }
}

impl QuantizedWeight {
    /// Validates and wraps an `n x k` row-major i8 weight.
    pub fn new(data: Vec<i8>, n: usize, k: usize, qparams: WeightQParams) -> Result<Self> {
        check_layer_dims(n, k)?;
        let expected = n
            .checked_mul(k)
            .ok_or(Error::Dimension("n * k overflows"))?;
        if data.len() != expected {
            return Err(Error::Shape {
                what: "weight elements (n * k)",
                expected,
                got: data.len(),
            });
        }
        qparams.validate(n)?;
        Ok(QuantizedWeight {
            data,
            n,
            k,
            qparams,
        })
    }

    /// Quantizes an `n x k` f32 weight the way torch's `from_float` does: run the
    /// observer, then `quantize_per_tensor` / `quantize_per_channel` clamped to the
    /// observer's range.
    pub fn from_float(w: &[f32], n: usize, k: usize, observer: Observer) -> Result<Self> {
        let qparams = qlinear_reference::observe_weight(w, n, k, observer)?;
        let data = qlinear_reference::quantize_weight(w, n, k, &qparams, observer.quant_range())?;
        QuantizedWeight::new(data, n, k, qparams)
    }

    /// The `n x k` int8 values.
    pub fn data(&self) -> &[i8] {
        &self.data
    }
    /// out_features.
    pub fn out_features(&self) -> usize {
        self.n
    }
    /// in_features.
    pub fn in_features(&self) -> usize {
        self.k
    }
    /// The qparams.
    pub fn qparams(&self) -> &WeightQParams {
        &self.qparams
    }
    /// Dequantized f32 weight (`(q - zp) * scale`).
    pub fn dequantize(&self) -> Vec<f32> {
        self.data
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let j = i / self.k;
                (q as i32 - self.qparams.zero_point(j)) as f32 * self.qparams.scale(j)
            })
            .collect()
    }
}

/// Where a packing's bytes live (see the module docs): the kernels only see `&[u8]`.
#[derive(Clone)]
pub(crate) enum PackedData {
    /// A 64-byte-aligned buffer of our own.
    Owned(AlignedBytes),
    /// Inside a `'static` buffer (validated, 64-byte aligned).
    Static(&'static [u8]),
    /// `owner.as_ref()[offset..offset + len]` (validated, 64-byte aligned when loaded).
    Shared {
        owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
        offset: usize,
        len: usize,
    },
}

impl Deref for PackedData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            PackedData::Owned(v) => v,
            PackedData::Static(s) => s,
            // Panics (never reads out of bounds) if the owner breaks its contract of
            // returning the same bytes every time.
            PackedData::Shared { owner, offset, len } => {
                &(**owner).as_ref()[*offset..*offset + *len]
            }
        }
    }
}

impl PackedData {
    fn kind(&self) -> &'static str {
        match self {
            PackedData::Owned(_) => "owned",
            PackedData::Static(_) => "borrowed (static)",
            PackedData::Shared { .. } => "borrowed (shared)",
        }
    }
}

/// A weight packed for one engine, with its pack-time column sums and the set of
/// kernels that may run it.
///
/// The packing is made for one **primary** kernel ([`kernel_name`](Self::kernel_name)).
/// Other kernels of the same packed layout, supported here and allowed by the backend
/// choice, run the same bytes for the row counts they are best at: a call of `m` rows
/// runs [`kernel_name_for(m)`](Self::kernel_name_for) (module `kernel_set` of this
/// crate; e.g. `avx512vnni/gemv_1x32c4` for `m = 1` and `avx512vnni/gemm_8x32c4`
/// otherwise). Every kernel gives the same bits.
///
/// Serialize it with [`to_bytes`](PackedWeights::to_bytes) (format version 2,
/// documented in [`crate::packed_format`]) and load it on any CPU with
/// [`from_bytes`](PackedWeights::from_bytes) and friends: bytes whose layout a local
/// kernel uses are taken as they are (copied, or used in place by
/// [`from_shared`](PackedWeights::from_shared) / [`from_static`](PackedWeights::from_static)),
/// others are unpacked and repacked for the local kernel, and the [`LoadReport`] says
/// which happened.
///
/// ```
/// use qlinear::{Backend, DynamicLinear, Observer, PackedWeights, QuantizedWeight};
/// # fn main() -> Result<(), qlinear::Error> {
/// let f: Vec<f32> = (0..64 * 48).map(|i| (i as f32 * 0.01).sin()).collect();
/// let w = QuantizedWeight::from_float(&f, 64, 48, Observer::PER_CHANNEL_SYMMETRIC)?;
/// let packed = PackedWeights::new(&w, Backend::Auto)?; // once, for this CPU's best kernel
/// assert_eq!(packed.unpack(), w); // exact
///
/// // Serialized, then loaded for the scalar reference: another layout, so a repack.
/// let bytes = packed.to_bytes();
/// let (on_reference, report) = PackedWeights::from_bytes_for(&bytes, Backend::Reference)?;
/// assert_eq!(report.repacked, packed.layout() != on_reference.layout());
///
/// // One packing serves any number of layers.
/// let layer = DynamicLinear::from_packed(packed).build()?;
/// assert_eq!(layer.forward_vec(&[0.5; 48], 1)?.len(), 64);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PackedWeights {
    pub(crate) engine: Engine,
    /// The kernels that may run this packing (built with it), picked per call by M.
    pub(crate) kernels: KernelSet,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) qparams: WeightQParams,
    pub(crate) layout: PackedLayout,
    pub(crate) data: PackedData,
    /// `n_pad` column sums (zeros past `n`).
    pub(crate) col_sums: Vec<i32>,
}

impl PackedWeights {
    /// Packs `w` for `backend` (resolved once, here).
    pub fn new(w: &QuantizedWeight, backend: Backend) -> Result<Self> {
        let engine = resolve(backend)?;
        Ok(Self::for_engine(w, engine, scope_for(backend)))
    }

    /// Packs a borrowed `n x k` row-major int8 weight with its qparams for `backend`,
    /// without first copying it into a [`QuantizedWeight`]: the packing is the only
    /// copy (e.g. straight from a memory-mapped checkpoint). Validates exactly as
    /// [`QuantizedWeight::new`] does.
    ///
    /// ```
    /// use qlinear::{Backend, PackedWeights, QuantizedWeight, WeightQParams};
    /// # fn main() -> Result<(), qlinear::Error> {
    /// let q = WeightQParams::PerTensor { scale: 0.1, zero_point: 0 };
    /// let data = [1i8, -2, 3, -4, 5, -6];
    /// let p = PackedWeights::from_slice(&data, 2, 3, q.clone(), Backend::Auto)?;
    /// assert_eq!(p.unpack(), QuantizedWeight::new(data.to_vec(), 2, 3, q)?);
    /// # Ok(()) }
    /// ```
    pub fn from_slice(
        data: &[i8],
        n: usize,
        k: usize,
        qparams: WeightQParams,
        backend: Backend,
    ) -> Result<Self> {
        check_layer_dims(n, k)?;
        let expected = n
            .checked_mul(k)
            .ok_or(Error::Dimension("n * k overflows"))?;
        if data.len() != expected {
            return Err(Error::Shape {
                what: "weight elements (n * k)",
                expected,
                got: data.len(),
            });
        }
        qparams.validate(n)?;
        let engine = resolve(backend)?;
        let packing::Packed {
            layout,
            data,
            col_sums,
        } = packing::pack_weight(data, n, k, engine);
        Ok(PackedWeights {
            engine,
            kernels: KernelSet::new(engine, scope_for(backend)),
            n,
            k,
            qparams,
            layout,
            data: PackedData::Owned(data),
            col_sums,
        })
    }

    pub(crate) fn for_engine(w: &QuantizedWeight, engine: Engine, scope: Scope) -> Self {
        let packing::Packed {
            layout,
            data,
            col_sums,
        } = packing::pack_weight(&w.data, w.n, w.k, engine);
        PackedWeights {
            engine,
            kernels: KernelSet::new(engine, scope),
            n: w.n,
            k: w.k,
            qparams: w.qparams.clone(),
            layout,
            data: PackedData::Owned(data),
            col_sums,
        }
    }

    /// The primary kernel of this packing, e.g. `"avx512vnni/gemm_8x32c4"`: the kernel
    /// the backend choice resolved to, whose layout the bytes are in and whose name
    /// [`to_bytes`](Self::to_bytes) writes. It runs every call that no other kernel of
    /// the set prefers; the kernel of a call with `m` rows is
    /// [`kernel_name_for`](Self::kernel_name_for), and [`kernel_names`](Self::kernel_names)
    /// lists them all.
    pub fn kernel_name(&self) -> &'static str {
        self.engine.kernel_name()
    }
    /// The kernel that runs a call of `m` rows (the whole call, every thread), e.g.
    /// `"avx512vnni/gemv_1x32c4"` for `m = 1` and `"avx512vnni/gemm_8x32c4"` for
    /// `m = 64` on an AVX-512 VNNI CPU under [`Backend::Auto`].
    pub fn kernel_name_for(&self, m: usize) -> &'static str {
        self.kernels.pick(m).kernel_name()
    }
    /// Every kernel that may run this packing, in pick order (`["reference"]` for the
    /// reference backend).
    pub fn kernel_names(&self) -> Vec<&'static str> {
        if self.kernels.kernels().is_empty() {
            return vec![self.kernels.primary().kernel_name()];
        }
        self.kernels.kernels().iter().map(|k| k.name).collect()
    }
    /// The backend of that kernel.
    pub fn backend(&self) -> Backend {
        self.engine.backend()
    }
    /// out_features.
    pub fn out_features(&self) -> usize {
        self.n
    }
    /// in_features.
    pub fn in_features(&self) -> usize {
        self.k
    }
    /// The weight qparams.
    pub fn qparams(&self) -> &WeightQParams {
        &self.qparams
    }
    /// Bytes of packed weight data.
    pub fn packed_len(&self) -> usize {
        self.data.len()
    }

    /// Recovers the exact int8 weight and qparams (torch's `unpack`).
    pub fn unpack(&self) -> QuantizedWeight {
        QuantizedWeight {
            data: pack::unpack(&self.data, self.n, self.k, self.layout),
            n: self.n,
            k: self.k,
            qparams: self.qparams.clone(),
        }
    }

    /// The same weight packed for another backend.
    pub fn repack(&self, backend: Backend) -> Result<Self> {
        PackedWeights::new(&self.unpack(), backend)
    }

    /// This packing with the kernel set of a named `backend` whose primary kernel it
    /// already has (same bytes, no repack): only that backend's kernels, for every M.
    pub(crate) fn restricted_to(mut self, backend: Backend) -> Self {
        self.kernels = KernelSet::new(self.engine, scope_for(backend));
        self
    }

    /// `w` packed for the registered kernel `name` alone (every M runs it): the hook
    /// behind `qlinear bench --kernel` and the kernel tests.
    pub(crate) fn for_kernel(w: &QuantizedWeight, name: &str) -> std::result::Result<Self, String> {
        let compiled: Vec<&'static qlinear_reference::contract::KernelDesc> =
            crate::backend::compiled_kernels().collect();
        let list = |only_supported: bool| {
            compiled
                .iter()
                .filter(|k| !only_supported || (k.is_supported)())
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(&desc) = compiled.iter().find(|k| k.name == name) else {
            return Err(format!(
                "unknown kernel `{name}` (registered: {})",
                list(false)
            ));
        };
        if !(desc.is_supported)() {
            return Err(format!(
                "kernel `{name}` is not supported on this CPU (supported here: {})",
                list(true)
            ));
        }
        Ok(Self::for_engine(w, Engine::Kernel(desc), Scope::Only))
    }
}

impl std::fmt::Debug for PackedWeights {
    /// A short summary: kernel, shape, layout, qparams kind and storage, never the bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let qparams = match &self.qparams {
            WeightQParams::PerTensor { scale, zero_point } => {
                format!("per-tensor (scale {scale:e}, zero point {zero_point})")
            }
            WeightQParams::PerChannel { .. } => format!("per-channel ({} channels)", self.n),
        };
        f.debug_struct("PackedWeights")
            .field("kernel", &self.kernel_name())
            .field("kernels", &self.kernel_names())
            .field("out_features", &self.n)
            .field("in_features", &self.k)
            .field("layout", &self.layout)
            .field("qparams", &qparams)
            .field("packed_bytes", &self.data.len())
            .field("storage", &self.data.kind())
            .finish()
    }
}

/// How a loader may keep the input's bytes.
#[derive(Clone)]
pub(crate) enum Borrow {
    /// Copy (or repack) into our own buffer.
    No,
    Static(&'static [u8]),
    Shared(Arc<dyn AsRef<[u8]> + Send + Sync>),
}

impl PackedWeights {
    /// The packed layout `(nr, kr)` of the bytes.
    pub fn layout(&self) -> PackedLayout {
        self.layout
    }

    /// True when the packed data lives in a buffer the caller handed to
    /// [`from_static`](PackedWeights::from_static) or
    /// [`from_shared`](PackedWeights::from_shared) (no copy was made).
    pub fn is_borrowed(&self) -> bool {
        !matches!(self.data, PackedData::Owned(_))
    }

    /// Serializes the packing: format version 2 ([`crate::packed_format`]), weights
    /// only (no layer record).
    pub fn to_bytes(&self) -> Vec<u8> {
        packed_format::write(&self.write_parts(), None)
    }

    pub(crate) fn write_parts(&self) -> packed_format::WriteParts<'_> {
        packed_format::WriteParts {
            kernel_name: self.kernel_name(),
            n: self.n,
            k: self.k,
            layout: self.layout,
            qparams: &self.qparams,
            col_sums: &self.col_sums,
            data: &self.data,
        }
    }

    /// Parses and validates serialized packed weights (version 2, or version 1) for the
    /// best local kernel (see [`from_bytes_for`](PackedWeights::from_bytes_for)). A layer
    /// record in the file is validated and ignored.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_bytes_for(bytes, Backend::Auto).map(|(p, _)| p)
    }

    /// [`from_bytes`](PackedWeights::from_bytes), also saying what the load did.
    pub fn from_bytes_with_report(bytes: &[u8]) -> Result<(Self, LoadReport)> {
        Self::from_bytes_for(bytes, Backend::Auto)
    }

    /// Parses and validates serialized packed weights for `backend`, copying them into
    /// an owned aligned buffer.
    ///
    /// * `Backend::Auto` (with `QLINEAR_BACKEND` unset, blank or `auto`): the stored
    ///   kernel when this CPU runs it as a backend's primary kernel, else another local
    ///   primary kernel with the same layout `(nr, kr)`; the bytes are then used as
    ///   they are, by every local kernel of that layout (a packing made for one forced
    ///   kernel, `unstable::pack_for_kernel`, loads with its layout's full set). When no local kernel has the layout (bytes packed for
    ///   an ISA this CPU lacks, or for the reference), the weight is unpacked and packed
    ///   for the best local kernel.
    /// * A named backend (or `QLINEAR_BACKEND`): that backend's kernel, repacking when
    ///   its layout differs.
    ///
    /// [`LoadReport::repacked`] says whether a repack happened.
    pub fn from_bytes_for(bytes: &[u8], backend: Backend) -> Result<(Self, LoadReport)> {
        load(bytes, backend, Borrow::No).map(|(p, r, _)| (p, r))
    }

    /// Loads from a `'static` buffer (an `include_bytes!`, a leaked buffer), using the
    /// packed data in place when it is 64-byte aligned in memory and a local kernel
    /// uses its layout ([`LoadReport::zero_copy`]); otherwise copies or repacks, as
    /// [`from_bytes`](PackedWeights::from_bytes) does.
    pub fn from_static(bytes: &'static [u8]) -> Result<(Self, LoadReport)> {
        load(bytes, Backend::Auto, Borrow::Static(bytes)).map(|(p, r, _)| (p, r))
    }

    /// Loads from a shared owner of the file's bytes (`Arc<Vec<u8>>`, `Arc<Mmap>`, ...),
    /// keeping a clone of the `Arc` and using the packed data in place when it is
    /// 64-byte aligned in memory and a local kernel uses its layout
    /// ([`LoadReport::zero_copy`]); otherwise copies or repacks. The owner's `as_ref()`
    /// must return the same bytes every time (module docs).
    pub fn from_shared<O>(owner: Arc<O>) -> Result<(Self, LoadReport)>
    where
        O: AsRef<[u8]> + Send + Sync + 'static,
    {
        Self::from_shared_for(owner, Backend::Auto)
    }

    /// [`from_shared`](PackedWeights::from_shared) for a given backend (kernel choice as
    /// in [`from_bytes_for`](PackedWeights::from_bytes_for)).
    pub fn from_shared_for<O>(owner: Arc<O>, backend: Backend) -> Result<(Self, LoadReport)>
    where
        O: AsRef<[u8]> + Send + Sync + 'static,
    {
        load_shared(owner, backend).map(|(p, r, _)| (p, r))
    }
}

/// The stored layout and kernel name, read without validation (to choose the engine
/// before the data pass); `None` when the header is too short or malformed, which the
/// full parse then reports.
fn peek(bytes: &[u8]) -> Option<(PackedLayout, &[u8])> {
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(o..o + 4)?.try_into().ok()?))
    };
    match u32_at(4)? {
        2 => {
            let name_len = (u32_at(36)? as usize).min(packed_format::MAX_NAME_LEN);
            let layout = PackedLayout {
                nr: u32_at(24)? as usize,
                kr: u32_at(28)? as usize,
            };
            Some((layout, bytes.get(64..64 + name_len)?))
        }
        1 => {
            let name_len = (u32_at(8)? as usize).min(packed_format::MAX_NAME_LEN);
            let name = bytes.get(12..12 + name_len)?;
            let o = 12 + name_len + 16;
            let layout = PackedLayout {
                nr: u32_at(o)? as usize,
                kr: u32_at(o + 4)? as usize,
            };
            Some((layout, name))
        }
        _ => None,
    }
}

fn engine_layout(e: Engine) -> PackedLayout {
    match e {
        Engine::Reference => PackedLayout::ROW_MAJOR,
        Engine::Kernel(d) => d.layout,
    }
}

/// The engine that will run a file with this stored layout and kernel name.
fn target_engine(stored: Option<(PackedLayout, &[u8])>, backend: Backend) -> Result<Engine> {
    // Whether the variable overrides Auto, read as `resolve` reads it: blank or `auto`
    // is no override (the stored kernel is kept); any other value, valid or not, is
    // left to `resolve` (which reports an unknown or non-UTF-8 name).
    let env_overrides = env_overrides_auto();
    if backend != Backend::Auto || env_overrides {
        return resolve(backend);
    }
    if let Some((layout, name)) = stored {
        let kernels = || {
            available_backends()
                .into_iter()
                .filter(|&b| b != Backend::Reference)
                .filter_map(|b| resolve(b).ok())
        };
        let named = kernels().find(|e| e.kernel_name().as_bytes() == name);
        if let Some(e) = named.filter(|&e| engine_layout(e) == layout) {
            return Ok(e);
        }
        if let Some(e) = kernels().find(|&e| engine_layout(e) == layout) {
            return Ok(e);
        }
    }
    resolve(Backend::Auto)
}

/// Borrowing arguments for a shared owner: the owner as a trait object and its bytes.
/// [`load`] from a shared owner of the bytes, keeping a clone of the owner when the
/// data is used in place.
pub(crate) fn load_shared<O>(
    owner: Arc<O>,
    backend: Backend,
) -> Result<(PackedWeights, LoadReport, Option<LayerRecord>)>
where
    O: AsRef<[u8]> + Send + Sync + 'static,
{
    let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = owner;
    let bytes: &[u8] = (*owner).as_ref();
    load(bytes, backend, Borrow::Shared(owner.clone()))
}

/// The one loader behind every `from_*`: parse and validate, then use the bytes in
/// place, copy them, or repack them.
pub(crate) fn load(
    bytes: &[u8],
    backend: Backend,
    borrow: Borrow,
) -> Result<(PackedWeights, LoadReport, Option<LayerRecord>)> {
    let stored = peek(bytes);
    let engine = target_engine(stored, backend)?;
    let local = engine_layout(engine);
    let same_layout = stored.is_some_and(|(l, _)| l == local);
    let mut zero_copy = false;
    let (parsed, data) = if same_layout {
        if matches!(borrow, Borrow::No) {
            let mut buf = AlignedBytes::new(64);
            let parsed = packed_format::parse(bytes, Some(&mut buf))?;
            (parsed, Some(PackedData::Owned(buf)))
        } else {
            let parsed = packed_format::parse(bytes, None)?;
            let offset = parsed.data.as_ptr() as usize - bytes.as_ptr() as usize;
            let aligned = (parsed.data.as_ptr() as usize).is_multiple_of(packed_format::DATA_ALIGN);
            let len = parsed.data.len();
            let data = match borrow {
                Borrow::Static(s) if aligned => PackedData::Static(&s[offset..offset + len]),
                Borrow::Shared(owner) if aligned => PackedData::Shared { owner, offset, len },
                _ => {
                    let mut buf = AlignedBytes::with_capacity(64, len);
                    crate::packing::advise_spare_capacity(&mut buf);
                    buf.extend_from_slice(parsed.data);
                    PackedData::Owned(buf)
                }
            };
            zero_copy = !matches!(data, PackedData::Owned(_));
            (parsed, Some(data))
        }
    } else {
        (packed_format::parse(bytes, None)?, None)
    };
    let Parsed {
        version,
        kernel_name,
        n,
        k,
        layout,
        qparams,
        col_sums,
        data: stored_data,
        layer,
    } = parsed;
    let report = |kernel: &'static str, repacked: bool| LoadReport {
        version,
        stored_kernel: kernel_name.to_string(),
        stored_layout: layout,
        kernel,
        repacked,
        zero_copy,
        layer: layer.as_ref().map(LayerRecord::kind),
    };
    let packed = match data {
        Some(data) => PackedWeights {
            engine,
            kernels: KernelSet::new(engine, scope_for(backend)),
            n,
            k,
            qparams,
            layout,
            data,
            col_sums,
        },
        None => {
            let w = QuantizedWeight {
                data: pack::unpack(stored_data, n, k, layout),
                n,
                k,
                qparams,
            };
            let p = PackedWeights::for_engine(&w, engine, scope_for(backend));
            if p.col_sums[..n] != col_sums[..n] {
                return Err(Error::CorruptPacked(
                    "column sums do not match the packed weight",
                ));
            }
            p
        }
    };
    let r = report(engine.kernel_name(), data_is_repacked(&packed, layout));
    Ok((packed, r, layer))
}

fn data_is_repacked(p: &PackedWeights, stored: PackedLayout) -> bool {
    p.layout != stored
}
