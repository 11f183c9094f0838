//! Activation observers: torch.ao's `MinMaxObserver` and `MovingAverageMinMaxObserver`
//! for `quint8`, `per_tensor_affine`, which choose a static layer's input and output
//! qparams from calibration data.
//!
//! # What is reproduced
//!
//! Each observer keeps a running `(min, max)` pair of f32, exactly as torch keeps its
//! 0-dim f32 buffers `min_val` / `max_val`:
//!
//! * [`MinMaxObserver`]: `min = min(min, batch_min)`, `max = max(max, batch_max)`.
//! * [`MovingAverageMinMaxObserver`]: the first non-empty batch sets `(min, max)`;
//!   each later one moves them: `min = f(min + f(c * f(batch_min - min)))` (likewise
//!   `max`), with `c = f32(averaging_constant)`, default `0.01`. Every step is one f32
//!   operation (torch runs them as separate 0-dim tensor ops: no fused multiply-add).
//!
//! An empty batch changes nothing (torch returns early on `numel() == 0`).
//! [`ActivationObserver::qparams`] is torch's `_calculate_qparams` for
//! `per_tensor_affine` with `quant_min = 0` and `quant_max = 255`, or `127` with
//! `reduce_range`, all in f32:
//!
//! ```text
//! min_neg = min(min, 0), max_pos = max(max, 0)
//! scale   = max(f((max_pos - min_neg) / f32(quant_max - quant_min)), f32::EPSILON)
//! zp      = clamp(quant_min - round_half_even(f(min_neg / scale)), quant_min, quant_max)
//! ```
//!
//! It is the same function the weight [`crate::Observer`] uses for affine `qint8`
//! weights, whose results the torch conformance vectors (`observe_weight`) pin down.
//!
//! # Not the dynamic layer's formula
//!
//! The dynamic layer chooses its input qparams with fbgemm's `ChooseQuantizationParams`
//! ([`crate::quantize::dynamic_qparams_from_min_max`]), which differs from the observers' formula
//! on the same `(min, max)`:
//!
//! * its scale is computed in f64 and only then rounded to f32;
//! * it has no `f32::EPSILON` floor but a `6.1e-5` one (with the range stretched to
//!   match), and a zero-width range gives scale `0.1`;
//! * its zero point is taken from whichever end (`qmin - min / scale` or
//!   `qmax - max / scale`) has the smaller error, in f64, where the observer always
//!   uses `quant_min - round(min / scale)`.
//!
//! So an observer's qparams and a dynamic call's qparams for the same data may differ
//! in the last bit of the scale or by one in the zero point; each matches its own torch
//! counterpart.
//!
//! # Where qlinear differs from torch
//!
//! * A NaN or infinity in observed data is an [`Error::NonFinite`] and leaves the
//!   observer unchanged; torch would fold it into `min_val` / `max_val` and produce
//!   meaningless qparams.
//! * Asking for qparams before any value was observed is [`Error::NotObserved`]; torch
//!   warns and returns scale 1.0, zero point 0.
//! * A range so wide that the scale overflows f32 is an [`Error::InvalidScale`] (torch
//!   returns an infinite scale).
//!
//! torch's default static qconfigs use `HistogramObserver` for activations, which is not
//! reproduced here; `torch.ao.quantization.default_observer` is a `MinMaxObserver` with
//! `quant_min = 0, quant_max = 127`, i.e. `MinMaxObserver::new().reduce_range(true)`.

use crate::matrix::MatRef;
use crate::params::{check_finite, ActQParams, Error, Result};
use crate::quantize::affine_qparams;

/// Flat index of the first non-finite element of a view, as an error.
fn check_finite_mat(x: &MatRef<'_, f32>) -> Result<()> {
    for i in 0..x.rows() {
        if let Err(Error::NonFinite { index, .. }) = check_finite("observed input", x.row(i)) {
            return Err(Error::NonFinite {
                what: "observed input",
                index: i * x.cols() + index,
            });
        }
    }
    Ok(())
}

