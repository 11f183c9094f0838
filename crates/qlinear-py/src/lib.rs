//! `qlinear._native`: the Rust half of the `qlinear` Python package.
//!
//! The Python half (`python/qlinear/__init__.py`) holds the public classes; each wraps
//! one of the native layers below and adds what is easier in Python: normalizing
//! constructor arguments, turning `__array__` / `__dlpack__` objects and torch tensors
//! into numpy arrays and back, `from_torch`. Everything that touches the data is here:
//!
//! * **Inputs are read in place.** A C-contiguous array, or a 2-D array whose rows are
//!   contiguous at any non-negative row stride, becomes a [`MatRef`] over numpy's own
//!   buffer; any other layout (negative strides, column steps, broadcast rows) is
//!   copied once into C order. Leading dimensions are flattened as torch does.
//! * **The GIL is released** for the whole computation ([`Python::detach`]): the layer
//!   is immutable (`frozen` classes; the thread count is an atomic), so any number of
//!   Python threads can call one layer at once and get the reference's bits.
//! * **Outputs are Rust `Vec`s handed to numpy without a copy** (`PyArray1::from_vec`,
//!   then a reshape view).
//! * **Errors** are Python exceptions carrying the Rust error's message: `ValueError`
//!   for bad shapes, dtypes, qparams and data, [`BackendUnavailableError`] (a
//!   `RuntimeError`) for a backend this CPU cannot run, `OSError` for I/O,
//!   `MemoryError` when an output cannot be allocated. Nothing panics on user input.
//!
//! Like numpy's own functions, a call reads its input without holding the GIL: another
//! Python thread must not write to the same array while a call on it runs.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use numpy::ndarray::ArrayViewD;
use numpy::{
    dtype, Element, IxDyn, PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyMemoryError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use qlinear::safetensors::{Checkpoint, SafetensorsWriter};
use qlinear::{
    ActQParams, Backend, DynamicLinear, Error, InputQuantization, Linear, MatMut, MatRef, Observer,
    Profile, QuantizedWeight, WeightQParams,
};

pyo3::create_exception!(
    qlinear,
    BackendUnavailableError,
    PyRuntimeError,
    "The requested backend cannot run on this CPU, OS or build (the message says why)."
);

/// A qlinear error as the Python exception the package documents.
fn py_err(e: Error) -> PyErr {
    match e {
        Error::BackendUnavailable(_) => BackendUnavailableError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

fn io_err(e: std::io::Error, path: &std::path::Path) -> PyErr {
    PyOSError::new_err(format!("{}: {e}", path.display()))
}

fn parse_backend(name: &str) -> PyResult<Backend> {
    name.parse::<Backend>().map_err(py_err)
}

fn parse_profile(name: &str) -> PyResult<Profile> {
    match name.trim().to_ascii_lowercase().as_str() {
        "fbgemm" | "x86" => Ok(Profile::Fbgemm),
        "qnnpack" => Ok(Profile::Qnnpack),
        other => Err(PyValueError::new_err(format!(
            "unknown profile {other:?}: expected \"fbgemm\" (torch engines fbgemm / x86) or \"qnnpack\""
        ))),
    }
}

/// `(per_channel, symmetric)` of a torch qscheme name.
fn parse_qscheme(name: &str) -> PyResult<(bool, bool)> {
    match name {
        "per_tensor_symmetric" => Ok((false, true)),
        "per_tensor_affine" => Ok((false, false)),
        "per_channel_symmetric" => Ok((true, true)),
        "per_channel_affine" => Ok((true, false)),
        other => Err(PyValueError::new_err(format!(
            "unknown qscheme {other:?}: expected per_tensor_symmetric, per_tensor_affine, \
             per_channel_symmetric or per_channel_affine"
        ))),
    }
}

/// A numpy scale (f64 from Python) as the f32 the layers use, as torch's kernels cast it.
fn f32_scale(v: f64) -> f32 {
    v as f32
}

fn i32_zero_point(what: &'static str, v: i64, min: i64, max: i64) -> PyResult<i32> {
    if (min..=max).contains(&v) {
        Ok(v as i32)
    } else {
        Err(py_err(Error::ZeroPointOutOfRange {
            what,
            value: v,
            min,
            max,
        }))
    }
}

fn weight_qparams(
    scales: &[f64],
    zero_points: &[i64],
    per_channel: bool,
) -> PyResult<WeightQParams> {
    if scales.len() != zero_points.len() {
        return Err(PyValueError::new_err(format!(
            "weight_scale has {} entries but weight_zero_point has {}",
            scales.len(),
            zero_points.len()
        )));
    }
    let zps = zero_points
        .iter()
        .map(|&z| i32_zero_point("weight", z, -128, 127))
        .collect::<PyResult<Vec<i32>>>()?;
    let scales: Vec<f32> = scales.iter().map(|&s| f32_scale(s)).collect();
    if per_channel {
        Ok(WeightQParams::PerChannel {
            scales,
            zero_points: zps,
        })
    } else if scales.len() == 1 {
        Ok(WeightQParams::PerTensor {
            scale: scales[0],
            zero_point: zps[0],
        })
    } else {
        Err(PyValueError::new_err(format!(
            "a per-tensor weight has one scale and one zero point, got {}",
            scales.len()
        )))
    }
}

fn act_qparams(what: &'static str, scale: f64, zero_point: i64) -> PyResult<ActQParams> {
    let zp = i32_zero_point(what, zero_point, 0, 255)?;
    let q = ActQParams {
        scale: f32_scale(scale),
        zero_point: zp,
    };
    q.validate(what).map_err(py_err)?;
    Ok(q)
}

/// The dtype name numpy prints (`float64`, `object`, ...).
fn dtype_name(arr: &Bound<'_, PyUntypedArray>) -> String {
    arr.dtype()
        .str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// `obj` as a numpy array of element type `T` with `ndim` dimensions that Rust may read
/// in place: aligned for `T`, every stride a whole number of elements. Any other array
/// (a field of a packed record array, a view at an odd byte offset) is first copied by
/// `numpy.ascontiguousarray`, which also raises `MemoryError` for an impossible copy.
/// Negative and zero strides stay: [`InputRows::new`] and [`to_vec`] handle them.
fn typed_array<'py, T: Element>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    type_name: &str,
    ndim: Option<usize>,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let arr = obj.cast::<PyUntypedArray>().map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a numpy array, got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    if !arr.dtype().is_equiv_to(&dtype::<T>(obj.py())) {
        return Err(PyValueError::new_err(format!(
            "{what} must be {type_name}, got {}",
            dtype_name(arr)
        )));
    }
    if let Some(d) = ndim {
        if arr.ndim() != d {
            return Err(PyValueError::new_err(format!(
                "{what} must have {d} dimension{}, got shape {:?}",
                if d == 1 { "" } else { "s" },
                arr.shape()
            )));
        }
    }
    let typed = arr.cast::<PyArrayDyn<T>>()?;
    if rust_readable(typed) {
        return Ok(typed.clone());
    }
    Ok(ascontiguous(typed)?.cast_into::<PyArrayDyn<T>>()?)
}

/// Whether numpy's view of `arr` is one Rust may read element by element: the data
/// pointer aligned for `T` and every byte stride a multiple of `T`'s size (numpy allows
/// neither to hold; the `numpy` crate's views assume both).
fn rust_readable<T: Element>(arr: &Bound<'_, PyArrayDyn<T>>) -> bool {
    let size = std::mem::size_of::<T>() as isize;
    let ptr = arr.data();
    ptr.cast::<u8>().align_offset(std::mem::align_of::<T>()) == 0
        && arr.strides().iter().all(|&s| s % size == 0)
}

/// `numpy.ascontiguousarray(arr)`: a C-contiguous, aligned copy (or `arr` itself).
fn ascontiguous<'py, T>(arr: &Bound<'py, T>) -> PyResult<Bound<'py, PyAny>> {
    arr.py()
        .import("numpy")?
        .getattr("ascontiguousarray")?
        .call1((arr.as_any(),))
}

/// A copy of an array's elements in C order; `MemoryError` instead of an abort when the
/// copy cannot be allocated.
fn to_vec<T: Element + Copy>(arr: &Bound<'_, PyArrayDyn<T>>) -> PyResult<Vec<T>> {
    let ro = arr.readonly();
    let view = ro.as_array();
    let mut v = Vec::new();
    v.try_reserve_exact(view.len())
        .map_err(|_| PyMemoryError::new_err(format!("cannot copy {} elements", view.len())))?;
    v.extend(view.iter().copied());
    Ok(v)
}

/// The rows of an input read in place: `rows x cols` elements at row stride `stride`
/// over numpy's own buffer.
struct InputRows<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    stride: usize,
    /// Output shape: the input's leading dimensions, then `out_features`.
    lead: Vec<usize>,
}

