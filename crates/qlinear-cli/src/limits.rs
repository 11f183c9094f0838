//! Up-front checks of `qlinear bench` shapes, before any probe or allocation: zero
//! dimensions, the K limit, every size product the bench computes (in bytes, against
//! the largest allocation Rust allows), and an estimate of the memory the whole bench
//! of a shape needs against the memory available.
//!
//! The estimate follows what `bench.rs` and the layers allocate for one shape (each
//! shape's data is freed before the next), as an upper bound:
//!
//! * shape data: the i8 weight `N*K`, its qparams and the bias `12N`, the u8 input
//!   `M*K`, and with dynamic mode the f32 input `4*M*K`;
//! * the reference output of each mode, computed over row chunks at once: static
//!   `5*M*N` (i32 sums and u8 outputs), dynamic `M*K + 8*M*N` (quantized input, i32
//!   sums, f32 outputs), whose concatenation stays below these;
//! * the layers of every backend, all alive while they take turns: a packed weight
//!   (padded to whole panels, `(N+63)*(K+63)` bounds every kernel layout, `N*K` for the
//!   reference), column sums and folded epilogue (`68*(N+63)`), a bias copy and one
//!   output buffer each, plus the expected output;
//! * the largest transient of a call: the weight copy packing consumes (`N*K`), the
//!   dynamic quantized input (`M*K`, kept per thread between calls) and row sums, and
//!   for the reference backend its unpacked weight copy, i32 sums and output;
//! * the streaming probes (256 MiB, and a buffer of the weight's size when M = 1), which
//!   run (and are freed) before any shape data exists;
//!
//! then 10% and 64 MiB on top for the allocator, thread stacks, the program itself and
//! the dynamic scratch a thread keeps between calls (at most
//! [`qlinear::SCRATCH_KEEP_BYTES`], 4 MiB).

use crate::suites::Shape;

/// Largest `--threads`: the probes spawn that many OS threads at once.
pub const MAX_THREADS: u64 = 1024;

/// Buffer sizes are only sound up to `isize::MAX` bytes (Rust's allocation limit).
const MAX_ALLOC: u128 = isize::MAX as u128;

/// The largest streaming probe of every run (`DRAM`, 256 MiB).
const DRAM_PROBE_BYTES: u128 = 256 << 20;

/// Padding bound of every kernel layout (`nr`, `kr` <= 64).
const PAD: u128 = 63;

const GIB: f64 = (1u64 << 30) as f64;

/// What the bench of a shape runs: which modes, on how many backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Static mode (`Linear`, u8 -> u8).
    pub static_mode: bool,
    /// Dynamic mode (`DynamicLinear`, f32 -> f32).
    pub dynamic_mode: bool,
    /// Kernel (non-reference) backends.
    pub kernel_backends: usize,
    /// Whether the scalar reference backend is one of them.
    pub reference: bool,
    /// Threads per call and for the probes.
    pub threads: usize,
}

impl Plan {
    /// Both modes, the reference and every kernel backend of this build: the most a
    /// shape can need.
    #[cfg(test)]
    pub fn worst(threads: usize) -> Self {
        Plan {
            static_mode: true,
            dynamic_mode: true,
            kernel_backends: 6,
            reference: true,
            threads,
        }
    }
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn mem_available() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| format!("cannot read /proc/meminfo: {e}"))?;
    parse_mem_available(&text).ok_or_else(|| "no MemAvailable line in /proc/meminfo".to_string())
}

/// The `MemAvailable:  <n> kB` line of a meminfo text, in bytes.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let unit = match parts.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(unit)
}

/// Checks every shape of a run (see [`check_shape`]); the first problem is the error.
pub fn check_shapes(shapes: &[Shape], plan: &Plan, available: Option<u64>) -> Result<(), String> {
    shapes
        .iter()
        .try_for_each(|&s| check_shape(s, plan, available))
}

