//! Several kernels per packed layout: a layer is packed once and each call runs the
//! kernel its M picks (module `kernel_set`). Everything here is bit for bit against the
//! reference oracle (`to_bits` for f32):
//!
//! * every backend (and Auto), every M in 1..=40, 64 and 130, static and dynamic
//!   (per-tensor and per-row input), 1, 2 and 7 threads: the output equals the
//!   reference and `kernel_name_for(m)` names the kernel the selection rule gives;
//! * every registered kernel forced alone (`unstable::pack_for_kernel`, the hook of
//!   `qlinear bench --kernel`): that kernel for every M, exact. A kernel whose ISA this
//!   CPU has but that did not run FAILS the test, as does one listed in
//!   `QLINEAR_REQUIRE` (comma-separated backend names, or `all`);
//! * a saved packing loaded for every backend (`from_bytes_for`) still gives the
//!   reference's bits, with that backend's kernel set.

mod kernel_checks;

use kernel_checks::{
    case, check_dynamic, check_static, layers, ms, threads_for, weight, Case, Layers,
};
use qlinear::unstable::{compiled_kernels, pack_for_kernel, KernelDesc};
use qlinear::{available_backends, Backend, DynamicLinear, PackedWeights, BACKEND_ENV};

fn desc(name: &str) -> &'static KernelDesc {
    compiled_kernels()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("{name} is not a registered kernel"))
}

/// The selection rule, stated independently of the library: the first kernel of the
/// set (pick order) whose preferred range contains `m`, else the primary.
fn expected_pick(names: &[&'static str], primary: &'static str, m: usize) -> &'static str {
    names
        .iter()
        .copied()
        .find(|&n| n == "reference" || desc(n).m_pref.contains(m))
        .unwrap_or(primary)
}