/// The row stride (in elements) at which `view` (last dimension `cols`) can be read as
/// rows in place, or `None` when numpy must copy it first: C order (stride `cols`, any
/// number of dimensions), or 2-D with contiguous rows at a non-negative row stride of at
/// least `cols` (a column slice of a wider array). The one layout decision: the caller
/// copies on `None`, [`InputRows::new`] reads with the stride.
fn in_place_row_stride<T>(view: &ArrayViewD<'_, T>, cols: usize) -> Option<usize> {
    let strides = view.strides();
    if view.is_standard_layout() {
        Some(cols)
    } else if view.ndim() == 2 && strides[1] == 1 && strides[0] >= cols as isize {
        Some(strides[0] as usize)
    } else {
        None
    }
}

impl<'a, T: Copy> InputRows<'a, T> {
    /// Views `view` (last dimension `cols`) as rows, in place. `view` is of an array that
    /// [`typed_array`] made readable and [`in_place_row_stride`] accepted.
    fn new(view: &ArrayViewD<'a, T>, cols: usize) -> PyResult<Self> {
        let shape = view.shape();
        if shape.is_empty() {
            return Err(PyValueError::new_err(
                "input must have at least 1 dimension (a 0-d array has no rows)",
            ));
        }
        let last = shape[shape.len() - 1];
        if last != cols {
            return Err(py_err(Error::Shape {
                what: "input columns (in_features)",
                expected: cols,
                got: last,
            }));
        }
        let lead = shape[..shape.len() - 1].to_vec();
        let rows = lead
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| PyValueError::new_err("input has too many rows"))?;
        let stride = in_place_row_stride(view, cols)
            .ok_or_else(|| PyValueError::new_err("internal: input layout not readable in place"))?;
        let mut input = InputRows {
            data: &[],
            rows,
            cols,
            stride,
            lead,
        };
        if rows > 0 {
            // Row `rows - 1` ends `(rows - 1) * stride + cols` elements after the first.
            let len = (rows - 1) * stride + cols;
            // SAFETY: `view` is a live view of a numpy array (borrowed for 'a) that
            // `typed_array` checked is aligned for T with whole-element strides; its rows
            // start `stride` elements apart (`in_place_row_stride`), each with `cols`
            // contiguous elements, so the `len` elements from its first element all lie
            // inside the array's buffer (the last one is the last element of the last
            // row), and nothing writes to them through Rust while the view is borrowed.
            input.data = unsafe { std::slice::from_raw_parts(view.as_ptr(), len) };
        }
        Ok(input)
    }

    fn mat(&self) -> Result<MatRef<'_, T>, Error> {
        MatRef::new(self.data, self.rows, self.cols, self.stride)
    }

    fn out_shape(&self, n: usize) -> Vec<usize> {
        let mut s = self.lead.clone();
        s.push(n);
        s
    }
}

