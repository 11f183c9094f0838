//! `qlinear bench`: every backend on a suite of shapes, static and/or dynamic layers.
//!
//! For each shape the weight, activations and qparams are generated once (seeded by the
//! shape), the reference output of each mode is computed once, outside any timing, by
//! `qlinear-reference` itself (split over rows on all cores; every output row depends on
//! its own input row only, and dynamic inputs carry the same min and max in every row so
//! each row chunk picks the same qparams as the whole), and then every backend builds its
//! layer, runs it once to compare bytes (static) or f32 bits (dynamic) with that output,
//! and is timed: the backends take turns in 5 rounds of `--max-seconds / 5` each
//! (warm-up, then single `forward_with_threads` calls), so load bursts on a shared
//! machine hit every backend alike. A backend whose single call exceeds the whole
//! budget, as the scalar reference does on big shapes, is timed by that one call. The
//! reported time is the median call.
//!
//! Every shape is checked before any probe or allocation ([`crate::limits`]): a zero
//! dimension, K above the limit, a buffer size that overflows, or an estimated memory
//! need above what the machine has available is a one-line error and exit code 2.
//!
//! Fractions are against this run's own probes (see [`crate::probe`]): peak MAC rate of
//! the backend's instruction mix, and streaming-read bandwidth for a buffer of the
//! weight's size (M = 1 only, where a GEMV is bound by reading the weight).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use qlinear::{
    cpu_info, ActQParams, Backend, DynamicLinear, Linear, MatMut, MatRef, PackedWeights, Profile,
    QuantizedWeight, WeightQParams,
};
use qlinear_reference::testkit::Rng;
use serde::Serialize;

use crate::limits::{self, Plan};
use crate::probe::{self, PeakProbe, StreamProbe};
use crate::suites::{self, Shape};

/// Which layer kinds to time.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeArg {
    /// `Linear`: u8 in, u8 out.
    Static,
    /// `DynamicLinear`: f32 in, f32 out.
    Dynamic,
    /// Both.
    Both,
}

/// One layer kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `Linear`.
    Static,
    /// `DynamicLinear`.
    Dynamic,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Static => "static",
            Mode::Dynamic => "dynamic",
        }
    }
}

impl ModeArg {
    fn modes(self) -> Vec<Mode> {
        match self {
            ModeArg::Static => vec![Mode::Static],
            ModeArg::Dynamic => vec![Mode::Dynamic],
            ModeArg::Both => vec![Mode::Static, Mode::Dynamic],
        }
    }
}

/// Arguments of `qlinear bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// `all` (every available backend), `auto`, or backend names, comma-separated.
    #[arg(long, default_value = "all")]
    pub backend: String,
    /// Time one registered kernel by its full name (e.g. `avx512vnni/gemv_1x32c4`) for
    /// every M, instead of the backends' per-M choice (`qlinear info` lists the kernels).
    /// Replaces `--backend`: the kernel's backend is the one probed and reported.
    #[arg(long, conflicts_with = "backend")]
    pub kernel: Option<String>,
    /// `default` (the nine shapes of docs/performance.md), `bert` or `llm`.
    #[arg(long, default_value = "default")]
    pub suite: String,
    /// `MxKxN` (repeatable); replaces the suite. Each of M, K, N at least 1, K at most
    /// 33025; shapes whose buffers cannot exist or do not fit in the available memory are
    /// rejected before anything runs.
    #[arg(long = "shape", value_parser = suites::parse_shape)]
    pub shapes: Vec<Shape>,
    /// Layer kind(s) to time.
    #[arg(long, value_enum, default_value_t = ModeArg::Static)]
    pub mode: ModeArg,
    /// Threads per forward call (and for the probes), 1 to 1024.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=crate::limits::MAX_THREADS))]
    pub threads: u64,
    /// Write the full report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG plot of GMAC/s per backend and shape, with the peak lines.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Also measure packing throughput (GB/s of int8 weight) per backend and weight.
    #[arg(long)]
    pub pack: bool,
    /// Fewer repetitions (CI smoke runs): 0.05 s per measurement, short probes.
    #[arg(long)]
    pub quick: bool,
    /// Time budget per measurement in seconds (default 0.3, or 0.05 with --quick).
    #[arg(long)]
    pub max_seconds: Option<f64>,
}