/// `torch.aminmax` of a finite view: `None` when it has no elements.
fn batch_min_max(x: &MatRef<'_, f32>) -> Result<Option<(f32, f32)>> {
    // Before any per-row loop: a view with no columns may still claim up to
    // `usize::MAX` (empty) rows, and walking them would never end.
    if x.rows() == 0 || x.cols() == 0 {
        return Ok(None);
    }
    check_finite_mat(x)?;
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    for i in 0..x.rows() {
        for &v in x.row(i) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    Ok(Some((lo, hi)))
}

/// `(quant_min, quant_max)` of a `quint8` observer.
fn quant_range(reduce_range: bool) -> (i32, i32) {
    if reduce_range {
        (0, 127)
    } else {
        (0, 255)
    }
}

/// A running observer of f32 activations that chooses `quint8` per-tensor affine
/// qparams (see the [module docs](self) for the exact arithmetic).
pub trait ActivationObserver {
    /// Folds one batch (a strided view; one torch `forward` call) into the running
    /// range.
    ///
    /// # Errors
    /// [`Error::NonFinite`] (flat index `row * cols + col` of the first NaN or
    /// infinity); the observer is unchanged then.
    fn observe_mat(&mut self, batch: MatRef<'_, f32>) -> Result<()>;

    /// Folds one batch given as a flat slice (treated as one tensor).
    ///
    /// # Errors
    /// As [`ActivationObserver::observe_mat`].
    fn observe(&mut self, batch: &[f32]) -> Result<()> {
        self.observe_mat(MatRef::dense(batch, 1, batch.len())?)
    }

    /// The running `(min_val, max_val)`, or `None` before anything was observed.
    fn min_max(&self) -> Option<(f32, f32)>;

    /// Whether the quantized range is `[0, 127]` instead of `[0, 255]`.
    fn is_reduce_range(&self) -> bool;

    /// The `quint8` qparams torch's `calculate_qparams()` gives for the running range.
    ///
    /// # Errors
    /// [`Error::NotObserved`] before any value was observed; [`Error::InvalidScale`]
    /// when the range is so wide that the scale overflows f32.
    fn qparams(&self) -> Result<ActQParams> {
        let (lo, hi) = self
            .min_max()
            .ok_or(Error::NotObserved("activation observer"))?;
        let (scale, zero_point) = affine_qparams(lo, hi, quant_range(self.is_reduce_range()));
        ActQParams::new(scale, zero_point)
    }
}

/// torch.ao's `MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)`:
/// the running minimum and maximum of everything observed.
///
/// ```
/// use qlinear_reference::observer::{ActivationObserver, MinMaxObserver};
/// # fn main() -> Result<(), qlinear_reference::Error> {
/// let mut obs = MinMaxObserver::new();
/// obs.observe(&[-1.0, 0.5, 2.0])?;
/// obs.observe(&[3.1, -0.25])?;
/// assert_eq!(obs.min_max(), Some((-1.0, 3.1)));
/// let q = obs.qparams()?;
/// // scale = f((3.1 - (-1.0)) / 255), zero point = 0 - round(-1.0 / scale) = 62
/// assert_eq!(q.scale, (3.1f32 + 1.0) / 255.0);
/// assert_eq!(q.zero_point, 62);
/// // reduce_range: quant_max = 127 (torch's `default_observer`).
/// let mut small = MinMaxObserver::new().reduce_range(true);
/// small.observe(&[-1.0, 3.1])?;
/// assert_eq!(small.qparams()?.scale, (3.1f32 + 1.0) / 127.0);
/// // NaN or infinity is refused and leaves the observer as it was.
/// assert!(obs.observe(&[f32::NAN]).is_err());
/// assert_eq!(obs.min_max(), Some((-1.0, 3.1)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MinMaxObserver {
    range: Option<(f32, f32)>,
    reduce_range: bool,
}

impl MinMaxObserver {
    /// An observer that has seen nothing, full range `[0, 255]`.
    pub fn new() -> Self {
        Self::default()
    }

    /// torch's `reduce_range`: quantize to `[0, 127]` instead of `[0, 255]`.
    pub fn reduce_range(mut self, reduce_range: bool) -> Self {
        self.reduce_range = reduce_range;
        self
    }

    /// Forgets everything observed (torch's `reset_min_max_vals`).
    pub fn reset(&mut self) {
        self.range = None;
    }
}

impl ActivationObserver for MinMaxObserver {
    fn observe_mat(&mut self, batch: MatRef<'_, f32>) -> Result<()> {
        if let Some((lo, hi)) = batch_min_max(&batch)? {
            self.range = Some(match self.range {
                None => (lo, hi),
                Some((min, max)) => (min.min(lo), max.max(hi)),
            });
        }
        Ok(())
    }

    fn min_max(&self) -> Option<(f32, f32)> {
        self.range
    }

    fn is_reduce_range(&self) -> bool {
        self.reduce_range
    }
}

/// torch.ao's `MovingAverageMinMaxObserver(dtype=torch.quint8,
/// qscheme=torch.per_tensor_affine)`: an exponential moving average of each batch's
/// minimum and maximum.
///
/// ```
/// use qlinear_reference::observer::{ActivationObserver, MovingAverageMinMaxObserver};
/// # fn main() -> Result<(), qlinear_reference::Error> {
/// let mut obs = MovingAverageMinMaxObserver::new();
/// obs.observe(&[-1.0, 2.0])?;                 // the first batch sets the range
/// obs.observe(&[-3.0, 4.0])?;                 // later ones move it by 1 %
/// let c = 0.01f32;
/// let min = -1.0 + c * (-3.0 - -1.0);
/// let max = 2.0 + c * (4.0 - 2.0);
/// assert_eq!(obs.min_max(), Some((min, max)));
/// assert_eq!(obs.qparams()?.scale, (max - min) / 255.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MovingAverageMinMaxObserver {
    range: Option<(f32, f32)>,
    averaging_constant: f32,
    reduce_range: bool,
}