/// A zeroed output buffer, or `MemoryError`.
fn output_vec<U: Copy + Default>(rows: usize, n: usize) -> PyResult<Vec<U>> {
    let len = rows
        .checked_mul(n)
        .ok_or_else(|| PyMemoryError::new_err("output size overflows"))?;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| PyMemoryError::new_err(format!("cannot allocate {len} output elements")))?;
    v.resize(len, U::default());
    Ok(v)
}

fn into_array<'py, U: Element>(
    py: Python<'py>,
    v: Vec<U>,
    shape: Vec<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyArray1::from_vec(py, v).reshape(IxDyn(&shape))?.into_any())
}

type WeightTuple<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyArray1<i32>>,
    bool,
);

/// `(int8 [out, in], scales f32 [1 | out], zero points i32, per_channel)`.
fn weight_tuple<'py>(py: Python<'py>, w: &QuantizedWeight) -> PyResult<WeightTuple<'py>> {
    let (n, k) = (w.out_features(), w.in_features());
    let data = into_array(py, w.data().to_vec(), vec![n, k])?;
    let (scales, zps, per_channel) = match w.qparams() {
        WeightQParams::PerTensor { scale, zero_point } => (vec![*scale], vec![*zero_point], false),
        WeightQParams::PerChannel {
            scales,
            zero_points,
        } => (scales.clone(), zero_points.clone(), true),
    };
    Ok((
        data,
        PyArray1::from_vec(py, scales),
        PyArray1::from_vec(py, zps),
        per_channel,
    ))
}

