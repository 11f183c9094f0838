//! `qlinear::safetensors`: round trips (bit for bit), the naming convention, one test
//! per malformed-file case (each an `Error::Checkpoint` naming the tensor or key), and
//! quantizing a float checkpoint exactly as `DynamicLinear::from_float`.
#![cfg(feature = "safetensors")]

use std::collections::BTreeMap;

use qlinear::safetensors::{
    plan_quantization, quantize_checkpoint, quantize_checkpoint_with_progress, Checkpoint, Dtype,
    QuantizeOptions, SafetensorsWriter, FILE,
};
use qlinear::{
    ActQParams, Backend, DynamicLinear, Error, InputQuantization, Linear, Profile, QuantizedWeight,
    WeightQParams, K_LIMIT,
};
use qlinear_reference::testkit::Rng;

// ---------------------------------------------------------------------------------------
// Helpers.

fn weight(rng: &mut Rng, n: usize, k: usize, per_channel: bool) -> QuantizedWeight {
    let qparams = if per_channel {
        WeightQParams::PerChannel {
            scales: (0..n).map(|_| rng.log_uniform(1e-3, 1e-1)).collect(),
            zero_points: (0..n).map(|_| rng.range_i32(-128, 127)).collect(),
        }
    } else {
        WeightQParams::PerTensor {
            scale: 0.0123,
            zero_point: -7,
        }
    };
    QuantizedWeight::new(rng.i8s(n * k), n, k, qparams).unwrap()
}

fn static_layer(per_channel: bool) -> Linear {
    let mut rng = Rng::new(7);
    let (n, k) = (5, 19);
    Linear::builder(
        weight(&mut rng, n, k, per_channel),
        ActQParams::new(0.05, 131).unwrap(),
        ActQParams::new(0.3, 7).unwrap(),
    )
    .bias(rng.f32s(n, 3.0))
    .relu(true)
    .profile(Profile::Qnnpack)
    .build()
    .unwrap()
}

fn dynamic_layer(per_channel: bool) -> DynamicLinear {
    let mut rng = Rng::new(11);
    let (n, k) = (6, 23);
    DynamicLinear::builder(weight(&mut rng, n, k, per_channel))
        .bias(rng.f32s(n, 1.0))
        .reduce_range(false)
        .build()
        .unwrap()
}

/// A file as an editable list of tensors plus metadata.
#[derive(Clone)]
struct Raw {
    tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    meta: BTreeMap<String, String>,
}

impl Raw {
    fn from_bytes(bytes: &[u8]) -> Raw {
        let ck = Checkpoint::parse(bytes).unwrap();
        Raw {
            tensors: ck
                .tensors()
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        (v.dtype(), v.shape().to_vec(), v.data().to_vec()),
                    )
                })
                .collect(),
            meta: ck
                .metadata()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
    fn set(&mut self, name: &str, dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) -> &mut Self {
        self.tensors.insert(name.to_string(), (dtype, shape, data));
        self
    }
    fn set_f32(&mut self, name: &str, shape: Vec<usize>, v: &[f32]) -> &mut Self {
        let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.set(name, Dtype::F32, shape, b)
    }
    fn set_i32(&mut self, name: &str, shape: Vec<usize>, v: &[i32]) -> &mut Self {
        let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.set(name, Dtype::I32, shape, b)
    }
    fn set_i64(&mut self, name: &str, shape: Vec<usize>, v: &[i64]) -> &mut Self {
        let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.set(name, Dtype::I64, shape, b)
    }
    fn remove(&mut self, name: &str) -> &mut Self {
        assert!(
            self.tensors.remove(name).is_some(),
            "{name} not in the file"
        );
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut w = SafetensorsWriter::new();
        for (n, (d, s, b)) in &self.tensors {
            w.add(n.clone(), *d, s.clone(), b.clone()).unwrap();
        }
        for (k, v) in &self.meta {
            w.set_metadata(k.clone(), v.clone());
        }
        w.to_bytes().unwrap()
    }
}

fn static_raw() -> Raw {
    let mut w = SafetensorsWriter::new();
    static_layer(true).write_safetensors("l", &mut w).unwrap();
    Raw::from_bytes(&w.to_bytes().unwrap())
}

fn dynamic_raw() -> Raw {
    let mut w = SafetensorsWriter::new();
    dynamic_layer(false).write_safetensors("l", &mut w).unwrap();
    Raw::from_bytes(&w.to_bytes().unwrap())
}

fn load_static(bytes: &[u8]) -> Result<Linear, Error> {
    let ck = Checkpoint::parse(bytes)?;
    Linear::from_safetensors(&ck, "l")?.build()
}