/// One timed backend x shape x mode.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// The backend that ran (resolved, never `auto`).
    pub backend: String,
    /// The kernel that ran for this row's M, e.g. `avx512vnni/gemv_1x32c4` at M = 1 and
    /// `avx512vnni/gemm_8x32c4` above, or `reference`.
    pub kernel: String,
    /// `static` or `dynamic`.
    pub mode: &'static str,
    /// Rows.
    pub m: usize,
    /// in_features.
    pub k: usize,
    /// out_features.
    pub n: usize,
    /// Threads per call.
    pub threads: usize,
    /// Median call time in seconds.
    pub median_s: f64,
    /// Fastest call in seconds.
    pub min_s: f64,
    /// Timed calls.
    pub iterations: usize,
    /// `m * k * n / median_s / 1e9`.
    pub gmacs: f64,
    /// This run's measured peak of the backend's instruction mix (GMAC/s), if any.
    pub peak_gmacs: Option<f64>,
    /// `gmacs / peak_gmacs`.
    pub peak_fraction: Option<f64>,
    /// M = 1: weight bytes read per second, `k * n / median_s / 1e9`.
    pub weight_gbps: Option<f64>,
    /// M = 1: streaming-read bandwidth for a buffer of the weight's size.
    pub stream_gbps: Option<f64>,
    /// `weight_gbps / stream_gbps`.
    pub stream_fraction: Option<f64>,
    /// Reference median / this median (when the reference backend was timed too).
    pub speedup_vs_reference: Option<f64>,
    /// Output identical to the reference output (bytes, or f32 bits).
    pub exact: bool,
    /// Number of differing output elements.
    pub mismatches: usize,
}

/// Packing throughput of one backend on one weight.
#[derive(Debug, Clone, Serialize)]
pub struct PackResult {
    /// Backend.
    pub backend: String,
    /// Kernel the packing is for.
    pub kernel: String,
    /// in_features.
    pub k: usize,
    /// out_features.
    pub n: usize,
    /// Median `PackedWeights::new` time in seconds.
    pub median_s: f64,
    /// `n * k / median_s / 1e9`.
    pub gbps: f64,
}

/// The probes of a run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Probes {
    /// Peak MAC rate per backend (absent: reference, or no probe on this arch).
    pub peak: BTreeMap<String, PeakProbe>,
    /// Streaming-read bandwidth: L2, L3, DRAM and each M = 1 weight size.
    pub stream: Vec<StreamProbe>,
}

/// The JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// CPU model.
    pub cpu: String,
    /// `std::env::consts::ARCH`.
    pub arch: &'static str,
    /// Detected CPU features.
    pub features: BTreeMap<String, bool>,
    /// Threads per call.
    pub threads: usize,
    /// Suite name, or `custom` with `--shape`.
    pub suite: String,
    /// Quick mode.
    pub quick: bool,
    /// Time budget per measurement.
    pub max_seconds: f64,
    /// Machine-limit probes.
    pub probes: Probes,
    /// Timed results.
    pub results: Vec<BenchResult>,
    /// Packing results (`--pack`).
    pub pack: Vec<PackResult>,
    /// Wall time of the whole run.
    pub wall_seconds: f64,
}

/// Everything one shape's measurements need, generated once.
struct ShapeData {
    shape: Shape,
    weight: QuantizedWeight,
    bias: Vec<f32>,
    x: ActQParams,
    y: ActQParams,
    a_u8: Vec<u8>,
    a_f32: Vec<f32>,
}

/// Amplitude of the dynamic-mode inputs.
const F32_AMP: f32 = 4.0;

fn seed(s: Shape) -> u64 {
    (s.m as u64) << 42 ^ (s.k as u64) << 21 ^ s.n as u64
}

