//! Layers to and from [safetensors](https://github.com/huggingface/safetensors)
//! checkpoints, and quantizing a float checkpoint's linear weights
//! (feature `safetensors`, on by default).
//!
//! ## Naming convention
//!
//! A layer lives under a prefix `P` (any tensor-name prefix, e.g.
//! `encoder.layer.0.attention.self.query`). Tensor names follow torch where torch has
//! one: torch's reference quantized `Linear` stores `weight_scale`,
//! `weight_zero_point` and `weight_axis`; the static quantized `Linear` calls its
//! output qparams `scale` and `zero_point`.
//!
//! | tensor | dtype (written) | also read | shape | when |
//! |---|---|---|---|---|
//! | `P.weight` | `I8` | | `[out, in]` | always |
//! | `P.weight_scale` | `F32` | `F64` if exactly an f32 | `[]` per-tensor, `[out]` per-channel | always |
//! | `P.weight_zero_point` | `I32` | `I64` (range-checked) | as `P.weight_scale` | always |
//! | `P.weight_axis` | `I64` | `I32` | `[]`, value 0 | per-channel (optional on read) |
//! | `P.bias` | `F32` | `F16`, `BF16` (exact) | `[out]` | optional |
//! | `P.input_scale`, `P.scale` | `F32` | `F64` if exact | `[]` (or `[1]`) | static layers |
//! | `P.input_zero_point`, `P.zero_point` | `I32` | `I64` | `[]` (or `[1]`) | static layers |
//!
//! Layer settings live in the file's `__metadata__` string map:
//!
//! | key | values | default when absent |
//! |---|---|---|
//! | `qlinear.P.kind` | `static`, `dynamic` | any: a static load then needs the activation tensors |
//! | `qlinear.P.relu` | `true`, `false` | `false` |
//! | `qlinear.P.reduce_range` | `true`, `false` (dynamic layers) | per profile, as [`DynamicLinear`] |
//! | `qlinear.P.input_quantization` | `per_tensor`, `per_row` (dynamic layers) | `per_tensor` |
//! | `qlinear.P.profile` | `fbgemm` (or `x86`), `qnnpack` | `qlinear.profile`, then `fbgemm` |
//! | `qlinear.profile` | as above: the whole file's profile | `fbgemm` |
//!
//! Unknown keys are ignored; a malformed value of one of these keys is an
//! [`Error::Checkpoint`] naming the key. Asking for a static layer where the metadata
//! says `dynamic` (or the other way round) is an error too.
//!
//! ## Design
//!
//! * **Zero copy until packing.** [`Checkpoint::parse`] borrows the file's bytes (a
//!   `memmap2::Mmap` works); the layer loaders pack the `I8` weight straight from the
//!   borrowed bytes with [`PackedWeights::from_slice`], so the packing is the weight's
//!   only copy. Small `F32` / `I32` tensors may sit at any offset in the file: they are
//!   decoded element by element with `from_le_bytes`, never by casting the bytes to a
//!   typed slice.
//! * **Why [`Checkpoint`] and not a bare [`SafeTensors`].** The safetensors crate does
//!   not hand out `__metadata__` once a file is parsed, so [`Checkpoint`] keeps the
//!   parsed tensors and the metadata together ([`Checkpoint::from_parts`] wraps an
//!   already parsed [`SafeTensors`]).
//! * **Builders.** `Linear::from_safetensors` / `DynamicLinear::from_safetensors` return
//!   the layer's builder with the file's bias and settings applied, so the caller can
//!   still set threads (or override a setting). The weight is packed at load for
//!   [`Backend::Auto`]; `*_from_safetensors_for` packs for another backend directly
//!   (setting `.backend()` on the builder afterwards works too but repacks).
//! * **Every malformed file is an [`Error::Checkpoint`]**, never a panic: not a
//!   safetensors file at all (the `tensor` is then `(file)`), missing tensors, wrong
//!   dtypes or shapes, invalid scales or zero points, non-finite values, bad metadata.
//!
//! ## Quantizing a float checkpoint
//!
//! [`quantize_checkpoint`] replaces every selected float `P.weight` (2-D, name ending
//! in `.weight`, `F32` / `F16` / `BF16`, matching [`QuantizeOptions`]' include and
//! exclude globs; embeddings excluded by default) with `P.weight`, `P.weight_scale`,
//! `P.weight_zero_point` (and `P.weight_axis` when per-channel) chosen by torch's
//! `MinMaxObserver` / `PerChannelMinMaxObserver`, exactly as
//! [`DynamicLinear::from_float`] does, and marks `qlinear.P.kind = dynamic` with the
//! options' activation settings (`qlinear.P.reduce_range`, full range unless asked,
//! and `qlinear.P.input_quantization`), so the file loads as the layer it was made
//! for. Every other tensor is copied unchanged (dtype, shape and bytes), and existing metadata is
//! kept.
//!
//! ```
//! use qlinear::safetensors::{Checkpoint, SafetensorsWriter};
//! use qlinear::{DynamicLinear, Observer};
//! # fn main() -> Result<(), qlinear::Error> {
//! let w: Vec<f32> = (0..4 * 3).map(|i| (i as f32 * 0.37).sin()).collect();
//! let layer = DynamicLinear::from_float(&w, 4, 3, Observer::PER_CHANNEL_SYMMETRIC)?
//!     .bias(vec![0.5, -0.5, 0.25, 0.0])
//!     .relu(true)
//!     .build()?;
//!
//! let mut writer = SafetensorsWriter::new();
//! layer.write_safetensors("encoder.dense", &mut writer)?;
//! let bytes = writer.to_bytes()?;
//!
//! let ckpt = Checkpoint::parse(&bytes)?;
//! let loaded = DynamicLinear::from_safetensors(&ckpt, "encoder.dense")?.threads(1).build()?;
//! assert_eq!(loaded.weight(), layer.weight());
//! assert!(loaded.relu());
//! let x = [0.1, -2.0, 3.5];
//! assert_eq!(loaded.forward_vec(&x, 1)?, layer.forward_vec(&x, 1)?);
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use ::safetensors::tensor::TensorView;
use ::safetensors::View;
pub use ::safetensors::{Dtype, SafeTensors};
use qlinear_reference::params::check_layer_dims;
use qlinear_reference::{ActQParams, Error, Observer, Profile, Result, WeightQParams};