fn load_dynamic(bytes: &[u8]) -> Result<DynamicLinear, Error> {
    let ck = Checkpoint::parse(bytes)?;
    DynamicLinear::from_safetensors(&ck, "l")?.build()
}

/// Asserts an `Error::Checkpoint` about `tensor` whose message names it and contains
/// `needle`.
#[track_caller]
fn assert_ckpt_err<T: std::fmt::Debug>(r: Result<T, Error>, tensor: &str, needle: &str) {
    match r {
        Err(e @ Error::Checkpoint { .. }) => {
            let Error::Checkpoint { tensor: t, problem } = &e else {
                unreachable!()
            };
            assert_eq!(t, tensor, "wrong tensor in {e}");
            let msg = e.to_string();
            assert!(
                msg.contains(tensor),
                "message does not name {tensor}: {msg}"
            );
            assert!(
                problem.contains(needle),
                "problem {problem:?} lacks {needle:?}"
            );
        }
        other => panic!("expected Error::Checkpoint about {tensor}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Round trips.

fn check_static_round_trip(per_channel: bool) {
    let layer = static_layer(per_channel);
    let mut w = SafetensorsWriter::new();
    layer.write_safetensors("enc.0.fc", &mut w).unwrap();
    let bytes = w.to_bytes().unwrap();
    let ck = Checkpoint::parse(&bytes).unwrap();
    assert_eq!(ck.layer_prefixes(), vec!["enc.0.fc".to_string()]);
    assert_eq!(ck.metadata()["qlinear.enc.0.fc.kind"], "static");
    let loaded = Linear::from_safetensors(&ck, "enc.0.fc")
        .unwrap()
        .threads(1)
        .build()
        .unwrap();
    assert_eq!(loaded.weight(), layer.weight());
    assert_eq!(loaded.input_qparams(), layer.input_qparams());
    assert_eq!(loaded.output_qparams(), layer.output_qparams());
    let bits = |b: Option<&[f32]>| b.unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(loaded.bias()), bits(layer.bias()));
    assert!(loaded.relu());
    assert_eq!(loaded.profile(), Profile::Qnnpack);
    let mut rng = Rng::new(3);
    let x = rng.bytes(4 * 19);
    assert_eq!(
        loaded.forward_vec(&x, 4).unwrap(),
        layer.forward_vec(&x, 4).unwrap()
    );
    // Every backend this CPU runs gives the same bits.
    for b in qlinear::available_backends() {
        let l = Linear::from_safetensors_for(&ck, "enc.0.fc", b)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(l.packed().backend(), b);
        assert_eq!(
            l.forward_vec(&x, 4).unwrap(),
            layer.forward_vec(&x, 4).unwrap()
        );
    }
}

#[test]
fn static_round_trip_per_tensor() {
    check_static_round_trip(false);
}

#[test]
fn static_round_trip_per_channel() {
    check_static_round_trip(true);
}

#[test]
fn dynamic_round_trip() {
    for per_channel in [false, true] {
        let layer = dynamic_layer(per_channel);
        let mut w = SafetensorsWriter::new();
        layer.write_safetensors("d", &mut w).unwrap();
        let bytes = w.to_bytes().unwrap();
        let ck = Checkpoint::parse(&bytes).unwrap();
        let loaded = DynamicLinear::from_safetensors(&ck, "d")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(loaded.weight(), layer.weight());
        assert!(!loaded.reduce_range(), "metadata reduce_range=false kept");
        let bits = |b: Option<&[f32]>| b.unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(loaded.bias()), bits(layer.bias()));
        let x = Rng::new(5).f32s(3 * 23, 4.0);
        let (a, b) = (
            loaded.forward_vec(&x, 3).unwrap(),
            layer.forward_vec(&x, 3).unwrap(),
        );
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        // QuantizedWeight reads the same weight on its own.
        assert_eq!(
            QuantizedWeight::from_safetensors(&ck, "d").unwrap(),
            layer.weight()
        );
    }
}

#[test]
fn dynamic_round_trip_input_quantization() {
    let mut rng = Rng::new(23);
    // Rows of very different magnitudes, so that per-row and per-tensor input
    // quantization give different outputs (checked below: the mode is really applied).
    let mut x = rng.f32s(4 * 23, 1.0);
    for (r, row) in x.chunks_exact_mut(23).enumerate() {
        let f = [1.0, 50.0, 0.01, 7.0][r];
        row.iter_mut().for_each(|v| *v *= f);
    }
    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for mode in [InputQuantization::PerTensor, InputQuantization::PerRow] {
        for per_channel in [false, true] {
            let layer = DynamicLinear::builder(weight(&mut rng, 6, 23, per_channel))
                .bias(rng.f32s(6, 1.0))
                .reduce_range(false)
                .input_quantization(mode)
                .build()
                .unwrap();
            let mut w = SafetensorsWriter::new();
            layer.write_safetensors("d", &mut w).unwrap();
            let bytes = w.to_bytes().unwrap();
            let ck = Checkpoint::parse(&bytes).unwrap();
            let want = match mode {
                InputQuantization::PerTensor => "per_tensor",
                InputQuantization::PerRow => "per_row",
            };
            assert_eq!(ck.metadata()["qlinear.d.input_quantization"], want);
            let loaded = DynamicLinear::from_safetensors(&ck, "d")
                .unwrap()
                .threads(1)
                .build()
                .unwrap();
            assert_eq!(loaded.input_quantization(), mode);
            assert_eq!(loaded.weight(), layer.weight());
            let got = bits(loaded.forward_vec(&x, 4).unwrap());
            assert_eq!(got, bits(layer.forward_vec(&x, 4).unwrap()));
            // The same layer built in the other mode computes something else here.
            let other = DynamicLinear::builder(layer.weight())
                .maybe_bias(layer.bias().map(<[f32]>::to_vec))
                .reduce_range(false)
                .input_quantization(match mode {
                    InputQuantization::PerTensor => InputQuantization::PerRow,
                    InputQuantization::PerRow => InputQuantization::PerTensor,
                })
                .build()
                .unwrap();
            assert_ne!(got, bits(other.forward_vec(&x, 4).unwrap()));
        }
    }
}

#[test]
fn input_quantization_absent_is_per_tensor() {
    let mut raw = dynamic_raw();
    assert_eq!(raw.meta["qlinear.l.input_quantization"], "per_tensor");
    raw.meta.remove("qlinear.l.input_quantization");
    let l = load_dynamic(&raw.bytes()).unwrap();
    assert_eq!(l.input_quantization(), InputQuantization::PerTensor);
    raw.meta
        .insert("qlinear.l.input_quantization".into(), "per_row".into());
    let l = load_dynamic(&raw.bytes()).unwrap();
    assert_eq!(l.input_quantization(), InputQuantization::PerRow);
}

#[test]
fn several_layers_in_one_file_and_save_load_by_path() {
    let s = static_layer(false);
    let d = dynamic_layer(true);
    let mut w = SafetensorsWriter::new();
    s.write_safetensors("a", &mut w).unwrap();
    d.write_safetensors("b", &mut w).unwrap();
    w.set_metadata("user.note", "kept");
    // A name taken twice is an error, not a silent overwrite.
    assert_ckpt_err(d.write_safetensors("b", &mut w), "b.weight", "already");
    let dir = std::env::temp_dir().join(format!("qlinear-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("two.safetensors");
    w.save(&path).unwrap();
    let s2 = Linear::load_safetensors(&path, "a").unwrap();
    let d2 = DynamicLinear::load_safetensors(&path, "b").unwrap();
    assert_eq!(s2.weight(), s.weight());
    assert_eq!(d2.weight(), d.weight());
    // Wrong kind for a prefix: the metadata says so.
    let e = Linear::load_safetensors(&path, "b").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("qlinear.b.kind"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dynamic_without_metadata_loads_with_defaults() {
    let mut raw = dynamic_raw();
    raw.meta.clear();
    let l = load_dynamic(&raw.bytes()).unwrap();
    assert_eq!(l.profile(), Profile::Fbgemm);
    assert!(l.reduce_range(), "fbgemm default");
    assert!(!l.relu());
}

#[test]
fn file_wide_profile_applies_and_per_layer_wins() {
    let mut raw = dynamic_raw();
    raw.meta.clear();
    raw.meta.insert("qlinear.profile".into(), "qnnpack".into());
    raw.meta.insert("unknown.key".into(), "whatever".into());
    assert_eq!(
        load_dynamic(&raw.bytes()).unwrap().profile(),
        Profile::Qnnpack
    );
    raw.meta.insert("qlinear.l.profile".into(), "x86".into());
    assert_eq!(
        load_dynamic(&raw.bytes()).unwrap().profile(),
        Profile::Fbgemm
    );
}

/// Small tensors at unaligned offsets (and a buffer that itself starts at an odd
/// address) are read with from_le_bytes, never a typed cast.
#[test]
fn unaligned_tensors_load() {
    // Hand-laid file: the 6-byte I8 weight first, so the F32/I32 tensors after it sit
    // at offsets 6, 10, 14 (not multiples of 4).
    let header = r#"{"l.weight":{"dtype":"I8","shape":[2,3],"data_offsets":[0,6]},"l.weight_scale":{"dtype":"F32","shape":[],"data_offsets":[6,10]},"l.weight_zero_point":{"dtype":"I32","shape":[],"data_offsets":[10,14]},"l.bias":{"dtype":"F32","shape":[2],"data_offsets":[14,22]}}"#;
    let mut file = Vec::new();
    file.extend((header.len() as u64).to_le_bytes());
    file.extend(header.as_bytes());
    file.extend([1u8, 2, 3, 0xff, 0xfe, 0xfd]);
    file.extend(0.25f32.to_le_bytes());
    file.extend(3i32.to_le_bytes());
    file.extend(1.5f32.to_le_bytes());
    file.extend((-2.5f32).to_le_bytes());
    for shift in 0..4 {
        let mut buf = vec![0u8; shift];
        buf.extend(&file);
        let ck = Checkpoint::parse(&buf[shift..]).unwrap();
        let l = DynamicLinear::from_safetensors(&ck, "l")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(l.weight().data(), &[1, 2, 3, -1, -2, -3]);
        assert_eq!(
            l.weight().qparams(),
            &WeightQParams::PerTensor {
                scale: 0.25,
                zero_point: 3
            }
        );
        assert_eq!(l.bias().unwrap(), &[1.5, -2.5]);
    }
}

#[test]
fn torch_style_dtypes_load() {
    // I64 zero points (torch.tensor(int)), F64 scales holding f32 values (torch's
    // per-channel scales), F16 / BF16 bias: all exact.
    let mut raw = static_raw();
    let l0 = load_static(&raw.bytes()).unwrap();
    let WeightQParams::PerChannel {
        scales,
        zero_points,
    } = l0.weight().qparams().clone()
    else {
        panic!("per-channel")
    };
    let s64: Vec<u8> = scales
        .iter()
        .flat_map(|&s| (s as f64).to_le_bytes())
        .collect();
    raw.set("l.weight_scale", Dtype::F64, vec![5], s64);
    let z64: Vec<i64> = zero_points.iter().map(|&z| z as i64).collect();
    raw.set_i64("l.weight_zero_point", vec![5], &z64);
    raw.set_i64("l.zero_point", vec![], &[7]);
    raw.set_i64("l.input_zero_point", vec![], &[131]);
    let bias16 = [1.5f32, -0.25, 3.0, 0.0, -8.0];
    let b: Vec<u8> = bias16
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    raw.set("l.bias", Dtype::F16, vec![5], b);
    let l = load_static(&raw.bytes()).unwrap();
    assert_eq!(l.weight(), l0.weight());
    assert_eq!(l.input_qparams(), l0.input_qparams());
    assert_eq!(l.output_qparams(), l0.output_qparams());
    assert_eq!(l.bias().unwrap(), &bias16);
    let b: Vec<u8> = bias16
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    raw.set("l.bias", Dtype::BF16, vec![5], b);
    assert_eq!(load_static(&raw.bytes()).unwrap().bias().unwrap(), &bias16);
}

// ---------------------------------------------------------------------------------------
// Malformed files: one test per case.

#[test]
fn not_safetensors_empty() {
    assert_ckpt_err(load_static(&[]), FILE, "not a valid safetensors file");
}

#[test]
fn not_safetensors_truncated_header() {
    let bytes = static_raw().bytes();
    assert_ckpt_err(
        load_static(&bytes[..5]),
        FILE,
        "not a valid safetensors file",
    );
    assert_ckpt_err(
        load_static(&bytes[..40]),
        FILE,
        "not a valid safetensors file",
    );
}

#[test]
fn not_safetensors_header_length_beyond_file() {
    let mut bytes = static_raw().bytes();
    let len = bytes.len() as u64;
    bytes[..8].copy_from_slice(&(len * 2).to_le_bytes());
    assert_ckpt_err(load_static(&bytes), FILE, "not a valid safetensors file");
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_ckpt_err(load_static(&bytes), FILE, "not a valid safetensors file");
}

#[test]
fn not_safetensors_bad_json() {
    let header = b"{\"l.weight\": [1, 2";
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    assert_ckpt_err(load_static(&file), FILE, "JSON");
}

#[test]
fn not_safetensors_truncated_data() {
    let bytes = static_raw().bytes();
    assert_ckpt_err(
        load_static(&bytes[..bytes.len() - 1]),
        FILE,
        "not a valid safetensors file",
    );
}

#[test]
fn shape_that_overflows() {
    let header =
        r#"{"l.weight":{"dtype":"I8","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header.as_bytes());
    assert_ckpt_err(load_dynamic(&file), FILE, "not a valid safetensors file");
}

#[test]
fn missing_weight() {
    let mut raw = static_raw();
    raw.remove("l.weight");
    assert_ckpt_err(load_static(&raw.bytes()), "l.weight", "missing");
    let mut raw = dynamic_raw();
    raw.remove("l.weight");
    assert_ckpt_err(load_dynamic(&raw.bytes()), "l.weight", "missing");
}

#[test]
fn missing_weight_scale() {
    let mut raw = dynamic_raw();
    raw.remove("l.weight_scale");
    assert_ckpt_err(load_dynamic(&raw.bytes()), "l.weight_scale", "missing");
}

#[test]
fn missing_weight_zero_point() {
    let mut raw = dynamic_raw();
    raw.remove("l.weight_zero_point");
    assert_ckpt_err(load_dynamic(&raw.bytes()), "l.weight_zero_point", "missing");
}

#[test]
fn missing_activation_qparams() {
    for name in [
        "l.input_scale",
        "l.input_zero_point",
        "l.scale",
        "l.zero_point",
    ] {
        let mut raw = static_raw();
        raw.remove(name);
        assert_ckpt_err(load_static(&raw.bytes()), name, "missing");
    }
}

#[test]
fn weight_wrong_dtype() {
    let mut raw = dynamic_raw();
    raw.set("l.weight", Dtype::U8, vec![6, 23], vec![0; 6 * 23]);
    assert_ckpt_err(load_dynamic(&raw.bytes()), "l.weight", "dtype U8");
}

#[test]
fn weight_not_2d() {
    let mut raw = dynamic_raw();
    raw.set("l.weight", Dtype::I8, vec![6 * 23], vec![0; 6 * 23]);
    assert_ckpt_err(load_dynamic(&raw.bytes()), "l.weight", "2-D");
    raw.set("l.weight", Dtype::I8, vec![2, 3, 23], vec![0; 6 * 23]);
    assert_ckpt_err(load_dynamic(&raw.bytes()), "l.weight", "2-D");
}

#[test]
fn weight_empty_or_k_too_large() {
    let mut raw = dynamic_raw();
    raw.set("l.weight", Dtype::I8, vec![6, 0], vec![]);
    assert_ckpt_err(load_dynamic(&raw.bytes()), "l.weight", "in_features");
    let mut raw = dynamic_raw();
    raw.set(
        "l.weight",
        Dtype::I8,
        vec![1, K_LIMIT + 1],
        vec![0; K_LIMIT + 1],
    );
    raw.remove("l.bias");
    assert_ckpt_err(load_dynamic(&raw.bytes()), "l.weight", "exceeds the limit");
}

#[test]
fn scale_length_not_out_features() {
    let mut raw = static_raw();
    raw.set_f32("l.weight_scale", vec![4], &[0.1; 4]);
    assert_ckpt_err(
        load_static(&raw.bytes()),
        "l.weight_scale",
        "expected [] (per-tensor) or [5]",
    );
}

#[test]
fn zero_point_shape_differs_from_scale() {
    let mut raw = static_raw();
    raw.set_i32("l.weight_zero_point", vec![], &[0]);
    assert_ckpt_err(load_static(&raw.bytes()), "l.weight_zero_point", "shape []");
}

#[test]
fn scale_wrong_dtype() {
    let mut raw = dynamic_raw();
    raw.set_i32("l.weight_scale", vec![], &[1]);
    assert_ckpt_err(load_dynamic(&raw.bytes()), "l.weight_scale", "dtype I32");
}

#[test]
fn scale_inexact_f64() {
    let mut raw = dynamic_raw();
    raw.set(
        "l.weight_scale",
        Dtype::F64,
        vec![],
        0.1f64.to_le_bytes().to_vec(),
    );
    assert_ckpt_err(
        load_dynamic(&raw.bytes()),
        "l.weight_scale",
        "not exactly an f32",
    );
}

#[test]
fn scale_nan_inf_zero_negative() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.5] {
        let mut raw = dynamic_raw();
        raw.set_f32("l.weight_scale", vec![], &[bad]);
        assert_ckpt_err(
            load_dynamic(&raw.bytes()),
            "l.weight_scale",
            "finite and > 0",
        );
        let mut raw = static_raw();
        let mut s = vec![0.1f32; 5];
        s[3] = bad;
        raw.set_f32("l.weight_scale", vec![5], &s);
        assert_ckpt_err(load_static(&raw.bytes()), "l.weight_scale", "index 3");
        for name in ["l.input_scale", "l.scale"] {
            let mut raw = static_raw();
            raw.set_f32(name, vec![], &[bad]);
            assert_ckpt_err(load_static(&raw.bytes()), name, "finite and > 0");
        }
    }
}

#[test]
fn weight_zero_point_out_of_range() {
    for bad in [128, -129, i32::MAX] {
        let mut raw = dynamic_raw();
        raw.set_i32("l.weight_zero_point", vec![], &[bad]);
        assert_ckpt_err(
            load_dynamic(&raw.bytes()),
            "l.weight_zero_point",
            "outside [-128, 127]",
        );
    }
    let mut raw = dynamic_raw();
    raw.set_i64("l.weight_zero_point", vec![], &[1 << 40]);
    assert_ckpt_err(
        load_dynamic(&raw.bytes()),
        "l.weight_zero_point",
        "outside [-128, 127]",
    );
}

#[test]
fn zero_point_wrong_dtype() {
    let mut raw = dynamic_raw();
    raw.set_f32("l.weight_zero_point", vec![], &[0.0]);
    assert_ckpt_err(
        load_dynamic(&raw.bytes()),
        "l.weight_zero_point",
        "dtype F32",
    );
}

#[test]
fn activation_zero_point_out_of_range() {
    for name in ["l.input_zero_point", "l.zero_point"] {
        for bad in [-1, 256] {
            let mut raw = static_raw();
            raw.set_i32(name, vec![], &[bad]);
            assert_ckpt_err(load_static(&raw.bytes()), name, "outside [0, 255]");
        }
    }
}

#[test]
fn activation_qparams_not_scalar() {
    let mut raw = static_raw();
    raw.set_f32("l.input_scale", vec![2], &[0.1, 0.1]);
    assert_ckpt_err(load_static(&raw.bytes()), "l.input_scale", "expected []");
}

#[test]
fn weight_axis_not_zero() {
    let mut raw = static_raw();
    raw.set_i64("l.weight_axis", vec![], &[1]);
    assert_ckpt_err(load_static(&raw.bytes()), "l.weight_axis", "only axis 0");
}

#[test]
fn bias_length_not_out_features() {
    let mut raw = dynamic_raw();
    raw.set_f32("l.bias", vec![5], &[0.0; 5]);
    assert_ckpt_err(load_dynamic(&raw.bytes()), "l.bias", "expected [6]");
}

#[test]
fn bias_wrong_dtype() {
    let mut raw = dynamic_raw();
    raw.set_i32("l.bias", vec![6], &[0; 6]);
    assert_ckpt_err(load_dynamic(&raw.bytes()), "l.bias", "dtype I32");
}

#[test]
fn bias_non_finite() {
    let mut raw = dynamic_raw();
    raw.set_f32("l.bias", vec![6], &[0.0, 1.0, f32::NAN, 0.0, 0.0, 0.0]);
    assert_ckpt_err(load_dynamic(&raw.bytes()), "l.bias", "index 2");
}

#[test]
fn metadata_malformed_values() {
    for (key, value) in [
        ("qlinear.l.kind", "Static"),
        ("qlinear.l.relu", "yes"),
        ("qlinear.l.reduce_range", "1"),
        ("qlinear.l.input_quantization", "per-row"),
        ("qlinear.l.input_quantization", "PerRow"),
        ("qlinear.l.input_quantization", ""),
        ("qlinear.l.profile", "onednn"),
        ("qlinear.profile", ""),
    ] {
        let mut raw = dynamic_raw();
        raw.meta.remove("qlinear.l.profile");
        raw.meta.insert(key.into(), value.into());
        assert_ckpt_err(load_dynamic(&raw.bytes()), key, "metadata value");
    }
}

#[test]
fn metadata_kind_mismatch() {
    assert_ckpt_err(
        load_static(&dynamic_raw().bytes()),
        "qlinear.l.kind",
        "dynamic",
    );
    assert_ckpt_err(
        load_dynamic(&static_raw().bytes()),
        "qlinear.l.kind",
        "static",
    );
}

#[test]
fn writer_rejects_wrong_sizes() {
    let mut w = SafetensorsWriter::new();
    assert_ckpt_err(w.add("x", Dtype::F32, vec![3], vec![0u8; 11]), "x", "bytes");
    assert_ckpt_err(
        w.add("y", Dtype::F32, vec![usize::MAX, 2], vec![]),
        "y",
        "bytes",
    );
    assert!(w.is_empty());
}

// ---------------------------------------------------------------------------------------
// Quantizing a float checkpoint.

fn float_checkpoint() -> (Vec<u8>, BTreeMap<&'static str, Vec<f32>>) {
    let mut rng = Rng::new(99);
    let mut w = SafetensorsWriter::new();
    let mut floats = BTreeMap::new();
    // f32 source
    let a = rng.f32s(8 * 12, 2.0);
    w.add_f32("enc.0.q.weight", vec![8, 12], &a).unwrap();
    floats.insert("enc.0.q.weight", a);
    // f16 and bf16 sources (their f32 values are what the quantizer sees)
    let b16: Vec<half::f16> = rng
        .f32s(4 * 12, 1.0)
        .iter()
        .map(|&x| half::f16::from_f32(x))
        .collect();
    let bytes: Vec<u8> = b16.iter().flat_map(|x| x.to_le_bytes()).collect();
    w.add("enc.0.k.weight", Dtype::F16, vec![4, 12], bytes)
        .unwrap();
    floats.insert("enc.0.k.weight", b16.iter().map(|x| x.to_f32()).collect());
    let c16: Vec<half::bf16> = rng
        .f32s(3 * 8, 5.0)
        .iter()
        .map(|&x| half::bf16::from_f32(x))
        .collect();
    let bytes: Vec<u8> = c16.iter().flat_map(|x| x.to_le_bytes()).collect();
    w.add("enc.1.out.weight", Dtype::BF16, vec![3, 8], bytes)
        .unwrap();
    floats.insert("enc.1.out.weight", c16.iter().map(|x| x.to_f32()).collect());
    // Not quantized: bias, embedding, LayerNorm weight (1-D), an integer tensor.
    w.add_f32("enc.0.q.bias", vec![8], &rng.f32s(8, 1.0))
        .unwrap();
    w.add_f32("embeddings.word.weight", vec![10, 12], &rng.f32s(120, 1.0))
        .unwrap();
    w.add_f32("enc.0.norm.weight", vec![12], &rng.f32s(12, 1.0))
        .unwrap();
    w.add_i32("position_ids", vec![1, 4], &[0, 1, 2, 3])
        .unwrap();
    w.set_metadata("format", "pt");
    (w.to_bytes().unwrap(), floats)
}

fn a_ck(bytes: &[u8]) -> Checkpoint<'_> {
    Checkpoint::parse(bytes).unwrap()
}

#[test]
fn quantize_matches_from_float_bit_for_bit() {
    let (input, floats) = float_checkpoint();
    for per_channel in [false, true] {
        for symmetric in [true, false] {
            let opts = QuantizeOptions {
                per_channel,
                symmetric,
                ..QuantizeOptions::default()
            };
            let (out, summary) = quantize_checkpoint(&input, &opts).unwrap();
            let names: Vec<&str> = summary.quantized.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names.len(), 3);
            assert_eq!(summary.copied, 4);
            assert_eq!(summary.bytes_in, input.len());
            assert_eq!(summary.bytes_out, out.len());
            let ck = Checkpoint::parse(&out).unwrap();
            assert_eq!(ck.metadata()["format"], "pt", "existing metadata kept");
            for (name, f) in &floats {
                let p = name.strip_suffix(".weight").unwrap();
                assert!(names.contains(name));
                assert_eq!(ck.metadata()[&format!("qlinear.{p}.kind")], "dynamic");
                let v = ck.tensors().tensor(name).unwrap();
                let (n, k) = (v.shape()[0], v.shape()[1]);
                // The float bias stays in the file, and the layer picks it up.
                let bias = (*name == "enc.0.q.weight").then(|| {
                    let b = a_ck(&input).tensors().tensor("enc.0.q.bias").unwrap();
                    b.data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect::<Vec<f32>>()
                });
                // The file records full-range activations (the options' default).
                let want = DynamicLinear::from_float(f, n, k, opts.observer())
                    .unwrap()
                    .maybe_bias(bias)
                    .reduce_range(false)
                    .build()
                    .unwrap();
                let got = DynamicLinear::from_safetensors(&ck, p)
                    .unwrap()
                    .build()
                    .unwrap();
                assert_eq!(got.weight(), want.weight(), "{name}");
                let x = Rng::new(1).f32s(2 * k, 3.0);
                assert_eq!(
                    got.forward_vec(&x, 2).unwrap(),
                    want.forward_vec(&x, 2).unwrap()
                );
            }
        }
    }
}

#[test]
fn quantize_records_the_activation_settings() {
    let (input, floats) = float_checkpoint();
    let name = "enc.0.k.weight";
    let p = name.strip_suffix(".weight").unwrap();
    let f = &floats[name];
    let x = Rng::new(7).f32s(3 * 12, 4.0);
    let mut outputs = Vec::new();
    for reduce_range in [false, true] {
        for mode in [InputQuantization::PerTensor, InputQuantization::PerRow] {
            let opts = QuantizeOptions {
                reduce_range,
                input_quantization: mode,
                ..QuantizeOptions::default()
            };
            let (out, _) = quantize_checkpoint(&input, &opts).unwrap();
            let ck = Checkpoint::parse(&out).unwrap();
            let got = DynamicLinear::from_safetensors(&ck, p)
                .unwrap()
                .build()
                .unwrap();
            assert_eq!(got.reduce_range(), reduce_range);
            assert_eq!(got.input_quantization(), mode);
            let want = DynamicLinear::from_float(f, 4, 12, opts.observer())
                .unwrap()
                .reduce_range(reduce_range)
                .input_quantization(mode)
                .build()
                .unwrap();
            let y = got.forward_vec(&x, 3).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&want.forward_vec(&x, 3).unwrap()));
            outputs.push(bits(&y));
        }
    }
    // The four settings really differ on this input (so the metadata is what decides).
    for i in 0..outputs.len() {
        for j in i + 1..outputs.len() {
            assert_ne!(outputs[i], outputs[j], "settings {i} and {j}");
        }
    }
}

