//! Calibration: a static layer's input and output qparams chosen from f32 data, the way
//! torch's eager-mode post-training static quantization does it.
//!
//! In torch, `prepare` puts an activation observer on the `QuantStub` (it sees the f32
//! input) and one on the float `Linear`'s output (it sees `x @ W^T + b`, after the ReLU
//! for a fused `LinearReLU`); the calibration data is run through the float model; then
//! `convert` quantizes the weight with the weight observer and takes the input and
//! output qparams from the two activation observers. [`Calibrator`] does the same for
//! one layer and hands back a [`LinearBuilder`].
//!
//! See [`Calibrator`] for what is exact and what is not.

use std::fmt;

use qlinear_reference::observer::{ActivationObserver, MinMaxObserver};
use qlinear_reference::params::{check_finite, check_layer_dims};
use qlinear_reference::{relu_f32, ActQParams, Error, MatRef, Observer, Result};

use crate::linear::{Linear, LinearBuilder};

/// Runs calibration data through one float linear layer, observing its input and
/// output, and builds the static [`Linear`] torch's `convert` would.
///
/// # Exactness
///
/// The observers and the qparams formula are torch's to the bit
/// ([`qlinear_reference::observer`]), and so is the input observer's view of the data.
/// The float layer's output is not: torch computes it with an f32 GEMM (MKL or oneDNN)
/// whose summation order is unspecified and differs between machines. qlinear computes
/// each output as the exact f32 products summed in f64 (in order of `k`), plus the
/// bias, rounded once to f32, then the ReLU: usually the f32 nearest the exact value,
/// but not necessarily torch's bits. The observed output range can therefore differ
/// from torch's in the last bits, and so can the output scale (rarely, the zero point
/// by one). To reproduce a torch model
/// exactly, take the output qparams from torch (`Linear::from_float` with explicit
/// [`ActQParams`]) or observe torch's own float outputs with an
/// [`ActivationObserver`].
///
/// ```
/// use qlinear::{Calibrator, Observer};
/// # fn main() -> Result<(), qlinear::Error> {
/// let (n, k) = (3, 4);
/// let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.61).sin()).collect();
/// let mut cal = Calibrator::new(&w, n, k, Some(&[0.1, -0.2, 0.3]))?.relu(true);
/// for batch in [[0.5f32, -1.0, 2.0, 0.0], [1.5, 0.25, -0.75, 3.0]] {
///     cal.observe_vec(&batch, 1)?;
/// }
/// let layer = cal.build(Observer::PER_CHANNEL_SYMMETRIC)?.build()?;
/// assert_eq!(layer.output_qparams().zero_point, 0); // after a ReLU, min = 0
/// let y = layer.forward_f32_vec(&[0.5, -1.0, 2.0, 0.0], 1)?;
/// assert_eq!(y.len(), n);
/// # Ok(()) }
/// ```
///
/// `Debug` prints the shape, the options and the observers, not the weight.
#[derive(Clone)]
pub struct Calibrator<O = MinMaxObserver> {
    weight: Vec<f32>,
    n: usize,
    k: usize,
    bias: Option<Vec<f32>>,
    relu: bool,
    input: O,
    output: O,
}

impl<O: fmt::Debug> fmt::Debug for Calibrator<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Calibrator")
            .field("out_features", &self.n)
            .field("in_features", &self.k)
            .field("bias", &self.bias.as_ref().map(Vec::len))
            .field("relu", &self.relu)
            .field("input", &self.input)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl Calibrator<MinMaxObserver> {
    /// A calibrator for the float layer `x @ weight^T + bias` (`weight` is
    /// `out_features x in_features`, row-major, like torch), with torch's
    /// `MinMaxObserver` (quint8, full range) on its input and output.
    ///
    /// # Errors
    /// Dimension, shape or non-finite errors for the weight or the bias.
    pub fn new(
        weight: &[f32],
        out_features: usize,
        in_features: usize,
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        let (n, k) = (out_features, in_features);
        check_layer_dims(n, k)?;
        let expected = n
            .checked_mul(k)
            .ok_or(Error::Dimension("out_features * in_features overflows"))?;
        if weight.len() != expected {
            return Err(Error::Shape {
                what: "float weight elements (out_features * in_features)",
                expected,
                got: weight.len(),
            });
        }
        check_finite("float weight", weight)?;
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
        Ok(Calibrator {
            weight: weight.to_vec(),
            n,
            k,
            bias: bias.map(<[f32]>::to_vec),
            relu: false,
            input: MinMaxObserver::new(),
            output: MinMaxObserver::new(),
        })
    }
}