/// Checks that the bench can run `shape` under `plan`: `M`, `K`, `N` at least 1, `K` at
/// most [`qlinear::K_LIMIT`], every buffer size representable, and the estimated
/// memory (module docs) within `available` bytes, when that is known. The error is one
/// line starting with `shape MxKxN:`.
pub fn check_shape(shape: Shape, plan: &Plan, available: Option<u64>) -> Result<(), String> {
    let Shape { m, k, n } = shape;
    let fail = |why: String| Err(format!("shape {shape}: {why}"));
    for (what, v) in [("M", m), ("K", k), ("N", n)] {
        if v == 0 {
            return fail(format!("{what} must be at least 1"));
        }
    }
    if k > qlinear::K_LIMIT {
        return fail(format!("K = {k} exceeds the limit {}", qlinear::K_LIMIT));
    }
    if plan.threads == 0 || plan.threads as u64 > MAX_THREADS {
        return fail(format!(
            "--threads {} is outside 1..={MAX_THREADS}",
            plan.threads
        ));
    }
    let (m, k, n) = (m as u128, k as u128, n as u128);
    let (mk, nk, mn) = (m * k, n * k, m * n);
    let (np, kp) = (n + PAD, k + PAD);
    // Every buffer the bench sizes from the shape, in bytes (u128: cannot overflow).
    let buffers = [
        ("the u8 input (M*K bytes)", mk),
        ("the f32 input (M*K*4 bytes)", mk * 4),
        ("the i8 weight and its M = 1 stream probe (N*K bytes)", nk),
        ("the packed weight ((N+63)*(K+63) bytes)", np * kp),
        ("the u8 output (M*N bytes)", mn),
        ("the i32 sums and f32 output (M*N*4 bytes)", mn * 4),
        ("the bias and qparams (N*4 bytes)", n * 4),
    ];
    for (what, bytes) in buffers {
        if bytes > MAX_ALLOC {
            return fail(format!(
                "{what} = {bytes} overflows the largest possible allocation ({MAX_ALLOC} bytes)"
            ));
        }
    }
    let needed = estimate(shape, plan);
    match available {
        Some(avail) if needed > avail as u128 => fail(format!(
            "needs ~{:.1} GiB, only {:.1} GiB available (MemAvailable)",
            needed as f64 / GIB,
            avail as f64 / GIB
        )),
        _ => Ok(()),
    }
}

