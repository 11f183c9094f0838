//! Error paths and the encoder on a tiny random BERT; no downloaded model needed.

mod common;

use common::bits;
use minilm::{
    cosine, Batch, BertConfig, Checkpoint, EncodeStats, Encoder, Error, Precision, Settings,
};
use qlinear::safetensors::{
    quantize_checkpoint, Checkpoint as QCheckpoint, Dtype as QDtype, QuantizeOptions,
    SafetensorsWriter,
};
use qlinear::{InputQuantization, Observer};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("minilm-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const TINY_CONFIG: &str = r#"{"hidden_size": 8, "num_hidden_layers": 2,
  "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 16,
  "vocab_size": 20, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}"#;

/// Deterministic pseudo-random values in [-scale, scale].
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Every tensor of the tiny model: name -> (shape, values).
fn tiny_tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let (h, i, l) = (8, 16, 2);
    let mut t = BTreeMap::new();
    let mut seed = 1;
    let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        seed += 1;
        let n = shape.iter().product();
        let v = values(n, seed, scale)
            .into_iter()
            .map(|x| x + offset)
            .collect();
        t.insert(name, (shape, v));
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        vec![20, h],
        1.0,
        0.0,
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        vec![16, h],
        0.3,
        0.0,
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, h],
        0.1,
        0.0,
    );
    add("embeddings.LayerNorm.weight".into(), vec![h], 0.1, 1.0);
    add("embeddings.LayerNorm.bias".into(), vec![h], 0.1, 0.0);
    for layer in 0..l {
        let p = format!("encoder.layer.{layer}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            add(format!("{p}.{name}.weight"), vec![out, inp], 0.5, 0.0);
            add(format!("{p}.{name}.bias"), vec![out], 0.1, 0.0);
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{p}.{ln}.weight"), vec![h], 0.1, 1.0);
            add(format!("{p}.{ln}.bias"), vec![h], 0.1, 0.0);
        }
    }
    t
}

