//! `QLINEAR_BACKEND=auto` (or blank) means no override, for loading packed files as
//! for `resolve`: the stored kernel is kept when this CPU runs it, as with the variable
//! unset. Environment variables are process-global, so this file holds a single test.

use qlinear::{available_backends, Backend, PackedWeights, QuantizedWeight, WeightQParams};
use qlinear_reference::testkit::Rng;

#[test]
fn auto_or_blank_env_keeps_the_stored_kernel() {
    let var = qlinear::BACKEND_ENV;
    std::env::remove_var(var);
    let mut rng = Rng::new(9);
    let (n, k) = (40, 70);
    let w = QuantizedWeight::new(
        rng.i8s(n * k),
        n,
        k,
        WeightQParams::PerTensor {
            scale: 0.02,
            zero_point: 0,
        },
    )
    .unwrap();
    // Every non-reference backend, including ones that are not the best: the file must
    // load for the kernel it names, without a repack.
    for b in available_backends()
        .into_iter()
        .filter(|&b| b != Backend::Reference)
    {
        let bytes = PackedWeights::new(&w, b).unwrap().to_bytes();
        for value in [None, Some("auto"), Some(" AUTO "), Some(""), Some("  ")] {
            match value {
                None => std::env::remove_var(var),
                Some(v) => std::env::set_var(var, v),
            }
            let (p, r) = PackedWeights::from_bytes_with_report(&bytes).unwrap();
            assert_eq!(p.backend(), b, "{var}={value:?}: loaded for {}", r.kernel);
            assert!(!r.repacked, "{var}={value:?}: repacked");
        }
    }
    // A named backend still overrides the stored kernel.
    std::env::set_var(var, "reference");
    let bytes = PackedWeights::new(&w, *available_backends().first().unwrap())
        .unwrap()
        .to_bytes();
    let (p, _) = PackedWeights::from_bytes_with_report(&bytes).unwrap();
    assert_eq!(p.backend(), Backend::Reference);
    std::env::remove_var(var);
}
