//! The `amx` backend through the library, on CPUs without AMX: the tile instructions
//! of the AMX kernel's own machine code are trapped and executed in software
//! (`qlinear_kernels_x86::amx_emulation`, a `SIGILL` handler; feature `amx-emulation`,
//! tests only), and detection then reports `amx` available, so everything above the
//! instructions is the real thing: dispatch, Auto's choice of kernel per M on one
//! packing, row and column splits over threads, every epilogue, the conformance file.
//!
//! Its own test binary, because installing the emulation changes what `Auto` picks for
//! the whole process. Skipped, with the reason printed, where it cannot run: a CPU with
//! AMX (the other tests run the hardware there), or one without the AVX-512 the AMX
//! kernel's epilogue uses. On other systems the file compiles to no test at all.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod kernel_checks;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod on_emulated_tiles {
    // Test code: telling the person running the tests about a skip is the point.
    #![allow(clippy::print_stderr)]

    use super::kernel_checks::{
        case, check_dynamic, check_static, layers, ms, threads_for, weight, Layers,
    };
    use qlinear::conformance;
    use qlinear::{available_backends, Backend, PackedWeights};
    use qlinear_kernels_x86::amx_emulation;

    const AMX: &str = "amx/gemm_32x32c4";

    /// Installs the emulation once; `false` (after printing why) where it cannot run.
    fn emulated() -> bool {
        match amx_emulation::enable_backend() {
            Ok(()) => true,
            Err(why) => {
                eprintln!("SKIP amx on emulated tile instructions: {why}");
                false
            }
        }
    }

    #[test]
    fn amx_is_available_and_auto_packs_for_it() {
        if !emulated() {
            return;
        }
        assert!(available_backends().contains(&Backend::Amx));
        assert_eq!(Backend::Amx.availability(), Ok(()));
        let w = weight(&case(1).c);
        let auto = PackedWeights::new(&w, Backend::Auto).unwrap();
        assert!(
            auto.kernel_names().contains(&AMX),
            "Auto's kernel set {:?} lacks {AMX}",
            auto.kernel_names()
        );
    }

    /// Every M in 1..=40, 64 and 130 (threads 1, 2, 7 on a spread of them), static,
    /// dynamic per-tensor and per-row, against the reference bit for bit; forced `amx`
    /// runs the AMX kernel for every M, Auto from M = 16 up on the same packing.
    #[test]
    fn every_m_is_exact_and_runs_the_kernel_its_m_picks() {
        if !emulated() {
            return;
        }
        let t = case(0xA11);
        let c = &t.c;
        let w = weight(c);
        for backend in [Backend::Amx, Backend::Auto] {
            let packed = PackedWeights::new(&w, backend).unwrap();
            let Layers {
                fixed: layer,
                per_tensor,
                per_row,
            } = layers(c, &packed, backend);
            let what = format!("backend {backend}");
            for m in ms() {
                let runs_amx = backend == Backend::Amx || m >= 16;
                assert_eq!(
                    layer.kernel_name_for(m) == AMX,
                    runs_amx,
                    "{what}: m={m} runs {}",
                    layer.kernel_name_for(m)
                );
                assert_eq!(per_row.kernel_name_for(m), layer.kernel_name_for(m));
                for &threads in threads_for(m) {
                    // One thread: the calling thread's own count, which the tests
                    // running at the same time cannot add to.
                    let before = amx_emulation::executed_multiplies_on_this_thread();
                    check_static(&layer, c, m, threads, &what);
                    check_dynamic(&per_tensor, &t, m, threads, &what);
                    check_dynamic(&per_row, &t, m, threads, &what);
                    if threads == 1 {
                        let ran = amx_emulation::executed_multiplies_on_this_thread() - before;
                        assert_eq!(ran > 0, runs_amx, "{what}: m={m}: {ran} tdpbusd ran");
                    }
                    assert!(
                        !amx_emulation::tiles_configured_on_this_thread(),
                        "{what}: m={m} threads={threads}: tiles left configured"
                    );
                }
            }
        }
    }

    const PUBLIC: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../conformance/torch-2.15-public.json"
    );

    /// The torch conformance file on `amx` (every case through the AMX kernel) and on
    /// Auto.
    #[test]
    fn conformance_file_on_amx() {
        if !emulated() {
            return;
        }
        let text = std::fs::read_to_string(PUBLIC).unwrap();
        let cases = conformance::parse(&text).unwrap();
        for backend in [Backend::Amx, Backend::Auto] {
            let before = amx_emulation::executed_multiplies();
            let report = conformance::run(&cases, backend);
            let failed: Vec<String> = report
                .failures
                .iter()
                .map(|f| format!("{}: {}", f.id, f.detail))
                .collect();
            assert!(failed.is_empty(), "{backend}: {}", failed.join("\n"));
            assert_eq!(report.passed, 280, "{backend}");
            if backend == Backend::Amx {
                assert!(amx_emulation::executed_multiplies() > before);
            }
        }
    }
}
