//! Quantization parameters, arithmetic profiles, validation and the error type.
//!
//! All validation of user-provided parameters happens here, once, so every layer and
//! every backend rejects the same inputs with the same [`Error`].

/// Largest supported in_features (`K`). With `|a - zp_x| <= 255` and `|w - zp_w| <= 255`
/// every product is at most 65_025 in magnitude, and `65_025 * 33_025 < 2^31`, so the
/// exact integer core always fits an `i32`. Larger `K` is rejected, never wrapped.
pub const K_LIMIT: usize = 33_025;

/// The one error type of qlinear. Every invalid input maps to one of these; nothing in
/// the library panics on user input.
///
/// Each message says what was wrong, the value given and what was expected, e.g.
/// `input scale must be finite and > 0, got 0` or
/// `input buffer holds 100 elements, but 8 rows x 4096 columns (row stride 4096) need 32768`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two dimensions that must agree do not.
    #[error("shape mismatch: {what} is {got}, expected {expected}")]
    Shape {
        /// Which dimension.
        what: &'static str,
        /// The size required.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// A buffer is shorter than its shape and stride require.
    #[error(
        "{what} buffer holds {len} elements, but {rows} rows x {cols} columns \
         (row stride {stride}) need {needed}"
    )]
    BufferTooSmall {
        /// Which buffer.
        what: &'static str,
        /// Elements required: `(rows - 1) * stride + cols`.
        needed: usize,
        /// Elements present.
        len: usize,
        /// Rows of the view.
        rows: usize,
        /// Columns of the view.
        cols: usize,
        /// Row stride of the view, in elements.
        stride: usize,
    },
    /// A row stride smaller than the row length.
    #[error("{what} row stride {stride} is smaller than its row length {cols} (the stride must be >= the number of columns)")]
    Stride {
        /// Which matrix.
        what: &'static str,
        /// Stride given.
        stride: usize,
        /// Row length.
        cols: usize,
    },
    /// A scale that is not finite or not > 0.
    #[error("{what} scale must be finite and > 0, got {value}")]
    InvalidScale {
        /// Whose scale: `"input"`, `"output"`, `"activation"` or `"weight"`.
        what: &'static str,
        /// The value given.
        value: f32,
    },
    /// A zero point outside its type's range.
    #[error("{what} zero point {value} is outside [{min}, {max}]")]
    ZeroPointOutOfRange {
        /// Whose zero point: `"input"`, `"output"`, `"activation"` or `"weight"`.
        what: &'static str,
        /// The value given.
        value: i64,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// `K` above [`K_LIMIT`].
    #[error(
        "in_features K = {k} exceeds the limit {limit} (a larger K could overflow the exact \
         i32 accumulator)"
    )]
    KTooLarge {
        /// K given.
        k: usize,
        /// The limit.
        limit: usize,
    },
    /// A NaN or infinity where only finite values are allowed.
    #[error("{what} holds a NaN or an infinity at flat index {index}; every value must be finite")]
    NonFinite {
        /// Which tensor.
        what: &'static str,
        /// Flat index of the first offending element.
        index: usize,
    },
    /// A dimension of zero where at least one is needed, or sizes whose product overflows.
    #[error("invalid dimension: {0}")]
    Dimension(&'static str),
    /// A backend name that qlinear does not know.
    #[error("unknown backend `{0}` (known: auto, {isas}, reference)", isas = crate::isa::Isa::names())]
    UnknownBackend(String),
    /// A known backend that this CPU (or this build) cannot run.
    #[error(
        "backend `{0}` is not available on this CPU or in this build (`qlinear info` lists the \
         available ones and why the others are not; `auto` picks the best)"
    )]
    BackendUnavailable(String),
    /// Serialized packed weights that fail validation.
    #[error("corrupt packed weights: {0}")]
    CorruptPacked(&'static str),
    /// Packed weights written in a format version this build does not read (a newer
    /// qlinear, or not a qlinear file at all).
    #[error(
        "packed weights format version {found} is not supported: this build reads versions \
         {oldest} to {newest}"
    )]
    UnsupportedPackedVersion {
        /// The version the file states.
        found: u32,
        /// The oldest version this build reads.
        oldest: u32,
        /// The newest version this build reads (the one it writes).
        newest: u32,
    },
    /// A scale so small that `1 / scale` overflows f32, used to quantize f32 values.
    #[error(
        "{what} scale {value:e} is too small to quantize with: 1 / scale overflows f32 \
         (quantizing needs a scale >= about 2.9e-39)"
    )]
    ScaleTooSmall {
        /// Whose scale.
        what: &'static str,
        /// The value given.
        value: f32,
    },
    /// A numeric setting outside its allowed range (e.g. an observer's averaging
    /// constant).
    #[error("{what} must be {expected}, got {value}")]
    InvalidValue {
        /// Which setting.
        what: &'static str,
        /// What is allowed, e.g. `"in [0, 1]"`.
        expected: &'static str,
        /// The value given.
        value: f64,
    },
    /// An observer asked for qparams before it saw any value.
    #[error("{0} has observed no values yet: call observe() with data before qparams()")]
    NotObserved(&'static str),
    /// A safetensors checkpoint that cannot be read as qlinear layers: not a
    /// safetensors file at all, a missing tensor, a wrong dtype or shape, an invalid
    /// scale or zero point, a metadata value that does not parse, ...
    /// (`qlinear::safetensors`, `docs/safetensors.md`).
    #[error("checkpoint: `{tensor}`: {problem}")]
    Checkpoint {
        /// The tensor (or `__metadata__` key, or `(file)` for the file as a whole) at
        /// fault.
        tensor: String,
        /// What is wrong with it, with the value found and what was expected.
        problem: String,
    },
}

