//! Arbitrary bytes as a safetensors checkpoint: `Checkpoint::parse`,
//! `Linear::from_safetensors` / `DynamicLinear::from_safetensors` for every layer
//! prefix it holds, and `quantize_checkpoint` return `Ok` or `Err`, never panic; what
//! they accept runs like the reference (`qlinear_fuzz::safetensors::check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    qlinear_fuzz::safetensors::check(data);
});
