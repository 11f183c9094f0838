//! Review of the packed-weights format v2 loaders, the packing and the f32 layer API:
//! extreme weights in every kind of layout, crafted layer records, borrowed loads and
//! edge shapes. Bit-for-bit comparisons only.

use std::sync::Arc;

use qlinear::{
    available_backends, ActQParams, Backend, DynamicLinear, Linear, MatMut, MatRef, PackedWeights,
    Profile, QuantizedWeight, WeightQParams,
};
use qlinear_reference::contract::PackedLayout;
use qlinear_reference::pack;
use qlinear_reference::testkit::Rng;

mod common;
use common::{corrupt, resealed, serialize_v2};

fn per_tensor(scale: f32, zero_point: i32) -> WeightQParams {
    WeightQParams::PerTensor { scale, zero_point }
}

/// Every kind of layout (periods `nr * kr` from 1 to 65,536, below, at and above the
/// 64-byte lane width), weights all -128, all 127 and random, K up to the limit: a
/// valid file always loads and gives back the weight (the column-sum check sums in i16
/// lanes; any inexactness would reject a valid file).
#[test]
fn valid_files_of_every_layout_load_with_extreme_weights() {
    let layouts = [
        (1, 1),
        (3, 5),
        (7, 1),
        (8, 4),
        (16, 4),
        (32, 4),
        (5, 64),
        (64, 1),
        (1, 256),
        (256, 1),
        (13, 3),
        (2, 32),
        (256, 256),
    ];
    let mut rng = Rng::new(0x5eed);
    for (nr, kr) in layouts {
        let layout = PackedLayout { nr, kr };
        let big = nr * kr <= 1024;
        let shapes: &[(usize, usize)] = if big {
            &[(1, 33_025), (3, 33_025), (17, 1000), (2, 257)]
        } else {
            &[(1, 33_025), (17, 300), (2, 257)]
        };
        for &(n, k) in shapes {
            let fills: [Vec<i8>; 3] = [vec![-128; n * k], vec![127; n * k], rng.i8s(n * k)];
            for data in fills {
                let w = QuantizedWeight::new(data, n, k, per_tensor(0.01, 0)).unwrap();
                let bytes = serialize_v2("x", layout, &w);
                let what = format!("layout ({nr}, {kr}), n {n}, k {k}");
                let (p, r) = PackedWeights::from_bytes_for(&bytes, Backend::Reference)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(r.stored_layout, layout, "{what}");
                assert!(p.unpack() == w, "{what}: another weight");
            }
        }
    }
}

/// The offset of the layer record of a layer file (after name, qparams, column sums).
fn layer_record_at(bytes: &[u8]) -> usize {
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
    let n = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let nr = u32_at(24);
    let per_channel = u32_at(32) & 1 != 0;
    let name_len = u32_at(36);
    let c = if per_channel { n } else { 1 };
    64 + name_len.next_multiple_of(4) + 8 * c + 4 * n.next_multiple_of(nr)
}

