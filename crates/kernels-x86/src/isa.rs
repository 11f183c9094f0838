//! The x86 half of the ISA table: one [`IsaDesc`] entry per x86 ISA in [`TABLE`] (its
//! target-feature list, its runtime detection with the CPU / OS reason, its `qlinear
//! bench` peak probe). Names, ranks and the `Isa` variants come from
//! [`qlinear_reference::for_each_isa!`]; see [`qlinear_reference::isa`].
//!
//! Each ISA's feature list is one `const` string below ([`AVX512VNNI`], [`AVXVNNI`],
//! [`AVX2`]), comma separated as `#[target_feature(enable = "...")]` takes it, and its
//! table entry refers to it. The kernel code is plain Rust items: every `unsafe fn`
//! compiled for an ISA carries `#[target_feature(enable = "<that ISA's list>")]`, spelled
//! out in its file (an attribute cannot name a `const`). Two checks keep those copies
//! equal to the lists:
//!
//! * the unit test `isa::tests::target_features_match_the_isa_lists` reads each file with
//!   `include_str!` and compares every `#[target_feature(enable = "...")]` string in it
//!   with the list of that file's ISA entry: every kernel file registered in
//!   `kernel_registry!` (which passes its source and its `KERNEL.isa`), plus the helpers
//!   `epilogue256.rs` and `pack.rs` (AVX2) and `peak.rs` (whose loops belong to three
//!   entries); a second test fails for a source file with `#[target_feature` attributes
//!   that the first one does not know;
//! * [`kernel_descriptor!`] takes the attribute, the list and the ISA, and asserts at
//!   compile time that the attribute equals the list and the list equals the ISA's table
//!   entry.
//!
//! The runtime check ([`detect_features`]) first reads the OS-enabled register state
//! (XCR0, through `xgetbv` once `CPUID.1:ECX.OSXSAVE` says the OS uses XSAVE), then maps
//! each name of a list to its `is_x86_feature_detected!` (which needs a literal); a name
//! it does not know panics, which the unit test
//! `isa::tests::every_listed_feature_is_detectable` (and every kernel test, through
//! `is_supported`) turns into a test failure. A kernel's `is_supported` *is* its table
//! entry's detection.
//!
//! The AMX entry's `detect` ([`detect_amx`]) checks CPUID.(7,0):EDX bits 24/25, palette
//! 1's geometry, XCR0 bits 17/18 ([`XCR0_AMX`]), requests `ARCH_REQ_XCOMP_PERM` once per
//! process, then runs a known-answer self-test of the tile instructions once.

use qlinear_reference::contract::Isa;
pub(crate) use qlinear_reference::isa::same_str;
use qlinear_reference::isa::{IsaDesc, PeakProbe};

use crate::peak;

/// The x86 ISA table: one entry per x86 ISA, best first.
pub(crate) const TABLE: &[IsaDesc] = &[
    IsaDesc {
        isa: Isa::Amx,
        features: AMX,
        detect: detect_amx,
        peak: Some(PeakProbe {
            instruction: "tdpbusd (2 x 2 accumulator tiles)",
            macs_per_instr: crate::amx::MACS_PER_TDPBUSD,
            run: peak::tdpbusd,
        }),
    },
    IsaDesc {
        isa: Isa::Avx512Vnni,
        features: AVX512VNNI,
        detect: || detect_features(AVX512VNNI, XCR0_AVX512, "AVX-512"),
        peak: Some(PeakProbe {
            instruction: "vpdpbusd zmm",
            macs_per_instr: 64,
            run: peak::vpdpbusd_zmm,
        }),
    },
    IsaDesc {
        isa: Isa::AvxVnni,
        features: AVXVNNI,
        detect: || detect_features(AVXVNNI, XCR0_AVX, "AVX"),
        peak: Some(PeakProbe {
            instruction: "vpdpbusd ymm (VEX)",
            macs_per_instr: 32,
            run: peak::vpdpbusd_ymm,
        }),
    },
    IsaDesc {
        isa: Isa::Avx2,
        features: AVX2,
        detect: || detect_features(AVX2, XCR0_AVX, "AVX"),
        peak: Some(PeakProbe {
            instruction: "vpmaddwd ymm + vpaddd ymm",
            macs_per_instr: 16,
            run: peak::vpmaddwd_ymm,
        }),
    },
];

