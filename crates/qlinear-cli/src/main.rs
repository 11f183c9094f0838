//! `qlinear`: CPU info, backend comparison benchmarks, torch conformance runs and
//! quantizing safetensors checkpoints.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use qlinear::unstable::{compiled_kernels, resolve};
use qlinear::{available_backends, conformance, cpu_info, Backend};

mod bench;
mod limits;
mod plot;
mod probe;
mod quantize;
mod suites;

#[derive(Parser)]
#[command(
    name = "qlinear",
    version,
    about = "Exact int8 linear layers: info, bench, plot, conformance, quantize"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// CPU model, detected features, available backends (and why the others are not) and
    /// Auto's choice.
    Info,
    /// Replay conformance vectors (qlinear-conformance/1) bit for bit.
    Conformance {
        /// `all` (every available backend), `auto`, or a backend name; comma-separated.
        #[arg(long, default_value = "all")]
        backend: String,
        /// Conformance files.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Compare backends: GMAC/s, fraction of measured peak, exactness.
    Bench(bench::BenchArgs),
    /// Re-render the SVG plot of a saved `bench --json` report, without re-running it.
    Plot {
        /// The JSON report written by `qlinear bench --json`.
        #[arg(long)]
        json: std::path::PathBuf,
        /// The SVG file to write.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Quantize a float safetensors checkpoint's linear weights (2-D `*.weight` tensors
    /// of F32 / F16 / BF16, embeddings excluded by default) to int8 for DynamicLinear;
    /// every other tensor is copied unchanged. Exit 2 on any error.
    Quantize(quantize::QuantizeArgs),
}

/// Parses `all|auto|NAME[,NAME]` into concrete backends (Auto resolved, so reports name
/// the backend that really ran).
pub(crate) fn parse_backends(spec: &str) -> Result<Vec<Backend>, String> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        if part.eq_ignore_ascii_case("all") {
            out.extend(available_backends());
            continue;
        }
        let b: Backend = part.parse().map_err(|e| format!("{e}"))?;
        let engine = resolve(b).map_err(|e| format!("{e}"))?;
        out.push(engine.backend());
    }
    out.dedup();
    Ok(out)
}

fn info() -> ExitCode {
    let cpu = cpu_info();
    println!("cpu: {}", cpu.model);
    println!("arch: {}", std::env::consts::ARCH);
    let feats: Vec<String> = cpu
        .features
        .iter()
        .map(|(name, on)| format!("{name}={}", if *on { "yes" } else { "no" }))
        .collect();
    println!("features: {}", feats.join(" "));
    let avail: Vec<&str> = available_backends().iter().map(|b| b.name()).collect();
    println!("available backends: {}", avail.join(", "));
    // Every other backend, with the ISA table's reason (CPU, OS or build).
    for b in Backend::PREFERENCE {
        if let Err(why) = b.availability() {
            println!("unavailable: {why}");
        }
    }
    for k in compiled_kernels() {
        let p = k.m_pref;
        let m = if p.m_max == usize::MAX {
            format!("M >= {}", p.m_min)
        } else {
            format!("M {}..={}", p.m_min, p.m_max)
        };
        println!(
            "kernel: {} ({}; preferred for {m}, rank {})",
            k.name,
            if (k.is_supported)() {
                "supported"
            } else {
                "not supported on this CPU"
            },
            p.rank
        );
    }
    match resolve(Backend::Auto) {
        Ok(e) => {
            println!("auto: {}", e.backend());
            println!("auto kernel: {}", e.kernel_name());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Replays the cases of `files` on `backend`: exit 0 when all pass, 1 when some case
/// differs, 2 for a usage error or a malformed file (unreadable, invalid JSON, a case
/// the layers would reject, or an id used twice, within a file or across `files`).
fn run_conformance(backend: &str, files: &[std::path::PathBuf]) -> ExitCode {
    let backends = match parse_backends(backend) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cases = Vec::new();
    // Case id -> the file that defined it first.
    let mut seen: HashMap<String, &std::path::Path> = HashMap::new();
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {}: {e}", f.display());
                return ExitCode::from(2);
            }
        };
        let parsed = match conformance::parse(&text) {
            Ok(c) => c,
            Err(e) => {
                // `e.0` without the "conformance file:" prefix: the path says it.
                eprintln!("error: {}: {}", f.display(), e.0);
                return ExitCode::from(2);
            }
        };
        for c in &parsed {
            if let Some(first) = seen.insert(c.id().to_string(), f) {
                eprintln!(
                    "error: {}: case {:?}: duplicate id (already defined in {})",
                    f.display(),
                    c.id(),
                    first.display()
                );
                return ExitCode::from(2);
            }
        }
        cases.extend(parsed);
    }
    let mut failed = false;
    for b in backends {
        let report = conformance::run(&cases, b);
        failed |= !report.failures.is_empty();
        print!("{report}");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Info => info(),
        Command::Conformance { backend, files } => run_conformance(&backend, &files),
        Command::Bench(args) => bench::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Plot { json, out } => match plot::replot(&json, &out) {
            Ok(()) => {
                eprintln!("wrote {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}
