//! Bad input to the `qlinear` binary is a one-line error on stderr and exit code 2,
//! promptly, never a panic, an abort or an exactness "FAIL".

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What a finished run left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

mod common;
use common::qlinear_command;

/// Runs `qlinear args...`, killing it after `limit`.
fn qlinear(args: &[&str], limit: Duration) -> Run {
    let start = Instant::now();
    let mut child = qlinear_command()
        .args(args)
        .env_remove("QLINEAR_BACKEND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qlinear");
    // Drain both pipes on their own threads so a chatty child never blocks.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "qlinear {args:?} still running after {limit:?} (killed); stderr so far:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out.join().expect("stdout thread"),
        stderr: err.join().expect("stderr thread"),
        elapsed: start.elapsed(),
    }
}

/// Exit code 2, an `error:` line on stderr containing every fragment, no panic.
#[track_caller]
fn usage_error(run: &Run, what: &str, fragments: &[&str]) {
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("memory allocation"),
        "{what}: panicked or aborted:\n{}",
        run.stderr
    );
    assert_eq!(
        run.code,
        Some(2),
        "{what}: exit code {:?}, stderr:\n{}",
        run.code,
        run.stderr
    );
    assert!(
        run.stderr.contains("error"),
        "{what}: no error:\n{}",
        run.stderr
    );
    for f in fragments {
        assert!(
            run.stderr.contains(f),
            "{what}: no `{f}` in:\n{}",
            run.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------
// bench: shapes checked up front
// ---------------------------------------------------------------------------------------

fn bench_shape(shape: &str) -> Run {
    qlinear(
        &[
            "bench",
            "--quick",
            "--backend",
            "reference",
            "--mode",
            "both",
            "--max-seconds",
            "0.01",
            "--shape",
            shape,
        ],
        Duration::from_secs(60),
    )
}

/// The four reproducers of issue 12 (D5): K over the limit, an M*K that overflows, a
/// K*N that overflows in the weight-stream probe, and sizes far beyond memory.
#[test]
fn bench_rejects_impossible_shapes_up_front() {
    for (shape, reason) in [
        ("1x33026x1", "K = 33026 exceeds the limit 33025"),
        ("18446744073709551615x1x1", "overflow"),
        ("1x1x18446744073709551615", "overflow"),
        ("1x33025x10000000000", "GiB"),
        ("4096x33025x10000000000", "GiB"),
    ] {
        let run = bench_shape(shape);
        let what = format!("bench --shape {shape}");
        usage_error(&run, &what, &[&format!("shape {shape}"), reason]);
        // Rejected before any probe or allocation: no probe ran, and it was quick.
        assert!(
            !run.stderr.contains("probe:"),
            "{what}: probes ran:\n{}",
            run.stderr
        );
        assert!(
            run.elapsed < Duration::from_secs(10),
            "{what}: took {:?}",
            run.elapsed
        );
        assert!(run.stdout.is_empty(), "{what}: stdout: {}", run.stdout);
    }
}

#[test]
fn bench_rejects_malformed_shapes() {
    for (shape, fragment) in [
        ("1x2", "MxKxN"),
        ("ax1x1", "M = `a`"),
        ("0x5x5", "M must be at least 1"),
        ("5x0x5", "K must be at least 1"),
        ("1x1x", "N = ``"),
        ("99999999999999999999x1x1", "too large"),
    ] {
        let run = bench_shape(shape);
        usage_error(&run, &format!("--shape {shape}"), &[fragment]);
        assert!(run.elapsed < Duration::from_secs(10));
    }
}

#[test]
fn bench_rejects_absurd_thread_counts() {
    for threads in ["0", "18446744073709551615", "1000000"] {
        let run = qlinear(
            &[
                "bench",
                "--quick",
                "--backend",
                "reference",
                "--shape",
                "1x8x8",
                "--threads",
                threads,
            ],
            Duration::from_secs(60),
        );
        usage_error(&run, &format!("--threads {threads}"), &["--threads"]);
    }
}

/// K exactly at the limit is accepted and exact (the check is not off by one).
#[test]
fn bench_accepts_k_at_the_limit() {
    let run = bench_shape("2x33025x3");
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert!(run.stdout.contains("33025"), "{}", run.stdout);
}

// ---------------------------------------------------------------------------------------
// conformance: invalid cases are malformed files (exit 2), not FAILs (exit 1)
// ---------------------------------------------------------------------------------------

/// A unique temporary file holding `text`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, text: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "qlinear-cli-test-{}-{nanos}-{n}-{tag}.json",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `public-0014-static-fbgemm` of the public file, with its id, output qparams and bias
/// replaced.
fn static_case(id: &str, output_zp: i64, output_scale: &str, bias: &str) -> String {
    format!(
        r#"{{"kind": "static", "engine": "fbgemm", "m": 8, "k": 2, "n": 2, "relu": true,
        "weight": {{"scales": [0.0008199003059417009], "zero_points": [0], "per_channel": false,
                   "data": "b1610b5d"}},
        "bias": {bias},
        "input": {{"scale": 0.011236545629799366, "zero_point": 64,
                  "data": "71b5c02697548b4096a3107ed2e01a2e"}},
        "output": {{"scale": {output_scale}, "zero_point": {output_zp}}},
        "expected": "ffff8f8f8ff98faef9ffffffffffbe8f", "id": "{id}"}}"#
    )
}