impl<O: ActivationObserver + Clone> Calibrator<O> {
    /// Uses `observer` (as given, e.g. `MinMaxObserver::new().reduce_range(true)` or a
    /// `MovingAverageMinMaxObserver`) for both the input and the output, like one
    /// torch qconfig's `activation`. Anything observed so far is dropped.
    pub fn with_observer<P: ActivationObserver + Clone>(self, observer: P) -> Calibrator<P> {
        Calibrator {
            weight: self.weight,
            n: self.n,
            k: self.k,
            bias: self.bias,
            relu: self.relu,
            input: observer.clone(),
            output: observer,
        }
    }

    /// Calibrates a fused `LinearReLU`: the output observer sees the output after the
    /// ReLU, and the built layer fuses it.
    pub fn relu(mut self, relu: bool) -> Self {
        self.relu = relu;
        self
    }

    /// The float layer's output for an `m x in_features` view, `m x out_features`
    /// dense (see "Exactness" on [`Calibrator`] for how it is rounded).
    ///
    /// # Errors
    /// [`Error::Shape`] for a wrong number of columns; [`Error::NonFinite`] for a NaN or
    /// infinity in the input.
    pub fn float_forward(&self, input: MatRef<'_, f32>) -> Result<Vec<f32>> {
        self.check_input(&input)?;
        let len = input
            .rows()
            .checked_mul(self.n)
            .ok_or(Error::Dimension("output size m * n overflows"))?;
        let mut out = Vec::with_capacity(len);
        for i in 0..input.rows() {
            let x = input.row(i);
            for (j, w) in self.weight.chunks_exact(self.k).enumerate() {
                // f32 * f32 is exact in f64; only the sum rounds.
                let mut acc = x
                    .iter()
                    .zip(w)
                    .fold(0.0f64, |acc, (&a, &b)| acc + a as f64 * b as f64);
                if let Some(b) = &self.bias {
                    acc += b[j] as f64;
                }
                let y = acc as f32;
                out.push(if self.relu { relu_f32(y) } else { y });
            }
        }
        Ok(out)
    }

    /// Runs one calibration batch (an `m x in_features` view, one torch `forward`
    /// call) through the float layer, observing its input and its output.
    ///
    /// # Errors
    /// [`Error::Shape`] for a wrong number of columns; [`Error::NonFinite`] for a NaN or
    /// infinity in the input, or an output that overflows f32. On error neither
    /// observer changes.
    pub fn observe(&mut self, input: MatRef<'_, f32>) -> Result<()> {
        let y = self.float_forward(input)?;
        if let Err(Error::NonFinite { index, .. }) = check_finite("float layer output", &y) {
            return Err(Error::NonFinite {
                what: "float layer output (calibration)",
                index,
            });
        }
        // Update copies, then commit both: an error leaves both observers as they were.
        let mut obs_in = self.input.clone();
        let mut obs_out = self.output.clone();
        obs_in.observe_mat(input)?;
        obs_out.observe_mat(MatRef::dense(&y, input.rows(), self.n)?)?;
        self.input = obs_in;
        self.output = obs_out;
        Ok(())
    }

    /// [`Calibrator::observe`] on `m` dense rows of `in_features` floats.
    ///
    /// # Errors
    /// As [`Calibrator::observe`], plus [`Error::BufferTooSmall`] when `input` holds
    /// fewer than `m * in_features` values.
    pub fn observe_vec(&mut self, input: &[f32], m: usize) -> Result<()> {
        self.observe(MatRef::dense(input, m, self.k)?)
    }

    /// The input observer (torch's `QuantStub` observer).
    pub fn input_observer(&self) -> &O {
        &self.input
    }

    /// The output observer (on the float layer's output).
    pub fn output_observer(&self) -> &O {
        &self.output
    }

    /// The input and output qparams chosen so far.
    ///
    /// # Errors
    /// [`Error::NotObserved`] before any data was observed.
    pub fn qparams(&self) -> Result<(ActQParams, ActQParams)> {
        Ok((self.input.qparams()?, self.output.qparams()?))
    }

    /// torch's `convert`: quantizes the weight with `weight_observer` and returns a
    /// builder with the observed input and output qparams, the bias and the ReLU set
    /// (profile, backend and threads can still be chosen on it).
    ///
    /// # Errors
    /// [`Error::NotObserved`] before any data was observed; qparams errors.
    pub fn build(&self, weight_observer: Observer) -> Result<LinearBuilder> {
        let (input, output) = self.qparams()?;
        Ok(
            Linear::from_float(&self.weight, self.n, self.k, weight_observer, input, output)?
                .maybe_bias(self.bias.clone())
                .relu(self.relu),
        )
    }

    fn check_input(&self, input: &MatRef<'_, f32>) -> Result<()> {
        if input.cols() != self.k {
            return Err(Error::Shape {
                what: "input columns (in_features)",
                expected: self.k,
                got: input.cols(),
            });
        }
        for i in 0..input.rows() {
            if let Err(Error::NonFinite { index, .. }) = check_finite("input", input.row(i)) {
                return Err(Error::NonFinite {
                    what: "input",
                    index: i * input.cols() + index,
                });
            }
        }
        Ok(())
    }
}