fn bias_vec(bias: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<f32>>> {
    match bias {
        None => Ok(None),
        Some(b) if b.is_none() => Ok(None),
        Some(b) => Ok(Some(to_vec(&typed_array::<f32>(
            b,
            "bias",
            "float32",
            Some(1),
        )?)?)),
    }
}

fn quantized_weight(
    weight: &Bound<'_, PyAny>,
    scales: &[f64],
    zero_points: &[i64],
    per_channel: bool,
) -> PyResult<QuantizedWeight> {
    let arr = typed_array::<i8>(weight, "weight", "int8", Some(2))?;
    let shape = arr.shape().to_vec();
    let qparams = weight_qparams(scales, zero_points, per_channel)?;
    QuantizedWeight::new(to_vec(&arr)?, shape[0], shape[1], qparams).map_err(py_err)
}

/// Runs `run` on the rows of `x` (element type `T`, last dimension `k`) into a fresh
/// `[..., n]` array of `U`, with the GIL released. The one path every forward takes.
fn forward_rows<'py, T, U>(
    x: &Bound<'py, PyAny>,
    type_name: &str,
    k: usize,
    n: usize,
    run: impl FnOnce(MatRef<'_, T>, MatMut<'_, U>) -> Result<(), Error> + Send,
) -> PyResult<Bound<'py, PyAny>>
where
    T: Element + Copy + Sync,
    U: Element + Copy + Default + Send,
{
    let py = x.py();
    let mut arr = typed_array::<T>(x, "input", type_name, None)?;
    let in_place = in_place_row_stride(&arr.readonly().as_array(), k).is_some();
    if arr.ndim() > 0 && !in_place {
        // Negative or column strides, broadcast rows, N-D views that do not flatten:
        // one C-order copy, made (and its size checked) by numpy.
        arr = ascontiguous(&arr)?.cast_into::<PyArrayDyn<T>>()?;
    }
    let ro = arr.readonly();
    let rows = InputRows::new(&ro.as_array(), k)?;
    let mut y = output_vec::<U>(rows.rows, n)?;
    if rows.rows > 0 {
        let input = rows.mat().map_err(py_err)?;
        let out = &mut y;
        py.detach(move || {
            let m = input.rows();
            run(input, MatMut::dense(out, m, n)?)
        })
        .map_err(py_err)?;
    }
    into_array(py, y, rows.out_shape(n))
}

/// A static layer, built with its default input qparams (or a placeholder when it has
/// none: then every call must give its own).
struct StaticLayer {
    base: Linear,
    has_default_input: bool,
}

/// Placeholder input qparams of a layer built without default ones; never used for a
/// call (the call must then give its own).
const PLACEHOLDER_INPUT: ActQParams = ActQParams {
    scale: 1.0,
    zero_point: 0,
};

impl StaticLayer {
    /// The input qparams of a call: the call's own, or the layer's default.
    fn input_for(&self, scale: Option<f64>, zero_point: Option<i64>) -> PyResult<ActQParams> {
        match (scale, zero_point) {
            (None, None) if self.has_default_input => Ok(self.base.input_qparams()),
            (None, None) => Err(PyValueError::new_err(
                "this layer has no default input qparams: pass input_scale and \
                 input_zero_point (or a torch quint8 tensor, which carries its own)",
            )),
            (Some(s), Some(z)) => act_qparams("input", s, z),
            _ => Err(both_or_neither()),
        }
    }
}

fn both_or_neither() -> PyErr {
    PyValueError::new_err("give both input_scale and input_zero_point, or neither")
}

