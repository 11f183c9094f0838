//! `PackedWeights::from_bytes` on arbitrary bytes: never a panic; anything it accepts
//! must serialize back to the same bytes and unpack to weights that repack identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qlinear_api::PackedWeights;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = PackedWeights::from_bytes(data) {
        assert_eq!(p.to_bytes(), data, "accepted bytes must round-trip");
        let w = p.unpack();
        assert_eq!(w.out_features(), p.out_features());
    }
});
