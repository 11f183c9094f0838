//! `minilm`: sentence embeddings with all-MiniLM-L6-v2, linear layers on qlinear int8
//! (default) or f32. See the library docs for the architecture.
//!
//! ```text
//! minilm --model DIR [--weights FILE] [--f32 | --compare] [--per-tensor]
//!        [--reduce-range] [--per-row] [--threads N] [--json OUT.json] [--bench N]
//!        "sentence" ...
//! ```

use clap::Parser;
use minilm::{cosine, Embedder, ModelFiles, Precision, Settings, Timings, BENCH_SENTENCES};
use qlinear::{InputQuantization, Observer};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "all-MiniLM-L6-v2 sentence embeddings on qlinear int8 linear layers"
)]
struct Cli {
    /// Model directory (config.json, tokenizer.json, model.safetensors); fetch it with
    /// .ci/minilm-model.sh.
    #[arg(long)]
    model: PathBuf,
    /// Checkpoint to load instead of the model directory's model.safetensors: float, or
    /// quantized by `qlinear quantize` (its int8 layers are loaded as they are; the
    /// weight flags --per-tensor does not apply to them, the activation flags
    /// --reduce-range and --per-row do). --f32 and --compare need float weights.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Run the linear layers in f32 (matrixmultiply sgemm) instead of int8.
    #[arg(long, conflicts_with = "compare")]
    f32: bool,
    /// Run both int8 and f32; report each one's time and each int8 embedding's cosine
    /// to its f32 one.
    #[arg(long)]
    compare: bool,
    /// int8: per-tensor symmetric weights (default: per-channel symmetric).
    #[arg(long)]
    per_tensor: bool,
    /// int8: reduce the activation range to [0, 127] (default: full range).
    #[arg(long)]
    reduce_range: bool,
    /// int8: quantize activations per row (token), one scale and zero point each
    /// (default: one per call over the whole padded batch, as torch).
    #[arg(long)]
    per_row: bool,
    /// qlinear worker threads per layer (0 = all cores). The f32 GEMM is
    /// single-threaded.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write the sentences, embeddings and timings to this JSON file.
    #[arg(long, value_name = "OUT.json")]
    json: Option<PathBuf>,
    /// Benchmark: encode the batch N times per mode, report median sentences/s. Without
    /// sentences, a built-in batch of 32.
    #[arg(long, value_name = "N")]
    bench: Option<usize>,
    /// Sentences to embed (one batch).
    sentences: Vec<String>,
}

