//! `qlinear bench` reports the kernel that ran for each row's M, and `--kernel NAME`
//! times any registered kernel (every M) or fails listing the names.

mod common;
use common::{run_qlinear, stderr, TempDir};

use qlinear::unstable::compiled_kernels;
use qlinear::{available_backends, Backend, PackedWeights, QuantizedWeight, WeightQParams};

const SHAPES: [&str; 3] = ["1x40x70", "2x40x70", "9x40x70"];

/// `(m, backend, kernel, exact)` of every row of a bench run's JSON report.
fn bench_rows(extra: &[&str]) -> Vec<(usize, String, String, bool)> {
    let dir = TempDir::new("bench-kernel");
    let json = dir.file("report.json");
    let mut args = vec![
        "bench",
        "--quick",
        "--mode",
        "both",
        "--max-seconds",
        "0.005",
        "--json",
        &json,
    ];
    for s in &SHAPES {
        args.extend(["--shape", s]);
    }
    args.extend(extra);
    let out = run_qlinear(&args);
    assert!(out.status.success(), "bench {extra:?}:\n{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("json");
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["m"].as_u64().expect("m") as usize,
                r["backend"].as_str().expect("backend").to_string(),
                r["kernel"].as_str().expect("kernel").to_string(),
                r["exact"].as_bool().expect("exact"),
            )
        })
        .collect()
}

fn probe_weight() -> QuantizedWeight {
    QuantizedWeight::new(
        vec![1; 70 * 40],
        70,
        40,
        WeightQParams::PerTensor {
            scale: 0.1,
            zero_point: 0,
        },
    )
    .unwrap()
}

#[test]
fn rows_name_the_kernel_picked_for_their_m() {
    let backends: Vec<Backend> = available_backends()
        .into_iter()
        .filter(|&b| b != Backend::Reference)
        .collect();
    if backends.is_empty() {
        eprintln!("SKIP: no optimized backend here");
        return;
    }
    let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
    let rows = bench_rows(&["--backend", &names.join(",")]);
    assert_eq!(rows.len(), 2 * SHAPES.len() * backends.len());
    for (m, backend, kernel, exact) in rows {
        let b: Backend = backend.parse().unwrap();
        let want = PackedWeights::new(&probe_weight(), b)
            .unwrap()
            .kernel_name_for(m);
        assert_eq!(kernel, want, "{backend} m={m}");
        assert!(exact, "{kernel} m={m}");
    }
}

#[test]
fn kernel_flag_times_exactly_that_kernel_for_every_m() {
    for k in compiled_kernels().filter(|k| (k.is_supported)()) {
        let rows = bench_rows(&["--kernel", k.name]);
        assert_eq!(rows.len(), 2 * SHAPES.len(), "{}", k.name);
        for (m, _, kernel, exact) in rows {
            assert_eq!(kernel, k.name, "m={m}");
            assert!(exact, "{kernel} m={m}");
        }
    }
}

#[test]
fn kernel_flag_rejects_unknown_and_unsupported_names() {
    let out = run_qlinear(&[
        "bench",
        "--quick",
        "--kernel",
        "sse9/gemm_1x1c1",
        "--shape",
        "1x8x8",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown kernel `sse9/gemm_1x1c1`"), "{err}");
    for k in compiled_kernels() {
        assert!(err.contains(k.name), "{err} does not list {}", k.name);
    }
    for k in compiled_kernels().filter(|k| !(k.is_supported)()) {
        let out = run_qlinear(&["bench", "--quick", "--kernel", k.name, "--shape", "1x8x8"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("not supported on this CPU"), "{err}");
    }
    // `--kernel` replaces `--backend`.
    let out = run_qlinear(&[
        "bench",
        "--quick",
        "--kernel",
        "avx2/gemm_6x8c4",
        "--backend",
        "avx2",
        "--shape",
        "1x8x8",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
}
