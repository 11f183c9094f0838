//! `PackedWeights::from_bytes` on arbitrary bytes: never a panic; anything it accepts
//! must serialize back to the same bytes, unpack to a valid weight that repacks
//! identically, and run a forward call equal to the reference
//! (`qlinear_fuzz::packed::check_accepted`).
//!
//! Random bytes almost never pass the checksum: this target covers the outer checks;
//! `packed_bytes_resealed` rewrites the checksum to reach the rest.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    qlinear_fuzz::packed::check_raw(data);
});