/// Every field of a layer record that has no redundancy, set out of its range with a
/// recomputed checksum: the file is refused (never a layer that differs from what the
/// record says, never a panic).
#[test]
fn crafted_layer_records_are_refused() {
    let mut rng = Rng::new(3);
    let (n, k) = (5, 7);
    let w = QuantizedWeight::new(rng.i8s(n * k), n, k, per_tensor(0.02, 3)).unwrap();
    let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.5 - 1.0).collect();
    let stat = Linear::builder(
        w.clone(),
        ActQParams::new(0.1, 128).unwrap(),
        ActQParams::new(0.2, 7).unwrap(),
    )
    .bias(bias.clone())
    .relu(true)
    .profile(Profile::Qnnpack)
    .build()
    .unwrap()
    .to_bytes();
    let dynamic = DynamicLinear::builder(w)
        .bias(bias)
        .build()
        .unwrap()
        .to_bytes();
    assert!(Linear::from_bytes(&stat).is_ok());
    assert!(DynamicLinear::from_bytes(&dynamic).is_ok());
    let edit = |bytes: &[u8], at: usize, new: &[u8]| {
        let mut b = bytes.to_vec();
        b[at..at + new.len()].copy_from_slice(new);
        resealed(b)
    };
    let s = layer_record_at(&stat);
    let d = layer_record_at(&dynamic);
    let bad_static: Vec<(&str, Vec<u8>)> = vec![
        ("kind 0", edit(&stat, s, &[0])),
        ("kind 3", edit(&stat, s, &[3])),
        ("profile 2", edit(&stat, s + 1, &[2])),
        ("relu 2", edit(&stat, s + 2, &[2])),
        ("relu 255", edit(&stat, s + 2, &[255])),
        ("has_bias 2", edit(&stat, s + 3, &[2])),
        ("input scale 0", edit(&stat, s + 4, &0f32.to_le_bytes())),
        ("input scale -1", edit(&stat, s + 4, &(-1f32).to_le_bytes())),
        (
            "input scale NaN",
            edit(&stat, s + 4, &f32::NAN.to_le_bytes()),
        ),
        (
            "input scale inf",
            edit(&stat, s + 4, &f32::INFINITY.to_le_bytes()),
        ),
        ("input zp 256", edit(&stat, s + 8, &256i32.to_le_bytes())),
        ("input zp -1", edit(&stat, s + 8, &(-1i32).to_le_bytes())),
        ("output scale 0", edit(&stat, s + 12, &0f32.to_le_bytes())),
        ("output zp 256", edit(&stat, s + 16, &256i32.to_le_bytes())),
        ("bias NaN", edit(&stat, s + 20, &f32::NAN.to_le_bytes())),
        (
            "bias -inf",
            edit(
                &stat,
                s + 20 + 4 * (n - 1),
                &f32::NEG_INFINITY.to_le_bytes(),
            ),
        ),
    ];
    for (what, bytes) in &bad_static {
        assert!(
            corrupt(Linear::from_bytes(bytes)).is_some(),
            "static, {what}: accepted"
        );
        assert!(
            corrupt(PackedWeights::from_bytes(bytes)).is_some(),
            "static, {what}: accepted as weights"
        );
    }
    let bad_dynamic: Vec<(&str, Vec<u8>)> = vec![
        ("kind 1 with dynamic tail", edit(&dynamic, d, &[1])),
        ("profile 9", edit(&dynamic, d + 1, &[9])),
        ("relu 3", edit(&dynamic, d + 2, &[3])),
        ("reduce_range 2", edit(&dynamic, d + 4, &[2])),
        // The byte after reduce_range is the input quantization mode (0 / 1).
        ("input quantization 2", edit(&dynamic, d + 5, &[2])),
        ("input quantization 0xFF", edit(&dynamic, d + 5, &[0xFF])),
        ("reserved byte", edit(&dynamic, d + 6, &[1])),
        ("last reserved byte", edit(&dynamic, d + 19, &[0x80])),
        ("bias NaN", edit(&dynamic, d + 20, &f32::NAN.to_le_bytes())),
    ];
    for (what, bytes) in &bad_dynamic {
        assert!(
            corrupt(DynamicLinear::from_bytes(bytes)).is_some(),
            "dynamic, {what}: accepted"
        );
    }
}

/// A borrowed load at every alignment of the owner's buffer: zero copy exactly when the
/// data is 64-byte aligned, and the same weight and outputs as the copying load.
#[test]
fn borrowed_loads_at_every_alignment() {
    struct Shifted(Vec<u8>, usize, usize);
    impl AsRef<[u8]> for Shifted {
        fn as_ref(&self) -> &[u8] {
            &self.0[self.1..self.1 + self.2]
        }
    }
    let mut rng = Rng::new(11);
    let (n, k) = (37, 70);
    let w = QuantizedWeight::new(rng.i8s(n * k), n, k, per_tensor(0.01, -3)).unwrap();
    let layer = DynamicLinear::builder(w).build().unwrap();
    let bytes = layer.to_bytes();
    let x: Vec<f32> = (0..2 * k).map(|i| (i as f32 * 0.37).sin()).collect();
    let want: Vec<u32> = layer
        .forward_vec(&x, 2)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    for shift in 0..64 {
        let mut buf = vec![0u8; bytes.len() + 64];
        buf[shift..shift + bytes.len()].copy_from_slice(&bytes);
        let owner = Arc::new(Shifted(buf, shift, bytes.len()));
        let aligned = (owner.as_ref().as_ref().as_ptr() as usize).is_multiple_of(64);
        let (l, r) = DynamicLinear::from_shared(owner).unwrap();
        let got: Vec<u32> = l
            .forward_vec(&x, 2)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(got, want, "shift {shift}");
        if !r.repacked {
            assert_eq!(r.zero_copy, aligned, "shift {shift}");
        }
    }
}