/// Either kind of layer; what both share is read through one set of methods.
enum Layer {
    /// `torch.ao.nn.quantized.Linear` / `LinearReLU`: u8 in, u8 out (or f32 around it).
    Static(StaticLayer),
    /// `torch.ao.nn.quantized.dynamic.Linear`: f32 in, f32 out.
    Dynamic(DynamicLinear),
}

/// Forwards a method both layer types have (`Linear` and `DynamicLinear` share their
/// accessor names but no trait).
macro_rules! either {
    ($layer:expr, $l:ident => $e:expr) => {
        match $layer {
            Layer::Static(s) => {
                let $l = &s.base;
                $e
            }
            Layer::Dynamic($l) => $e,
        }
    };
}

impl Layer {
    fn kind(&self) -> &'static str {
        match self {
            Layer::Static(_) => "static",
            Layer::Dynamic(_) => "dynamic",
        }
    }
    fn packed(&self) -> &qlinear::PackedWeights {
        either!(self, l => l.packed())
    }
    fn static_layer(&self, what: &str) -> PyResult<&StaticLayer> {
        match self {
            Layer::Static(s) => Ok(s),
            Layer::Dynamic(_) => Err(PyValueError::new_err(format!(
                "{what} belongs to static layers; this one is dynamic"
            ))),
        }
    }
    fn dynamic_layer(&self, what: &str) -> PyResult<&DynamicLinear> {
        match self {
            Layer::Dynamic(d) => Ok(d),
            Layer::Static(_) => Err(PyValueError::new_err(format!(
                "{what} belongs to dynamic layers; this one is static"
            ))),
        }
    }
}

/// Which layer kind a Python class wants (`"static"` / `"dynamic"`).
fn parse_kind(kind: &str) -> PyResult<bool> {
    match kind {
        "static" => Ok(true),
        "dynamic" => Ok(false),
        other => Err(PyValueError::new_err(format!(
            "unknown layer kind {other:?}"
        ))),
    }
}

/// One qlinear layer behind `qlinear.Linear` or `qlinear.DynamicLinear`. Immutable
/// (`frozen`) apart from the atomic thread count, so concurrent calls need no lock.
#[pyclass(module = "qlinear._native", frozen)]
struct NativeLayer {
    layer: Layer,
    threads: AtomicUsize,
}

impl NativeLayer {
    fn wrap(layer: Layer, threads: usize) -> Self {
        NativeLayer {
            layer,
            threads: AtomicUsize::new(threads),
        }
    }
}

#[pymethods]
impl NativeLayer {
    /// A dynamic layer (`torch.ao.nn.quantized.dynamic.Linear`).
    #[staticmethod]
    #[pyo3(signature = (weight, scales, zero_points, per_channel, bias, relu, profile, reduce_range, per_row, backend, threads))]
    #[allow(clippy::too_many_arguments)]
    fn new_dynamic(
        weight: &Bound<'_, PyAny>,
        scales: Vec<f64>,
        zero_points: Vec<i64>,
        per_channel: bool,
        bias: Option<&Bound<'_, PyAny>>,
        relu: bool,
        profile: &str,
        reduce_range: Option<bool>,
        per_row: bool,
        backend: &str,
        threads: usize,
    ) -> PyResult<Self> {
        let w = quantized_weight(weight, &scales, &zero_points, per_channel)?;
        let mut b = DynamicLinear::builder(w)
            .maybe_bias(bias_vec(bias)?)
            .relu(relu)
            .profile(parse_profile(profile)?)
            .backend(parse_backend(backend)?)
            .input_quantization(if per_row {
                InputQuantization::PerRow
            } else {
                InputQuantization::PerTensor
            });
        if let Some(rr) = reduce_range {
            b = b.reduce_range(rr);
        }
        let layer = b.build().map_err(py_err)?;
        Ok(Self::wrap(Layer::Dynamic(layer), threads))
    }

