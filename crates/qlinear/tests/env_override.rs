//! `QLINEAR_BACKEND` overrides `Backend::Auto`. Environment variables are process-global,
//! so this file holds a single test (its own process) and no other test reads the
//! variable concurrently.

use qlinear::unstable::resolve;
use qlinear::{
    available_backends, ActQParams, Backend, DynamicLinear, Error, Linear, QuantizedWeight,
    WeightQParams, BACKEND_ENV,
};

fn weight() -> QuantizedWeight {
    QuantizedWeight::new(
        vec![1, -2, 3, -4, 5, 6],
        2,
        3,
        WeightQParams::PerTensor {
            scale: 0.1,
            zero_point: 0,
        },
    )
    .unwrap()
}

fn auto_static() -> Result<Linear, Error> {
    Linear::builder(
        weight(),
        ActQParams::new(0.1, 10).unwrap(),
        ActQParams::new(0.2, 20).unwrap(),
    )
    .build()
}

#[test]
fn qlinear_backend_env_overrides_auto() {
    assert_eq!(BACKEND_ENV, "QLINEAR_BACKEND");
    let best = *available_backends().first().unwrap();

    // Unset: Auto is the best available backend.
    std::env::remove_var(BACKEND_ENV);
    assert_eq!(resolve(Backend::Auto).unwrap().backend(), best);
    assert_eq!(auto_static().unwrap().packed().backend(), best);

    // reference (any case, surrounding blanks): Auto resolves to the oracle.
    for v in ["reference", "Reference", " REFERENCE "] {
        std::env::set_var(BACKEND_ENV, v);
        let e = resolve(Backend::Auto).unwrap();
        assert_eq!(e.backend(), Backend::Reference, "{v:?}");
        assert_eq!(e.kernel_name(), "reference");
        assert_eq!(auto_static().unwrap().kernel_name(), "reference");
        let d = DynamicLinear::builder(weight()).build().unwrap();
        assert_eq!(d.kernel_name(), "reference");
        // An explicit backend is not affected by the variable.
        assert_eq!(resolve(best).unwrap().backend(), best);
    }

    // Every available backend can be forced, and the variable restricts an Auto
    // layer's kernel set to that backend's kernels for every M.
    for b in available_backends() {
        std::env::set_var(BACKEND_ENV, b.name());
        assert_eq!(resolve(Backend::Auto).unwrap().backend(), b);
        let layer = auto_static().unwrap();
        for m in [1, 2, 8, 64] {
            let name = layer.kernel_name_for(m);
            assert!(
                name == "reference" && b == Backend::Reference
                    || name.split('/').next() == Some(b.name()),
                "{BACKEND_ENV}={b}: m={m} runs {name}"
            );
        }
        assert_eq!(
            layer.packed().kernel_names(),
            qlinear::PackedWeights::new(&weight(), b)
                .unwrap()
                .kernel_names(),
            "{BACKEND_ENV}={b}"
        );
    }

    // An unknown name is an error, not a silent fallback.
    std::env::set_var(BACKEND_ENV, "bogus");
    let r = resolve(Backend::Auto);
    assert!(
        matches!(&r, Err(Error::UnknownBackend(s)) if s == "bogus"),
        "{r:?}"
    );
    assert!(matches!(auto_static(), Err(Error::UnknownBackend(_))));
    // Explicit backends still work.
    assert!(resolve(Backend::Reference).is_ok());

    // A known but unavailable name is BackendUnavailable.
    let foreign = if cfg!(target_arch = "aarch64") {
        Backend::Avx2
    } else {
        Backend::Neon
    };
    std::env::set_var(BACKEND_ENV, foreign.name());
    assert!(matches!(
        resolve(Backend::Auto),
        Err(Error::BackendUnavailable(_))
    ));

    // "auto" and blank mean no override.
    for v in ["auto", "", "   "] {
        std::env::set_var(BACKEND_ENV, v);
        assert_eq!(resolve(Backend::Auto).unwrap().backend(), best, "{v:?}");
    }

    // A value that is not UTF-8 is an error naming the variable, not silently ignored.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::env::set_var(BACKEND_ENV, std::ffi::OsStr::from_bytes(b"avx\xff2"));
        let r = resolve(Backend::Auto);
        assert!(
            matches!(&r, Err(Error::UnknownBackend(s)) if s.contains("QLINEAR_BACKEND") && s.contains("UTF-8")),
            "{r:?}"
        );
        assert!(matches!(auto_static(), Err(Error::UnknownBackend(_))));
        assert!(resolve(Backend::Reference).is_ok());
    }

    // Unset again: back to the best.
    std::env::remove_var(BACKEND_ENV);
    assert_eq!(resolve(Backend::Auto).unwrap().backend(), best);
    assert_eq!(auto_static().unwrap().packed().backend(), best);
}
