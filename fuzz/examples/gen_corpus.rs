//! Writes the checked-in seed corpora, `fuzz/corpus/<target>/seed-*`, deterministically.
//!
//! Rerun after a change of the packed format, of the kernels' layouts or of the
//! differential target's `Input` (from `fuzz/`, stable or nightly):
//!
//! ```sh
//! cd fuzz && cargo run --release --example gen_corpus
//! ```
//!
//! It replaces the `seed-*` files of every target and leaves other files (inputs a local
//! `cargo fuzz run` added) alone. Seeds:
//!
//! * `packed_bytes`, `packed_bytes_resealed`: valid blobs for the reference layout and
//!   every compiled kernel's layout (those this CPU runs via `PackedWeights::to_bytes`,
//!   checked equal to the hand serializer; the others hand-serialized), several shapes
//!   each, per-tensor and per-channel qparams; plus a few near misses (truncated, wrong
//!   version, bad flag, non-zero padding, trailing byte), each with a valid checksum.
//! * `differential`: inputs found by a seeded random search over `Input`, one per
//!   combination of backend index, mode, profile, per-channel, bias and K kind, valid
//!   for the reference, plus a few the reference rejects, tall ones (M split across
//!   threads) and ones near the K limit. Candidates that fail the target's own check are
//!   skipped and reported (that is a bug to fix, not a seed).
//!
//! Every seed is fed through its target's check before it is written.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use qlinear::safetensors::{Dtype, SafetensorsWriter};
use qlinear::unstable::compiled_kernels;
use qlinear::{
    ActQParams, Backend, DynamicLinear, Linear, PackedWeights, Profile, QuantizedWeight,
    WeightQParams,
};
use qlinear_fuzz::differential::{Case, Input, KSpec};
use qlinear_fuzz::packed;
use qlinear_reference::contract::PackedLayout;
use qlinear_reference::testkit::Rng;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Empties the `seed-*` files of a target's corpus directory (creating it).
fn reset(target: &str) -> PathBuf {
    let dir = corpus_dir(target);
    fs::create_dir_all(&dir).expect("create corpus dir");
    for e in fs::read_dir(&dir).expect("read corpus dir") {
        let e = e.expect("dir entry");
        if e.file_name().to_string_lossy().starts_with("seed-") {
            fs::remove_file(e.path()).expect("remove old seed");
        }
    }
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

/// A deterministic weight with qparams of kind `variant`.
fn weight(rng: &mut Rng, n: usize, k: usize, variant: usize) -> QuantizedWeight {
    let data = rng.i8s(n * k);
    let qparams = match variant % 4 {
        0 => WeightQParams::PerTensor {
            scale: 0.02,
            zero_point: 0,
        },
        1 => WeightQParams::PerChannel {
            scales: (0..n).map(|_| rng.log_uniform(1e-4, 1e-1)).collect(),
            zero_points: (0..n).map(|_| rng.range_i32(-128, 127)).collect(),
        },
        2 => WeightQParams::PerTensor {
            scale: rng.log_uniform(1e-3, 1.0),
            zero_point: -128,
        },
        // Extreme but valid scales (not the subnormal ones: a dynamic multiplier that
        // underflows to zero is for the fuzzer to find).
        _ => WeightQParams::PerChannel {
            scales: (0..n)
                .map(|j| match j % 3 {
                    0 => f32::MIN_POSITIVE,
                    1 => f32::MAX,
                    _ => 1.0,
                })
                .collect(),
            zero_points: (0..n).map(|j| [127, 0, -128][j % 3]).collect(),
        },
    };
    QuantizedWeight::new(data, n, k, qparams).expect("valid seed weight")
}

/// (kernel name, layout, backend if this CPU runs it) for the reference and every
/// compiled kernel.
fn layouts() -> Vec<(&'static str, PackedLayout, Option<Backend>)> {
    let available = qlinear::available_backends();
    let mut v = vec![(
        "reference",
        PackedLayout::ROW_MAJOR,
        Some(Backend::Reference),
    )];
    for d in compiled_kernels() {
        let b = Backend::from_isa(d.isa);
        v.push((d.name, d.layout, available.contains(&b).then_some(b)));
    }
    v
}

fn packed_seeds() -> Vec<(String, Vec<u8>)> {
    const SHAPES: [(usize, usize); 6] = [(1, 1), (3, 5), (8, 16), (17, 33), (33, 65), (5, 130)];
    let mut rng = Rng::new(0x5eed_9ac4);
    let mut seeds = Vec::new();
    let mut first_valid = None;
    for (name, layout, backend) in layouts() {
        for (i, &(n, k)) in SHAPES.iter().enumerate() {
            let w = weight(&mut rng, n, k, i);
            let mut bytes = packed::serialize(name, layout, &w);
            if let Some(b) = backend {
                let p = PackedWeights::new(&w, b).expect("pack for an available backend");
                assert_eq!(p.kernel_name(), name, "backend {b} runs another kernel");
                assert!(
                    p.to_bytes() == bytes,
                    "the hand serializer differs from to_bytes for {name}: update fuzz/src/packed.rs"
                );
                bytes = p.to_bytes();
            }
            let mut resealed = bytes.clone();
            assert!(
                packed::reseal(&mut resealed) && resealed == bytes,
                "reseal is not the identity"
            );
            let pc = if w.qparams().is_per_channel() {
                "pc"
            } else {
                "pt"
            };
            let label = name.replace('/', "_");
            // The near misses start from a kernel layout with padding (the last packed
            // byte of a 3 x 5 weight is K padding when kr > 1).
            if backend.is_some() && first_valid.is_none() && layout.kr > 1 && (n, k) == (3, 5) {
                first_valid = Some((w.clone(), name, layout));
            }
            seeds.push((format!("{label}-{n}x{k}-{pc}"), bytes));
        }
    }

    // Near misses, each with a valid checksum (they reach the check they fail).
    let (w, name, layout) = first_valid.expect("a valid blob");
    let good = packed::serialize(name, layout, &w);
    let body = good.len() - packed::CHECKSUM_LEN;
    let seal = |mut b: Vec<u8>| {
        assert!(packed::reseal(&mut b));
        b
    };
    let mut v = good.clone();
    v[4] = 3; // version
    seeds.push(("bad-version".into(), seal(v)));
    let mut v = good.clone();
    v[32] = 4; // flags: an unknown bit
    seeds.push(("bad-flag".into(), seal(v)));
    // The first column sum (after the name, the scales and the zero points).
    let name_len = u32::from_le_bytes(good[36..40].try_into().unwrap()) as usize;
    let channels = if good[32] & 1 == 1 {
        w.out_features()
    } else {
        1
    };
    let sums = 64 + name_len.next_multiple_of(4) + 8 * channels;
    let mut v = good.clone();
    v[sums] = v[sums].wrapping_add(1);
    seeds.push(("bad-colsum".into(), seal(v)));
    let mut v = good.clone();
    v[48] ^= 1; // data_len
    seeds.push(("bad-datalen".into(), seal(v)));
    let mut v = good.clone();
    v[body - 1] = 0x55; // last packed byte: padding for every layout but the row-major one
    seeds.push(("bad-padding".into(), seal(v)));
    let mut v = good[..body].to_vec();
    v.push(0);
    v.extend_from_slice(&[0; 8]);
    seeds.push(("bad-trailing".into(), seal(v)));
    let mut v = good[..body / 2].to_vec();
    v.extend_from_slice(&[0; 8]);
    seeds.push(("bad-truncated".into(), seal(v)));
    let mut v = good.clone();
    v[0] = b'X';
    seeds.push(("bad-magic".into(), seal(v)));
    seeds.extend(layer_seeds());
    // Layouts no compiled kernel uses: every load repacks (cross-kernel path).
    for (i, layout) in [PackedLayout { nr: 3, kr: 5 }, PackedLayout { nr: 8, kr: 8 }]
        .into_iter()
        .enumerate()
    {
        let w = weight(&mut rng, 7, 11, i + 1);
        let name = format!("future/gemm_{}x{}", layout.nr, layout.kr);
        seeds.push((
            format!("foreign-{}x{}-7x11", layout.nr, layout.kr),
            packed::serialize(&name, layout, &w),
        ));
    }
    seeds.push(("v1-reference-3x5".into(), v1_seed()));
    for (name, bytes) in &seeds {
        if name.starts_with("bad-") {
            assert!(
                PackedWeights::from_bytes(bytes).is_err(),
                "near miss {name} is accepted"
            );
        }
    }
    seeds
}

/// Whole-layer files (static with and without ReLU and bias, dynamic with and without
/// reduce_range), packed for the best local kernel.
fn layer_seeds() -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(0x1a7e_5eed);
    let mut seeds = Vec::new();
    for (i, &(n, k)) in [(3usize, 5usize), (17, 33)].iter().enumerate() {
        let w = weight(&mut rng, n, k, i);
        let bias: Vec<f32> = (0..n).map(|j| (j as f32 - 1.5) * 0.25).collect();
        let x = ActQParams::new(0.02, 120).expect("valid qparams");
        let y = ActQParams::new(0.05, 7).expect("valid qparams");
        let l = Linear::builder(w.clone(), x, y)
            .maybe_bias((i == 0).then(|| bias.clone()))
            .relu(i == 1)
            .profile([Profile::Fbgemm, Profile::Qnnpack][i])
            .build()
            .expect("valid static layer");
        seeds.push((format!("static-{n}x{k}"), l.to_bytes()));
        let d = DynamicLinear::builder(w)
            .maybe_bias((i == 1).then(|| bias.clone()))
            .reduce_range(i == 0)
            .relu(i == 1)
            .profile([Profile::Qnnpack, Profile::Fbgemm][i])
            .build()
            .expect("valid dynamic layer");
        seeds.push((format!("dynamic-{n}x{k}"), d.to_bytes()));
    }
    seeds
}