    /// A static layer (`torch.ao.nn.quantized.Linear`, `LinearReLU` with `relu`).
    #[staticmethod]
    #[pyo3(signature = (weight, scales, zero_points, per_channel, bias, scale, zero_point, input_scale, input_zero_point, relu, profile, backend, threads))]
    #[allow(clippy::too_many_arguments)]
    fn new_static(
        weight: &Bound<'_, PyAny>,
        scales: Vec<f64>,
        zero_points: Vec<i64>,
        per_channel: bool,
        bias: Option<&Bound<'_, PyAny>>,
        scale: f64,
        zero_point: i64,
        input_scale: Option<f64>,
        input_zero_point: Option<i64>,
        relu: bool,
        profile: &str,
        backend: &str,
        threads: usize,
    ) -> PyResult<Self> {
        let w = quantized_weight(weight, &scales, &zero_points, per_channel)?;
        let output = act_qparams("output", scale, zero_point)?;
        let (input, has_default) = match (input_scale, input_zero_point) {
            (Some(s), Some(z)) => (act_qparams("input", s, z)?, true),
            (None, None) => (PLACEHOLDER_INPUT, false),
            _ => return Err(both_or_neither()),
        };
        let layer = Linear::builder(w, input, output)
            .maybe_bias(bias_vec(bias)?)
            .relu(relu)
            .profile(parse_profile(profile)?)
            .backend(parse_backend(backend)?)
            .build()
            .map_err(py_err)?;
        Ok(Self::wrap(
            Layer::Static(StaticLayer {
                base: layer,
                has_default_input: has_default,
            }),
            threads,
        ))
    }

    /// A `kind` (`"static"` / `"dynamic"`) layer from the packed-weights layer format.
    /// `has_default_input = false` (pickle of a static layer built without input
    /// qparams) keeps the stored placeholder from becoming a default.
    #[staticmethod]
    #[pyo3(signature = (kind, data, backend, threads, has_default_input=true))]
    fn from_bytes(
        kind: &str,
        data: &[u8],
        backend: &str,
        threads: usize,
        has_default_input: bool,
    ) -> PyResult<Self> {
        let backend = parse_backend(backend)?;
        let layer = if parse_kind(kind)? {
            let (l, _) = Linear::from_bytes_for(data, backend).map_err(py_err)?;
            Layer::Static(StaticLayer {
                base: l,
                has_default_input,
            })
        } else {
            let (l, _) = DynamicLinear::from_bytes_for(data, backend).map_err(py_err)?;
            Layer::Dynamic(l)
        };
        Ok(Self::wrap(layer, threads))
    }

    /// A `kind` layer stored under `prefix` in a safetensors file.
    #[staticmethod]
    fn from_safetensors(
        kind: &str,
        path: PathBuf,
        prefix: &str,
        backend: &str,
        threads: usize,
    ) -> PyResult<Self> {
        let bytes = std::fs::read(&path).map_err(|e| io_err(e, &path))?;
        let ck = Checkpoint::parse(&bytes).map_err(py_err)?;
        let backend = parse_backend(backend)?;
        let layer = if parse_kind(kind)? {
            let l = Linear::from_safetensors_for(&ck, prefix, backend)
                .and_then(|b| b.build())
                .map_err(py_err)?;
            Layer::Static(StaticLayer {
                base: l,
                has_default_input: true,
            })
        } else {
            let l = DynamicLinear::from_safetensors_for(&ck, prefix, backend)
                .and_then(|b| b.build())
                .map_err(py_err)?;
            Layer::Dynamic(l)
        };
        Ok(Self::wrap(layer, threads))
    }