/// The table entry of `isa`, usable in constants.
///
/// # Panics
/// When `isa` has no x86 entry (at compile time when evaluated in a constant).
pub(crate) const fn entry(isa: Isa) -> &'static IsaDesc {
    match IsaDesc::find(TABLE, isa) {
        Some(e) => e,
        None => panic!("no x86 ISA table entry for this Isa"),
    }
}

/// XCR0 bits of the SSE and AVX (YMM) register state.
pub(crate) const XCR0_AVX: u64 = 0b110;
/// XCR0 bits of the AVX-512 state: SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM.
pub(crate) const XCR0_AVX512: u64 = 0b1110_0110;
/// XCR0 bits of the AMX state: XTILECFG (17) and XTILEDATA (18).
pub(crate) const XCR0_AMX: u64 = (1 << 17) | (1 << 18);

/// AMX detection: the AVX-512 features the kernel's epilogue uses, CPUID.(7,0):EDX bits
/// 24 (AMX-TILE) and 25 (AMX-INT8), palette 1's tile geometry (CPUID.(0x1D,1): at least 8
/// tiles of 16 rows x 64 bytes), the OS-enabled tile state in XCR0 (bits 17, 18),
/// the kernel's permission to use the tile data, requested once per process, and last a
/// known-answer self-test of the tile instructions (`amx::known_answer`, once per
/// process): a CPU whose instructions disagree with it is reported without `amx`.
fn detect_amx() -> Result<(), String> {
    if cfg!(miri) {
        return Err("not under Miri (cpuid, xgetbv and arch_prctl are not interpreted)".into());
    }
    detect_features(AMX, XCR0_AVX512, "AVX-512")?;
    // Tests with the `amx-emulation` feature: the tile instructions run in software.
    #[cfg(all(target_os = "linux", feature = "amx-emulation"))]
    if crate::amx_emulation::backend_enabled() {
        return crate::amx::hardware_known_answer();
    }
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    let missing: Vec<&str> = [(24, "amx-tile"), (25, "amx-int8")]
        .into_iter()
        .filter(|&(bit, _)| edx & (1 << bit) == 0)
        .map(|(_, name)| name)
        .collect();
    if !missing.is_empty() {
        return Err(format!("CPU lacks {}", missing.join(", ")));
    }
    // The tile geometry the kernel configures (palette 1: 8 tiles of 16 rows x 64
    // bytes), from the tile information leaf rather than assumed.
    if std::arch::x86_64::__cpuid(0).eax < 0x1D {
        return Err("CPU lacks the tile information leaf (CPUID 0x1D)".into());
    }
    let palette = std::arch::x86_64::__cpuid_count(0x1D, 1);
    let (bytes_per_row, tiles, rows) = (
        palette.ebx & 0xFFFF,
        palette.ebx >> 16,
        palette.ecx & 0xFFFF,
    );
    if bytes_per_row < 64 || tiles < 8 || rows < 16 {
        return Err(format!(
            "AMX palette 1 has {tiles} tiles of {rows} rows x {bytes_per_row} bytes; the \
             kernel needs 8 of 16 x 64"
        ));
    }
    match xcr0() {
        Some(x) if x & XCR0_AMX == XCR0_AMX => {}
        Some(x) => {
            return Err(format!(
            "the OS has not enabled the AMX tile state (XCR0 = {x:#x}, needs bits {XCR0_AMX:#x})"
        ))
        }
        None => return Err("the OS has not enabled XSAVE (CPUID.1:ECX.OSXSAVE = 0)".into()),
    }
    tile_data_permission()?;
    crate::amx::hardware_known_answer()
}

/// Asks Linux (5.16 or later) once per process for the AMX tile data
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); without it the first tile
/// instruction faults.
#[cfg(target_os = "linux")]
fn tile_data_permission() -> Result<(), String> {
    use std::sync::OnceLock;
    static PERMISSION: OnceLock<Result<(), String>> = OnceLock::new();
    PERMISSION
        .get_or_init(|| {
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: this arch_prctl request only asks the kernel to let the process
            // use one XSAVE feature; it passes two integers and touches no memory.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(format!(
                    "the kernel refused the AMX tile data (arch_prctl(ARCH_REQ_XCOMP_PERM): {}; \
                     Linux 5.16 or later grants it)",
                    std::io::Error::last_os_error()
                ))
            }
        })
        .clone()
}