/// Random i8 weight with per-channel symmetric qparams (zero points 0, scales in
/// [2e-3, 1e-2] like trained layers), u8 activations around zero point 128, a small bias,
/// and an output scale that spreads outputs over the u8 range without saturating
/// (about 4 standard deviations of the widest channel over half the range).
///
/// The shape must have passed [`crate::limits::check_shapes`]; an invalid one is still an
/// error here, not a panic.
fn make_data(shape: Shape, with_f32: bool) -> Result<ShapeData, String> {
    let Shape { m, k, n } = shape;
    let invalid = |e: qlinear::Error| format!("shape {shape}: {e}");
    let mk = m
        .checked_mul(k)
        .ok_or_else(|| format!("shape {shape}: M*K overflows"))?;
    let nk = n
        .checked_mul(k)
        .ok_or_else(|| format!("shape {shape}: N*K overflows"))?;
    let mut rng = Rng::new(seed(shape));
    let w = rng.i8s(nk);
    let scales: Vec<f32> = (0..n).map(|_| rng.log_uniform(2e-3, 1e-2)).collect();
    let sw_max = scales.iter().copied().fold(0f32, f32::max);
    let weight = QuantizedWeight::new(
        w,
        n,
        k,
        WeightQParams::PerChannel {
            scales,
            zero_points: vec![0; n],
        },
    )
    .map_err(invalid)?;
    let x = ActQParams::new(0.05, 128).map_err(invalid)?;
    // std of (u8 - 128) and of uniform i8 are both ~74: raw std ~ 74^2 * sqrt(K).
    let sigma = 74.0 * 74.0 * (k as f32).sqrt() * x.scale * sw_max;
    let y = ActQParams::new(4.0 * sigma / 127.0, 128).map_err(invalid)?;
    let bias = rng.f32s(n, sigma * 0.1);
    let a_u8 = rng.bytes(mk);
    let a_f32 = if with_f32 {
        let mut v = rng.f32s(mk, F32_AMP);
        // Every row holds the global min and max, so any row range quantizes like all.
        for row in v.chunks_exact_mut(k) {
            row[0] = -F32_AMP;
            if k > 1 {
                row[1] = F32_AMP;
            }
        }
        v
    } else {
        Vec::new()
    };
    Ok(ShapeData {
        shape,
        weight,
        bias,
        x,
        y,
        a_u8,
        a_f32,
    })
}

/// Runs `f(row_begin, row_end)` over `rows` split into one range per core and
/// concatenates the parts in row order; the first error (or a panicked thread) is the
/// error.
fn par_rows<T: Send>(
    rows: usize,
    f: impl Fn(usize, usize) -> Result<Vec<T>, String> + Sync,
) -> Result<Vec<T>, String> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let per = rows.div_ceil(cores.min(rows).max(1)).max(1);
    let parts: Vec<Result<Vec<T>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..rows)
            .step_by(per)
            .map(|r0| {
                let f = &f;
                s.spawn(move || f(r0, r0.saturating_add(per).min(rows)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a reference thread panicked".to_string()))
            })
            .collect()
    });
    let parts = parts.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for p in parts {
        out.extend(p);
    }
    Ok(out)
}

fn oracle_static(d: &ShapeData) -> Result<Vec<u8>, String> {
    let Shape { m, k, n } = d.shape;
    let a = MatRef::dense(&d.a_u8, m, k).map_err(|e| e.to_string())?;
    par_rows(m, |r0, r1| {
        let rows = a.row_range(r0, r1).map_err(|e| e.to_string())?;
        qlinear_reference::static_linear(
            &rows,
            d.x,
            d.weight.data(),
            n,
            d.weight.qparams(),
            Some(&d.bias),
            d.y,
            false,
            Profile::Fbgemm,
        )
        .map_err(|e| e.to_string())
    })
}

fn oracle_dynamic(d: &ShapeData) -> Result<Vec<f32>, String> {
    let Shape { m, k, n } = d.shape;
    let a = MatRef::dense(&d.a_f32, m, k).map_err(|e| e.to_string())?;
    par_rows(m, |r0, r1| {
        let rows = a.row_range(r0, r1).map_err(|e| e.to_string())?;
        qlinear_reference::dynamic_linear(
            &rows,
            d.weight.data(),
            n,
            d.weight.qparams(),
            Some(&d.bias),
            false,
            false,
            Profile::Fbgemm,
        )
        .map_err(|e| e.to_string())
    })
}

/// Median, minimum and count of timed calls.
#[derive(Debug, Clone, Copy)]
struct Timing {
    median_s: f64,
    min_s: f64,
    iterations: usize,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Rounds per measurement: the backends of one shape and mode take turns, each round
/// spending `max_s / ROUNDS` on every backend, so a burst of load from a neighbour on a
/// shared machine hits all of them alike instead of one backend's whole budget.
const ROUNDS: usize = 5;

/// One backend's layer for a shape and mode, checked against the reference and ready
/// to be timed.
struct Prepared<'a> {
    backend: Backend,
    kernel: String,
    mismatches: usize,
    /// Duration of the first (checked) call.
    first_s: f64,
    call: Box<dyn FnMut() -> Result<(), String> + 'a>,
    samples: Vec<f64>,
}