    /// Dynamic: float32 `x` -> float32. Static: uint8 `x` -> uint8 (the quantized
    /// layer), float32 `x` -> float32 (QuantStub -> layer -> DeQuantStub), with the call's
    /// input qparams or the layer's default ones.
    #[pyo3(signature = (x, input_scale=None, input_zero_point=None))]
    fn forward<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        input_scale: Option<f64>,
        input_zero_point: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let threads = self.threads.load(Ordering::Relaxed);
        let (k, n) = (
            self.layer.packed().in_features(),
            self.layer.packed().out_features(),
        );
        let s = match &self.layer {
            Layer::Dynamic(d) => {
                if input_scale.is_some() || input_zero_point.is_some() {
                    return Err(PyValueError::new_err(
                        "a dynamic layer chooses its input qparams itself: \
                         input_scale / input_zero_point are for static layers",
                    ));
                }
                return forward_rows::<f32, f32>(x, "float32", k, n, |a, y| {
                    d.forward_with_threads(a, y, threads)
                });
            }
            Layer::Static(s) => s,
        };
        let py = x.py();
        let dtype_is = |d: Bound<'py, numpy::PyArrayDescr>| {
            x.cast::<PyUntypedArray>()
                .map(|a| a.dtype().is_equiv_to(&d))
                .unwrap_or(false)
        };
        let layer = &s.base;
        if dtype_is(dtype::<u8>(py)) {
            let q = s.input_for(input_scale, input_zero_point)?;
            forward_rows::<u8, u8>(x, "uint8", k, n, |a, y| {
                layer.forward_with_input_qparams(q, a, y, threads)
            })
        } else if dtype_is(dtype::<f32>(py)) {
            let q = s.input_for(input_scale, input_zero_point)?;
            forward_rows::<f32, f32>(x, "float32", k, n, |a, y| {
                layer.forward_f32_with_input_qparams(q, a, y, threads)
            })
        } else {
            // typed_array's error names what `x` is (not an array, or its dtype).
            let named = typed_array::<u8>(x, "input", "uint8 (quantized) or float32", None).err();
            Err(named.unwrap_or_else(|| {
                PyValueError::new_err("input must be uint8 (quantized) or float32")
            }))
        }
    }

    /// Seconds per call of the Rust `forward` alone (preallocated output, no Python in
    /// the loop), over `iters` calls on the dense float32 `x` (dynamic layers): the
    /// baseline the benchmark subtracts to get the Python call overhead. Not API.
    fn _rust_seconds_per_call(&self, x: &Bound<'_, PyAny>, iters: usize) -> PyResult<f64> {
        let d = self.layer.dynamic_layer("_rust_seconds_per_call")?;
        let (k, n) = (d.packed().in_features(), d.packed().out_features());
        let arr = typed_array::<f32>(x, "input", "float32", Some(2))?;
        if !arr.is_c_contiguous() {
            return Err(PyValueError::new_err("a C-contiguous input, please"));
        }
        let ro = arr.readonly();
        let rows = InputRows::new(&ro.as_array(), k)?;
        let input = rows.mat().map_err(py_err)?;
        let mut y = output_vec::<f32>(rows.rows, n)?;
        let threads = self.threads.load(Ordering::Relaxed);
        let out = &mut y;
        x.py()
            .detach(move || {
                let m = input.rows();
                let start = std::time::Instant::now();
                for _ in 0..iters.max(1) {
                    d.forward_with_threads(input, MatMut::dense(out, m, n)?, threads)?;
                }
                Ok(start.elapsed().as_secs_f64() / iters.max(1) as f64)
            })
            .map_err(py_err)
    }

    fn weight<'py>(&self, py: Python<'py>) -> PyResult<WeightTuple<'py>> {
        weight_tuple(py, &either!(&self.layer, l => l.weight()))
    }

    fn bias<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f32>>> {
        either!(&self.layer, l => l.bias()).map(|b| PyArray1::from_slice(py, b))
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &either!(&self.layer, l => l.to_bytes()))
    }

    fn save_safetensors(&self, path: PathBuf, prefix: &str) -> PyResult<()> {
        let mut w = SafetensorsWriter::new();
        either!(&self.layer, l => l.write_safetensors(prefix, &mut w)).map_err(py_err)?;
        w.save(&path).map_err(|e| io_err(e, &path))
    }

    fn kernel_name_for(&self, m: usize) -> &'static str {
        self.layer.packed().kernel_name_for(m)
    }

    #[getter]
    fn kind(&self) -> &'static str {
        self.layer.kind()
    }
    #[getter]
    fn in_features(&self) -> usize {
        self.layer.packed().in_features()
    }
    #[getter]
    fn out_features(&self) -> usize {
        self.layer.packed().out_features()
    }
    #[getter]
    fn relu(&self) -> bool {
        either!(&self.layer, l => l.relu())
    }
    #[getter]
    fn profile(&self) -> &'static str {
        either!(&self.layer, l => l.profile()).name()
    }
    #[getter]
    fn per_channel(&self) -> bool {
        self.layer.packed().qparams().is_per_channel()
    }
    #[getter]
    fn kernel_name(&self) -> &'static str {
        self.layer.packed().kernel_name()
    }
    #[getter]
    fn backend(&self) -> &'static str {
        self.layer.packed().backend().name()
    }
    #[getter]
    fn get_threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }
    #[setter]
    fn set_threads(&self, threads: usize) {
        self.threads.store(threads, Ordering::Relaxed);
    }
    /// Dynamic layers: 7-bit activations.
    #[getter]
    fn reduce_range(&self) -> PyResult<bool> {
        Ok(self.layer.dynamic_layer("reduce_range")?.reduce_range())
    }
    /// Dynamic layers: per-row input quantization.
    #[getter]
    fn per_row(&self) -> PyResult<bool> {
        let d = self.layer.dynamic_layer("per_row")?;
        Ok(d.input_quantization() == InputQuantization::PerRow)
    }
    /// Static layers: output scale.
    #[getter]
    fn scale(&self) -> PyResult<f32> {
        Ok(self
            .layer
            .static_layer("scale")?
            .base
            .output_qparams()
            .scale)
    }
    /// Static layers: output zero point.
    #[getter]
    fn zero_point(&self) -> PyResult<i32> {
        Ok(self
            .layer
            .static_layer("zero_point")?
            .base
            .output_qparams()
            .zero_point)
    }
    /// Static layers: the default input scale, if any.
    #[getter]
    fn input_scale(&self) -> PyResult<Option<f32>> {
        let s = self.layer.static_layer("input_scale")?;
        Ok(s.has_default_input.then(|| s.base.input_qparams().scale))
    }
    /// Static layers: the default input zero point, if any.
    #[getter]
    fn input_zero_point(&self) -> PyResult<Option<i32>> {
        let s = self.layer.static_layer("input_zero_point")?;
        Ok(s.has_default_input
            .then(|| s.base.input_qparams().zero_point))
    }
}