use crate::backend::Backend;
use crate::packed_format::weight_qparams_from;
use crate::packing::bytes_as_i8;
use crate::{
    DynamicLinear, DynamicLinearBuilder, InputQuantization, Linear, LinearBuilder, PackedWeights,
    QuantizedWeight,
};

/// The `tensor` of an [`Error::Checkpoint`] about the file as a whole.
pub const FILE: &str = "(file)";

fn err(tensor: impl Into<String>, problem: impl Into<String>) -> Error {
    Error::Checkpoint {
        tensor: tensor.into(),
        problem: problem.into(),
    }
}

fn invalid_data(e: Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// A parsed safetensors file: its tensors, borrowed from the file's bytes, and its
/// `__metadata__` (empty when the file has none).
///
/// Parsing reads the JSON header only; tensor data stays in the caller's buffer.
pub struct Checkpoint<'data> {
    tensors: SafeTensors<'data>,
    metadata: HashMap<String, String>,
}

impl std::fmt::Debug for Checkpoint<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("tensors", &self.tensors.len())
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl<'data> Checkpoint<'data> {
    /// Parses a whole safetensors file (e.g. a memory map of it) without copying any
    /// tensor data.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] with `tensor` [`FILE`] when the bytes are not a valid
    /// safetensors file (truncated, header length beyond the file, bad JSON, tensor
    /// offsets that do not match the shapes or the file length).
    pub fn parse(bytes: &'data [u8]) -> Result<Self> {
        let bad = |e: ::safetensors::SafeTensorError| {
            err(FILE, format!("not a valid safetensors file: {e}"))
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
        let tensors = SafeTensors::deserialize(bytes).map_err(bad)?;
        Ok(Checkpoint::from_parts(tensors, header.metadata().clone()))
    }

    /// Wraps tensors parsed elsewhere with the file's `__metadata__` (from
    /// [`SafeTensors::read_metadata`]; `None` when the file has none).
    pub fn from_parts(
        tensors: SafeTensors<'data>,
        metadata: Option<HashMap<String, String>>,
    ) -> Self {
        Checkpoint {
            tensors,
            metadata: metadata.unwrap_or_default(),
        }
    }

    /// The parsed tensors.
    pub fn tensors(&self) -> &SafeTensors<'data> {
        &self.tensors
    }

    /// The `__metadata__` map (empty when the file has none).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The prefixes `P` of every `I8` tensor `P.weight`, sorted: the layers this file
    /// may hold in qlinear's convention.
    pub fn layer_prefixes(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .tensors
            .iter()
            .filter(|(_, v)| v.dtype() == Dtype::I8)
            .filter_map(|(name, _)| name.strip_suffix(".weight").map(str::to_string))
            .collect();
        out.sort();
        out
    }

    fn get(&self, name: &str) -> Result<TensorView<'data>> {
        self.tensors
            .tensor(name)
            .map_err(|_| err(name, "missing tensor"))
    }

    fn opt(&self, name: &str) -> Option<TensorView<'data>> {
        self.tensors.tensor(name).ok()
    }
}

// ---------------------------------------------------------------------------------------
// Decoding tensors (little-endian, element by element: no alignment assumed).

fn shape_str(shape: &[usize]) -> String {
    format!("{shape:?}")
}

fn wrong_dtype(name: &str, got: Dtype, want: &str) -> Error {
    err(name, format!("dtype {got}, expected {want}"))
}

/// F32, F16 or BF16 values as f32 (the half conversions are exact).
fn float_values(name: &str, v: &TensorView<'_>) -> Result<Vec<f32>> {
    let d = v.data();
    Ok(match v.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => return Err(wrong_dtype(name, other, "F32, F16 or BF16")),
    })
}

