//! Adversarial review of the safetensors I/O, `quantize_checkpoint` and per-row input
//! quantization (issue 10). Each test pins one suspected defect or probes one promise.

use qlinear::safetensors::{
    plan_quantization, quantize_checkpoint, Checkpoint, Dtype, QuantizeOptions, SafetensorsWriter,
};
use qlinear::{
    available_backends, DynamicLinear, InputQuantization, MatMut, MatRef, Observer, Profile,
    QuantizedWeight, WeightQParams, K_LIMIT,
};
use qlinear_reference::testkit::Rng;

/// A 2 x 2 per-tensor weight, for the writer and metadata tests.
fn tiny_weight() -> QuantizedWeight {
    QuantizedWeight::new(
        vec![1, 2, 3, 4],
        2,
        2,
        WeightQParams::PerTensor {
            scale: 0.1,
            zero_point: 0,
        },
    )
    .unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A per-row layer written to safetensors must load back as a per-row layer: otherwise
/// the round trip silently changes every answer whose rows differ in range.
#[test]
fn per_row_layer_round_trips_through_safetensors() {
    let w: Vec<f32> = (0..5 * 7).map(|i| (i as f32 * 0.37).sin()).collect();
    let layer = DynamicLinear::from_float(&w, 5, 7, Observer::PER_CHANNEL_SYMMETRIC)
        .unwrap()
        .input_quantization(InputQuantization::PerRow)
        .build()
        .unwrap();
    let mut wr = SafetensorsWriter::new();
    layer.write_safetensors("l", &mut wr).unwrap();
    let bytes = wr.to_bytes().unwrap();
    let ck = Checkpoint::parse(&bytes).unwrap();
    let loaded = DynamicLinear::from_safetensors(&ck, "l")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(loaded.input_quantization(), InputQuantization::PerRow);
    // A tiny row next to a large one: per-row and per-tensor answers differ.
    let x: Vec<f32> = (0..14)
        .map(|i| {
            if i < 7 {
                1e-3 * i as f32
            } else {
                100.0 - i as f32
            }
        })
        .collect();
    assert_eq!(
        bits(&loaded.forward_vec(&x, 2).unwrap()),
        bits(&layer.forward_vec(&x, 2).unwrap())
    );
}

/// A malformed input quantization mode in the metadata is a clear error naming the key.
#[test]
fn bad_input_quantization_metadata_is_an_error() {
    let qw = tiny_weight();
    let layer = DynamicLinear::builder(qw).build().unwrap();
    let mut wr = SafetensorsWriter::new();
    layer.write_safetensors("l", &mut wr).unwrap();
    wr.set_metadata("qlinear.l.input_quantization", "per_token");
    let bytes = wr.to_bytes().unwrap();
    let ck = Checkpoint::parse(&bytes).unwrap();
    let e = DynamicLinear::from_safetensors(&ck, "l").unwrap_err();
    assert!(
        e.to_string().contains("qlinear.l.input_quantization"),
        "{e}"
    );
}

fn float_file(name: &str, shape: Vec<usize>) -> Vec<u8> {
    let len: usize = shape.iter().product();
    let data: Vec<f32> = (0..len).map(|i| (i as f32 * 0.1).cos()).collect();
    let mut wr = SafetensorsWriter::new();
    wr.add_f32(name, shape, &data).unwrap();
    wr.to_bytes().unwrap()
}

/// `plan_quantization` (the dry run) is documented to fail as `quantize_checkpoint`
/// does except for the weights' values; a shape qlinear cannot hold is not a value.
#[test]
fn dry_run_rejects_the_shapes_the_real_run_rejects() {
    for shape in [vec![0, 4], vec![3, 0], vec![1, K_LIMIT + 1]] {
        let file = float_file("fc.weight", shape.clone());
        let opts = QuantizeOptions::default();
        let real = quantize_checkpoint(&file, &opts);
        assert!(real.is_err(), "{shape:?}: the real run should fail");
        let dry = plan_quantization(&file, &opts);
        assert!(
            dry.is_err(),
            "{shape:?}: the dry run accepts what the real run rejects: {dry:?}"
        );
    }
}

/// Broad differential sweep of the per-row kernel paths: shapes around every tile
/// edge, M = 1 (GEMV) and small M (column splits) and large M (row splits), both
/// profiles with reduce_range, ReLU, bias or none, per-tensor affine and per-channel
/// weights, strided views, threads 1..3, against the reference per-row literal.
#[test]
fn per_row_sweep_against_the_literal() {
    let mut rng = Rng::new(1010);
    let shapes = [
        (1, 1, 1),
        (1, 5, 17),
        (1, 64, 33),
        (2, 3, 48),
        (3, 129, 31),
        (5, 16, 65),
        (9, 7, 16),
        (17, 33, 47),
        (33, 100, 9),
    ];
    for &(m, k, n) in &shapes {
        for case in 0..4 {
            let wq = if case % 2 == 0 {
                WeightQParams::PerTensor {
                    scale: rng.log_uniform(1e-3, 1e-1),
                    zero_point: rng.range_i32(-128, 127),
                }
            } else {
                WeightQParams::PerChannel {
                    scales: (0..n).map(|_| rng.log_uniform(1e-3, 1e-1)).collect(),
                    zero_points: (0..n).map(|_| rng.range_i32(-128, 127)).collect(),
                }
            };
            let qw = QuantizedWeight::new(rng.i8s(n * k), n, k, wq).unwrap();
            let stride = k + (case % 3);
            let x = qlinear_reference::testkit::per_row_input(&mut rng, m, k, stride);
            let xin = MatRef::new(&x, m, k, stride).unwrap();
            let bias: Option<Vec<f32>> = (case < 2).then(|| rng.f32s(n, 2.0));
            let relu = case % 3 == 1;
            for profile in [Profile::Fbgemm, Profile::Qnnpack] {
                let want = qlinear_reference::dynamic_linear_per_row(
                    &xin,
                    qw.data(),
                    n,
                    qw.qparams(),
                    bias.as_deref(),
                    true,
                    relu,
                    profile,
                )
                .unwrap();
                for backend in available_backends() {
                    let l = DynamicLinear::builder(qw.clone())
                        .maybe_bias(bias.clone())
                        .input_quantization(InputQuantization::PerRow)
                        .profile(profile)
                        .reduce_range(true)
                        .relu(relu)
                        .backend(backend)
                        .build()
                        .unwrap();
                    for threads in 1..=3 {
                        let mut out = vec![f32::NAN; m * n];
                        l.forward_with_threads(
                            xin,
                            MatMut::dense(&mut out, m, n).unwrap(),
                            threads,
                        )
                        .unwrap();
                        assert_eq!(
                            bits(&out),
                            bits(&want),
                            "{backend} {profile:?} m{m} k{k} n{n} case{case} t{threads}"
                        );
                    }
                }
            }
        }
    }
}

/// Worst case at the K limit: every input row a constant extreme so `zp_m` is 0 or
/// 255 and the quantized values are 0 / 255, weights all -128, a non-zero weight zero
/// point (so the row term is live): output row m equals the per-tensor layer on row m.
#[test]
fn per_row_at_the_k_limit_with_extreme_rows() {
    let (k, n) = (K_LIMIT, 3);
    let qw = QuantizedWeight::new(
        vec![-128i8; n * k],
        n,
        k,
        WeightQParams::PerChannel {
            scales: vec![1e-2, 3e-3, 0.5],
            zero_points: vec![127, -128, 5],
        },
    )
    .unwrap();
    // Row 0: all positive (zp 0, q 255); row 1: all negative (zp 255, q 0); row 2:
    // a mixture (zp inside); row 3: all zeros.
    let mut x = vec![0f32; 4 * k];
    for c in 0..k {
        x[c] = 7.5;
        x[k + c] = -3.25;
        x[2 * k + c] = if c % 2 == 0 { 1.0 } else { -1e3 };
    }
    for profile in [Profile::Fbgemm, Profile::Qnnpack] {
        for backend in available_backends() {
            let mk = |mode| {
                DynamicLinear::builder(qw.clone())
                    .input_quantization(mode)
                    .profile(profile)
                    .backend(backend)
                    .build()
                    .unwrap()
            };
            let (pr, pt) = (
                mk(InputQuantization::PerRow),
                mk(InputQuantization::PerTensor),
            );
            let all = pr.forward_vec(&x, 4).unwrap();
            for i in 0..4 {
                let alone = pt.forward_vec(&x[i * k..(i + 1) * k], 1).unwrap();
                assert_eq!(
                    bits(&all[i * n..(i + 1) * n]),
                    bits(&alone),
                    "{backend} {profile:?} row {i}"
                );
            }
        }
    }
}

/// A quantized checkpoint keeps a float bias in its source dtype (copied unchanged);
/// the loader must accept every float dtype the quantizer leaves behind for a layer it
/// quantized, or a `qlinear quantize` output does not load.
#[test]
fn quantized_checkpoint_layers_load_with_their_float_bias() {
    let w: Vec<f32> = (0..4 * 3).map(|i| (i as f32 * 0.37).sin()).collect();
    for (dtype, bias_bytes) in [
        (
            Dtype::F16,
            [0.5f32, -0.25, 1.0, 0.0]
                .iter()
                .flat_map(|&b| half_bits(b).to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
        (
            Dtype::F32,
            [0.5f32, -0.25, 1.0, 0.0]
                .iter()
                .flat_map(|b| b.to_le_bytes())
                .collect(),
        ),
    ] {
        let mut wr = SafetensorsWriter::new();
        wr.add_f32("fc.weight", vec![4, 3], &w).unwrap();
        wr.add("fc.bias", dtype, vec![4], bias_bytes).unwrap();
        let file = wr.to_bytes().unwrap();
        let (out, _) = quantize_checkpoint(&file, &QuantizeOptions::default()).unwrap();
        let ck = Checkpoint::parse(&out).unwrap();
        let l = DynamicLinear::from_safetensors(&ck, "fc")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(l.bias().unwrap(), &[0.5, -0.25, 1.0, 0.0]);
    }
}

/// f32 -> f16 bits for the exactly representable values used above.
fn half_bits(x: f32) -> u16 {
    if x == 0.0 {
        return 0;
    }
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let mant = ((b >> 13) & 0x3ff) as u16;
    sign | ((exp as u16) << 10) | mant
}

/// A `*` in a pattern is always a wildcard, even where the name holds a literal `*`
/// (and `?` likewise): `*` must select every name.
#[test]
fn glob_star_matches_names_containing_a_star() {
    let opts = QuantizeOptions {
        include: vec!["*".into()],
        exclude: Vec::new(),
        ..QuantizeOptions::default()
    };
    assert!(opts.selects("*x.weight"));
    let opts = QuantizeOptions {
        include: vec!["?*.weight".into()],
        exclude: Vec::new(),
        ..QuantizeOptions::default()
    };
    assert!(opts.selects("a*b.weight"));
    let opts = QuantizeOptions {
        include: vec!["a*c".into()],
        exclude: Vec::new(),
        ..QuantizeOptions::default()
    };
    assert!(opts.selects("a*bc"));
}

/// A NaN in a strided input: per-row and per-tensor layers report the same flat index
/// (`row * cols + col`) on every backend, as the reference literals do.
#[test]
fn per_row_nan_index_in_a_strided_view_matches_per_tensor() {
    let (m, k, n, stride) = (6, 9, 5, 13);
    let qw = QuantizedWeight::new(
        (0..n * k).map(|i| (i % 251) as i8).collect(),
        n,
        k,
        WeightQParams::PerTensor {
            scale: 0.01,
            zero_point: 3,
        },
    )
    .unwrap();
    for (r, c, bad) in [
        (0, 0, f32::NAN),
        (3, 7, f32::INFINITY),
        (5, 8, -f32::INFINITY),
    ] {
        let mut x: Vec<f32> = (0..(m - 1) * stride + k).map(|i| i as f32 * 0.5).collect();
        x[r * stride + c] = bad;
        let xin = MatRef::new(&x, m, k, stride).unwrap();
        let index = |e: qlinear::Error| match e {
            qlinear::Error::NonFinite { index, .. } => index,
            other => panic!("{other}"),
        };
        let lit = index(
            qlinear_reference::dynamic_linear_per_row(
                &xin,
                qw.data(),
                n,
                qw.qparams(),
                None,
                true,
                false,
                Profile::Fbgemm,
            )
            .unwrap_err(),
        );
        assert_eq!(lit, r * k + c);
        for backend in available_backends() {
            for mode in [InputQuantization::PerRow, InputQuantization::PerTensor] {
                let l = DynamicLinear::builder(qw.clone())
                    .input_quantization(mode)
                    .backend(backend)
                    .build()
                    .unwrap();
                let mut out = vec![0f32; m * n];
                let e = l
                    .forward(xin, MatMut::dense(&mut out, m, n).unwrap())
                    .unwrap_err();
                assert_eq!(index(e), r * k + c, "{backend} {mode:?}");
            }
        }
    }
}

/// A per-row layer file loads as a per-row layer for every other backend (repacked
/// or not) and from shared bytes, with the same answers.
#[test]
fn per_row_layer_file_loads_for_every_backend() {
    let mut rng = Rng::new(77);
    let (m, k, n) = (5, 19, 23);
    let qw = QuantizedWeight::new(
        rng.i8s(n * k),
        n,
        k,
        WeightQParams::PerChannel {
            scales: (0..n).map(|_| rng.log_uniform(1e-3, 1e-1)).collect(),
            zero_points: (0..n).map(|_| rng.range_i32(-128, 127)).collect(),
        },
    )
    .unwrap();
    let x = qlinear_reference::testkit::per_row_input(&mut rng, m, k, k);
    for src in available_backends() {
        let l = DynamicLinear::builder(qw.clone())
            .input_quantization(InputQuantization::PerRow)
            .profile(Profile::Qnnpack)
            .relu(true)
            .backend(src)
            .build()
            .unwrap();
        let want = bits(&l.forward_vec(&x, m).unwrap());
        let bytes = l.to_bytes();
        for dst in available_backends() {
            let (back, _) = DynamicLinear::from_bytes_for(&bytes, dst).unwrap();
            assert_eq!(back.input_quantization(), InputQuantization::PerRow);
            assert_eq!(
                bits(&back.forward_vec(&x, m).unwrap()),
                want,
                "{src} -> {dst}"
            );
        }
        let (shared, _) = DynamicLinear::from_shared(std::sync::Arc::new(bytes)).unwrap();
        assert_eq!(shared.input_quantization(), InputQuantization::PerRow);
        assert_eq!(
            bits(&shared.forward_vec(&x, m).unwrap()),
            want,
            "{src} shared"
        );
    }
}

/// The same writer contents give the same file bytes: `__metadata__` is written in a
/// fixed order (the writer keeps a sorted map, but the safetensors crate takes a
/// `HashMap`, whose iteration order differs between instances). A model artifact
/// (e.g. `qlinear quantize`'s output) should be reproducible byte for byte.
#[test]
fn writer_output_is_deterministic() {
    let qw = tiny_weight();
    let layer = DynamicLinear::builder(qw).relu(true).build().unwrap();
    let mut wr = SafetensorsWriter::new();
    for p in ["a", "b", "c", "d"] {
        layer.write_safetensors(p, &mut wr).unwrap();
    }
    let first = wr.to_bytes().unwrap();
    for _ in 0..20 {
        assert!(
            wr.to_bytes().unwrap() == first,
            "to_bytes differs between calls"
        );
    }
    // The file still parses, with every tensor and metadata entry, and loads.
    let ck = Checkpoint::parse(&first).unwrap();
    assert_eq!(ck.tensors().len(), 4 * 3);
    assert_eq!(ck.metadata().len(), 4 * 5);
    assert_eq!(ck.metadata()["qlinear.c.relu"], "true");
    let l = DynamicLinear::from_safetensors(&ck, "d")
        .unwrap()
        .build()
        .unwrap();
    assert!(l.relu());
    // Metadata with no tensor, and a value needing JSON escapes.
    let mut wr = SafetensorsWriter::new();
    wr.set_metadata("k\"ey", "v\\al\nue\u{1}");
    let bytes = wr.to_bytes().unwrap();
    let ck = Checkpoint::parse(&bytes).unwrap();
    assert_eq!(ck.tensors().len(), 0);
    assert_eq!(ck.metadata()["k\"ey"], "v\\al\nue\u{1}");
}

/// Zero rows in per-row mode: an empty result on every backend, no error.
#[test]
fn per_row_with_zero_rows() {
    let qw = QuantizedWeight::new(
        vec![1, -2, 3, -4, 5, -6],
        2,
        3,
        WeightQParams::PerTensor {
            scale: 0.5,
            zero_point: 1,
        },
    )
    .unwrap();
    for backend in available_backends() {
        let l = DynamicLinear::builder(qw.clone())
            .input_quantization(InputQuantization::PerRow)
            .backend(backend)
            .build()
            .unwrap();
        assert!(l.forward_vec(&[], 0).unwrap().is_empty(), "{backend}");
    }
}
