//! Differential fuzzing, structured: the fuzzer chooses the shape, every qparam (valid or
//! not, extremes included), bias, ReLU, profile, reduce_range, strided input and output
//! views, the backend (one of `available_backends()`) and the thread count; the data
//! comes from the rest of the input, then from a fuzzer-chosen seed. The API must equal
//! the reference bit for bit (static bytes, dynamic f32 bits, the dynamic layer in both
//! per-tensor and per-row input quantization), agree with it on Ok vs
//! Err, and leave the output buffer outside the view untouched
//! (`qlinear_fuzz::differential`). `cargo fuzz fmt differential <file>` prints a case.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qlinear_fuzz::differential::{run, Input};

fuzz_target!(|input: Input| {
    run(&input);
});