impl Default for MovingAverageMinMaxObserver {
    fn default() -> Self {
        MovingAverageMinMaxObserver {
            range: None,
            averaging_constant: Self::DEFAULT_AVERAGING_CONSTANT,
            reduce_range: false,
        }
    }
}

impl MovingAverageMinMaxObserver {
    /// torch's default `averaging_constant`, `0.01` (as f32, the precision torch
    /// multiplies in).
    pub const DEFAULT_AVERAGING_CONSTANT: f32 = 0.01;

    /// An observer that has seen nothing, averaging constant 0.01, range `[0, 255]`.
    pub fn new() -> Self {
        Self::default()
    }

    /// An observer with another averaging constant (the weight of each new batch).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] unless `0 <= averaging_constant <= 1`.
    pub fn with_averaging_constant(averaging_constant: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&averaging_constant) {
            return Err(Error::InvalidValue {
                what: "averaging_constant",
                expected: "in [0, 1] (torch's default is 0.01)",
                value: averaging_constant as f64,
            });
        }
        Ok(MovingAverageMinMaxObserver {
            averaging_constant,
            ..Self::default()
        })
    }

    /// torch's `reduce_range`: quantize to `[0, 127]` instead of `[0, 255]`.
    pub fn reduce_range(mut self, reduce_range: bool) -> Self {
        self.reduce_range = reduce_range;
        self
    }

    /// The averaging constant.
    pub fn averaging_constant(&self) -> f32 {
        self.averaging_constant
    }

    /// Forgets everything observed.
    pub fn reset(&mut self) {
        self.range = None;
    }
}

impl ActivationObserver for MovingAverageMinMaxObserver {
    fn observe_mat(&mut self, batch: MatRef<'_, f32>) -> Result<()> {
        if let Some((lo, hi)) = batch_min_max(&batch)? {
            let c = self.averaging_constant;
            self.range = Some(match self.range {
                None => (lo, hi),
                // Three separate f32 roundings each, as torch's tensor ops.
                Some((min, max)) => {
                    let dmin = lo - min;
                    let dmax = hi - max;
                    let smin = c * dmin;
                    let smax = c * dmax;
                    (min + smin, max + smax)
                }
            });
        }
        Ok(())
    }

    fn min_max(&self) -> Option<(f32, f32)> {
        self.range
    }

    fn is_reduce_range(&self) -> bool {
        self.reduce_range
    }
}