struct Run {
    embedder: Embedder,
    load: f64,
    embeddings: Vec<Vec<f32>>,
    timings: Timings,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minilm: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn int8_settings(cli: &Cli) -> Settings {
    Settings {
        precision: Precision::Int8 {
            observer: if cli.per_tensor {
                Observer::PER_TENSOR_SYMMETRIC
            } else {
                Observer::PER_CHANNEL_SYMMETRIC
            },
            reduce_range: cli.reduce_range,
            input_quantization: if cli.per_row {
                InputQuantization::PerRow
            } else {
                InputQuantization::PerTensor
            },
        },
        threads: cli.threads,
    }
}

fn run(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let sentences: Vec<&str> = if cli.sentences.is_empty() {
        if cli.bench.is_none() {
            return Err("no sentences given (pass them as arguments, or use --bench N)".into());
        }
        BENCH_SENTENCES.to_vec()
    } else {
        cli.sentences.iter().map(String::as_str).collect()
    };
    let mut modes = Vec::new();
    if !cli.f32 {
        modes.push(int8_settings(cli));
    }
    if cli.f32 || cli.compare {
        modes.push(Settings::f32().with_threads(cli.threads));
    }

    let t = Instant::now();
    let files = ModelFiles::open_with_weights(&cli.model, cli.weights.as_deref())?;
    let read = t.elapsed().as_secs_f64();
    let mut runs = Vec::new();
    for settings in &modes {
        let t = Instant::now();
        let embedder = Embedder::new(&files, settings)?;
        let load = read + t.elapsed().as_secs_f64();
        let (embeddings, timings) = embedder.embed_timed(&sentences)?;
        runs.push(Run {
            embedder,
            load,
            embeddings,
            timings,
        });
    }

    for r in &runs {
        println!(
            "{:<32} linear layers on {}",
            r.embedder.settings().label(),
            r.embedder.linear_kernel()
        );
    }
    let (quantized, linears) = runs[0].embedder.quantized_layers();
    if quantized > 0 {
        println!(
            "{quantized} of {linears} linear layers loaded int8 from {} (their weight \
             quantization is the file's)",
            files.checkpoint.path().display()
        );
    }
    for r in &runs {
        println!(
            "{:<32} load {:.3} s  tokenize {:.4} s  encode {:.4} s  ({} sentences, {:.1}/s)",
            r.embedder.settings().label(),
            r.load,
            r.timings.tokenize,
            r.timings.encode,
            sentences.len(),
            sentences.len() as f64 / r.timings.encode
        );
    }
    let main_run = &runs[0];
    if sentences.len() > 1 && sentences.len() <= 16 {
        println!(
            "\npairwise cosine similarity ({}):",
            main_run.embedder.settings().label()
        );
        print_similarity(&sentences, &main_run.embeddings);
    }
    if runs.len() == 2 {
        let (q, f) = (&runs[0], &runs[1]);
        println!(
            "\ncosine of each {} embedding to its f32 one:",
            q.embedder.settings().label()
        );
        let cos: Vec<f32> = q
            .embeddings
            .iter()
            .zip(&f.embeddings)
            .map(|(a, b)| cosine(a, b))
            .collect();
        for (s, c) in sentences.iter().zip(&cos) {
            println!("  {c:.6}  {}", shorten(s, 70));
        }
        let mean = cos.iter().sum::<f32>() / cos.len() as f32;
        let min = cos.iter().copied().fold(f32::INFINITY, f32::min);
        println!(
            "  mean {mean:.6}, min {min:.6}; encode {:.4} s int8 vs {:.4} s f32 ({:.2}x)",
            q.timings.encode,
            f.timings.encode,
            f.timings.encode / q.timings.encode
        );
    }

    if let Some(path) = &cli.json {
        let doc = |r: &Run| {
            json!({
                "mode": r.embedder.settings().label(),
                "kernel": r.embedder.linear_kernel(),
                "weights": files.checkpoint.path().display().to_string(),
                "checkpoint_quantized_layers": r.embedder.quantized_layers().0,
                "sentences": sentences,
                "embeddings": r.embeddings,
                "seconds": {
                    "load": r.load,
                    "tokenize": r.timings.tokenize,
                    "encode": r.timings.encode,
                },
            })
        };
        let mut top = doc(&runs[0]);
        if runs.len() == 2 {
            let mut reference = doc(&runs[1]);
            reference["cosine_to_reference"] = json!(runs[0]
                .embeddings
                .iter()
                .zip(&runs[1].embeddings)
                .map(|(a, b)| cosine(a, b))
                .collect::<Vec<_>>());
            top["reference"] = reference;
        }
        let text = serde_json::to_string_pretty(&top)?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("\nwrote {}", path.display());
    }

    if let Some(n) = cli.bench {
        bench(&runs, &sentences, n.max(1))?;
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn bench(runs: &[Run], sentences: &[&str], n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (tokens, padded) = {
        let b = runs[0].embedder.tokenize(sentences)?;
        (b.mask.iter().filter(|&&m| m != 0).count(), b.seq_len)
    };
    println!(
        "\nbench: batch {} sentences ({} tokens, {:.1} per sentence, padded to {padded}), \
         {n} runs per mode, medians",
        sentences.len(),
        tokens,
        tokens as f64 / sentences.len() as f64
    );
    // Modes alternate run by run, so that load from other processes on a shared
    // machine falls on both alike.
    #[derive(Default)]
    struct Samples {
        total: Vec<f64>,
        linear: Vec<f64>,
        attention: Vec<f64>,
        gelu: Vec<f64>,
        tokenize: Vec<f64>,
    }
    let mut samples: Vec<Samples> = runs.iter().map(|_| Samples::default()).collect();
    for r in runs {
        let batch = r.embedder.tokenize(sentences)?;
        r.embedder
            .encode(&batch, &mut minilm::EncodeStats::default())?; // warm-up
    }
    for _ in 0..n {
        for (r, smp) in runs.iter().zip(&mut samples) {
            let t = Instant::now();
            let b = r.embedder.tokenize(sentences)?;
            smp.tokenize.push(t.elapsed().as_secs_f64());
            let mut s = minilm::EncodeStats::default();
            r.embedder.encode(&b, &mut s)?;
            smp.total.push(s.total.as_secs_f64());
            smp.linear.push(s.linear.as_secs_f64());
            smp.attention.push(s.attention.as_secs_f64());
            smp.gelu.push(s.gelu.as_secs_f64());
        }
    }
    let mut rates = Vec::new();
    for (r, smp) in runs.iter().zip(samples) {
        let (t, l, a, g) = (
            median(smp.total),
            median(smp.linear),
            median(smp.attention),
            median(smp.gelu),
        );
        let rate = sentences.len() as f64 / t;
        println!(
            "{:<32} {:>7.1} sentences/s  encode {:>7.2} ms = linear {:>7.2} ms ({:>4.1}%) + attention {:>5.2} + gelu {:>5.2} + other {:>5.2} ms; tokenize {:.2} ms",
            r.embedder.settings().label(),
            rate,
            t * 1e3,
            l * 1e3,
            100.0 * l / t,
            a * 1e3,
            g * 1e3,
            (t - l - a - g) * 1e3,
            median(smp.tokenize) * 1e3,
        );
        rates.push((rate, l));
    }
    if rates.len() == 2 {
        println!(
            "int8 / f32: {:.2}x sentences/s, {:.2}x in the linear layers",
            rates[0].0 / rates[1].0,
            rates[1].1 / rates[0].1
        );
    }
    Ok(())
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn print_similarity(sentences: &[&str], emb: &[Vec<f32>]) {
    for (i, s) in sentences.iter().enumerate() {
        println!("  [{i:>2}] {}", shorten(s, 70));
    }
    print!("      ");
    for j in 0..sentences.len() {
        print!("  [{j:>2}]");
    }
    println!();
    for i in 0..sentences.len() {
        print!("  [{i:>2}]");
        for j in 0..sentences.len() {
            print!(" {:>6.3}", cosine(&emb[i], &emb[j]));
        }
        println!();
    }
}