/// F32 scales, or F64 ones that are exactly f32 values (torch keeps per-channel scales
/// in double).
fn scale_values(name: &str, v: &TensorView<'_>) -> Result<Vec<f32>> {
    let d = v.data();
    match v.dtype() {
        Dtype::F32 => Ok(d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        Dtype::F64 => d
            .chunks_exact(8)
            .enumerate()
            .map(|(i, c)| {
                let x = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                let f = x as f32;
                if f as f64 == x || x.is_nan() {
                    Ok(f)
                } else {
                    Err(err(
                        name,
                        format!("F64 scale {x:e} at index {i} is not exactly an f32 value"),
                    ))
                }
            })
            .collect(),
        other => Err(wrong_dtype(name, other, "F32 (or F64 holding f32 values)")),
    }
}

/// I32 or I64 values.
fn int_values(name: &str, v: &TensorView<'_>) -> Result<Vec<i64>> {
    let d = v.data();
    match v.dtype() {
        Dtype::I32 => Ok(d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect()),
        Dtype::I64 => Ok(d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()),
        other => Err(wrong_dtype(name, other, "I32 or I64")),
    }
}

fn is_scalar_shape(shape: &[usize]) -> bool {
    shape.is_empty() || shape == [1]
}

fn check_scales(name: &str, scales: &[f32]) -> Result<()> {
    for (i, &s) in scales.iter().enumerate() {
        if !(s.is_finite() && s > 0.0) {
            return Err(err(
                name,
                format!("scale {s} at index {i} must be finite and > 0"),
            ));
        }
    }
    Ok(())
}

fn check_zero_points(name: &str, zps: &[i64], (lo, hi): (i64, i64)) -> Result<Vec<i32>> {
    zps.iter()
        .enumerate()
        .map(|(i, &z)| {
            if (lo..=hi).contains(&z) {
                Ok(z as i32)
            } else {
                Err(err(
                    name,
                    format!("zero point {z} at index {i} is outside [{lo}, {hi}]"),
                ))
            }
        })
        .collect()
}

/// A scalar activation qparams pair (`P.input_scale` + `P.input_zero_point`, or
/// `P.scale` + `P.zero_point`).
fn read_act_qparams(ck: &Checkpoint<'_>, scale_name: &str, zp_name: &str) -> Result<ActQParams> {
    let sv = ck.get(scale_name)?;
    if !is_scalar_shape(sv.shape()) {
        return Err(err(
            scale_name,
            format!("shape {}, expected [] (a scalar)", shape_str(sv.shape())),
        ));
    }
    let scale = scale_values(scale_name, &sv)?;
    check_scales(scale_name, &scale)?;
    let zv = ck.get(zp_name)?;
    if !is_scalar_shape(zv.shape()) {
        return Err(err(
            zp_name,
            format!("shape {}, expected [] (a scalar)", shape_str(zv.shape())),
        ));
    }
    let zp = check_zero_points(zp_name, &int_values(zp_name, &zv)?, (0, 255))?;
    Ok(ActQParams {
        scale: scale[0],
        zero_point: zp[0],
    })
}

/// The validated `P.weight` view and its `(out, in)`.
fn read_weight_view<'d>(ck: &Checkpoint<'d>, p: &str) -> Result<(TensorView<'d>, usize, usize)> {
    let name = format!("{p}.weight");
    let v = ck.get(&name)?;
    if v.dtype() != Dtype::I8 {
        return Err(wrong_dtype(&name, v.dtype(), "I8"));
    }
    let &[n, k] = v.shape() else {
        return Err(err(
            &name,
            format!(
                "shape {}, expected 2-D [out_features, in_features]",
                shape_str(v.shape())
            ),
        ));
    };
    check_layer_dims(n, k).map_err(|e| err(&name, e.to_string()))?;
    match n.checked_mul(k) {
        Some(len) if len == v.data().len() => Ok((v, n, k)),
        _ => Err(err(&name, "data length does not match the shape")),
    }
}

fn read_weight_qparams(ck: &Checkpoint<'_>, p: &str, n: usize) -> Result<WeightQParams> {
    let sname = format!("{p}.weight_scale");
    let zname = format!("{p}.weight_zero_point");
    let sv = ck.get(&sname)?;
    let per_channel = match sv.shape() {
        [] => false,
        [len] if *len == n => true,
        other => {
            return Err(err(
                &sname,
                format!(
                    "shape {}, expected [] (per-tensor) or [{n}] (per-channel, out_features)",
                    shape_str(other)
                ),
            ))
        }
    };
    let scales = scale_values(&sname, &sv)?;
    check_scales(&sname, &scales)?;
    let zv = ck.get(&zname)?;
    if zv.shape() != sv.shape() {
        return Err(err(
            &zname,
            format!(
                "shape {}, expected {} (the shape of {sname})",
                shape_str(zv.shape()),
                shape_str(sv.shape())
            ),
        ));
    }
    let zps = check_zero_points(&zname, &int_values(&zname, &zv)?, (-128, 127))?;
    let aname = format!("{p}.weight_axis");
    if let Some(av) = ck.opt(&aname) {
        if !is_scalar_shape(av.shape()) {
            return Err(err(
                &aname,
                format!("shape {}, expected []", shape_str(av.shape())),
            ));
        }
        let axis = int_values(&aname, &av)?;
        if axis[0] != 0 {
            return Err(err(
                &aname,
                format!(
                    "axis {}: only axis 0 (output channels) is supported",
                    axis[0]
                ),
            ));
        }
    }
    Ok(weight_qparams_from(per_channel, scales, zps))
}

fn read_packed(ck: &Checkpoint<'_>, p: &str, backend: Backend) -> Result<PackedWeights> {
    let (v, n, k) = read_weight_view(ck, p)?;
    let qparams = read_weight_qparams(ck, p, n)?;
    // Backend errors (unknown / unavailable) are not about the file: pass them through.
    PackedWeights::from_slice(bytes_as_i8(v.data()), n, k, qparams, backend)
}

fn read_bias(ck: &Checkpoint<'_>, p: &str, n: usize) -> Result<Option<Vec<f32>>> {
    let name = format!("{p}.bias");
    let Some(v) = ck.opt(&name) else {
        return Ok(None);
    };
    if v.shape() != [n] {
        return Err(err(
            &name,
            format!(
                "shape {}, expected [{n}] (out_features)",
                shape_str(v.shape())
            ),
        ));
    }
    let b = float_values(&name, &v)?;
    if let Some(i) = b.iter().position(|x| !x.is_finite()) {
        return Err(err(
            &name,
            format!("non-finite value {} at index {i}", b[i]),
        ));
    }
    Ok(Some(b))
}

