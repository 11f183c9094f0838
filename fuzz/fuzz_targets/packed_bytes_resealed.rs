//! `PackedWeights::from_bytes` past the checksum: the fuzzer's bytes get their checksum
//! field (the last 8 bytes, FNV-1a-64 of the rest) rewritten before parsing, so mutations
//! of the header, qparams and packed data reach every validation step. Never a panic; a
//! resealed input never fails on its checksum; anything accepted must round-trip,
//! unpack, repack identically and run a forward call equal to the reference
//! (`qlinear_fuzz::packed::check_accepted`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    qlinear_fuzz::packed::check_resealed(data);
});
