//! `qlinear quantize`: a float safetensors checkpoint's linear weights to int8 for
//! `DynamicLinear` (`qlinear::safetensors::quantize_checkpoint`, `docs/safetensors.md`).
//!
//! The input is memory-mapped, so only the output is held in memory (the quantized
//! weights plus the copied tensors, which are borrowed from the map until written). The
//! output is written to a temporary file beside it and renamed into place, so a failed
//! run leaves no half-written file and `OUT` may even be `IN` (the map keeps the old
//! file's bytes alive until the process exits).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use qlinear::safetensors::{
    plan_quantization, quantize_checkpoint_with_progress, PlannedTensor, QuantizeOptions,
};
use qlinear::InputQuantization;

/// Inputs above this size get a progress line per quantized tensor on stderr.
pub(crate) const PROGRESS_THRESHOLD: u64 = 64 << 20;

#[derive(clap::Args)]
pub(crate) struct QuantizeArgs {
    /// The float checkpoint (.safetensors) to read.
    input: PathBuf,
    /// Where to write the quantized checkpoint (not needed with --dry-run).
    #[arg(required_unless_present = "dry_run")]
    output: Option<PathBuf>,
    /// One scale and zero point per output channel (torch's PerChannelMinMaxObserver)
    /// instead of per tensor (MinMaxObserver, the default, as torch's quantize_dynamic).
    #[arg(long)]
    per_channel: bool,
    /// Symmetric weights, zero point 0 (the default).
    #[arg(long, conflicts_with = "affine")]
    symmetric: bool,
    /// Affine weights (a zero point per tensor or channel).
    #[arg(long)]
    affine: bool,
    /// Quantize only tensors whose name matches PAT (glob: `*` any run, `?` one
    /// character; repeatable; default: every name).
    #[arg(long = "include", value_name = "PAT")]
    include: Vec<String>,
    /// Never quantize tensors whose name matches PAT (repeatable). Default `*embed*`
    /// (embeddings stay float); giving any --exclude replaces that default.
    #[arg(long = "exclude", value_name = "PAT", default_value = "*embed*")]
    exclude: Vec<String>,
    /// Record `reduce_range = true` (activations in [0, 127]) for every quantized layer,
    /// torch's fbgemm module default. Without it the file records full range, the
    /// recommended setting: qlinear never saturates.
    #[arg(long)]
    reduce_range: bool,
    /// Record per-row (per-token) input quantization for every quantized layer
    /// instead of torch's per-tensor.
    #[arg(long)]
    per_row: bool,
    /// List what would be quantized (name, shape, dtype) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// A progress line per tensor on stderr whatever the input's size (by default only
    /// for inputs above 64 MiB).
    #[arg(long)]
    progress: bool,
}

/// `N bytes` below 1 MiB, else MiB with two decimals.
fn size(bytes: usize) -> String {
    if bytes < 1 << 20 {
        format!("{bytes} bytes")
    } else {
        format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

fn line(t: &PlannedTensor) -> String {
    format!("{} {}x{} {}", t.name, t.shape[0], t.shape[1], t.dtype)
}

/// Maps `path` read-only (an empty file gives an empty slice).
fn map(path: &Path) -> std::io::Result<Option<memmap2::Mmap>> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the map is read-only and private to this process; its bytes are only read
    // as `&[u8]` by code that validates everything it reads. A file truncated or changed
    // by another process while mapped is outside what the map can guard against (as
    // with any memory-mapped input); qlinear itself never writes to `path` (the output
    // goes to a new file that is renamed into place).
    unsafe { memmap2::Mmap::map(&file) }.map(Some)
}

fn write_atomic(out: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = out.with_file_name(format!(".{name}.qlinear-tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn run(args: QuantizeArgs) -> ExitCode {
    let opts = QuantizeOptions {
        per_channel: args.per_channel,
        symmetric: !args.affine,
        include: args.include,
        exclude: args.exclude,
        reduce_range: args.reduce_range,
        input_quantization: if args.per_row {
            InputQuantization::PerRow
        } else {
            InputQuantization::PerTensor
        },
    };
    let fail = |msg: String| {
        eprintln!("error: {msg}");
        ExitCode::from(2)
    };
    let map = match map(&args.input) {
        Ok(m) => m,
        Err(e) => return fail(format!("{}: {e}", args.input.display())),
    };
    let input: &[u8] = map.as_deref().unwrap_or(&[]);
    if args.dry_run {
        let plan = match plan_quantization(input, &opts) {
            Ok(p) => p,
            Err(e) => return fail(format!("{}: {e}", args.input.display())),
        };
        for t in &plan {
            println!("would quantize {}", line(t));
        }
        println!(
            "dry run: {} tensor(s) would be quantized ({}); nothing written",
            plan.len(),
            if opts.per_channel {
                "per-channel"
            } else {
                "per-tensor"
            }
        );
        return ExitCode::SUCCESS;
    }
    let Some(out) = args.output else {
        return fail("OUT is required without --dry-run".into());
    };
    let show = args.progress || input.len() as u64 > PROGRESS_THRESHOLD;
    let result = quantize_checkpoint_with_progress(input, &opts, |i, n, t| {
        if show {
            eprintln!("[{i}/{n}] {}", line(t));
        }
    });
    let (bytes, summary) = match result {
        Ok(r) => r,
        Err(e) => return fail(format!("{}: {e}", args.input.display())),
    };
    if let Err(e) = write_atomic(&out, &bytes) {
        return fail(format!("{}: {e}", out.display()));
    }
    println!(
        "quantized {} tensor(s), copied {} unchanged; {} -> {} ({:.1}%); wrote {}",
        summary.quantized.len(),
        summary.copied,
        size(summary.bytes_in),
        size(summary.bytes_out),
        100.0 * summary.bytes_out as f64 / summary.bytes_in.max(1) as f64,
        out.display()
    );
    ExitCode::SUCCESS
}