// ---------------------------------------------------------------------------------------
// Metadata.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Static,
    Dynamic,
}

struct LayerMeta {
    kind: Option<Kind>,
    relu: bool,
    reduce_range: Option<bool>,
    input_quantization: InputQuantization,
    profile: Profile,
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(err(
            key,
            format!("metadata value {v:?}, expected true or false"),
        )),
    }
}

fn parse_profile(key: &str, v: &str) -> Result<Profile> {
    match v {
        "fbgemm" | "x86" => Ok(Profile::Fbgemm),
        "qnnpack" => Ok(Profile::Qnnpack),
        _ => Err(err(
            key,
            format!("metadata value {v:?}, expected fbgemm, x86 or qnnpack"),
        )),
    }
}

fn parse_input_quantization(key: &str, v: &str) -> Result<InputQuantization> {
    match v {
        "per_tensor" => Ok(InputQuantization::PerTensor),
        "per_row" => Ok(InputQuantization::PerRow),
        _ => Err(err(
            key,
            format!("metadata value {v:?}, expected per_tensor or per_row"),
        )),
    }
}

/// The metadata value of an [`InputQuantization`].
fn input_quantization_name(mode: InputQuantization) -> &'static str {
    match mode {
        InputQuantization::PerTensor => "per_tensor",
        InputQuantization::PerRow => "per_row",
    }
}

fn layer_meta(ck: &Checkpoint<'_>, p: &str) -> Result<LayerMeta> {
    let m = &ck.metadata;
    let key = |s: &str| format!("qlinear.{p}.{s}");
    let kind = match m.get(&key("kind")) {
        None => None,
        Some(v) if v == "static" => Some(Kind::Static),
        Some(v) if v == "dynamic" => Some(Kind::Dynamic),
        Some(v) => {
            return Err(err(
                key("kind"),
                format!("metadata value {v:?}, expected static or dynamic"),
            ))
        }
    };
    let relu = match m.get(&key("relu")) {
        None => false,
        Some(v) => parse_bool(&key("relu"), v)?,
    };
    let reduce_range = match m.get(&key("reduce_range")) {
        None => None,
        Some(v) => Some(parse_bool(&key("reduce_range"), v)?),
    };
    let input_quantization = match m.get(&key("input_quantization")) {
        None => InputQuantization::PerTensor,
        Some(v) => parse_input_quantization(&key("input_quantization"), v)?,
    };
    let profile = match (m.get(&key("profile")), m.get("qlinear.profile")) {
        (Some(v), _) => parse_profile(&key("profile"), v)?,
        (None, Some(v)) => parse_profile("qlinear.profile", v)?,
        (None, None) => Profile::Fbgemm,
    };
    Ok(LayerMeta {
        kind,
        relu,
        reduce_range,
        input_quantization,
        profile,
    })
}