/// Writes `tensors` as safetensors; `override_dtype` relabels one tensor as F16-sized
/// bytes to provoke a dtype error.
fn write_checkpoint(
    path: &std::path::Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    f16_tensor: Option<&str>,
) {
    let bytes: BTreeMap<&String, Vec<u8>> = tensors
        .iter()
        .map(|(k, (_, v))| {
            let b = if Some(k.as_str()) == f16_tensor {
                v.iter()
                    .flat_map(|x| (x.to_bits() as u16).to_le_bytes())
                    .collect()
            } else {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            };
            (k, b)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (shape, _))| {
            let dtype = if Some(k.as_str()) == f16_tensor {
                Dtype::F16
            } else {
                Dtype::F32
            };
            (
                k.clone(),
                TensorView::new(dtype, shape.clone(), &bytes[k]).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

fn tiny_config(dir: &std::path::Path) -> BertConfig {
    let path = dir.join("config.json");
    std::fs::write(&path, TINY_CONFIG).unwrap();
    BertConfig::from_file(&path).unwrap()
}

fn batch(rows: &[&[u32]]) -> Batch {
    let seq_len = rows.iter().map(|r| r.len()).max().unwrap();
    let mut ids = vec![];
    let mut mask = vec![];
    for r in rows {
        ids.extend_from_slice(r);
        ids.extend(std::iter::repeat_n(0, seq_len - r.len()));
        mask.extend(std::iter::repeat_n(1, r.len()));
        mask.extend(std::iter::repeat_n(0, seq_len - r.len()));
    }
    Batch {
        ids,
        mask,
        batch: rows.len(),
        seq_len,
    }
}

#[test]
fn tiny_model_runs_in_both_precisions_and_masks_padding() {
    let dir = scratch("tiny");
    let cfg = tiny_config(&dir);
    let path = dir.join("model.safetensors");
    write_checkpoint(&path, &tiny_tensors(), None);
    let ckpt = Checkpoint::open(&path).unwrap();
    let f32_enc = Encoder::new(&cfg, &ckpt, &Settings::f32()).unwrap();
    let int8_enc = Encoder::new(&cfg, &ckpt, &Settings::int8()).unwrap();

    let short: &[u32] = &[1, 5, 7, 2];
    let long: &[u32] = &[1, 9, 3, 11, 4, 13, 2];
    let mut stats = EncodeStats::default();
    let both = f32_enc.encode(&batch(&[short, long]), &mut stats).unwrap();
    let alone = f32_enc.encode(&batch(&[short]), &mut stats).unwrap();
    for (a, b) in both[0].iter().zip(&alone[0]) {
        assert!((a - b).abs() < 1e-5, "padding changed the f32 embedding");
    }
    for e in &both {
        let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    assert!(cosine(&both[0], &both[1]) < 0.999, "sentences collapsed");
    assert!(stats.linear > std::time::Duration::ZERO);

    let q = int8_enc.encode(&batch(&[short, long]), &mut stats).unwrap();
    for (a, b) in q.iter().zip(&both) {
        let c = cosine(a, b);
        assert!(c > 0.95, "int8 vs f32 on the tiny model: {c}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn checkpoint_errors_name_the_tensor() {
    let dir = scratch("bad");
    let cfg = tiny_config(&dir);
    let path = dir.join("model.safetensors");
    let key = "encoder.layer.1.intermediate.dense.weight";

    // Missing tensor.
    let mut t = tiny_tensors();
    t.remove(key);
    write_checkpoint(&path, &t, None);
    let err = Encoder::new(&cfg, &Checkpoint::open(&path).unwrap(), &Settings::int8())
        .err()
        .unwrap();
    assert!(matches!(err, Error::Checkpoint { .. }));
    assert!(err.to_string().contains(key) && err.to_string().contains("missing"));

    // Wrong shape (transposed).
    let mut t = tiny_tensors();
    t.get_mut(key).unwrap().0 = vec![8, 16];
    write_checkpoint(&path, &t, None);
    let err = Encoder::new(&cfg, &Checkpoint::open(&path).unwrap(), &Settings::f32())
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains(key) && msg.contains("[8, 16]") && msg.contains("[16, 8]"),
        "{msg}"
    );

    // Wrong dtype.
    write_checkpoint(&path, &tiny_tensors(), Some(key));
    let err = Encoder::new(&cfg, &Checkpoint::open(&path).unwrap(), &Settings::f32())
        .err()
        .unwrap();
    assert!(err.to_string().contains("F16"), "{err}");

    // Not a safetensors file.
    std::fs::write(&path, b"not a checkpoint").unwrap();
    let err = Checkpoint::open(&path).err().unwrap();
    assert!(err.to_string().contains("safetensors"), "{err}");

    // Unsupported activation.
    std::fs::write(
        dir.join("config.json"),
        TINY_CONFIG.replace("\"gelu\"", "\"relu\""),
    )
    .unwrap();
    let err = BertConfig::from_file(&dir.join("config.json"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("relu"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_model_dir_is_an_error_not_a_panic() {
    let dir = std::env::temp_dir().join("minilm-test-no-such-dir");
    let err = minilm::ModelFiles::open(&dir).err().unwrap();
    assert!(matches!(err, Error::MissingModelDir(_)));

    let out = Command::new(env!("CARGO_BIN_EXE_minilm"))
        .args(["--model", dir.to_str().unwrap(), "hello"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A directory without the model's files.
    let empty = scratch("empty");
    let out = Command::new(env!("CARGO_BIN_EXE_minilm"))
        .args(["--model", empty.to_str().unwrap(), "hello"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config.json"), "{stderr}");
    let _ = std::fs::remove_dir_all(&empty);
}

// ---------------------------------------------------------------------------------------
// Checkpoints quantized by `qlinear quantize` (`quantize_checkpoint`), on the tiny model.

/// The tiny float checkpoint quantized with `opts`, written to `dir/name`.
fn quantized_tiny(dir: &std::path::Path, name: &str, opts: &QuantizeOptions) -> PathBuf {
    let float = dir.join("float.safetensors");
    write_checkpoint(&float, &tiny_tensors(), None);
    let (bytes, summary) = quantize_checkpoint(&std::fs::read(&float).unwrap(), opts).unwrap();
    assert_eq!(summary.quantized.len(), 12, "2 layers x 6 linear weights");
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn tiny_quantized_checkpoint_matches_from_float_bit_for_bit() {
    let dir = scratch("tiny-quantized");
    let cfg = tiny_config(&dir);
    let float = dir.join("model.safetensors");
    write_checkpoint(&float, &tiny_tensors(), None);
    let float_ckpt = Checkpoint::open(&float).unwrap();
    let per_tensor_full = Settings {
        precision: Precision::Int8 {
            observer: Observer::PER_TENSOR_SYMMETRIC,
            reduce_range: false,
            input_quantization: InputQuantization::PerTensor,
        },
        threads: 1,
    };
    let rows: [&[u32]; 3] = [&[1, 5, 7, 2], &[1, 9, 3, 11, 4, 13, 2], &[1, 19, 2]];
    for (per_channel, settings) in [
        (true, Settings::int8()),
        (true, Settings::int8().with_per_row()),
        (true, Settings::int8().with_threads(0)),
        (false, per_tensor_full),
        (false, Settings::int8_torch_default()),
        (false, Settings::int8_torch_default().with_per_row()),
    ] {
        let opts = QuantizeOptions {
            per_channel,
            ..QuantizeOptions::default()
        };
        let path = quantized_tiny(&dir, "q.safetensors", &opts);
        let q_ckpt = Checkpoint::open(&path).unwrap();
        let loaded = Encoder::new(&cfg, &q_ckpt, &settings).unwrap();
        assert_eq!(loaded.quantized_layers(), 12);
        let quantized_at_load = Encoder::new(&cfg, &float_ckpt, &settings).unwrap();
        assert_eq!(quantized_at_load.quantized_layers(), 0);
        let mut stats = EncodeStats::default();
        let a = loaded.encode(&batch(&rows), &mut stats).unwrap();
        let b = quantized_at_load.encode(&batch(&rows), &mut stats).unwrap();
        assert_eq!(
            bits(&a),
            bits(&b),
            "{} from a per_channel={per_channel} checkpoint",
            settings.label()
        );
    }
    // A checkpoint quantized per tensor is not what a per-channel run quantizes at
    // load: the comparison above can fail.
    let path = quantized_tiny(&dir, "q.safetensors", &QuantizeOptions::default());
    let mut stats = EncodeStats::default();
    let a = Encoder::new(&cfg, &Checkpoint::open(&path).unwrap(), &Settings::int8())
        .unwrap()
        .encode(&batch(&rows), &mut stats)
        .unwrap();
    let b = Encoder::new(&cfg, &float_ckpt, &Settings::int8())
        .unwrap()
        .encode(&batch(&rows), &mut stats)
        .unwrap();
    assert_ne!(bits(&a), bits(&b));

    // f32 has no weights to run on.
    let err = Encoder::new(&cfg, &Checkpoint::open(&path).unwrap(), &Settings::f32())
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::Checkpoint { .. }), "{msg}");
    assert!(
        msg.contains("encoder.layer.0.attention.self.query.weight") && msg.contains("int8"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The quantized tiny checkpoint with `edit` applied to its tensors and metadata.
fn edited(
    bytes: &[u8],
    edit: impl FnOnce(
        &mut BTreeMap<String, (QDtype, Vec<usize>, Vec<u8>)>,
        &mut BTreeMap<String, String>,
    ),
) -> Vec<u8> {
    let ck = QCheckpoint::parse(bytes).unwrap();
    let mut tensors: BTreeMap<String, (QDtype, Vec<usize>, Vec<u8>)> = ck
        .tensors()
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    let mut meta: BTreeMap<String, String> = ck
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    edit(&mut tensors, &mut meta);
    let mut w = SafetensorsWriter::new();
    for (n, (d, s, b)) in tensors {
        w.add(n, d, s, b).unwrap();
    }
    for (k, v) in meta {
        w.set_metadata(k, v);
    }
    w.to_bytes().unwrap()
}

#[test]
fn corrupt_quantized_layers_are_errors_naming_the_tensor() {
    let dir = scratch("tiny-corrupt");
    let cfg = tiny_config(&dir);
    let opts = QuantizeOptions {
        per_channel: true,
        ..QuantizeOptions::default()
    };
    let good = std::fs::read(quantized_tiny(&dir, "q.safetensors", &opts)).unwrap();
    let layer = "encoder.layer.1.intermediate.dense";
    let path = dir.join("bad.safetensors");
    let load = |bytes: Vec<u8>| {
        std::fs::write(&path, bytes).unwrap();
        Encoder::new(&cfg, &Checkpoint::open(&path).unwrap(), &Settings::int8())
            .err()
            .expect("a corrupt checkpoint must not load")
    };

    // NaN scale.
    let err = load(edited(&good, |t, _| {
        let scale = &mut t.get_mut(&format!("{layer}.weight_scale")).unwrap().2;
        scale[12..16].copy_from_slice(&f32::NAN.to_le_bytes());
    }));
    let msg = err.to_string();
    assert!(matches!(err, Error::Qlinear { .. }), "{msg}");
    assert!(
        msg.contains(&format!("`{layer}.weight_scale`")) && msg.contains("index 3"),
        "{msg}"
    );

    // Zero point out of int8 range.
    let err = load(edited(&good, |t, _| {
        let zp = &mut t.get_mut(&format!("{layer}.weight_zero_point")).unwrap().2;
        zp[..4].copy_from_slice(&200i32.to_le_bytes());
    }));
    assert!(
        err.to_string()
            .contains(&format!("{layer}.weight_zero_point")),
        "{err}"
    );

    // Missing scale.
    let err = load(edited(&good, |t, _| {
        t.remove(&format!("{layer}.weight_scale"));
    }));
    assert!(
        err.to_string().contains(&format!("{layer}.weight_scale")),
        "{err}"
    );

    // Missing bias: the layer would silently compute without it.
    let err = load(edited(&good, |t, _| {
        t.remove(&format!("{layer}.bias"));
    }));
    let msg = err.to_string();
    assert!(matches!(err, Error::Checkpoint { .. }), "{msg}");
    assert!(
        msg.contains(&format!("{layer}.bias")) && msg.contains("missing"),
        "{msg}"
    );

    // Transposed int8 weight.
    let err = load(edited(&good, |t, _| {
        t.get_mut(&format!("{layer}.weight")).unwrap().1 = vec![8, 16];
    }));
    let msg = err.to_string();
    assert!(msg.contains(layer), "{msg}");

    // Malformed metadata.
    let err = load(edited(&good, |_, m| {
        m.insert(
            format!("qlinear.{layer}.input_quantization"),
            "per-row".into(),
        );
    }));
    assert!(
        err.to_string()
            .contains(&format!("qlinear.{layer}.input_quantization")),
        "{err}"
    );

    // The untouched file loads.
    std::fs::write(&path, &good).unwrap();
    Encoder::new(&cfg, &Checkpoint::open(&path).unwrap(), &Settings::int8()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