impl Prepared<'_> {
    /// Warm-up, then single calls until `budget_s` is spent (at least one).
    fn sample(&mut self, budget_s: f64) -> Result<(), String> {
        let warm = Instant::now();
        while warm.elapsed().as_secs_f64() < budget_s * 0.1 {
            (self.call)()?;
        }
        let mut spent = 0.0;
        while spent < budget_s && self.samples.len() < 1_000_000 {
            let t = Instant::now();
            (self.call)()?;
            let dt = t.elapsed().as_secs_f64();
            self.samples.push(dt);
            spent += dt;
        }
        Ok(())
    }

    /// The median call; a backend whose single call exceeds the whole budget (the
    /// scalar reference on big shapes) is timed by that first call alone.
    fn timing(mut self) -> Timing {
        if self.samples.is_empty() {
            self.samples.push(self.first_s);
        }
        let min_s = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        Timing {
            iterations: self.samples.len(),
            median_s: median(&mut self.samples),
            min_s,
        }
    }
}

/// Runs `forward` once into a fresh output, counts the elements that differ from `want`
/// (by `same`), and wraps `forward` for timing.
fn checked<'a, T: Copy + Default + 'a>(
    backend: Backend,
    kernel: String,
    want: &[T],
    same: fn(&T, &T) -> bool,
    mut forward: impl FnMut(&mut [T]) -> Result<(), String> + 'a,
) -> Result<Prepared<'a>, String> {
    let mut out = vec![T::default(); want.len()];
    let t0 = Instant::now();
    forward(&mut out)?;
    let first_s = t0.elapsed().as_secs_f64();
    let mismatches = out.iter().zip(want).filter(|(a, b)| !same(a, b)).count();
    Ok(Prepared {
        backend,
        kernel,
        mismatches,
        first_s,
        call: Box::new(move || forward(&mut out)),
        samples: Vec::new(),
    })
}

/// Builds the layer of `backend` (or of the one forced `kernel`, `--kernel`) for `mode`
/// and checks its output against `expected`.
fn prepare<'a>(
    d: &'a ShapeData,
    mode: Mode,
    backend: Backend,
    kernel: Option<&str>,
    threads: usize,
    expected: &Expected,
) -> Result<Prepared<'a>, String> {
    let Shape { m, k, n } = d.shape;
    let err =
        move |e: qlinear::Error| format!("{backend} {mode} {}: {e}", d.shape, mode = mode.name());
    // A forced kernel: a packing whose kernel set is that kernel alone; the layer keeps
    // it (default backend, Auto).
    let forced = kernel
        .map(|name| qlinear::unstable::pack_for_kernel(&d.weight, name))
        .transpose()?;
    match (mode, expected) {
        (Mode::Static, Expected::U8(want)) => {
            let builder = match forced {
                Some(p) => Linear::from_packed(p, d.x, d.y),
                None => Linear::builder(d.weight.clone(), d.x, d.y).backend(backend),
            };
            let layer = builder
                .bias(d.bias.clone())
                .threads(threads)
                .build()
                .map_err(err)?;
            let kernel = layer.kernel_name_for(m).to_string();
            checked(
                backend,
                kernel,
                want,
                |a, b| a == b,
                move |out| {
                    let input = MatRef::dense(&d.a_u8, m, k).map_err(err)?;
                    let output = MatMut::dense(out, m, n).map_err(err)?;
                    layer
                        .forward_with_threads(input, output, threads)
                        .map_err(err)
                },
            )
        }
        (Mode::Dynamic, Expected::F32(want)) => {
            // Full range, as `oracle_dynamic` computes it.
            let builder = match forced {
                Some(p) => DynamicLinear::from_packed(p),
                None => DynamicLinear::builder(d.weight.clone()).backend(backend),
            };
            let layer = builder
                .bias(d.bias.clone())
                .reduce_range(false)
                .threads(threads)
                .build()
                .map_err(err)?;
            let kernel = layer.kernel_name_for(m).to_string();
            let same = |a: &f32, b: &f32| a.to_bits() == b.to_bits();
            checked(backend, kernel, want, same, move |out| {
                let input = MatRef::dense(&d.a_f32, m, k).map_err(err)?;
                let output = MatMut::dense(out, m, n).map_err(err)?;
                layer
                    .forward_with_threads(input, output, threads)
                    .map_err(err)
            })
        }
        _ => Err("internal: mode and expected output disagree".to_string()),
    }
}