fn check_kind(p: &str, meta: &LayerMeta, want: Kind) -> Result<()> {
    match meta.kind {
        Some(k) if k != want => Err(err(
            format!("qlinear.{p}.kind"),
            format!(
                "the metadata says this layer is {}, not {}",
                if k == Kind::Static {
                    "static"
                } else {
                    "dynamic"
                },
                if want == Kind::Static {
                    "static"
                } else {
                    "dynamic"
                }
            ),
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// Loading layers.

impl QuantizedWeight {
    /// Reads `P.weight`, `P.weight_scale`, `P.weight_zero_point` (and checks
    /// `P.weight_axis` if present) into an owned weight. Layers load without this copy:
    /// see [`Linear::from_safetensors`].
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the missing or invalid tensor.
    pub fn from_safetensors(ck: &Checkpoint<'_>, prefix: &str) -> Result<QuantizedWeight> {
        let (v, n, k) = read_weight_view(ck, prefix)?;
        let qparams = read_weight_qparams(ck, prefix, n)?;
        QuantizedWeight::new(bytes_as_i8(v.data()).to_vec(), n, k, qparams)
    }

    /// Adds `P.weight` (`I8 [out, in]`), `P.weight_scale` (`F32`),
    /// `P.weight_zero_point` (`I32`), both `[]` per-tensor or `[out]` per-channel, and
    /// for per-channel weights `P.weight_axis` (`I64 []`, 0).
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when the writer already holds one of these names.
    pub fn write_safetensors(&self, prefix: &str, w: &mut SafetensorsWriter<'_>) -> Result<()> {
        write_weight(
            prefix,
            self.data(),
            [self.out_features(), self.in_features()],
            self.qparams(),
            w,
        )
    }
}

fn write_weight(
    p: &str,
    data: &[i8],
    [n, k]: [usize; 2],
    q: &WeightQParams,
    w: &mut SafetensorsWriter<'_>,
) -> Result<()> {
    w.add_i8(format!("{p}.weight"), vec![n, k], data)?;
    match q {
        WeightQParams::PerTensor { scale, zero_point } => {
            w.add_f32(format!("{p}.weight_scale"), vec![], &[*scale])?;
            w.add_i32(format!("{p}.weight_zero_point"), vec![], &[*zero_point])?;
        }
        WeightQParams::PerChannel {
            scales,
            zero_points,
        } => {
            w.add_f32(format!("{p}.weight_scale"), vec![n], scales)?;
            w.add_i32(format!("{p}.weight_zero_point"), vec![n], zero_points)?;
            w.add(
                format!("{p}.weight_axis"),
                Dtype::I64,
                vec![],
                0i64.to_le_bytes().to_vec(),
            )?;
        }
    }
    Ok(())
}

impl Linear {
    /// Starts a static layer from a checkpoint: the weight (packed for
    /// [`Backend::Auto`] straight from the file's bytes), its qparams, the bias if
    /// present, `P.input_scale` / `P.input_zero_point`, the output's `P.scale` /
    /// `P.zero_point`, and the metadata's ReLU and profile. Set threads (or override a
    /// setting) on the builder, then [`LinearBuilder::build`].
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the tensor or metadata key at fault (also when the
    /// metadata says the layer is dynamic); backend errors as [`Backend::Auto`] gives.
    pub fn from_safetensors(ck: &Checkpoint<'_>, prefix: &str) -> Result<LinearBuilder> {
        Linear::from_safetensors_for(ck, prefix, Backend::Auto)
    }

    /// [`Linear::from_safetensors`], packing for `backend` (the builder keeps it).
    pub fn from_safetensors_for(
        ck: &Checkpoint<'_>,
        prefix: &str,
        backend: Backend,
    ) -> Result<LinearBuilder> {
        let meta = layer_meta(ck, prefix)?;
        check_kind(prefix, &meta, Kind::Static)?;
        let input = read_act_qparams(
            ck,
            &format!("{prefix}.input_scale"),
            &format!("{prefix}.input_zero_point"),
        )?;
        let output = read_act_qparams(
            ck,
            &format!("{prefix}.scale"),
            &format!("{prefix}.zero_point"),
        )?;
        let packed = read_packed(ck, prefix, backend)?;
        let bias = read_bias(ck, prefix, packed.out_features())?;
        Ok(Linear::from_packed(packed, input, output)
            .maybe_bias(bias)
            .relu(meta.relu)
            .profile(meta.profile)
            .backend(backend))
    }

    /// Reads a whole safetensors file and builds the static layer under `prefix` with
    /// default runtime settings. For large files, memory-map them and use
    /// [`Checkpoint::parse`] with [`Linear::from_safetensors`].
    ///
    /// An invalid file is an [`std::io::ErrorKind::InvalidData`] error wrapping the
    /// [`Error`].
    pub fn load_safetensors(path: impl AsRef<Path>, prefix: &str) -> std::io::Result<Linear> {
        let bytes = std::fs::read(path)?;
        Checkpoint::parse(&bytes)
            .and_then(|ck| Linear::from_safetensors(&ck, prefix)?.build())
            .map_err(invalid_data)
    }

    /// Adds this layer under `prefix`: the weight tensors of
    /// [`QuantizedWeight::write_safetensors`], `P.bias` (`F32`) if any,
    /// `P.input_scale` / `P.input_zero_point` and `P.scale` / `P.zero_point` (`F32 []`,
    /// `I32 []`), and metadata `qlinear.P.kind = static`, `qlinear.P.relu`,
    /// `qlinear.P.profile`.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when the writer already holds one of these names.
    pub fn write_safetensors(&self, prefix: &str, w: &mut SafetensorsWriter<'_>) -> Result<()> {
        let q = self.weight();
        q.write_safetensors(prefix, w)?;
        if let Some(b) = self.bias() {
            w.add_f32(format!("{prefix}.bias"), vec![b.len()], b)?;
        }
        let (i, o) = (self.input_qparams(), self.output_qparams());
        w.add_f32(format!("{prefix}.input_scale"), vec![], &[i.scale])?;
        w.add_i32(
            format!("{prefix}.input_zero_point"),
            vec![],
            &[i.zero_point],
        )?;
        w.add_f32(format!("{prefix}.scale"), vec![], &[o.scale])?;
        w.add_i32(format!("{prefix}.zero_point"), vec![], &[o.zero_point])?;
        w.set_metadata(format!("qlinear.{prefix}.kind"), "static");
        w.set_metadata(format!("qlinear.{prefix}.relu"), self.relu().to_string());
        w.set_metadata(format!("qlinear.{prefix}.profile"), self.profile().name());
        Ok(())
    }
}

impl DynamicLinear {
    /// Starts a dynamic layer from a checkpoint: the weight (packed for
    /// [`Backend::Auto`] straight from the file's bytes), its qparams, the bias if
    /// present, and the metadata's ReLU, `reduce_range`, input quantization and profile
    /// (each defaulting as [`DynamicLinear::builder`] does when absent: input
    /// quantization per tensor; a file without metadata loads with all defaults).
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the tensor or metadata key at fault (also when the
    /// metadata says the layer is static).
    pub fn from_safetensors(ck: &Checkpoint<'_>, prefix: &str) -> Result<DynamicLinearBuilder> {
        DynamicLinear::from_safetensors_for(ck, prefix, Backend::Auto)
    }

    /// [`DynamicLinear::from_safetensors`], packing for `backend`.
    pub fn from_safetensors_for(
        ck: &Checkpoint<'_>,
        prefix: &str,
        backend: Backend,
    ) -> Result<DynamicLinearBuilder> {
        let meta = layer_meta(ck, prefix)?;
        check_kind(prefix, &meta, Kind::Dynamic)?;
        let packed = read_packed(ck, prefix, backend)?;
        let bias = read_bias(ck, prefix, packed.out_features())?;
        let mut b = DynamicLinear::from_packed(packed)
            .maybe_bias(bias)
            .relu(meta.relu)
            .profile(meta.profile)
            .input_quantization(meta.input_quantization)
            .backend(backend);
        if let Some(rr) = meta.reduce_range {
            b = b.reduce_range(rr);
        }
        Ok(b)
    }

    /// Reads a whole safetensors file and builds the dynamic layer under `prefix` with
    /// default runtime settings (see [`Linear::load_safetensors`]).
    pub fn load_safetensors(
        path: impl AsRef<Path>,
        prefix: &str,
    ) -> std::io::Result<DynamicLinear> {
        let bytes = std::fs::read(path)?;
        Checkpoint::parse(&bytes)
            .and_then(|ck| DynamicLinear::from_safetensors(&ck, prefix)?.build())
            .map_err(invalid_data)
    }

    /// Adds this layer under `prefix`: the weight tensors of
    /// [`QuantizedWeight::write_safetensors`], `P.bias` (`F32`) if any, and metadata
    /// `qlinear.P.kind = dynamic`, `qlinear.P.relu`, `qlinear.P.reduce_range`,
    /// `qlinear.P.input_quantization` (`per_tensor` or `per_row`), `qlinear.P.profile`.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when the writer already holds one of these names.
    pub fn write_safetensors(&self, prefix: &str, w: &mut SafetensorsWriter<'_>) -> Result<()> {
        let q = self.weight();
        q.write_safetensors(prefix, w)?;
        if let Some(b) = self.bias() {
            w.add_f32(format!("{prefix}.bias"), vec![b.len()], b)?;
        }
        w.set_metadata(format!("qlinear.{prefix}.kind"), "dynamic");
        w.set_metadata(format!("qlinear.{prefix}.relu"), self.relu().to_string());
        w.set_metadata(
            format!("qlinear.{prefix}.reduce_range"),
            self.reduce_range().to_string(),
        );
        w.set_metadata(
            format!("qlinear.{prefix}.input_quantization"),
            input_quantization_name(self.input_quantization()),
        );
        w.set_metadata(format!("qlinear.{prefix}.profile"), self.profile().name());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Writing.

struct OutTensor<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Cow<'a, [u8]>,
}

impl View for &OutTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Collects named tensors and `__metadata__` entries, then writes one safetensors
/// file ([`SafetensorsWriter::to_bytes`], [`SafetensorsWriter::save`]).
///
/// Tensors are either owned or borrowed for `'a` (a tensor copied unchanged from an
/// input file borrows the input's bytes, see [`SafetensorsWriter::add_borrowed`]).
/// Names must be unique.
#[derive(Default)]
pub struct SafetensorsWriter<'a> {
    tensors: BTreeMap<String, OutTensor<'a>>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafetensorsWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsWriter")
            .field("tensors", &self.tensors.keys().collect::<Vec<_>>())
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl<'a> SafetensorsWriter<'a> {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor of raw little-endian bytes.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the tensor when the name is taken, the shape's size
    /// overflows, or `data` is not exactly the shape's size in bytes.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        dtype: Dtype,
        shape: Vec<usize>,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<()> {
        let name = name.into();
        let data = data.into();
        if self.tensors.contains_key(&name) {
            return Err(err(name, "a tensor of this name was already added"));
        }
        let bits = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|e| e.checked_mul(dtype.bitsize()));
        match bits {
            Some(b) if b % 8 == 0 && b / 8 == data.len() => {}
            _ => {
                return Err(err(
                    name,
                    format!(
                        "{} bytes do not hold a {dtype} tensor of shape {}",
                        data.len(),
                        shape_str(&shape)
                    ),
                ))
            }
        }
        self.tensors.insert(name, OutTensor { dtype, shape, data });
        Ok(())
    }

    /// Adds a tensor that borrows its bytes (no copy until [`SafetensorsWriter::to_bytes`]).
    pub fn add_borrowed(
        &mut self,
        name: impl Into<String>,
        dtype: Dtype,
        shape: Vec<usize>,
        data: &'a [u8],
    ) -> Result<()> {
        self.add(name, dtype, shape, Cow::Borrowed(data))
    }

    /// Adds an `F32` tensor.
    pub fn add_f32(&mut self, name: impl Into<String>, shape: Vec<usize>, v: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.add(name, Dtype::F32, shape, bytes)
    }

    /// Adds an `I32` tensor.
    pub fn add_i32(&mut self, name: impl Into<String>, shape: Vec<usize>, v: &[i32]) -> Result<()> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.add(name, Dtype::I32, shape, bytes)
    }

    /// Adds an `I8` tensor.
    pub fn add_i8(&mut self, name: impl Into<String>, shape: Vec<usize>, v: &[i8]) -> Result<()> {
        let bytes: Vec<u8> = v.iter().map(|&x| x as u8).collect();
        self.add(name, Dtype::I8, shape, bytes)
    }

    /// Sets a `__metadata__` entry (replacing an earlier value of the key).
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    /// True when the writer holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Number of tensors added.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when no tensor was added.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The whole file (header, then the tensors sorted by dtype alignment and name, as
    /// the safetensors crate lays them out).
    ///
    /// # Errors
    /// [`Error::Checkpoint`] with `tensor` [`FILE`] if the safetensors crate refuses
    /// (e.g. a header above its 100 MB limit).
    ///
    /// The output is deterministic: the same tensors and metadata give the same bytes.
    /// (The safetensors crate takes `__metadata__` as a `HashMap` and writes it in that
    /// map's random iteration order, so the file is laid out by the crate without
    /// metadata and the sorted metadata object is spliced in front of the tensors.)
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let fail = |e: &dyn std::fmt::Display| err(FILE, format!("cannot serialize: {e}"));
        let bytes = ::safetensors::serialize(self.tensors.iter(), None).map_err(|e| fail(&e))?;
        if self.metadata.is_empty() {
            return Ok(bytes);
        }
        // bytes = u64 LE header length, JSON header `{...}` padded with spaces, data.
        // The data offsets are relative to the data, so a longer header moves nothing.
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        let header = std::str::from_utf8(&bytes[8..8 + n])
            .map_err(|e| fail(&e))?
            .trim_end_matches(' ');
        let rest = header
            .strip_prefix('{')
            .ok_or_else(|| fail(&"header is not a JSON object"))?;
        let meta = serde_json::to_string(&self.metadata).map_err(|e| fail(&e))?;
        let sep = if rest.trim_start() == "}" { "" } else { "," };
        let mut out_header = format!("{{\"__metadata__\":{meta}{sep}{rest}").into_bytes();
        out_header.resize(out_header.len().next_multiple_of(8), b' ');
        // The safetensors crate's header limit (`MAX_HEADER_SIZE`), which its parser
        // enforces: a longer header would be a file nothing can read.
        if out_header.len() > 100_000_000 {
            return Err(fail(&"header with metadata above 100 MB"));
        }
        let mut out = Vec::with_capacity(8 + out_header.len() + bytes.len() - 8 - n);
        out.extend_from_slice(&(out_header.len() as u64).to_le_bytes());
        out.extend_from_slice(&out_header);
        out.extend_from_slice(&bytes[8 + n..]);
        Ok(out)
    }

    /// Writes [`SafetensorsWriter::to_bytes`] to a file (an error of `to_bytes` is an
    /// [`std::io::ErrorKind::InvalidData`] error).
    pub fn save(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes().map_err(invalid_data)?)
    }
}

// ---------------------------------------------------------------------------------------
// Quantizing a float checkpoint.

/// What [`quantize_checkpoint`] quantizes and how.
///
/// The default is torch's `quantize_dynamic`: per-tensor symmetric int8 weights, every
/// eligible weight except embeddings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizeOptions {
    /// One scale per output channel (`PerChannelMinMaxObserver`, axis 0) instead of one
    /// per tensor (`MinMaxObserver`). Default `false`.
    pub per_channel: bool,
    /// Symmetric (zero point 0) instead of affine. Default `true`.
    pub symmetric: bool,
    /// Glob patterns (`*` any run of characters, `?` one character) on the full tensor
    /// name; a tensor must match one of them. Empty (the default): every name.
    pub include: Vec<String>,
    /// Glob patterns of names never quantized. Default `["*embed*"]` (embeddings).
    pub exclude: Vec<String>,
    /// The activation range every quantized layer records (`qlinear.P.reduce_range`).
    /// Default `false`: full range, the recommended setting, since qlinear never
    /// saturates (torch's module defaults to `true` on fbgemm because its AVX2 kernels
    /// do; `true` here gives torch's bits).
    pub reduce_range: bool,
    /// The input quantization every quantized layer records
    /// (`qlinear.P.input_quantization`). Default [`InputQuantization::PerTensor`], as
    /// torch; [`InputQuantization::PerRow`] is qlinear's per-token mode.
    pub input_quantization: InputQuantization,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            per_channel: false,
            symmetric: true,
            include: Vec::new(),
            exclude: vec!["*embed*".to_string()],
            reduce_range: false,
            input_quantization: InputQuantization::PerTensor,
        }
    }
}

