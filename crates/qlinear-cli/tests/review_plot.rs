//! Review of `qlinear plot`: odd but well-formed reports (extreme, zero, negative or
//! tiny GMAC/s, huge shapes, peaks far off the bars) draw a plot or give a one-line
//! error with exit code 2; they never panic.

mod common;
use common::{run_qlinear as qlinear, stderr, TempDir};

/// `(backend, mode, m, gmacs)` of one result (gmacs as JSON text).
type Res<'a> = (&'a str, &'a str, u64, &'a str);
/// A named report: its results and its peaks `(backend, gmacs)`.
type Case<'a> = (&'a str, Vec<Res<'a>>, Vec<(&'a str, &'a str)>);

/// A report with one result per `(backend, mode, m, gmacs)` and the given peaks.
fn report(results: &[Res<'_>], peaks: &[(&str, &str)]) -> String {
    let results: Vec<String> = results
        .iter()
        .map(|(b, mode, m, g)| {
            format!(
                "{{\"backend\": \"{b}\", \"mode\": \"{mode}\", \"m\": {m}, \"k\": 768, \
                 \"n\": 3072, \"gmacs\": {g}, \"exact\": true}}"
            )
        })
        .collect();
    let peaks: Vec<String> = peaks
        .iter()
        .map(|(b, g)| format!("\"{b}\": {{\"gmacs\": {g}}}"))
        .collect();
    format!(
        "{{\"cpu\": \"Test\", \"suite\": \"custom\", \"threads\": 1, \"results\": [{}], \
         \"probes\": {{\"peak\": {{{}}}}}}}",
        results.join(", "),
        peaks.join(", ")
    )
}

/// Runs `qlinear plot` on `json`: exit 0 with a closed SVG, or exit 2 with one line.
fn replot(tag: &str, json: &str) -> Result<String, String> {
    let dir = TempDir::new(tag);
    let (input, out) = (dir.file("r.json"), dir.file("r.svg"));
    std::fs::write(&input, json).expect("write report");
    let run = qlinear(&["plot", "--json", &input, "--out", &out]);
    let err = stderr(&run);
    match run.status.code() {
        Some(0) => {
            let svg = std::fs::read_to_string(&out).expect("the plot was written");
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{tag}: not a whole SVG"
            );
            Ok(svg)
        }
        Some(2) => {
            assert_eq!(err.lines().count(), 1, "{tag}: {err}");
            Err(err)
        }
        other => panic!("{tag}: exit {other:?} (a panic is 101)\n{err}"),
    }
}

#[test]
fn extreme_gmacs_values_plot() {
    let cases: &[Case<'_>] = &[
        ("huge", vec![("avx2", "static", 1, "1e308")], vec![]),
        (
            "max",
            vec![("avx2", "static", 1, "1.7976931348623157e308")],
            vec![],
        ),
        (
            "huge-peak",
            vec![("avx2", "static", 1, "10")],
            vec![("avx2", "1e308")],
        ),
        ("subnormal", vec![("avx2", "static", 1, "5e-324")], vec![]),
        ("tiny", vec![("avx2", "static", 1, "1e-310")], vec![]),
        (
            "wide",
            vec![
                ("avx2", "static", 1, "1e-300"),
                ("reference", "static", 1, "1e300"),
            ],
            vec![],
        ),
        (
            "zero-and-negative",
            vec![
                ("avx2", "static", 1, "0"),
                ("reference", "dynamic", 1, "-5"),
            ],
            vec![("avx2", "0"), ("reference", "-1")],
        ),
        ("huge-m", vec![("avx2", "static", u64::MAX, "3")], vec![]),
    ];
    for (tag, results, peaks) in cases {
        let json = report(results, peaks);
        if let Err(e) = replot(tag, &json) {
            panic!("{tag}: a well-formed report was refused: {e}");
        }
    }
}

/// 10,000 results, each its own shape and backend: the layout's width (shapes x
/// backends x bar width, in i32 pixels) overflowed and the command panicked. Now a
/// one-line error; a plot at the limits still draws.
#[test]
fn too_many_shapes_and_backends_is_an_error() {
    let names: Vec<String> = (0..10_000).map(|i| format!("b{i}")).collect();
    let many: Vec<Res<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_str(), "static", i as u64 + 1, "1.5"))
        .collect();
    let err = replot("many", &report(&many, &[])).expect_err("10,000 x 10,000 bars plotted");
    assert!(err.contains("too many results to plot"), "{err}");
    // 100 backends on 20 shapes: within the limits.
    let some: Vec<Res<'_>> = names[..100]
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_str(), "dynamic", (i % 20) as u64 + 1, "2"))
        .collect();
    replot("some", &report(&some, &[])).expect("100 backends on 20 shapes");
}