use crate::matrix::{MatMut, MatRef};
use crate::quantize::quantize_u8;

/// Result alias used throughout qlinear.
pub type Result<T> = core::result::Result<T, Error>;

/// Which engine's arithmetic to reproduce bit for bit (see `docs/semantics.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Profile {
    /// torch engines `fbgemm` / `x86` (the default).
    #[default]
    Fbgemm,
    /// torch engine `qnnpack`.
    Qnnpack,
}

impl Profile {
    /// The torch engine name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Fbgemm => "fbgemm",
            Profile::Qnnpack => "qnnpack",
        }
    }
}

/// Per-tensor affine parameters of a u8 tensor (activations or static outputs): torch's
/// `quint8` with `per_tensor_affine`.
///
/// Besides describing a layer's input and output, it quantizes and dequantizes f32
/// values exactly as torch's `quantize_per_tensor(x, scale, zero_point, torch.quint8)`
/// and `Tensor.dequantize()` do on CPU (fbgemm's `Quantize` / `Dequantize`):
///
/// ```text
/// quantize:   inv = f(1 / scale)                     (once, in f32)
///             q   = clamp(round_half_even(f(x * inv)) + zero_point, 0, 255)
/// dequantize: x   = f(f32(q - zero_point) * scale)
/// ```
///
/// The product `x * inv`, not the quotient `x / scale`, is rounded: the two differ at
/// ties, and torch multiplies. Rounding happens before the zero point is added, ties to
/// even. Values beyond the u8 range saturate to 0 or 255.
///
/// A scale so small (below about 2.9e-39) that `f(1 / scale)` overflows is an
/// [`Error::ScaleTooSmall`] for quantizing (torch would multiply by infinity).
///
/// **Non-finite input** (NaN, +-infinity) is an [`Error::NonFinite`]: torch gives no
/// meaningful answer there (its AVX2 path turns NaN into 255 or 0 depending on the zero
/// point and its scalar tail converts NaN to an integer, which is undefined), so qlinear
/// refuses, as the dynamic layer does. Huge finite values saturate (torch's AVX2 path
/// can wrap `x * inv` near 2^31 plus a zero point >= 128 into 0; qlinear gives 255, see
/// `docs/semantics.md`, "Where qlinear deliberately differs").
///
/// ```
/// use qlinear_reference::ActQParams;
/// # fn main() -> Result<(), qlinear_reference::Error> {
/// let p = ActQParams::new(0.1, 128)?;
/// assert_eq!(p.quantize(1.0)?, 138);          // 1.0 * f(1 / 0.1) = 10.0 -> 10 + 128
/// assert_eq!(p.quantize(-100.0)?, 0);         // saturates
/// assert_eq!(p.dequantize(138), 10.0 * 0.1);  // f(10 * 0.1)
/// // Ties round to even, on the product with the f32 inverse (fbgemm's own example:
/// // x / scale would give 127.49999 -> 127, torch gives 128).
/// let t = ActQParams::new(0.002_148_548_61, 0)?;
/// assert_eq!(t.quantize(0.273_939_937)?, 128);
/// let q = p.quantize_vec(&[0.0, 0.05, 0.15, 0.25])?;
/// assert_eq!(q, [128, 128, 130, 130]);        // 0.5 -> 0, 1.5 -> 2, 2.5 -> 2: half to even
/// assert_eq!(p.dequantize_vec(&q), [0.0, 0.0, 0.2, 0.2]);
/// assert!(p.quantize(f32::NAN).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQParams {
    /// Scale, finite and > 0.
    pub scale: f32,
    /// Zero point in [0, 255].
    pub zero_point: i32,
}