impl QuantizeOptions {
    /// The weight observer these options stand for.
    pub fn observer(&self) -> Observer {
        Observer {
            per_channel: self.per_channel,
            symmetric: self.symmetric,
            reduce_range: false,
        }
    }

    /// True when `name` passes the include and exclude patterns (not looking at dtype,
    /// shape or the `.weight` suffix).
    pub fn selects(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob_match(p, name)))
            && !self.exclude.iter().any(|p| glob_match(p, name))
    }
}

/// `*` matches any run of characters (including none), `?` exactly one; everything
/// else matches itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    let (mut i, mut j) = (0, 0);
    // Position of the last `*` in the pattern, and the name position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        // `*` first: a pattern `*` is a wildcard even against a literal `*` in the name.
        if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && (p[i] == '?' || p[i] == s[j]) {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// One weight [`quantize_checkpoint`] quantizes.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    /// The tensor's name, `P.weight`.
    pub name: String,
    /// `[out_features, in_features]`.
    pub shape: [usize; 2],
    /// The source dtype (`F32`, `F16` or `BF16`).
    pub dtype: Dtype,
}

/// What a [`quantize_checkpoint`] run did.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeSummary {
    /// The quantized weights, in file order.
    pub quantized: Vec<PlannedTensor>,
    /// Tensors copied unchanged.
    pub copied: usize,
    /// Size of the input file.
    pub bytes_in: usize,
    /// Size of the output file.
    pub bytes_out: usize,
}