/// Whether the test process's CPU has the ISA a kernel name starts with
/// (`avx512vnni/...`), detected here independently of the kernel crates.
fn cpu_has_isa(kernel: &str) -> bool {
    let isa = kernel.split('/').next().unwrap_or("");
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        match isa {
            "avx512vnni" => {
                has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni")
            }
            "avxvnni" => has!("avxvnni") && has!("avx2") && has!("fma"),
            "avx2" => has!("avx2") && has!("fma"),
            _ => false,
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        match isa {
            "neon" => has!("neon"),
            "neondot" => has!("dotprod"),
            "i8mm" => has!("i8mm"),
            _ => false,
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = isa;
        false
    }
}

fn required(kernel: &str) -> bool {
    let isa = kernel.split('/').next().unwrap_or("");
    std::env::var("QLINEAR_REQUIRE")
        .is_ok_and(|v| v.split(',').any(|s| s.trim() == "all" || s.trim() == isa))
}

/// Every M (and thread count) of a static layer, a per-tensor and a per-row dynamic
/// layer built from `packed` with `backend`; `kernel_name_for` must follow the rule
/// (and equal `forced` for every M when given).
fn check_all_m(
    t: &Case,
    packed: &PackedWeights,
    backend: Backend,
    forced: Option<&str>,
    what: &str,
) {
    let c = &t.c;
    let Layers {
        fixed: layer,
        per_tensor,
        per_row,
    } = layers(c, packed, backend);
    let names = layer.packed().kernel_names();
    let primary = layer.kernel_name();
    assert!(
        names.contains(&primary),
        "{what}: {names:?} lacks {primary}"
    );
    for m in ms() {
        let want = expected_pick(&names, primary, m);
        assert_eq!(layer.kernel_name_for(m), want, "{what}: static m={m}");
        assert_eq!(per_tensor.kernel_name_for(m), want, "{what}: dynamic m={m}");
        if let Some(f) = forced {
            assert_eq!(want, f, "{what}: forced kernel, m={m}");
        }
        for &threads in threads_for(m) {
            check_static(&layer, c, m, threads, what);
            check_dynamic(&per_tensor, t, m, threads, what);
            check_dynamic(&per_row, t, m, threads, what);
        }
    }
}

fn auto_unset() -> bool {
    std::env::var(BACKEND_ENV).map_or(true, |v| v.trim().is_empty() || v.trim() == "auto")
}

#[test]
fn every_backend_every_m_matches_the_reference_and_names_its_kernel() {
    let t = case(0x6b5e7);
    let w = weight(&t.c);
    let mut backends = vec![Backend::Auto];
    backends.extend(available_backends());
    for b in backends {
        let packed = PackedWeights::new(&w, b).expect("pack");
        let names = packed.kernel_names();
        let what = format!("backend {b} ({names:?})");
        if b != Backend::Reference && (b != Backend::Auto || auto_unset()) {
            let primary = desc(packed.kernel_name());
            for n in &names {
                let k = desc(n);
                assert_eq!(k.layout, primary.layout, "{what}: {n} has another layout");
                if b != Backend::Auto {
                    assert_eq!(packed.backend(), b, "{what}");
                    assert_eq!(
                        n.split('/').next(),
                        Some(b.name()),
                        "{what}: {n} is not a {b} kernel"
                    );
                }
            }
        }
        check_all_m(&t, &packed, b, None, &what);
    }
}

/// On a CPU with AVX-512 VNNI, Auto (and the forced backend) run the GEMV kernel for
/// M = 1 and the GEMM kernel for every other M, on one packing.
#[test]
fn avx512vnni_splits_m_between_gemv_and_gemm() {
    if !available_backends().contains(&Backend::Avx512Vnni) {
        assert!(
            !cpu_has_isa("avx512vnni/"),
            "this CPU has AVX-512 VNNI but the backend is unavailable"
        );
        eprintln!("SKIP avx512vnni_splits_m_between_gemv_and_gemm: no AVX-512 VNNI here");
        return;
    }
    let w = weight(&case(7).c);
    let mut choices = vec![Backend::Avx512Vnni];
    // Auto is AMX's (next test) where AMX runs.
    if auto_unset() && !available_backends().contains(&Backend::Amx) {
        choices.push(Backend::Auto);
    }
    for b in choices {
        let p = PackedWeights::new(&w, b).unwrap();
        assert_eq!(p.kernel_name(), "avx512vnni/gemm_8x32c4", "{b}");
        // In pick order: the GEMV kernel ranks first for its M.
        assert_eq!(
            p.kernel_names(),
            ["avx512vnni/gemv_1x32c4", "avx512vnni/gemm_8x32c4"],
            "{b}"
        );
        assert_eq!(p.kernel_name_for(1), "avx512vnni/gemv_1x32c4", "{b}");
        for m in [2, 3, 8, 9, 64, 130, 4096] {
            assert_eq!(p.kernel_name_for(m), "avx512vnni/gemm_8x32c4", "{b} m={m}");
        }
    }
    // Another backend's set never includes them.
    if available_backends().contains(&Backend::Avx2) {
        let p = PackedWeights::new(&w, Backend::Avx2).unwrap();
        assert_eq!(p.kernel_names(), ["avx2/gemm_6x8c4"]);
        assert_eq!(p.kernel_name_for(1), "avx2/gemm_6x8c4");
    }
}

/// On an AMX CPU, Auto packs once for `amx/gemm_32x32c4` and runs the GEMV kernel for
/// M = 1, the AVX-512 VNNI GEMM kernel for 2 <= M < 16 and AMX from M = 16, on the same
/// packed bytes; forcing `amx` runs AMX for every M.
#[test]
fn amx_shares_the_avx512vnni_packing_and_takes_large_m() {
    if !available_backends().contains(&Backend::Amx) {
        let why = Backend::Amx.availability().err().unwrap_or_default();
        eprintln!("SKIP amx_shares_the_avx512vnni_packing_and_takes_large_m: {why}");
        return;
    }
    let w = weight(&case(8).c);
    if auto_unset() {
        let p = PackedWeights::new(&w, Backend::Auto).unwrap();
        assert_eq!(p.kernel_name(), "amx/gemm_32x32c4");
        assert_eq!(
            p.kernel_names(),
            [
                "amx/gemm_32x32c4",
                "avx512vnni/gemv_1x32c4",
                "avx512vnni/gemm_8x32c4"
            ]
        );
        assert_eq!(p.kernel_name_for(1), "avx512vnni/gemv_1x32c4");
        for m in [2, 8, 15] {
            assert_eq!(p.kernel_name_for(m), "avx512vnni/gemm_8x32c4", "m={m}");
        }
        for m in [16, 17, 32, 33, 512, 4096] {
            assert_eq!(p.kernel_name_for(m), "amx/gemm_32x32c4", "m={m}");
        }
        // The same bytes as the AVX-512 VNNI packing.
        let v = PackedWeights::new(&w, Backend::Avx512Vnni).unwrap();
        assert_eq!(p.layout(), v.layout());
    }
    let p = PackedWeights::new(&w, Backend::Amx).unwrap();
    assert_eq!(p.kernel_names(), ["amx/gemm_32x32c4"]);
    for m in [1, 2, 15, 16, 1000] {
        assert_eq!(p.kernel_name_for(m), "amx/gemm_32x32c4", "m={m}");
    }
}

#[test]
fn forcing_each_registered_kernel_runs_it_for_every_m() {
    let t = case(0xf0ced);
    let w = weight(&t.c);
    let mut ran = 0;
    for k in compiled_kernels() {
        if !(k.is_supported)() {
            assert!(
                !cpu_has_isa(k.name),
                "this CPU has the ISA of {} but the kernel is not supported: it did not run",
                k.name
            );
            assert!(
                !required(k.name),
                "QLINEAR_REQUIRE lists the ISA of {}, which this CPU lacks",
                k.name
            );
            let err = pack_for_kernel(&w, k.name).unwrap_err();
            assert!(err.contains("not supported"), "{err}");
            eprintln!("SKIP {}: not supported on this CPU", k.name);
            continue;
        }
        let packed = pack_for_kernel(&w, k.name).expect("supported kernel");
        assert_eq!(packed.kernel_name(), k.name);
        assert_eq!(packed.kernel_names(), [k.name]);
        check_all_m(&t, &packed, Backend::Auto, Some(k.name), k.name);
        ran += 1;
    }
    assert_eq!(
        ran,
        compiled_kernels().filter(|k| (k.is_supported)()).count()
    );
    // Unknown names list the registered ones.
    let err = pack_for_kernel(&w, "sse9/gemm_1x1c1").unwrap_err();
    assert!(err.contains("unknown kernel"), "{err}");
    for k in compiled_kernels() {
        assert!(err.contains(k.name), "{err} does not list {}", k.name);
    }
}

/// A forced kernel's packing given its own backend again gets that backend's whole set
/// (same bytes, no repack).
#[test]
fn naming_the_backend_of_a_forced_packing_restores_its_set() {
    let w = weight(&case(3).c);
    for k in compiled_kernels().filter(|k| (k.is_supported)()) {
        let forced = pack_for_kernel(&w, k.name).unwrap();
        let b = forced.backend();
        let layer = DynamicLinear::from_packed(forced.clone())
            .backend(b)
            .build()
            .unwrap();
        let set = PackedWeights::new(&w, b).unwrap();
        let mut want = set.kernel_names();
        want.sort_unstable();
        let mut got = layer.packed().kernel_names();
        got.sort_unstable();
        assert_eq!(got, want, "{}", k.name);
        assert_eq!(layer.kernel_name(), k.name, "the primary stays");
        assert_eq!(layer.weight(), w);
    }
}

#[test]
fn a_saved_packing_loads_for_every_backend() {
    let t = case(0x10ad);
    let w = weight(&t.c);
    let mut sources = vec![PackedWeights::new(&w, Backend::Auto).unwrap()];
    sources.extend(
        compiled_kernels()
            .filter(|k| (k.is_supported)())
            .map(|k| pack_for_kernel(&w, k.name).unwrap()),
    );
    let mut backends = vec![Backend::Auto];
    backends.extend(available_backends());
    for src in &sources {
        let bytes = src.to_bytes();
        for &b in &backends {
            let (p, report) = PackedWeights::from_bytes_for(&bytes, b).expect("load");
            let what = format!(
                "{} loaded for {b} ({:?})",
                src.kernel_name(),
                p.kernel_names()
            );
            assert_eq!(report.repacked, p.layout() != src.layout(), "{what}");
            assert_eq!(p.unpack(), w, "{what}");
            if b != Backend::Auto {
                assert_eq!(p.backend(), b, "{what}");
                let fresh = PackedWeights::new(&w, b).unwrap();
                assert_eq!(p.kernel_names(), fresh.kernel_names(), "{what}");
            }
            check_all_m(&t, &p, Backend::Auto, None, &what);
        }
    }
}
