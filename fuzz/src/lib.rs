//! What the qlinear fuzz targets check, shared by the targets (`fuzz_targets/`) and the
//! seed-corpus generator (`examples/gen_corpus.rs`).
//!
//! * [`packed`]: the `PackedWeights` serialized form: the checksum (re)sealing that lets
//!   mutated bytes reach the parser's deeper checks, and everything an accepted blob
//!   must satisfy (round trip, unpack, repack, a forward call against the reference).
//! * [`differential`]: a structured case (shape, qparams, bias, strides, backend,
//!   threads, data) run through the API and compared bit for bit with the reference.
//! * [`safetensors`]: arbitrary bytes as a safetensors checkpoint (layers loaded both
//!   ways, quantized as a float checkpoint), anything accepted checked against the
//!   reference and `QuantizedWeight::from_float`.

pub mod differential;
pub mod packed;
pub mod safetensors;

use qlinear::Backend;
use std::sync::OnceLock;

/// [`qlinear::available_backends`], computed once per process.
pub fn backends() -> &'static [Backend] {
    static B: OnceLock<Vec<Backend>> = OnceLock::new();
    B.get_or_init(qlinear::available_backends)
}