fn parse_with_order(input: &[u8]) -> Result<(Checkpoint<'_>, Vec<String>)> {
    let ck = Checkpoint::parse(input)?;
    let (_, header) = SafeTensors::read_metadata(input)
        .map_err(|e| err(FILE, format!("not a valid safetensors file: {e}")))?;
    Ok((ck, header.offset_keys()))
}

fn plan_parsed(
    ck: &Checkpoint<'_>,
    order: &[String],
    opts: &QuantizeOptions,
) -> Result<Vec<PlannedTensor>> {
    let mut planned = Vec::new();
    for name in order {
        let v = ck.get(name)?;
        let eligible = name.ends_with(".weight")
            && v.shape().len() == 2
            && matches!(v.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16)
            && opts.selects(name);
        if !eligible {
            continue;
        }
        // A shape qlinear cannot hold (an empty dimension, in features above the K
        // limit) fails here, so a dry run rejects what the real run would.
        check_layer_dims(v.shape()[0], v.shape()[1]).map_err(|e| err(name, e.to_string()))?;
        let prefix = &name[..name.len() - ".weight".len()];
        for suffix in ["weight_scale", "weight_zero_point", "weight_axis"] {
            let taken = format!("{prefix}.{suffix}");
            if ck.opt(&taken).is_some() {
                return Err(err(
                    taken,
                    format!("already in the input: cannot add the qparams of {name}"),
                ));
            }
        }
        planned.push(PlannedTensor {
            name: name.clone(),
            shape: [v.shape()[0], v.shape()[1]],
            dtype: v.dtype(),
        });
    }
    Ok(planned)
}

