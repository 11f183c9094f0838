//! The feature list of each ISA, written once, and its runtime detection.
//!
//! Each ISA's list is one `const` string below ([`AVX512VNNI`], [`AVXVNNI`], [`AVX2`]),
//! comma separated as `#[target_feature(enable = "...")]` takes it. The kernel code is
//! plain Rust items: every `unsafe fn` compiled for an ISA carries
//! `#[target_feature(enable = "<that ISA's list>")]`, spelled out in its file (an
//! attribute cannot name a `const`). Two checks keep those copies equal to the lists:
//!
//! * the unit test `isa::tests::target_features_match_the_isa_lists` reads each file with
//!   `include_str!` and compares every `#[target_feature(enable = "...")]` string in it
//!   with the list of that file's ISA (`avx512vnni.rs`, `avxvnni.rs`, `avx2.rs`, and the
//!   AVX2 helpers `epilogue256.rs` and `pack.rs`); a second test fails for a source file
//!   with `#[target_feature` attributes that the first one does not know;
//! * [`kernel_descriptor!`] takes the attribute and the list, and asserts at compile
//!   time that they are equal.
//!
//! The runtime check ([`detect`]) maps each name of a list to its
//! `is_x86_feature_detected!` (which needs a literal); a name it does not know panics,
//! which the unit test `isa::tests::every_listed_feature_is_detectable` (and every
//! kernel test, through `is_supported`) turns into a test failure.

/// AVX-512 VNNI kernels: 512-bit `vpdpbusd`, byte/word masks (BW, VL) for tails.
pub(crate) const AVX512VNNI: &str = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma";

/// AVX-VNNI kernels: VEX-encoded 256-bit `vpdpbusd` on CPUs without AVX-512.
pub(crate) const AVXVNNI: &str = "avx2,fma,avxvnni";

/// The exact AVX2 kernel (widening + `vpmaddwd`, no saturating instruction), and the
/// AVX2 helpers every kernel shares (`epilogue256`, `pack`).
pub(crate) const AVX2: &str = "avx2,fma";

/// True when the CPU has every feature of `features`, a comma-separated list such as
/// [`AVX2`] (std caches the detection).
///
/// # Panics
/// On a feature name this function does not know (a bug the unit tests catch).
pub(crate) fn detect(features: &str) -> bool {
    features.split(',').all(detected)
}

/// Runtime detection of one feature of the lists above.
fn detected(feature: &str) -> bool {
    match feature {
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
        "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
        "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
        "avxvnni" => std::arch::is_x86_feature_detected!("avxvnni"),
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        other => panic!("isa::detect: unknown target feature {other:?}; add it to `detected`"),
    }
}

/// Byte-wise string equality, usable in constants.
pub(crate) const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The parts every x86 kernel file has in common: its [`KernelDesc`] static, the runtime
/// check ([`detect`] of the ISA's list), and the dynamic-input helpers (the portable loops
/// of `qlinear_reference::activation` instantiated under the ISA's target features, so
/// they vectorize for it). The file provides `gemm_u8` and `gemm_f32`.
///
/// ```text
/// kernel_descriptor! {
///     #[target_feature(enable = "avx2,fma")]
///     features: crate::isa::AVX2,
///     name: "avx2/gemm_6x8c4", backend: "avx2", mr: MR, nr: NR, kr: KR,
/// }
/// ```
///
/// An optional last argument `m_pref: MPreference { .. }` sets the row counts the kernel
/// is picked for among kernels of its layout (default `MPreference::ALL`).
///
/// The attribute goes on the generated helpers; a compile-time assertion checks that its
/// string equals `features`.
///
/// [`KernelDesc`]: qlinear_reference::contract::KernelDesc
macro_rules! kernel_descriptor {
    (
        #[target_feature(enable = $enable:literal)]
        features: $features:path,
        name: $name:literal,
        backend: $backend:literal,
        mr: $mr:expr,
        nr: $nr:expr,
        kr: $kr:expr
        $(, m_pref: $m_pref:expr)? $(,)?
    ) => {
        const _: () = assert!(
            $crate::isa::same_str($enable, $features),
            "the #[target_feature] string differs from the ISA's feature list"
        );

        /// The kernel descriptor.
        pub static KERNEL: qlinear_reference::contract::KernelDesc =
            qlinear_reference::contract::KernelDesc {
                name: $name,
                backend: $backend,
                mr: $mr,
                layout: qlinear_reference::contract::PackedLayout { nr: $nr, kr: $kr },
                m_pref: {
                    #[allow(unused_variables)]
                    let m_pref = qlinear_reference::contract::MPreference::ALL;
                    $(let m_pref = $m_pref;)?
                    m_pref
                },
                is_supported,
                gemm_u8,
                gemm_f32,
                min_max,
                quantize,
                pack_panel: Some(pack_panel),
            };

        fn is_supported() -> bool {
            $crate::isa::detect($features)
        }

        /// The dynamic input's range check, vectorized for this ISA.
        ///
        /// # Safety
        /// The CPU supports this kernel's ISA.
        #[target_feature(enable = $enable)]
        unsafe fn min_max(
            x: &qlinear_reference::MatRef<'_, f32>,
        ) -> qlinear_reference::Result<(f32, f32)> {
            qlinear_reference::activation::min_max_finite(x)
        }

        /// Packs one panel and sums its columns with AVX2 (see `crate::pack`).
        ///
        /// # Safety
        /// As [`qlinear_reference::contract::PackPanelFn`] states.
        #[target_feature(enable = $enable)]
        unsafe fn pack_panel(
            w: &[i8],
            n: usize,
            k: usize,
            p: usize,
            out: &mut [u8],
            col_sums: &mut [i32],
        ) {
            // SAFETY: forwarded contract; this ISA includes AVX2.
            unsafe { crate::pack::pack_panel_c4::<{ $nr }>(w, n, k, p, out, col_sums) }
        }

        /// The dynamic input's quantization (and row sums), vectorized for this ISA.
        ///
        /// # Safety
        /// The CPU supports this kernel's ISA.
        #[target_feature(enable = $enable)]
        unsafe fn quantize(
            x: &qlinear_reference::MatRef<'_, f32>,
            scale: f32,
            zp: i32,
            out: &mut [u8],
        ) -> Vec<i32> {
            qlinear_reference::activation::quantize_rows(x, scale, zp, out)
        }
    };
}