/// A version 1 file (the format before the current one), which still loads.
fn v1_seed() -> Vec<u8> {
    let mut rng = Rng::new(0x5eed_0001);
    let w = weight(&mut rng, 3, 5, 1);
    let (n, k) = (3usize, 5usize);
    let mut out = Vec::new();
    out.extend_from_slice(packed::MAGIC);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&9u32.to_le_bytes());
    out.extend_from_slice(b"reference");
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.extend_from_slice(&(k as u64).to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.push(1);
    (0..n).for_each(|j| out.extend_from_slice(&w.qparams().scale(j).to_le_bytes()));
    (0..n).for_each(|j| out.extend_from_slice(&w.qparams().zero_point(j).to_le_bytes()));
    out.extend_from_slice(&((n * k) as u64).to_le_bytes());
    out.extend(w.data().iter().map(|&v| v as u8));
    out.extend_from_slice(&[0; 8]);
    assert!(packed::reseal(&mut out));
    let (_, r) = PackedWeights::from_bytes_with_report(&out).expect("the v1 seed loads");
    assert_eq!(r.version, 1);
    out
}

thread_local! {
    /// Set while `catch` runs a check whose panic is reported, not printed.
    static SILENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, returning the panic message if it panics.
fn catch(f: impl FnOnce()) -> Option<String> {
    SILENT.with(|s| s.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    SILENT.with(|s| s.set(false));
    r.err().map(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

fn k_kind(input: &Input) -> &'static str {
    match input.shape.k {
        KSpec::Tiny(_) => "tiny",
        KSpec::Small(_) => "small",
        KSpec::Aligned(_) => "aligned",
        KSpec::NearLimit(_) => "klimit",
    }
}

fn differential_seeds() -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    const VALID: usize = 24;
    const INVALID: usize = 3;
    const TALL: usize = 2;
    const NEAR_LIMIT: usize = 2;
    let min_len = Input::size_hint(0).0;
    let mut rng = Rng::new(0xd1ff_5eed);
    let mut seeds = Vec::new();
    let mut keys = BTreeSet::new();
    let (mut valid, mut invalid, mut tall, mut near) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for _ in 0..200_000 {
        if valid >= VALID && invalid >= INVALID && tall >= TALL && near >= NEAR_LIMIT {
            break;
        }
        let len = min_len + rng.below(400);
        let bytes = rng.bytes(len);
        let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(&bytes)) else {
            continue;
        };
        let case = Case::new(&input);
        let ok = case.reference_static().is_none_or(|r| r.is_ok())
            && case.reference_dynamic().is_none_or(|r| r.is_ok());
        let is_tall = ok && case.m >= 64 && case.threads > 1;
        let is_near = ok && matches!(input.shape.k, KSpec::NearLimit(_)) && case.m > 0;
        let key = (
            input.backend as usize % qlinear_fuzz::backends().len(),
            format!("{:?}", input.mode),
            input.qnnpack,
            input.w.per_channel,
            input.bias.is_some(),
            k_kind(&input),
        );
        let wanted = if !ok {
            invalid < INVALID
        } else if is_tall {
            tall < TALL
        } else if is_near {
            near < NEAR_LIMIT
        } else {
            valid < VALID && case.m > 0 && case.n > 0 && !keys.contains(&key)
        };
        if !wanted {
            continue;
        }
        if let Some(msg) = catch(|| case.check()) {
            failures.push(msg);
            continue;
        }
        let label = if !ok {
            invalid += 1;
            "invalid"
        } else if is_tall {
            tall += 1;
            "tall"
        } else if is_near {
            near += 1;
            "klimit"
        } else {
            valid += 1;
            keys.insert(key);
            "case"
        };
        let name = format!(
            "{:02}-{label}-{}x{}x{}-{}",
            seeds.len(),
            case.m,
            case.k,
            case.n,
            case.backend
        );
        seeds.push((name, bytes));
    }
    (seeds, failures)
}

/// Valid checkpoints for `safetensors_load`: a static layer, a dynamic per-channel
/// layer, both in one file, a dynamic layer without metadata, and a float checkpoint
/// (F32 / F16 / BF16 weights, a bias, an embedding, a 1-D weight, metadata).
fn safetensors_seeds() -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(0x5afe);
    let mut out = Vec::new();
    let static_layer = Linear::builder(
        weight(&mut rng, 5, 7, 0),
        ActQParams::new(0.05, 120).expect("qparams"),
        ActQParams::new(0.4, 3).expect("qparams"),
    )
    .bias(rng.f32s(5, 2.0))
    .relu(true)
    .profile(Profile::Qnnpack)
    .build()
    .expect("static layer");
    let dynamic_layer = DynamicLinear::builder(weight(&mut rng, 6, 9, 1))
        .bias(rng.f32s(6, 1.0))
        .build()
        .expect("dynamic layer");

    let mut w = SafetensorsWriter::new();
    static_layer
        .write_safetensors("enc.fc1", &mut w)
        .expect("write");
    out.push(("00-static-layer".to_string(), w.to_bytes().expect("bytes")));

    let mut w = SafetensorsWriter::new();
    dynamic_layer
        .write_safetensors("enc.fc2", &mut w)
        .expect("write");
    out.push((
        "01-dynamic-per-channel".to_string(),
        w.to_bytes().expect("bytes"),
    ));

    let mut w = SafetensorsWriter::new();
    static_layer.write_safetensors("a", &mut w).expect("write");
    dynamic_layer.write_safetensors("b", &mut w).expect("write");
    w.set_metadata("qlinear.profile", "fbgemm");
    out.push(("02-two-layers".to_string(), w.to_bytes().expect("bytes")));

    let mut w = SafetensorsWriter::new();
    dynamic_layer
        .weight()
        .write_safetensors("plain", &mut w)
        .expect("write");
    out.push(("03-no-metadata".to_string(), w.to_bytes().expect("bytes")));

    let mut w = SafetensorsWriter::new();
    w.add_f32("layer.0.q.weight", vec![4, 6], &rng.f32s(24, 1.5))
        .expect("add");
    w.add_f32("layer.0.q.bias", vec![4], &rng.f32s(4, 0.5))
        .expect("add");
    let f16: Vec<u8> = rng
        .f32s(3 * 6, 0.8)
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    w.add("layer.0.k.weight", Dtype::F16, vec![3, 6], f16)
        .expect("add");
    let bf16: Vec<u8> = rng
        .f32s(6 * 4, 3.0)
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    w.add("layer.1.out.weight", Dtype::BF16, vec![6, 4], bf16)
        .expect("add");
    w.add_f32("embeddings.weight", vec![5, 6], &rng.f32s(30, 1.0))
        .expect("add");
    w.add_f32("layer.0.norm.weight", vec![6], &rng.f32s(6, 1.0))
        .expect("add");
    w.set_metadata("format", "pt");
    out.push((
        "04-float-checkpoint".to_string(),
        w.to_bytes().expect("bytes"),
    ));
    out
}