#[test]
fn quantize_copies_everything_else_unchanged() {
    let (input, _) = float_checkpoint();
    let (out, _) = quantize_checkpoint(&input, &QuantizeOptions::default()).unwrap();
    let a = Checkpoint::parse(&input).unwrap();
    let b = Checkpoint::parse(&out).unwrap();
    for name in [
        "enc.0.q.bias",
        "embeddings.word.weight",
        "enc.0.norm.weight",
        "position_ids",
    ] {
        let (x, y) = (
            a.tensors().tensor(name).unwrap(),
            b.tensors().tensor(name).unwrap(),
        );
        assert_eq!(x.dtype(), y.dtype(), "{name}");
        assert_eq!(x.shape(), y.shape(), "{name}");
        assert_eq!(x.data(), y.data(), "{name}");
    }
    // 7 input tensors, 3 quantized: each gains a scale and a zero point (per-tensor).
    assert_eq!(b.tensors().len(), 7 + 2 * 3);
}

#[test]
fn quantize_include_exclude_and_plan() {
    let (input, _) = float_checkpoint();
    let opts = QuantizeOptions {
        include: vec!["enc.0.*".into()],
        exclude: vec!["*.k.*".into()],
        ..QuantizeOptions::default()
    };
    let plan = plan_quantization(&input, &opts).unwrap();
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].name, "enc.0.q.weight");
    assert_eq!(plan[0].shape, [8, 12]);
    assert_eq!(plan[0].dtype, Dtype::F32);
    let mut seen = Vec::new();
    let (_, summary) = quantize_checkpoint_with_progress(&input, &opts, |i, n, t| {
        seen.push((i, n, t.name.clone()))
    })
    .unwrap();
    assert_eq!(seen, vec![(1, 1, "enc.0.q.weight".to_string())]);
    assert_eq!(summary.quantized, plan);
    // No excludes at all: the embedding is quantized too.
    let all = QuantizeOptions {
        exclude: vec![],
        ..QuantizeOptions::default()
    };
    assert_eq!(plan_quantization(&input, &all).unwrap().len(), 4);
}