/// `forward_f32` on empty and strided views equals the composition of its steps.
#[test]
fn forward_f32_edge_views() {
    let mut rng = Rng::new(5);
    let (n, k) = (9, 13);
    let w = QuantizedWeight::new(rng.i8s(n * k), n, k, per_tensor(0.01, 0)).unwrap();
    let input = ActQParams::new(0.05, 100).unwrap();
    let output = ActQParams::new(0.3, 20).unwrap();
    for b in available_backends() {
        let l = Linear::builder(w.clone(), input, output)
            .backend(b)
            .build()
            .unwrap();
        // m = 0.
        assert_eq!(l.forward_f32_vec(&[], 0).unwrap(), Vec::<f32>::new());
        let mut none: [f32; 0] = [];
        l.forward_f32(
            MatRef::new(&[], 0, k, k + 5).unwrap(),
            MatMut::new(&mut none, 0, n, n + 2).unwrap(),
        )
        .unwrap();
        // Strided input and output.
        let m = 3;
        let xs: Vec<f32> = (0..m * (k + 4))
            .map(|i| (i as f32 * 0.7).cos() * 3.0)
            .collect();
        let mut ys = vec![f32::NAN; m * (n + 3)];
        l.forward_f32(
            MatRef::new(&xs, m, k, k + 4).unwrap(),
            MatMut::new(&mut ys, m, n, n + 3).unwrap(),
        )
        .unwrap();
        for i in 0..m {
            let q = input
                .quantize_vec(&xs[i * (k + 4)..i * (k + 4) + k])
                .unwrap();
            let y = l.forward_vec(&q, 1).unwrap();
            let want: Vec<u32> = output
                .dequantize_vec(&y)
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let got: Vec<u32> = ys[i * (n + 3)..i * (n + 3) + n]
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(got, want, "{b} row {i}");
            assert!(ys[i * (n + 3) + n..(i + 1) * (n + 3)]
                .iter()
                .all(|v| v.is_nan()));
        }
    }
}

/// Packing at the K limit with every weight -128 (the largest column sums in
/// magnitude) and 127, for every backend, on one thread and on two: the same bytes,
/// column sums that the loader's independent recomputation accepts, the same weight back.
#[cfg(feature = "rayon")]
#[test]
fn packing_at_the_k_limit_is_exact_and_thread_independent() {
    let (n, k) = (33, qlinear::K_LIMIT);
    for fill in [i8::MIN, i8::MAX] {
        let w = QuantizedWeight::new(vec![fill; n * k], n, k, per_tensor(0.01, 0)).unwrap();
        for b in available_backends() {
            let pool = |threads| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
            };
            let one = pool(1).install(|| PackedWeights::new(&w, b).unwrap());
            let two = pool(2).install(|| PackedWeights::new(&w, b).unwrap());
            let bytes = one.to_bytes();
            assert!(bytes == two.to_bytes(), "{b}: thread counts differ");
            let (back, r) = PackedWeights::from_bytes_for(&bytes, b)
                .unwrap_or_else(|e| panic!("{b}, fill {fill}: {e}"));
            assert!(!r.repacked);
            assert!(back.unpack() == w, "{b}, fill {fill}");
        }
    }
}

/// Every backend's packer (the c4 packer's K blocks of 64 groups and 8-group vectors,
/// and its scalar tail) on every K from 1 to 300 and N around the panel widths: the
/// bytes are the reference packer's and the column sums pass the loader's check.
#[test]
fn packers_match_the_reference_on_every_small_k() {
    let mut rng = Rng::new(0xc4);
    for b in available_backends() {
        for n in [1, 7, 9, 31, 33] {
            for k in 1..=300 {
                let w = QuantizedWeight::new(rng.i8s(n * k), n, k, per_tensor(0.5, 1)).unwrap();
                let p = PackedWeights::new(&w, b).unwrap();
                let want = pack::pack(w.data(), n, k, p.layout());
                let bytes = p.to_bytes();
                let data_offset = u64::from_le_bytes(bytes[40..48].try_into().unwrap()) as usize;
                assert!(
                    bytes[data_offset..data_offset + want.len()] == want[..],
                    "{b} n {n} k {k}: packed bytes"
                );
                let back = PackedWeights::from_bytes_for(&bytes, b)
                    .unwrap_or_else(|e| panic!("{b} n {n} k {k}: {e}"))
                    .0;
                assert!(back.unpack() == w, "{b} n {n} k {k}");
            }
        }
    }
}
