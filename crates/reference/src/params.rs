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
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two dimensions that must agree do not.
    #[error("shape mismatch: {what}: expected {expected}, got {got}")]
    Shape {
        /// Which dimension.
        what: &'static str,
        /// The size required.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// A buffer is shorter than its shape and stride require.
    #[error("buffer too small: {what} needs {needed} elements, has {len}")]
    BufferTooSmall {
        /// Which buffer.
        what: &'static str,
        /// Elements required.
        needed: usize,
        /// Elements present.
        len: usize,
    },
    /// A row stride smaller than the row length.
    #[error("invalid stride for {what}: stride {stride} < row length {cols}")]
    Stride {
        /// Which matrix.
        what: &'static str,
        /// Stride given.
        stride: usize,
        /// Row length.
        cols: usize,
    },
    /// A scale that is not finite or not > 0.
    #[error("{what} must be finite and > 0, got {value}")]
    InvalidScale {
        /// Which scale.
        what: &'static str,
        /// The value given.
        value: f32,
    },
    /// A zero point outside its type's range.
    #[error("{what} = {value} is outside [{min}, {max}]")]
    ZeroPointOutOfRange {
        /// Which zero point.
        what: &'static str,
        /// The value given.
        value: i64,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// `K` above [`K_LIMIT`].
    #[error("in_features K = {k} exceeds the exactness limit {limit}")]
    KTooLarge {
        /// K given.
        k: usize,
        /// The limit.
        limit: usize,
    },
    /// A NaN or infinity where only finite values are allowed.
    #[error("non-finite value in {what} at index {index}")]
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
    #[error(
        "unknown backend `{0}` (known: reference, avx2, avxvnni, avx512vnni, neon, neondot, i8mm)"
    )]
    UnknownBackend(String),
    /// A known backend that this CPU (or this build) cannot run.
    #[error("backend `{0}` is not available on this CPU")]
    BackendUnavailable(String),
    /// Serialized packed weights that fail validation.
    #[error("corrupt packed weights: {0}")]
    CorruptPacked(&'static str),
}

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

/// Per-tensor affine parameters of a u8 tensor (activations or static outputs).
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
                    what: "weight zero point",
                    value: z as i64,
                    min: -128,
                    max: 127,
                })
            }
        };
        match self {
            WeightQParams::PerTensor { scale, zero_point } => {
                check_scale("weight scale", *scale)?;
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
                    check_scale("weight scale", s)?;
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