impl ActQParams {
    /// Validated constructor.
    pub fn new(scale: f32, zero_point: i32) -> Result<Self> {
        let p = ActQParams { scale, zero_point };
        p.validate("activation")?;
        Ok(p)
    }

    /// Checks scale and zero point; `what` names the tensor in the error.
    pub fn validate(&self, what: &'static str) -> Result<()> {
        check_scale(what, self.scale)?;
        if !(0..=255).contains(&self.zero_point) {
            return Err(Error::ZeroPointOutOfRange {
                what,
                value: self.zero_point as i64,
                min: 0,
                max: 255,
            });
        }
        Ok(())
    }

    /// `f(1 / scale)` for quantizing, after validating the parameters.
    fn inverse_scale(&self) -> Result<f32> {
        self.validate("activation")?;
        let inv = 1.0f32 / self.scale;
        if !inv.is_finite() {
            // A valid but subnormal scale: x * inf would turn 0 into NaN (torch's AVX2
            // path then gives 255 or 0); refuse instead of inventing an answer.
            return Err(Error::ScaleTooSmall {
                what: "activation",
                value: self.scale,
            });
        }
        Ok(inv)
    }

    /// Quantizes one value (torch's `quantize_per_tensor` to `quint8`).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for NaN or an infinity; [`Error::ScaleTooSmall`] when
    /// `1 / scale` overflows f32 (scales below about 2.9e-39);
    /// [`Error::InvalidScale`] / [`Error::ZeroPointOutOfRange`] when the (public) fields
    /// were set out of range.
    pub fn quantize(&self, x: f32) -> Result<u8> {
        let inv = self.inverse_scale()?;
        check_finite("value to quantize", core::slice::from_ref(&x))?;
        Ok(quantize_u8(x, inv, self.zero_point))
    }

    /// Dequantizes one value: `f(f32(q - zero_point) * scale)`, torch's `dequantize()`.
    ///
    /// Never fails: with fields set out of range by hand it still computes the formula
    /// (without overflow), it just means nothing. A scale above `f32::MAX / 255` can
    /// give an infinity, as in torch.
    #[inline]
    pub fn dequantize(&self, q: u8) -> f32 {
        (q as i64 - self.zero_point as i64) as f32 * self.scale
    }

