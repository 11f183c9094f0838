//! `qlinear bench --plot` and `qlinear plot --json IN --out OUT.svg`: the replot of a
//! saved report is byte for byte the plot the bench wrote, and bad input is a one-line
//! error with exit code 2.

use std::path::Path;

mod common;
use common::{run_qlinear as qlinear, stderr, TempDir};

#[test]
fn replot_from_json_matches_the_bench_plot() {
    let dir = TempDir::new("replot");
    let (json, first, again) = (dir.file("r.json"), dir.file("a.svg"), dir.file("b.svg"));
    let run = qlinear(&[
        "bench",
        "--quick",
        "--backend",
        "reference",
        "--mode",
        "both",
        "--max-seconds",
        "0.01",
        "--shape",
        "2x8x4",
        "--shape",
        "1x16x8",
        "--json",
        &json,
        "--plot",
        &first,
    ]);
    assert_eq!(run.status.code(), Some(0), "stderr:\n{}", stderr(&run));
    let replot = qlinear(&["plot", "--json", &json, "--out", &again]);
    assert_eq!(
        replot.status.code(),
        Some(0),
        "stderr:\n{}",
        stderr(&replot)
    );
    let a = std::fs::read_to_string(&first).expect("bench plot");
    let b = std::fs::read_to_string(&again).expect("replot");
    assert_eq!(a, b, "the replot differs from the bench's plot");
    assert!(a.starts_with("<svg") && a.trim_end().ends_with("</svg>"));
    for text in [
        "reference",
        "2×8×4",
        "1×16×8",
        "static: Linear",
        "dynamic: DynamicLinear",
        "GMAC/s (log scale)",
        "inexact: none (all 4 outputs equal the reference)",
    ] {
        assert!(a.contains(text), "{text:?} missing from the plot");
    }
}

#[test]
fn replot_errors_are_one_line_and_exit_2() {
    let dir = TempDir::new("errors");
    let out = dir.file("out.svg");
    let missing = dir.file("missing.json");
    let bad = dir.file("bad.json");
    std::fs::write(&bad, "{\"cpu\": \"x\"}").unwrap();
    let not_json = dir.file("not.json");
    std::fs::write(&not_json, "not json").unwrap();
    for (input, fragment) in [
        (missing.as_str(), "missing.json"),
        (bad.as_str(), "missing string field \"suite\""),
        (not_json.as_str(), "not.json"),
    ] {
        let run = qlinear(&["plot", "--json", input, "--out", &out]);
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{input}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: ") && err.contains(fragment),
            "{err}"
        );
        assert!(!Path::new(&out).exists(), "{input}: wrote a plot");
    }
}