fn write_safetensors_seeds() {
    let seeds = safetensors_seeds();
    let dir = reset("safetensors_load");
    for (name, bytes) in &seeds {
        if let Some(msg) = catch(|| qlinear_fuzz::safetensors::check(bytes)) {
            panic!("safetensors seed {name} fails the target's check: {msg}");
        }
        write(&dir, name, bytes);
    }
    let total: usize = seeds.iter().map(|(_, b)| b.len()).sum();
    println!("safetensors_load: {} seeds, {total} bytes", seeds.len());
}

fn main() {
    // Seeds that fail a check are reported below, not printed as panics.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if SILENT.with(|s| s.get()) {
            return;
        }
        default_hook(info)
    }));

    // `gen_corpus safetensors` rewrites only the safetensors_load seeds.
    if std::env::args().nth(1).as_deref() == Some("safetensors") {
        write_safetensors_seeds();
        return;
    }
    // `gen_corpus packed` rewrites only the packed targets' seeds.
    let only_packed = std::env::args().nth(1).as_deref() == Some("packed");
    let packed = packed_seeds();
    for target in ["packed_bytes", "packed_bytes_resealed"] {
        let dir = reset(target);
        for (name, bytes) in &packed {
            if let Some(msg) = catch(|| {
                packed::check_raw(bytes);
                packed::check_resealed(bytes);
            }) {
                panic!("packed seed {name} fails the target's check: {msg}");
            }
            write(&dir, name, bytes);
        }
        let total: usize = packed.iter().map(|(_, b)| b.len()).sum();
        println!("{target}: {} seeds, {total} bytes", packed.len());
    }

    if only_packed {
        return;
    }
    write_safetensors_seeds();
    let (seeds, failures) = differential_seeds();
    let dir = reset("differential");
    for (name, bytes) in &seeds {
        write(&dir, name, bytes);
    }
    let total: usize = seeds.iter().map(|(_, b)| b.len()).sum();
    println!("differential: {} seeds, {total} bytes", seeds.len());
    if !failures.is_empty() {
        println!(
            "differential: skipped {} candidates that FAIL the target's check; first:\n{}",
            failures.len(),
            failures[0]
        );
    }
}