    /// Quantizes `input` into `output` element by element (equal lengths).
    ///
    /// # Errors
    /// [`Error::Shape`] when the lengths differ, [`Error::NonFinite`] (with the index of
    /// the first NaN or infinity) or invalid parameters; `output` is untouched then.
    pub fn quantize_slice(&self, input: &[f32], output: &mut [u8]) -> Result<()> {
        let inv = self.inverse_scale()?;
        if output.len() != input.len() {
            return Err(Error::Shape {
                what: "quantize output length",
                expected: input.len(),
                got: output.len(),
            });
        }
        check_finite("input", input)?;
        for (o, &x) in output.iter_mut().zip(input) {
            *o = quantize_u8(x, inv, self.zero_point);
        }
        Ok(())
    }

    /// Quantizes `input` into a new vector; errors as [`ActQParams::quantize_slice`].
    pub fn quantize_vec(&self, input: &[f32]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; input.len()];
        self.quantize_slice(input, &mut out)?;
        Ok(out)
    }

    /// Quantizes a strided `rows x cols` view into another of the same shape.
    ///
    /// # Errors
    /// [`Error::Shape`] when the shapes differ, [`Error::NonFinite`] (flat index
    /// `row * cols + col` of the first NaN or infinity) or invalid parameters; `output`
    /// is untouched then.
    pub fn quantize_mat(&self, input: MatRef<'_, f32>, mut output: MatMut<'_, u8>) -> Result<()> {
        let inv = self.inverse_scale()?;
        check_same_shape(input.rows(), input.cols(), output.rows(), output.cols())?;
        if input.cols() == 0 {
            // No values (a 0-column view may claim up to usize::MAX empty rows: do not
            // walk them).
            return Ok(());
        }
        for i in 0..input.rows() {
            if let Err(Error::NonFinite { index, .. }) = check_finite("input", input.row(i)) {
                return Err(Error::NonFinite {
                    what: "input",
                    index: i * input.cols() + index,
                });
            }
        }
        for i in 0..input.rows() {
            for (o, &x) in output.row_mut(i).iter_mut().zip(input.row(i)) {
                *o = quantize_u8(x, inv, self.zero_point);
            }
        }
        Ok(())
    }

    /// Dequantizes `input` into `output` element by element (equal lengths).
    ///
    /// # Errors
    /// [`Error::Shape`] when the lengths differ.
    pub fn dequantize_slice(&self, input: &[u8], output: &mut [f32]) -> Result<()> {
        if output.len() != input.len() {
            return Err(Error::Shape {
                what: "dequantize output length",
                expected: input.len(),
                got: output.len(),
            });
        }
        for (o, &q) in output.iter_mut().zip(input) {
            *o = self.dequantize(q);
        }
        Ok(())
    }

    /// Dequantizes `input` into a new vector.
    pub fn dequantize_vec(&self, input: &[u8]) -> Vec<f32> {
        input.iter().map(|&q| self.dequantize(q)).collect()
    }

    /// Dequantizes a strided `rows x cols` view into another of the same shape.
    ///
    /// # Errors
    /// [`Error::Shape`] when the shapes differ.
    pub fn dequantize_mat(&self, input: MatRef<'_, u8>, mut output: MatMut<'_, f32>) -> Result<()> {
        check_same_shape(input.rows(), input.cols(), output.rows(), output.cols())?;
        if input.cols() == 0 {
            // No values; do not walk up to usize::MAX empty rows.
            return Ok(());
        }
        for i in 0..input.rows() {
            for (o, &q) in output.row_mut(i).iter_mut().zip(input.row(i)) {
                *o = self.dequantize(q);
            }
        }
        Ok(())
    }
}

fn check_same_shape(rows: usize, cols: usize, out_rows: usize, out_cols: usize) -> Result<()> {
    if out_rows != rows {
        return Err(Error::Shape {
            what: "output rows",
            expected: rows,
            got: out_rows,
        });
    }
    if out_cols != cols {
        return Err(Error::Shape {
            what: "output columns",
            expected: cols,
            got: out_cols,
        });
    }
    Ok(())
}