fn good_case(id: &str) -> String {
    static_case(id, 143, "0.0002444133278913796", "null")
}

fn conformance_file(cases: &[String]) -> String {
    format!(
        r#"{{"format": "qlinear-conformance/1", "source": "test", "cases": [{}]}}"#,
        cases.join(",")
    )
}

fn conformance(files: &[&str]) -> Run {
    let mut args = vec!["conformance", "--backend", "all"];
    args.extend(files);
    qlinear(&args, Duration::from_secs(120))
}

#[test]
fn conformance_valid_file_passes() {
    let f = TempFile::new("good", &conformance_file(&[good_case("a"), good_case("b")]));
    let run = conformance(&[f.path()]);
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.contains("2 passed, 0 failed"), "{}", run.stdout);
}

#[test]
fn conformance_invalid_parameters_are_malformed_files() {
    for (tag, case, field, fragment) in [
        (
            "zp300",
            static_case("static_fbgemm_3", 300, "0.0002444133278913796", "null"),
            "output.zero_point",
            "300 is outside [0, 255]",
        ),
        (
            "scale-inf",
            static_case("static_fbgemm_4", 143, "1e39", "null"),
            "output.scale",
            "1e+39 overflows f32",
        ),
        (
            "nan-bias",
            // bias[1] is a NaN (0x7fc00000, little-endian).
            static_case(
                "static_fbgemm_5",
                143,
                "0.0002444133278913796",
                r#""0000803f0000c07f""#,
            ),
            "bias",
            "NaN",
        ),
    ] {
        let f = TempFile::new(tag, &conformance_file(&[good_case("ok"), case]));
        let run = conformance(&[f.path()]);
        let id = tag;
        usage_error(
            &run,
            id,
            &[
                f.path(),
                "case \"static_fbgemm_",
                &format!("field \"{field}\""),
                fragment,
            ],
        );
        assert!(
            !run.stdout.contains("FAIL"),
            "{id}: reported as a FAIL:\n{}",
            run.stdout
        );
    }
}

#[test]
fn conformance_duplicate_ids_are_malformed() {
    // Within one file.
    let f = TempFile::new("dup1", &conformance_file(&[good_case("x"), good_case("x")]));
    let run = conformance(&[f.path()]);
    usage_error(&run, "duplicate in one file", &["\"x\"", "duplicate"]);

    // Across the files of one command line: both files are named.
    let a = TempFile::new("dupa", &conformance_file(&[good_case("y"), good_case("z")]));
    let b = TempFile::new("dupb", &conformance_file(&[good_case("w"), good_case("z")]));
    let run = conformance(&[a.path(), b.path()]);
    usage_error(
        &run,
        "duplicate across files",
        &["\"z\"", "duplicate", a.path(), b.path()],
    );
    assert!(run.stdout.is_empty(), "ran cases anyway:\n{}", run.stdout);

    // The same file twice is the same duplicate.
    let run = conformance(&[a.path(), a.path()]);
    usage_error(&run, "same file twice", &["\"y\"", "duplicate"]);
}

/// The vendored torch vectors still pass, exit 0, on every backend.
#[test]
fn conformance_public_file_passes_on_every_backend() {
    let public =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/torch-2.15-public.json");
    let run = conformance(&[public.to_str().expect("utf-8 path")]);
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains("reference: 280 passed, 0 failed"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);
}