/// Prepares every backend, then times them in interleaved rounds.
fn measure_all(
    d: &ShapeData,
    mode: Mode,
    backends: &[Backend],
    kernel: Option<&str>,
    threads: usize,
    max_s: f64,
    expected: &Expected,
) -> Result<Vec<(Backend, String, Timing, usize)>, String> {
    let mut prepared = backends
        .iter()
        .map(|&b| prepare(d, mode, b, kernel, threads, expected))
        .collect::<Result<Vec<_>, _>>()?;
    for _ in 0..ROUNDS {
        for p in prepared.iter_mut().filter(|p| p.first_s < max_s) {
            p.sample(max_s / ROUNDS as f64)?;
        }
    }
    Ok(prepared
        .into_iter()
        .map(|p| {
            let (backend, kernel, mismatches) = (p.backend, p.kernel.clone(), p.mismatches);
            (backend, kernel, p.timing(), mismatches)
        })
        .collect())
}

enum Expected {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// Median packing time of `weight` for `backend`.
fn measure_pack(
    weight: &QuantizedWeight,
    backend: Backend,
    max_s: f64,
) -> Result<PackResult, String> {
    let t0 = Instant::now();
    let p = PackedWeights::new(weight, backend).map_err(|e| format!("pack {backend}: {e}"))?;
    let first_s = t0.elapsed().as_secs_f64();
    let kernel = p.kernel_name().to_string();
    drop(p);
    let mut prepared = Prepared {
        backend,
        kernel: kernel.clone(),
        mismatches: 0,
        first_s,
        call: Box::new(|| {
            let p = PackedWeights::new(weight, backend).map_err(|e| e.to_string())?;
            std::hint::black_box(&p);
            Ok(())
        }),
        samples: Vec::new(),
    };
    if first_s < max_s {
        prepared.sample(max_s)?;
    }
    let timing = prepared.timing();
    let (k, n) = (weight.in_features(), weight.out_features());
    Ok(PackResult {
        backend: backend.name().to_string(),
        kernel,
        k,
        n,
        median_s: timing.median_s,
        gbps: (k * n) as f64 / timing.median_s / 1e9,
    })
}

/// A plain text table: left-aligned first columns, right-aligned numbers.
pub(crate) fn format_table(header: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i < left {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    let dashes: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    out.push_str(&line(dashes.iter().map(String::as_str).collect()));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

/// Milliseconds with about four significant digits.
fn ms(seconds: f64) -> String {
    let v = seconds * 1e3;
    let decimals = if v >= 100.0 {
        1
    } else if v >= 1.0 {
        3
    } else if v >= 0.01 {
        4
    } else {
        6
    };
    format!("{v:.decimals$}")
}

/// The results table printed on stdout.
pub(crate) fn results_table(results: &[BenchResult]) -> String {
    let header = [
        "backend",
        "kernel",
        "mode",
        "M",
        "K",
        "N",
        "threads",
        "median ms",
        "GMAC/s",
        "% peak",
        "GB/s (M=1)",
        "vs ref",
        "exact",
    ];
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.backend.clone(),
                r.kernel.clone(),
                r.mode.to_string(),
                r.m.to_string(),
                r.k.to_string(),
                r.n.to_string(),
                r.threads.to_string(),
                ms(r.median_s),
                format!("{:.2}", r.gmacs),
                opt(r.peak_fraction, |f| format!("{:.1}%", f * 100.0)),
                match (r.weight_gbps, r.stream_gbps) {
                    (Some(w), Some(s)) => format!("{w:.1} / {s:.1}"),
                    (Some(w), None) => format!("{w:.1}"),
                    _ => "-".to_string(),
                },
                opt(r.speedup_vs_reference, |s| format!("{s:.1}x")),
                if r.exact {
                    "yes".to_string()
                } else {
                    format!("NO ({})", r.mismatches)
                },
            ]
        })
        .collect();
    format_table(&header, &rows, 3)
}

fn probes_table(p: &Probes) -> String {
    let mut rows: Vec<Vec<String>> = p
        .peak
        .values()
        .map(|pk| {
            vec![
                format!("peak {}", pk.backend),
                pk.instruction.to_string(),
                format!("{:.1} GMAC/s", pk.gmacs),
                pk.threads.to_string(),
            ]
        })
        .collect();
    rows.extend(p.stream.iter().map(|s| {
        vec![
            format!("stream {}", s.label),
            format!("{:.1} MiB", s.bytes as f64 / (1 << 20) as f64),
            format!("{:.1} GB/s", s.gbps),
            s.threads.to_string(),
        ]
    }));
    format_table(&["probe", "what", "rate", "threads"], &rows, 2)
}