/// Backend names this CPU runs, best first, `"reference"` last.
#[pyfunction]
fn available_backends() -> Vec<&'static str> {
    qlinear::available_backends()
        .into_iter()
        .map(Backend::name)
        .collect()
}

/// float32 `[out, in]` -> `(int8, scales, zero points, per_channel)` with torch's
/// observer for `qscheme`.
#[pyfunction]
#[pyo3(signature = (weight, qscheme, reduce_range))]
fn quantize_weight<'py>(
    weight: &Bound<'py, PyAny>,
    qscheme: &str,
    reduce_range: bool,
) -> PyResult<WeightTuple<'py>> {
    let (per_channel, symmetric) = parse_qscheme(qscheme)?;
    let arr = typed_array::<f32>(weight, "weight", "float32", Some(2))?;
    let shape = arr.shape().to_vec();
    let observer = Observer {
        per_channel,
        symmetric,
        reduce_range,
    };
    let w = QuantizedWeight::from_float(&to_vec(&arr)?, shape[0], shape[1], observer)
        .map_err(py_err)?;
    weight_tuple(weight.py(), &w)
}

/// torch's `quantize_per_tensor(x, scale, zero_point, torch.quint8)`: float32 of any
/// shape -> uint8 of the same shape.
#[pyfunction]
fn quantize_per_tensor<'py>(
    x: &Bound<'py, PyAny>,
    scale: f64,
    zero_point: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let q = act_qparams("activation", scale, zero_point)?;
    let arr = typed_array::<f32>(x, "input", "float32", None)?;
    let shape = arr.shape().to_vec();
    let v = to_vec(&arr)?;
    let out = x.py().detach(|| q.quantize_vec(&v)).map_err(py_err)?;
    into_array(x.py(), out, shape)
}

/// torch's `dequantize` of a quint8 tensor: uint8 of any shape -> float32.
#[pyfunction]
fn dequantize<'py>(
    q: &Bound<'py, PyAny>,
    scale: f64,
    zero_point: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let p = act_qparams("activation", scale, zero_point)?;
    let arr = typed_array::<u8>(q, "input", "uint8", None)?;
    let shape = arr.shape().to_vec();
    let v = to_vec(&arr)?;
    let out = q.py().detach(|| p.dequantize_vec(&v));
    into_array(q.py(), out, shape)
}

/// The `qlinear._native` extension module.
#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeLayer>()?;
    m.add_function(wrap_pyfunction!(available_backends, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_weight, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_per_tensor, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add(
        "BackendUnavailableError",
        m.py().get_type::<BackendUnavailableError>(),
    )?;
    m.add("K_LIMIT", qlinear::K_LIMIT)?;
    Ok(())
}