/// Other operating systems: the permission request is not implemented.
#[cfg(not(target_os = "linux"))]
fn tile_data_permission() -> Result<(), String> {
    Err("the AMX tile data permission request is implemented for Linux only".into())
}

/// The OS-enabled register state (XCR0), or `None` when the OS does not use XSAVE
/// (`CPUID.1:ECX.OSXSAVE = 0`: then no AVX state is enabled at all).
pub(crate) fn xcr0() -> Option<u64> {
    if std::arch::x86_64::__cpuid(1).ecx & (1 << 27) == 0 {
        return None;
    }
    // SAFETY: OSXSAVE = 1 means the CPU has XSAVE and the OS set CR4.OSXSAVE, which is
    // exactly when `xgetbv` may execute.
    Some(unsafe { xgetbv0() })
}

/// # Safety
/// The CPU supports XSAVE and the OS enabled it (`CPUID.1:ECX.OSXSAVE`).
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: forwarded from this function's contract.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

/// Detection for an ISA that is a feature list plus an OS register state: `Ok` when every
/// feature of `features` is present (std's detection, cached), else the reason: the
/// missing features, and whether the OS has enabled the XCR0 bits `state` (`name`ing
/// that state) that they need.
///
/// # Panics
/// On a feature name [`detected`] does not know (a bug the unit tests catch).
pub(crate) fn detect_features(features: &str, state: u64, name: &str) -> Result<(), String> {
    let missing: Vec<&str> = features.split(',').filter(|f| !detected(f)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    // Miri cannot execute `cpuid` / `xgetbv`; its feature detection is the build's
    // target features, so "the CPU lacks" them is the whole story there.
    let os = if cfg!(miri) { Some(state) } else { xcr0() };
    Err(explain(&missing, os, state, name))
}

/// The reason for [`detect_features`]: `missing` features, given the OS state `xcr0`.
fn explain(missing: &[&str], xcr0: Option<u64>, state: u64, name: &str) -> String {
    let missing = missing.join(", ");
    match xcr0 {
        None => format!(
            "CPU lacks {missing}, or the OS has not enabled XSAVE (CPUID.1:ECX.OSXSAVE = 0)"
        ),
        Some(x) if x & state != state => format!(
            "CPU lacks {missing}, or the OS has not enabled the {name} register state \
             (XCR0 = {x:#x}, needs bits {state:#x})"
        ),
        Some(_) => format!("CPU lacks {missing}"),
    }
}

/// The AMX kernel's Rust code: the AVX-512 epilogue it shares with the AVX-512 VNNI
/// kernels. The tile instructions themselves are inline assembly (Rust 1.95's AMX
/// target features and intrinsics are unstable); [`detect_amx`] checks the CPU for them.
pub(crate) const AMX: &str = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma";

/// AVX-512 VNNI kernels: 512-bit `vpdpbusd`, byte/word masks (BW, VL) for tails.
pub(crate) const AVX512VNNI: &str = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma";

/// AVX-VNNI kernels: VEX-encoded 256-bit `vpdpbusd` on CPUs without AVX-512.
pub(crate) const AVXVNNI: &str = "avx2,fma,avxvnni";

/// The exact AVX2 kernel (widening + `vpmaddwd`, no saturating instruction), and the
/// AVX2 helpers every kernel shares (`epilogue256`, `pack`).
pub(crate) const AVX2: &str = "avx2,fma";

/// Runtime detection of one feature of the lists above.
pub(crate) fn detected(feature: &str) -> bool {
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

/// The parts every x86 kernel file has in common: its [`KernelDesc`] static, the runtime
/// check (its ISA's table entry's detection), and the dynamic-input helpers (the portable loops
/// of `qlinear_reference::activation` instantiated under the ISA's target features, so
/// they vectorize for it). The file provides `gemm_u8` and `gemm_f32`.
///
/// ```text
/// kernel_descriptor! {
///     #[target_feature(enable = "avx2,fma")]
///     features: crate::isa::AVX2,
///     name: "avx2/gemm_6x8c4", isa: Avx2, mr: MR, nr: NR, kr: KR,
/// }
/// ```
///
/// An optional last argument `m_pref: MPreference { .. }` sets the row counts the kernel
/// is picked for among kernels of its layout (default `MPreference::ALL`).
///
/// The attribute goes on the generated helpers; compile-time assertions check that its
/// string equals `features` and that `features` is the list of `isa`'s table entry.
///
/// [`KernelDesc`]: qlinear_reference::contract::KernelDesc
macro_rules! kernel_descriptor {
    (
        #[target_feature(enable = $enable:literal)]
        features: $features:path,
        name: $name:literal,
        isa: $isa:ident,
        mr: $mr:expr,
        nr: $nr:expr,
        kr: $kr:expr
        $(, m_pref: $m_pref:expr)? $(,)?
    ) => {
        const _: () = assert!(
            $crate::isa::same_str($enable, $features),
            "the #[target_feature] string differs from the ISA's feature list"
        );
        const _: () = assert!(
            $crate::isa::same_str(
                $features,
                $crate::isa::entry(qlinear_reference::contract::Isa::$isa).features
            ),
            "the feature list differs from the ISA table entry's"
        );

        /// The kernel descriptor.
        pub static KERNEL: qlinear_reference::contract::KernelDesc =
            qlinear_reference::contract::KernelDesc {
                name: $name,
                isa: qlinear_reference::contract::Isa::$isa,
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
            ($crate::isa::entry(qlinear_reference::contract::Isa::$isa).detect)().is_ok()
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

    /// Every helper file with `#[target_feature]` attributes, and the ISAs whose table
    /// entries' lists its attributes may use. Kernel files come from `kernel_registry!`
    /// ([`sources`]), each with exactly its own ISA.
    const HELPERS: &[(&str, &str, &[Isa])] = &[
        (
            "epilogue256.rs",
            include_str!("epilogue256.rs"),
            &[Isa::Avx2],
        ),
        (
            "epilogue512.rs",
            include_str!("epilogue512.rs"),
            &[Isa::Avx512Vnni],
        ),
        ("pack.rs", include_str!("pack.rs"), &[Isa::Avx2]),
        (
            "peak.rs",
            include_str!("peak.rs"),
            &[Isa::Amx, Isa::Avx512Vnni, Isa::AvxVnni, Isa::Avx2],
        ),
    ];

    /// Every source file with `#[target_feature]` attributes: the registered kernel files
    /// and [`HELPERS`].
    fn sources() -> Vec<(&'static str, &'static str, Vec<Isa>)> {
        crate::KERNEL_SOURCES
            .iter()
            .map(|&(file, src, isa)| (file, src, vec![isa]))
            .chain(HELPERS.iter().map(|&(f, s, i)| (f, s, i.to_vec())))
            .collect()
    }

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
        let sources = sources();
        assert!(sources.len() > HELPERS.len(), "no kernel files registered");
        for (file, src, isas) in sources {
            let lists: Vec<&str> = isas.iter().map(|&i| entry(i).features).collect();
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
                assert!(
                    lists.contains(&enable),
                    "{file}: #[target_feature(enable = {enable:?})] is not the list of {isas:?}"
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
                    sources().iter().any(|(file, _, _)| *file == name),
                    "{name} has #[target_feature] attributes: register it in kernel_registry! \
                     (a kernel) or add it to isa::tests::HELPERS"
                );
            }
        }
    }

    #[test]
    fn every_listed_feature_is_detectable() {
        for e in TABLE {
            let features = e.features;
            assert!(
                !features.is_empty() && !features.contains(' '),
                "{features:?}"
            );
            // Panics on a name `detected` does not map.
            let _ = (e.detect)();
            for feature in features.split(',') {
                detected(feature);
            }
        }
    }

    #[test]
    fn table_is_x86_best_first_and_complete() {
        let x86: Vec<Isa> = Isa::ALL
            .iter()
            .copied()
            .filter(|i| i.arch() == qlinear_reference::isa::Arch::X86_64)
            .collect();
        let table: Vec<Isa> = TABLE.iter().map(|e| e.isa).collect();
        assert_eq!(table, x86, "one entry per x86 Isa, in rank order");
        for &isa in &x86 {
            assert_eq!(entry(isa).isa, isa);
        }
    }

    /// The `flags` line of /proc/cpuinfo (empty elsewhere).
    fn cpuinfo_flags() -> Vec<String> {
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("flags"))
            .map(|l| l.split_whitespace().skip(2).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn expect_avx512() -> bool {
        use std::arch::is_x86_feature_detected as has;
        has!("avx512f")
            && has!("avx512bw")
            && has!("avx512vl")
            && has!("avx512vnni")
            && has!("avx2")
            && has!("fma")
    }

    #[test]
    #[cfg_attr(miri, ignore = "AMX detection does not run under Miri")]
    fn amx_reasons_say_what_is_missing() {
        let Err(why) = entry(Isa::Amx).available() else {
            // Available: the CPU lists both AMX flags (checked by the next test too).
            let flags = cpuinfo_flags();
            assert!(flags.iter().any(|f| f == "amx_tile") && flags.iter().any(|f| f == "amx_int8"));
            return;
        };
        let flags = cpuinfo_flags();
        let has_amx =
            flags.iter().any(|f| f == "amx_tile") && flags.iter().any(|f| f == "amx_int8");
        if !expect_avx512() {
            assert!(why.contains("CPU lacks avx512"), "{why}");
        } else if !has_amx {
            assert!(why.contains("CPU lacks amx-"), "{why}");
        } else {
            // AMX present: the OS, the kernel's permission or the self-test.
            assert!(
                why.contains("XCR0") || why.contains("arch_prctl") || why.contains("self-test"),
                "{why}"
            );
        }
    }

    #[test]
    fn detection_agrees_with_std_and_gives_reasons() {
        use std::arch::is_x86_feature_detected as has;
        // An independent statement of each entry's requirement.
        let expect = |isa: Isa| match isa {
            Isa::Avx512Vnni => expect_avx512(),
            // AMX: the AVX-512 list and the kernel's own view of the CPU
            // (/proc/cpuinfo; Linux shows the flags only with the tile state enabled).
            Isa::Amx => {
                expect_avx512()
                    && cpuinfo_flags().iter().any(|f| f == "amx_tile")
                    && cpuinfo_flags().iter().any(|f| f == "amx_int8")
            }
            Isa::AvxVnni => has!("avx2") && has!("fma") && has!("avxvnni"),
            Isa::Avx2 => has!("avx2") && has!("fma"),
            other => panic!("no independent check for {other}"),
        };
        for e in TABLE {
            match e.available() {
                Ok(()) => assert!(expect(e.isa), "{}", e.isa),
                Err(why) => {
                    assert!(!expect(e.isa), "{}: {why}", e.isa);
                    let prefix = format!("{}: ", e.isa);
                    assert!(
                        why.starts_with(&prefix) && why.len() > prefix.len(),
                        "{why}"
                    );
                }
            }
        }
        // XSAVE is enabled on every x86-64 machine that runs these tests (AVX2 needs it).
        if has!("avx2") && !cfg!(miri) {
            let x = xcr0().expect("AVX2 implies OSXSAVE");
            assert_eq!(x & XCR0_AVX, XCR0_AVX);
        }
        assert_eq!(
            detect_features("avx2,fma", u64::MAX, "everything").is_ok(),
            has!("avx2") && has!("fma")
        );
    }

    #[test]
    fn reasons_name_the_missing_features_and_the_os_state() {
        assert_eq!(
            explain(&["avx512vnni"], Some(0xe7), XCR0_AVX512, "AVX-512"),
            "CPU lacks avx512vnni"
        );
        let why = explain(
            &["avx512f", "avx512vnni"],
            Some(0x7),
            XCR0_AVX512,
            "AVX-512",
        );
        assert!(
            why.starts_with("CPU lacks avx512f, avx512vnni, or the OS"),
            "{why}"
        );
        assert!(why.contains("AVX-512 register state (XCR0 = 0x7, needs bits 0xe6)"));
        assert!(explain(&["avx2"], None, XCR0_AVX, "AVX").contains("OSXSAVE = 0"));
    }

    #[test]
    fn same_str_compares_bytes() {
        assert!(same_str("avx2,fma", AVX2));
        assert!(same_str(entry(Isa::Avx2).features, AVX2));
        assert!(!same_str("avx2", AVX2));
        assert!(!same_str("avx2,fmb", AVX2));
    }
}
