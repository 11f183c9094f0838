//! # qlinear: exact int8 linear layers
//!
//! What `torch.ao.nn.quantized.Linear`, `LinearReLU` and
//! `torch.ao.nn.quantized.dynamic.Linear` compute, bit for bit (see the
//! [`Profile`]s), with weights packed once for the best kernel of the CPU it runs on.
//!
//! * [`Linear`]: static, u8 activations -> u8 outputs, optional fused ReLU.
//! * [`DynamicLinear`]: f32 -> f32, input quantized per call like PyTorch.
//! * [`QuantizedWeight`] / [`PackedWeights`]: int8 weights with per-tensor or
//!   per-channel qparams ([`WeightQParams`]), packed for one kernel; `from_float` with
//!   torch's weight [`Observer`]s.
//! * [`ActQParams`]: the scale and zero point of a u8 activation tensor, with torch's
//!   `quantize_per_tensor` / `dequantize` ([`ActQParams::quantize_vec`],
//!   [`ActQParams::dequantize_vec`]); [`MinMaxObserver`] and
//!   [`MovingAverageMinMaxObserver`] choose them from data like torch's observers.
//! * f32 around a static layer: [`Calibrator`] observes a float layer's input and output
//!   and builds the [`Linear`] torch's `convert` would; [`Linear::forward_f32`] is
//!   QuantStub -> Linear -> DeQuantStub in one call.
//! * [`Backend`]: `Auto` (best detected kernel, or `QLINEAR_BACKEND`) or a named one;
//!   [`available_backends`] lists what this CPU runs.
//!
//! Unlike fbgemm, MLAS or oneDNN on AVX2, no kernel here ever saturates an
//! intermediate: every backend, thread count and M gives the reference's exact bits.
//! Invalid input is an [`Error`], never a panic.
//!
//! ```
//! use qlinear::prelude::*;
//!
//! # fn main() -> Result<(), qlinear::Error> {
//! // torch.ao.nn.quantized.dynamic.Linear(3, 2) from f32 weights, per-channel int8.
//! let w = [0.5, -1.0, 0.25, 2.0, 0.0, -0.75];
//! let layer = DynamicLinear::from_float(&w, 2, 3, Observer::PER_CHANNEL_SYMMETRIC)?
//!     .bias(vec![0.1, -0.1])
//!     .build()?;
//! let y = layer.forward_vec(&[1.0, 2.0, 3.0, -1.0, 0.5, 0.0], 2)?; // two rows
//! assert_eq!(y.len(), 2 * 2);
//! # Ok(())
//! # }
//! ```
//!
//! ## Feature flags
//!
//! | feature | default | what it does |
//! |---|---|---|
//! | `rayon` | on | forward calls split M and N over a rayon pool (`threads(n)` on the builders) |
//! | `safetensors` | on | the [`safetensors`] module: layers to and from safetensors checkpoints, quantizing a float checkpoint (pulls in `safetensors` and `half`) |
//! | `conformance` | off | the `conformance` module: reads torch's golden-vector files and runs them on any backend (test tooling; pulls in `serde_json`) |
//!
//! ## Where things are documented
//!
//! The arithmetic contract (torch's rounding, the profiles, what "exact" means) is
//! `docs/semantics.md` in the repository; the packed-weight formats are described on
//! [`PackedWeights`]; [`unstable`] holds kernel-level internals with no semver promise.
#![deny(clippy::print_stdout, clippy::print_stderr)]

/// The README's usage example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod backend;
mod calibrate;
#[cfg(feature = "conformance")]
pub mod conformance;
mod driver;
mod kernel_set;
mod layer_io;
mod linear;
mod packed;
pub mod packed_format;
mod packing;
#[cfg(feature = "safetensors")]
pub mod safetensors;

pub use backend::{available_backends, cpu_info, Backend, CpuInfo, BACKEND_ENV};
pub use calibrate::Calibrator;
pub use linear::{
    DynamicLinear, DynamicLinearBuilder, InputQuantization, Linear, LinearBuilder,
    SCRATCH_KEEP_BYTES,
};
pub use packed::{PackedWeights, QuantizedWeight};
pub use packed_format::{LayerKind, LoadReport};
pub use qlinear_reference::contract::Isa;
pub use qlinear_reference::observer::{
    ActivationObserver, MinMaxObserver, MovingAverageMinMaxObserver,
};
pub use qlinear_reference::{
    ActQParams, Error, MatMut, MatRef, Observer, Profile, Result, WeightQParams, K_LIMIT,
};

/// The names most programs need: `use qlinear::prelude::*;`.
pub mod prelude {
    pub use crate::{
        ActQParams, ActivationObserver, Backend, Calibrator, DynamicLinear, Error,
        InputQuantization, Linear, MatMut, MatRef, MinMaxObserver, Observer, PackedWeights,
        Profile, QuantizedWeight, WeightQParams,
    };
}

/// Kernel-level internals for qlinear's own CLI, benches and fuzzers.
///
/// **Unstable:** nothing here follows semver; it changes whenever the kernel contract
/// does. Programs that use qlinear as a library need none of it: pick a kernel with
/// [`Backend`], see what runs with `kernel_name()`.
pub mod unstable {
    pub use crate::backend::{compiled_kernels, isa_entry, isa_table, resolve, Engine};
    pub use qlinear_reference::contract::{KernelDesc, MPreference};
    pub use qlinear_reference::isa::{IsaDesc, PeakProbe, PEAK_ACCUMULATORS};

    use crate::{PackedWeights, QuantizedWeight};

    /// `w` packed for the registered kernel named `name` (e.g. `avx512vnni/gemv_1x32c4`,
    /// see [`compiled_kernels`]) and for it alone: a layer built from the result
    /// (`Linear::from_packed`, `DynamicLinear::from_packed`, with the default
    /// [`crate::Backend::Auto`]) runs that kernel for every M. For `qlinear bench
    /// --kernel` and kernel tests.
    ///
    /// # Errors
    /// A message listing the registered kernels when `name` is unknown, or the kernels
    /// this CPU supports when it cannot run `name`.
    pub fn pack_for_kernel(w: &QuantizedWeight, name: &str) -> Result<PackedWeights, String> {
        PackedWeights::for_kernel(w, name)
    }
}