pub(crate) use kernel_descriptor;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every source file with `#[target_feature]` attributes, and its ISA's list.
    const SOURCES: &[(&str, &str, &str)] = &[
        ("avx512vnni.rs", include_str!("avx512vnni.rs"), AVX512VNNI),
        (
            "avx512vnni_gemv.rs",
            include_str!("avx512vnni_gemv.rs"),
            AVX512VNNI,
        ),
        ("avxvnni.rs", include_str!("avxvnni.rs"), AVXVNNI),
        ("avx2.rs", include_str!("avx2.rs"), AVX2),
        ("epilogue256.rs", include_str!("epilogue256.rs"), AVX2),
        ("pack.rs", include_str!("pack.rs"), AVX2),
    ];

    /// The attribute as `cargo fmt` writes it, up to its string.
    const ATTR: &str = "#[target_feature(enable = \"";

    /// `src` without its comment lines (docs may mention the attribute).
    fn code(src: &str) -> String {
        src.lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The strings of every `#[target_feature(enable = "...")]` in `src`.
    fn enabled(src: &str) -> Vec<&str> {
        src.match_indices(ATTR)
            .map(|(i, _)| {
                let rest = &src[i + ATTR.len()..];
                &rest[..rest.find('"').expect("unterminated target_feature string")]
            })
            .collect()
    }

    #[test]
    fn target_features_match_the_isa_lists() {
        for &(file, src, features) in SOURCES {
            let src = &code(src);
            let found = enabled(src);
            assert!(!found.is_empty(), "{file}: no {ATTR}...\")]");
            // Any other spelling of the attribute would escape the comparison below.
            assert_eq!(
                src.matches("target_feature(").count(),
                found.len(),
                "{file}: a target_feature attribute not written as {ATTR}...\")]"
            );
            for enable in found {
                assert_eq!(
                    enable, features,
                    "{file}: #[target_feature] differs from its ISA list"
                );
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads the source directory")]
    fn every_file_with_target_features_is_checked() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        for entry in std::fs::read_dir(dir).expect("read src/") {
            let path = entry.expect("read src/ entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if !name.ends_with(".rs") || name == "isa.rs" {
                continue;
            }
            let src = std::fs::read_to_string(&path).expect("read source file");
            if code(&src).contains("target_feature(") {
                assert!(
                    SOURCES.iter().any(|&(file, _, _)| file == name),
                    "{name} has #[target_feature] attributes: add it to isa::tests::SOURCES"
                );
            }
        }
    }

    #[test]
    fn every_listed_feature_is_detectable() {
        for features in [AVX512VNNI, AVXVNNI, AVX2] {
            assert!(
                !features.is_empty() && !features.contains(' '),
                "{features:?}"
            );
            // Panics on a name `detected` does not map.
            detect(features);
            for feature in features.split(',') {
                detected(feature);
            }
        }
    }

    #[test]
    fn same_str_compares_bytes() {
        assert!(same_str("avx2,fma", AVX2));
        assert!(!same_str("avx2", AVX2));
        assert!(!same_str("avx2,fmb", AVX2));
    }
}