/// Estimated peak bytes of the bench of `shape` under `plan` (see the module docs).
pub fn estimate(shape: Shape, plan: &Plan) -> u128 {
    let (m, k, n) = (shape.m as u128, shape.k as u128, shape.n as u128);
    let (mk, nk, mn) = (m * k, n * k, m * n);
    let np = n + PAD;
    let kernels = plan.kernel_backends as u128;
    let backends = kernels + plan.reference as u128;
    let dynamic = plan.dynamic_mode as u128;

    let data = nk + 12 * n + mk + dynamic * 4 * mk;
    let tables = 68 * np; // column sums and folded epilogue arrays
    let packed = kernels * (np * (k + PAD) + tables) + plan.reference as u128 * (nk + tables);
    let probes = DRAM_PROBE_BYTES.max(if shape.m == 1 { nk } else { 0 });

    // (expected output bytes per element, reference oracle peak, reference call peak,
    // other per-call scratch) of each mode that runs.
    let mut modes = Vec::new();
    if plan.static_mode {
        modes.push((1, 5 * mn, nk + 5 * mn, 0));
    }
    if plan.dynamic_mode {
        modes.push((4, mk + 8 * mn, nk + mk + 8 * mn, mk + 4 * m + tables));
    }
    let per_mode = modes
        .into_iter()
        .map(|(elem, oracle, reference_call, scratch)| {
            let expected = elem * mn;
            let layers = packed + backends * (elem * mn + 4 * n);
            let call = scratch + if plan.reference { reference_call } else { 0 };
            let measure = expected + layers + nk.max(call);
            oracle.max(measure)
        })
        .max()
        .unwrap_or(0);
    let peak = probes.max(data + per_mode);
    peak + peak / 10 + (64 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1 << 30;

    fn s(m: usize, k: usize, n: usize) -> Shape {
        Shape::new(m, k, n)
    }

    #[test]
    fn zero_dims_and_k_limit() {
        let p = Plan::worst(1);
        for (shape, what) in [(s(0, 1, 1), "M"), (s(1, 0, 1), "K"), (s(1, 1, 0), "N")] {
            let e = check_shape(shape, &p, None).unwrap_err();
            assert!(e.contains(&format!("{what} must be at least 1")), "{e}");
        }
        let e = check_shape(s(1, 33_026, 1), &p, None).unwrap_err();
        assert_eq!(e, "shape 1x33026x1: K = 33026 exceeds the limit 33025");
        assert!(check_shape(s(1, qlinear::K_LIMIT, 1), &p, Some(64 * GB)).is_ok());
    }

    #[test]
    fn overflowing_products() {
        let p = Plan::worst(1);
        let max = usize::MAX;
        for (shape, what) in [
            (s(max, 1, 1), "u8 input"),
            (s(1, 1, max), "i8 weight"),
            (s(1 << 61, 2, 1), "f32 input"),
            (s(1 << 40, 1, 1 << 40), "M*N"),
            (s(1, 33_025, 1 << 50), "N*K"),
        ] {
            // Even without a memory figure: these can never be allocated.
            let e = check_shape(shape, &p, None).unwrap_err();
            assert!(e.starts_with(&format!("shape {shape}: ")), "{e}");
            assert!(e.contains(what) && e.contains("overflows"), "{e}");
        }
    }

    #[test]
    fn memory_estimate_against_injected_availability() {
        let p = Plan::worst(1);
        // The suite's biggest shape fits in 4 GiB but not in 256 MiB.
        let big = s(512, 4096, 4096);
        assert!(check_shape(big, &p, Some(4 * GB)).is_ok());
        let e = check_shape(big, &p, Some(256 << 20)).unwrap_err();
        assert!(
            e.starts_with("shape 512x4096x4096: needs ~")
                && e.ends_with("GiB available (MemAvailable)"),
            "{e}"
        );
        assert!(e.contains("only 0.2") || e.contains("only 0.3"), "{e}");
        // Unknown availability: only the hard limits apply.
        assert!(check_shape(s(1, 33_025, 10_000_000_000), &p, None).is_ok());
        let e = check_shape(s(1, 33_025, 10_000_000_000), &p, Some(24 * GB)).unwrap_err();
        assert!(e.contains("needs ~") && e.contains("only 24.0 GiB"), "{e}");
        // Even a tiny shape needs the 256 MiB streaming probe.
        assert!(check_shape(s(1, 8, 8), &p, Some(128 << 20)).is_err());
        assert!(check_shape(s(1, 8, 8), &p, Some(512 << 20)).is_ok());
    }

    #[test]
    fn estimate_grows_with_the_plan() {
        let shape = s(4096, 8192, 8192);
        let only_static = Plan {
            static_mode: true,
            dynamic_mode: false,
            kernel_backends: 1,
            reference: false,
            threads: 1,
        };
        let both = Plan {
            dynamic_mode: true,
            ..only_static
        };
        let all = Plan::worst(1);
        let (a, b, c) = (
            estimate(shape, &only_static),
            estimate(shape, &both),
            estimate(shape, &all),
        );
        assert!(a < b && b < c, "{a} {b} {c}");
        // At least every buffer that certainly exists at once: weight, input, one
        // packed weight, expected and one output.
        let (m, k, n) = (4096u128, 8192u128, 8192u128);
        assert!(a >= n * k + m * k + n * k + 2 * m * n);
        // Shapes are independent (each one's data is freed before the next).
        let avail = Some(b as u64);
        assert!(check_shapes(&[shape, shape, s(1, 8, 8)], &both, avail).is_ok());
        let e = check_shapes(&[s(1, 8, 8), shape], &all, avail).unwrap_err();
        assert!(e.starts_with("shape 4096x8192x8192: needs"), "{e}");
    }

    #[test]
    fn threads_are_bounded() {
        let mut p = Plan::worst(MAX_THREADS as usize);
        assert!(check_shape(s(1, 8, 8), &p, None).is_ok());
        p.threads = MAX_THREADS as usize + 1;
        assert!(check_shape(s(1, 8, 8), &p, None)
            .unwrap_err()
            .contains("--threads"));
    }

    #[test]
    fn meminfo_parsing() {
        let text = "MemTotal:       24684092 kB\nMemFree:  1 kB\nMemAvailable:   24230376 kB\n";
        assert_eq!(parse_mem_available(text), Some(24_230_376 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: x kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: 5 MB\n"), None);
    }
}