#[test]
fn quantize_non_finite_weight_is_an_error_naming_it() {
    let mut w = SafetensorsWriter::new();
    w.add_f32("m.weight", vec![2, 2], &[1.0, f32::INFINITY, 0.0, 1.0])
        .unwrap();
    assert_ckpt_err(
        quantize_checkpoint(&w.to_bytes().unwrap(), &QuantizeOptions::default()),
        "m.weight",
        "non-finite value inf at index 1",
    );
}

#[test]
fn quantize_refuses_a_name_clash() {
    let mut w = SafetensorsWriter::new();
    w.add_f32("m.weight", vec![2, 2], &[1.0, 2.0, 0.0, 1.0])
        .unwrap();
    w.add_f32("m.weight_scale", vec![], &[1.0]).unwrap();
    assert_ckpt_err(
        quantize_checkpoint(&w.to_bytes().unwrap(), &QuantizeOptions::default()),
        "m.weight_scale",
        "already in the input",
    );
}

#[test]
fn quantize_corrupt_input() {
    assert_ckpt_err(
        quantize_checkpoint(b"not a safetensors file", &QuantizeOptions::default()),
        FILE,
        "not a valid safetensors file",
    );
}

#[test]
fn pack_from_slice_equals_pack_from_weight() {
    let mut rng = Rng::new(4);
    let w = weight(&mut rng, 9, 70, true);
    for b in qlinear::available_backends() {
        let a = qlinear::PackedWeights::new(&w, b).unwrap();
        let s =
            qlinear::PackedWeights::from_slice(w.data(), 9, 70, w.qparams().clone(), b).unwrap();
        assert_eq!(a.to_bytes(), s.to_bytes());
    }
    assert!(matches!(
        qlinear::PackedWeights::from_slice(&[0; 5], 2, 3, w.qparams().clone(), Backend::Auto),
        Err(Error::Shape { .. })
    ));
}