/// Checks that a scale is finite and > 0.
pub fn check_scale(what: &'static str, value: f32) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidScale { what, value })
    }
}

/// Quantization parameters of the i8 weight, per tensor or per output channel.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightQParams {
    /// One scale and zero point for the whole `N x K` weight.
    PerTensor {
        /// Scale, finite and > 0.
        scale: f32,
        /// Zero point in [-128, 127].
        zero_point: i32,
    },
    /// One scale and zero point per output channel (row of the weight, torch axis 0).
    PerChannel {
        /// `N` scales.
        scales: Vec<f32>,
        /// `N` zero points.
        zero_points: Vec<i32>,
    },
}

impl WeightQParams {
    /// Scale applying to output channel `n` (`scale_w[j]` of `docs/semantics.md`).
    ///
    /// # Panics
    /// Per-channel parameters with `n >= scales.len()` (validated layers never ask).
    #[inline]
    pub fn scale(&self, n: usize) -> f32 {
        match self {
            WeightQParams::PerTensor { scale, .. } => *scale,
            WeightQParams::PerChannel { scales, .. } => scales[n],
        }
    }

    /// Zero point applying to output channel `n`.
    ///
    /// # Panics
    /// Per-channel parameters with `n >= zero_points.len()`.
    #[inline]
    pub fn zero_point(&self, n: usize) -> i32 {
        match self {
            WeightQParams::PerTensor { zero_point, .. } => *zero_point,
            WeightQParams::PerChannel { zero_points, .. } => zero_points[n],
        }
    }

    /// True for per-channel parameters.
    pub fn is_per_channel(&self) -> bool {
        matches!(self, WeightQParams::PerChannel { .. })
    }

    /// True when every zero point is 0 (symmetric weights: no row-sum correction).
    pub fn all_zero_points_zero(&self) -> bool {
        match self {
            WeightQParams::PerTensor { zero_point, .. } => *zero_point == 0,
            WeightQParams::PerChannel { zero_points, .. } => zero_points.iter().all(|&z| z == 0),
        }
    }

    /// Validates against `n` output channels.
    pub fn validate(&self, n: usize) -> Result<()> {
        let check_zp = |z: i32| {
            if (-128..=127).contains(&z) {
                Ok(())
            } else {
                Err(Error::ZeroPointOutOfRange {
                    what: "weight",
                    value: z as i64,
                    min: -128,
                    max: 127,
                })
            }
        };
        match self {
            WeightQParams::PerTensor { scale, zero_point } => {
                check_scale("weight", *scale)?;
                check_zp(*zero_point)
            }
            WeightQParams::PerChannel {
                scales,
                zero_points,
            } => {
                if scales.len() != n {
                    return Err(Error::Shape {
                        what: "per-channel weight scales",
                        expected: n,
                        got: scales.len(),
                    });
                }
                if zero_points.len() != n {
                    return Err(Error::Shape {
                        what: "per-channel weight zero points",
                        expected: n,
                        got: zero_points.len(),
                    });
                }
                for &s in scales {
                    check_scale("weight", s)?;
                }
                zero_points.iter().try_for_each(|&z| check_zp(z))
            }
        }
    }
}

/// Validates the shape of a layer: `n >= 1`, `1 <= k <= K_LIMIT`.
pub fn check_layer_dims(n: usize, k: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::Dimension("out_features must be >= 1"));
    }
    if k == 0 {
        return Err(Error::Dimension("in_features must be >= 1"));
    }
    if k > K_LIMIT {
        return Err(Error::KTooLarge { k, limit: K_LIMIT });
    }
    Ok(())
}

/// Returns the index of the first non-finite value, as an error naming `what`.
pub fn check_finite(what: &'static str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite { what, index }),
    }
}