fn pack_table(p: &[PackResult]) -> String {
    let rows: Vec<Vec<String>> = p
        .iter()
        .map(|r| {
            vec![
                r.backend.clone(),
                r.kernel.clone(),
                r.k.to_string(),
                r.n.to_string(),
                format!("{:.3}", r.median_s * 1e3),
                format!("{:.2}", r.gbps),
            ]
        })
        .collect();
    format_table(
        &["backend", "kernel", "K", "N", "median ms", "GB/s"],
        &rows,
        2,
    )
}

/// Fills `speedup_vs_reference` from the reference rows of the same shape and mode.
fn fill_speedups(results: &mut [BenchResult]) {
    let refs: BTreeMap<(usize, usize, usize, &'static str), f64> = results
        .iter()
        .filter(|r| r.backend == Backend::Reference.name())
        .map(|r| ((r.m, r.k, r.n, r.mode), r.median_s))
        .collect();
    for r in results.iter_mut() {
        r.speedup_vs_reference = refs.get(&(r.m, r.k, r.n, r.mode)).map(|t| t / r.median_s);
    }
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> ExitCode {
    match run_inner(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: some results are not exact");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_inner(args: &BenchArgs) -> Result<bool, String> {
    let wall = Instant::now();
    let kernel = args.kernel.as_deref();
    let backends = match kernel {
        // Checked here, before anything runs: unknown or unsupported is an error that
        // lists the names.
        Some(name) => {
            let probe = QuantizedWeight::new(
                vec![0],
                1,
                1,
                WeightQParams::PerTensor {
                    scale: 1.0,
                    zero_point: 0,
                },
            )
            .map_err(|e| e.to_string())?;
            vec![qlinear::unstable::pack_for_kernel(&probe, name)?.backend()]
        }
        None => crate::parse_backends(&args.backend)?,
    };
    let (suite_name, shapes) = if args.shapes.is_empty() {
        (args.suite.clone(), suites::suite(&args.suite)?)
    } else {
        ("custom".to_string(), args.shapes.clone())
    };
    let modes = args.mode.modes();
    let threads = args.threads as usize;
    let max_s = args
        .max_seconds
        .unwrap_or(if args.quick { 0.05 } else { 0.3 });
    if !(max_s.is_finite() && max_s > 0.0) {
        return Err(format!("--max-seconds must be positive, got {max_s}"));
    }
    let probe_s = if args.quick { 0.04 } else { 0.2 };

    // Every shape is checked before any probe or allocation (see `limits`).
    let plan = Plan {
        static_mode: modes.contains(&Mode::Static),
        dynamic_mode: modes.contains(&Mode::Dynamic),
        kernel_backends: backends
            .iter()
            .filter(|&&b| b != Backend::Reference)
            .count(),
        reference: backends.contains(&Backend::Reference),
        threads,
    };
    let available = match limits::mem_available() {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            eprintln!("note: {e}; the memory check of the shapes is skipped");
            None
        }
    };
    limits::check_shapes(&shapes, &plan, available)?;

    let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
    eprintln!(
        "qlinear bench: backends {}, {} shapes, modes {:?}, {threads} thread(s), {max_s} s per measurement",
        names.join(","),
        shapes.len(),
        modes.iter().map(|m| m.name()).collect::<Vec<_>>()
    );

    // Probes.
    let mut probes = Probes::default();
    for &b in &backends {
        if let Some(p) = probe::peak(b, threads, probe_s) {
            eprintln!(
                "probe: peak {} ({}): {:.1} GMAC/s",
                b, p.instruction, p.gmacs
            );
            probes.peak.insert(b.name().to_string(), p);
        }
    }
    let mut stream_sizes: Vec<(String, usize)> = vec![
        ("L2".to_string(), 512 << 10),
        ("L3".to_string(), 16 << 20),
        ("DRAM".to_string(), 256 << 20),
    ];
    for s in shapes.iter().filter(|s| s.m == 1) {
        let label = format!("weight {}x{}", s.k, s.n);
        if !stream_sizes.iter().any(|(l, _)| *l == label) {
            stream_sizes.push((label, s.weight_bytes()));
        }
    }
    for (label, bytes) in stream_sizes {
        let p = probe::stream(label, bytes, threads, probe_s)?;
        eprintln!(
            "probe: stream {} ({} bytes): {:.1} GB/s",
            p.label, p.bytes, p.gbps
        );
        probes.stream.push(p);
    }

    // Measurements.
    let mut results = Vec::new();
    let total = shapes.len() * modes.len() * backends.len();
    let mut done = 0;
    for &shape in &shapes {
        let d = make_data(shape, modes.contains(&Mode::Dynamic))?;
        for &mode in &modes {
            let t = Instant::now();
            let expected = match mode {
                Mode::Static => Expected::U8(oracle_static(&d)?),
                Mode::Dynamic => Expected::F32(oracle_dynamic(&d)?),
            };
            eprintln!(
                "reference output {} {shape}: {:.2} s",
                mode.name(),
                t.elapsed().as_secs_f64()
            );
            for (b, kernel, timing, mismatches) in
                measure_all(&d, mode, &backends, kernel, threads, max_s, &expected)?
            {
                done += 1;
                let gmacs = shape.macs() / timing.median_s / 1e9;
                let peak_gmacs = probes.peak.get(b.name()).map(|p| p.gmacs);
                let (weight_gbps, stream_gbps) = if shape.m == 1 {
                    let w = shape.weight_bytes() as f64 / timing.median_s / 1e9;
                    let s = probes
                        .stream
                        .iter()
                        .find(|p| p.bytes == shape.weight_bytes() && p.label.starts_with("weight"))
                        .map(|p| p.gbps);
                    (Some(w), s)
                } else {
                    (None, None)
                };
                let r = BenchResult {
                    backend: b.name().to_string(),
                    kernel,
                    mode: mode.name(),
                    m: shape.m,
                    k: shape.k,
                    n: shape.n,
                    threads,
                    median_s: timing.median_s,
                    min_s: timing.min_s,
                    iterations: timing.iterations,
                    gmacs,
                    peak_gmacs,
                    peak_fraction: peak_gmacs.map(|p| gmacs / p),
                    weight_gbps,
                    stream_gbps,
                    stream_fraction: weight_gbps.zip(stream_gbps).map(|(w, s)| w / s),
                    speedup_vs_reference: None,
                    exact: mismatches == 0,
                    mismatches,
                };
                eprintln!(
                    "[{done}/{total}] {} {} {shape}: {:.4} ms, {:.2} GMAC/s{}{}, {} calls, {}",
                    r.kernel,
                    r.mode,
                    r.median_s * 1e3,
                    r.gmacs,
                    r.peak_fraction
                        .map_or(String::new(), |f| format!(" ({:.1}% of peak)", f * 100.0)),
                    r.weight_gbps
                        .map_or(String::new(), |g| format!(", {g:.1} GB/s weight")),
                    r.iterations,
                    if r.exact {
                        "exact".to_string()
                    } else {
                        format!("NOT EXACT ({mismatches} elements differ)")
                    }
                );
                results.push(r);
            }
        }
    }
    fill_speedups(&mut results);

    // Peaks again: on a shared machine a probe can land in a busy moment; the peak of a
    // run is the best of its start and end probes, and fractions use that.
    for &b in &backends {
        if let Some(p) = probe::peak(b, threads, probe_s) {
            let entry = probes.peak.entry(b.name().to_string()).or_insert(p.clone());
            if p.gmacs > entry.gmacs {
                eprintln!(
                    "probe: peak {} again at the end: {:.1} GMAC/s (was {:.1}): using it",
                    b, p.gmacs, entry.gmacs
                );
                entry.gmacs = p.gmacs;
            }
        }
    }
    for r in results.iter_mut() {
        r.peak_gmacs = probes.peak.get(&r.backend).map(|p| p.gmacs);
        r.peak_fraction = r.peak_gmacs.map(|p| r.gmacs / p);
    }

    // Packing.
    let mut pack = Vec::new();
    if args.pack {
        let mut weights: Vec<(usize, usize)> = shapes.iter().map(|s| (s.k, s.n)).collect();
        weights.sort_unstable();
        weights.dedup();
        for (k, n) in weights {
            let w = make_data(Shape::new(1, k, n), false)?.weight;
            for &b in &backends {
                let r = measure_pack(&w, b, max_s)?;
                eprintln!(
                    "pack {} {k}x{n}: {:.3} ms, {:.2} GB/s",
                    r.kernel,
                    r.median_s * 1e3,
                    r.gbps
                );
                pack.push(r);
            }
        }
    }

    let cpu = cpu_info();
    let report = Report {
        cpu: cpu.model.clone(),
        arch: std::env::consts::ARCH,
        features: cpu
            .features
            .iter()
            .map(|(n, on)| (n.to_string(), *on))
            .collect(),
        threads,
        suite: suite_name,
        quick: args.quick,
        max_seconds: max_s,
        probes,
        results,
        pack,
        wall_seconds: wall.elapsed().as_secs_f64(),
    };

    println!(
        "cpu: {} ({}), {} thread(s)",
        report.cpu, report.arch, threads
    );
    println!();
    print!("{}", probes_table(&report.probes));
    println!();
    print!("{}", results_table(&report.results));
    if !report.pack.is_empty() {
        println!();
        print!("{}", pack_table(&report.pack));
    }
    println!();
    println!(
        "GMAC/s = M*K*N / median; % peak = vs this run's probe of the backend's instruction mix; \
         GB/s (M=1) = weight bytes / median, next to the streaming-read probe for that size."
    );
    eprintln!("bench finished in {:.1} s", report.wall_seconds);

    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        crate::plot::write_svg(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(report.results.iter().all(|r| r.exact))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_result() -> BenchResult {
        BenchResult {
            backend: "reference".into(),
            kernel: "reference".into(),
            mode: "static",
            m: 1,
            k: 2,
            n: 3,
            threads: 1,
            median_s: 1e-3,
            min_s: 1e-3,
            iterations: 3,
            gmacs: 6e-6,
            peak_gmacs: None,
            peak_fraction: None,
            weight_gbps: Some(6e-6),
            stream_gbps: None,
            stream_fraction: None,
            speedup_vs_reference: Some(1.0),
            exact: true,
            mismatches: 0,
        }
    }

    #[test]
    fn json_schema_keys() {
        let report = Report {
            cpu: "x".into(),
            arch: "x86_64",
            features: BTreeMap::new(),
            threads: 1,
            suite: "custom".into(),
            quick: true,
            max_seconds: 0.05,
            probes: Probes::default(),
            results: vec![sample_result()],
            pack: vec![],
            wall_seconds: 1.0,
        };
        let v = serde_json::to_value(&report).unwrap();
        for key in ["cpu", "features", "threads", "probes", "results"] {
            assert!(v.get(key).is_some(), "top-level key {key}");
        }
        let r = &v["results"][0];
        for key in [
            "backend",
            "kernel",
            "mode",
            "m",
            "k",
            "n",
            "threads",
            "median_s",
            "gmacs",
            "peak_fraction",
            "exact",
            "weight_gbps",
            "stream_gbps",
            "speedup_vs_reference",
        ] {
            assert!(r.get(key).is_some(), "result key {key}");
        }
        assert!(r["peak_fraction"].is_null());
        assert_eq!(r["exact"], serde_json::Value::Bool(true));
        assert!(v["probes"].get("peak").is_some() && v["probes"].get("stream").is_some());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(ms(0.5), "500.0");
        assert_eq!(ms(1.2345e-3), "1.234");
        assert_eq!(ms(8.0e-7), "0.000800");
    }

    #[test]
    fn table_has_all_columns() {
        let t = results_table(&[sample_result()]);
        let head = t.lines().next().unwrap();
        for col in [
            "backend",
            "kernel",
            "mode",
            "median ms",
            "GMAC/s",
            "% peak",
            "GB/s (M=1)",
            "vs ref",
            "exact",
        ] {
            assert!(head.contains(col), "{col}");
        }
        assert!(t.lines().nth(2).unwrap().trim_end().ends_with("yes"));
    }

    #[test]
    fn oracle_split_matches_whole() {
        // Row-split reference outputs equal the unsplit ones (dynamic needs equal
        // min/max per row, which make_data guarantees).
        let d = make_data(Shape::new(5, 33, 7), true).unwrap();
        let a = MatRef::dense(&d.a_f32, 5, 33).unwrap();
        let whole = qlinear_reference::dynamic_linear(
            &a,
            d.weight.data(),
            7,
            d.weight.qparams(),
            Some(&d.bias),
            false,
            false,
            Profile::Fbgemm,
        )
        .unwrap();
        let split = oracle_dynamic(&d).unwrap();
        assert_eq!(
            whole.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            split.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let s = oracle_static(&d).unwrap();
        assert_eq!(s.len(), 35);
        // Outputs are spread, not saturated.
        let sat = s.iter().filter(|&&v| v == 0 || v == 255).count();
        assert!(sat * 10 < s.len(), "{sat} of {} saturated", s.len());
    }
}