/// The weights [`quantize_checkpoint`] would quantize, in file order, without
/// quantizing anything (a dry run).
///
/// # Errors
/// As [`quantize_checkpoint`], except for problems with the weights' values.
pub fn plan_quantization(input: &[u8], opts: &QuantizeOptions) -> Result<Vec<PlannedTensor>> {
    let (ck, order) = parse_with_order(input)?;
    plan_parsed(&ck, &order, opts)
}

/// Quantizes a float safetensors checkpoint's linear weights for [`DynamicLinear`]
/// (see the [module docs](self)): returns the new file and a summary.
///
/// Each quantized `P.weight` gives exactly the weight
/// `DynamicLinear::from_float(w, out, in, opts.observer())` holds.
///
/// # Errors
/// [`Error::Checkpoint`]: the input is not a safetensors file; a selected weight has a
/// NaN or infinity, or a shape qlinear does not support (an empty dimension, in
/// features above [`crate::K_LIMIT`]); the input already holds a name the output needs
/// (`P.weight_scale`, ...).
pub fn quantize_checkpoint(
    input: &[u8],
    opts: &QuantizeOptions,
) -> Result<(Vec<u8>, QuantizeSummary)> {
    quantize_checkpoint_with_progress(input, opts, |_, _, _| {})
}

/// [`quantize_checkpoint`], calling `progress(i, total, tensor)` before quantizing the
/// `i`-th (1-based) of `total` selected weights.
pub fn quantize_checkpoint_with_progress(
    input: &[u8],
    opts: &QuantizeOptions,
    mut progress: impl FnMut(usize, usize, &PlannedTensor),
) -> Result<(Vec<u8>, QuantizeSummary)> {
    let (ck, order) = parse_with_order(input)?;
    let planned = plan_parsed(&ck, &order, opts)?;
    let selected: BTreeSet<&str> = planned.iter().map(|t| t.name.as_str()).collect();
    let observer = opts.observer();
    let mut w = SafetensorsWriter::new();
    for (key, value) in ck.metadata() {
        w.set_metadata(key.clone(), value.clone());
    }
    let mut copied = 0;
    for name in &order {
        if selected.contains(name.as_str()) {
            continue;
        }
        let v = ck.get(name)?;
        w.add_borrowed(name.clone(), v.dtype(), v.shape().to_vec(), v.data())?;
        copied += 1;
    }
    for (i, t) in planned.iter().enumerate() {
        progress(i + 1, planned.len(), t);
        let v = ck.get(&t.name)?;
        let [n, k] = t.shape;
        let f = float_values(&t.name, &v)?;
        let q = QuantizedWeight::from_float(&f, n, k, observer).map_err(|e| match e {
            Error::NonFinite { index, .. } => err(
                &t.name,
                format!(
                    "non-finite value {} at index {index}: cannot quantize",
                    f[index]
                ),
            ),
            other => err(&t.name, other.to_string()),
        })?;
        let prefix = &t.name[..t.name.len() - ".weight".len()];
        q.write_safetensors(prefix, &mut w)?;
        w.set_metadata(format!("qlinear.{prefix}.kind"), "dynamic");
        w.set_metadata(
            format!("qlinear.{prefix}.reduce_range"),
            opts.reduce_range.to_string(),
        );
        w.set_metadata(
            format!("qlinear.{prefix}.input_quantization"),
            input_quantization_name(opts.input_quantization),
        );
    }
    let bytes = w.to_bytes()?;
    let summary = QuantizeSummary {
        quantized: planned,
        copied,
        bytes_in: input.len(),
        bytes_out: bytes.len(),
    };
    Ok((bytes, summary))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*embed*", "bert.embeddings.word.weight"));
        assert!(!glob_match("*embed*", "encoder.layer.0.weight"));
        assert!(glob_match(
            "encoder.layer.?.*",
            "encoder.layer.3.attn.weight"
        ));
        assert!(!glob_match(
            "encoder.layer.?.*",
            "encoder.layer.13.attn.weight"
        ));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("*.weight", "x.weight"));
        assert!(glob_match("*", "*x"));
        assert!(glob_match("a*c", "a*bc"));
        assert!(!glob_match("a*c", "a*b"));
    }
}
