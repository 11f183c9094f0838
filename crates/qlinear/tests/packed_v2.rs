//! Packed-weights format version 2: round trips of every layer kind, cross-kernel
//! loading, borrowed loads, and rejection of every corruption (with and without a
//! recomputed checksum). All comparisons are bit for bit.

use std::sync::Arc;

use qlinear::packed_format::{LayerKind, CHECKSUM_LEN, DATA_ALIGN, FIXED_HEADER_LEN};
use qlinear::{
    available_backends, ActQParams, Backend, DynamicLinear, InputQuantization, Linear,
    PackedWeights, Profile, QuantizedWeight, WeightQParams,
};
use qlinear_reference::contract::PackedLayout;
use qlinear_reference::pack;
use qlinear_reference::testkit::Rng;

mod common;
use common::{corrupt, reseal, resealed, serialize_v2};

const SHAPES: &[(usize, usize)] = &[(1, 1), (5, 6), (17, 33), (40, 130), (33, 4)];

fn weight(rng: &mut Rng, n: usize, k: usize, per_channel: bool) -> QuantizedWeight {
    let qparams = if per_channel {
        WeightQParams::PerChannel {
            scales: (0..n).map(|_| rng.log_uniform(1e-3, 1e-1)).collect(),
            zero_points: (0..n).map(|_| rng.range_i32(-128, 127)).collect(),
        }
    } else {
        WeightQParams::PerTensor {
            scale: 0.03,
            zero_point: rng.range_i32(-5, 5),
        }
    };
    QuantizedWeight::new(rng.i8s(n * k), n, k, qparams).unwrap()
}

fn act(scale: f32, zero_point: i32) -> ActQParams {
    ActQParams::new(scale, zero_point).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn data_offset(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[40..48].try_into().unwrap()) as usize
}

fn static_out(l: &Linear, k: usize) -> Vec<u8> {
    let m = 3;
    let a: Vec<u8> = (0..m * k).map(|i| (i * 151 + 7) as u8).collect();
    l.forward_vec(&a, m).unwrap()
}

fn dynamic_out(l: &DynamicLinear, k: usize) -> Vec<u32> {
    let m = 3;
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 37 % 255) as f32 - 127.0) * 0.031_25)
        .collect();
    bits(&l.forward_vec(&x, m).unwrap())
}

/// The version 1 serializer (the format before this one).
fn serialize_v1(name: &str, layout: PackedLayout, w: &QuantizedWeight) -> Vec<u8> {
    let (n, k) = (w.out_features(), w.in_features());
    let mut out = Vec::new();
    out.extend_from_slice(b"QLPW");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.extend_from_slice(&(k as u64).to_le_bytes());
    out.extend_from_slice(&(layout.nr as u32).to_le_bytes());
    out.extend_from_slice(&(layout.kr as u32).to_le_bytes());
    out.push(w.qparams().is_per_channel() as u8);
    let c = if w.qparams().is_per_channel() { n } else { 1 };
    (0..c).for_each(|j| out.extend_from_slice(&w.qparams().scale(j).to_le_bytes()));
    (0..c).for_each(|j| out.extend_from_slice(&w.qparams().zero_point(j).to_le_bytes()));
    let data = pack::pack(w.data(), n, k, layout);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&data);
    let sum = out.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

#[test]
fn weights_only_round_trip_every_backend() {
    let mut rng = Rng::new(21);
    for &(n, k) in SHAPES {
        for pc in [false, true] {
            let w = weight(&mut rng, n, k, pc);
            for b in available_backends() {
                let p = PackedWeights::new(&w, b).unwrap();
                let bytes = p.to_bytes();
                assert_eq!(data_offset(&bytes) % DATA_ALIGN, 0);
                let (q, r) = PackedWeights::from_bytes_for(&bytes, b).unwrap();
                assert!(!r.repacked && !r.zero_copy, "{b}: {r:?}");
                assert_eq!(r.version, 2);
                assert_eq!(r.stored_kernel, p.kernel_name());
                assert_eq!(r.kernel, p.kernel_name());
                assert_eq!(r.layer, None);
                assert_eq!(q.to_bytes(), bytes, "{b} {n}x{k}");
                assert_eq!(q.unpack(), w, "{b}");
                assert_eq!(q.layout(), p.layout());
                // Auto on this CPU: same layout kernels keep the bytes.
                let (a, r) = PackedWeights::from_bytes_with_report(&bytes).unwrap();
                assert_eq!(a.unpack(), w);
                assert_eq!(r.repacked, a.layout() != p.layout());
            }
        }
    }
}

#[test]
fn static_layer_round_trip() {
    let mut rng = Rng::new(22);
    for &(n, k) in SHAPES {
        for pc in [false, true] {
            let w = weight(&mut rng, n, k, pc);
            let bias: Vec<f32> = (0..n).map(|j| (j as f32 - 2.5) * 0.375).collect();
            for b in available_backends() {
                for profile in [Profile::Fbgemm, Profile::Qnnpack] {
                    for relu in [false, true] {
                        for with_bias in [false, true] {
                            let l = Linear::builder(w.clone(), act(0.02, 120), act(0.05, 7))
                                .maybe_bias(with_bias.then(|| bias.clone()))
                                .relu(relu)
                                .profile(profile)
                                .backend(b)
                                .build()
                                .unwrap();
                            let bytes = l.to_bytes();
                            let (m, r) = Linear::from_bytes_for(&bytes, b).unwrap();
                            assert!(!r.repacked);
                            assert_eq!(r.layer, Some(LayerKind::Static));
                            assert_eq!(m.to_bytes(), bytes);
                            assert_eq!(m.profile(), profile);
                            assert_eq!(m.bias(), l.bias());
                            assert_eq!(m.input_qparams(), l.input_qparams());
                            assert_eq!(m.output_qparams(), l.output_qparams());
                            assert_eq!(m.kernel_name(), l.kernel_name());
                            assert_eq!(static_out(&m, k), static_out(&l, k), "{b} {n}x{k}");
                            // Auto, maybe another kernel: same outputs.
                            let a = Linear::from_bytes(&bytes).unwrap();
                            assert_eq!(static_out(&a, k), static_out(&l, k));
                            // The weights alone load from a layer file too.
                            let p = PackedWeights::from_bytes_for(&bytes, b).unwrap().0;
                            assert_eq!(p.unpack(), w);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn dynamic_layer_round_trip() {
    let mut rng = Rng::new(23);
    for &(n, k) in SHAPES {
        for pc in [false, true] {
            let w = weight(&mut rng, n, k, pc);
            let bias: Vec<f32> = (0..n).map(|j| (j as f32 - 2.5) * 0.375).collect();
            for b in available_backends() {
                for profile in [Profile::Fbgemm, Profile::Qnnpack] {
                    for (relu, reduce_range, mode) in [
                        (false, false, InputQuantization::PerTensor),
                        (true, false, InputQuantization::PerRow),
                        (false, true, InputQuantization::PerTensor),
                        (false, true, InputQuantization::PerRow),
                    ] {
                        for with_bias in [false, true] {
                            let l = DynamicLinear::builder(w.clone())
                                .maybe_bias(with_bias.then(|| bias.clone()))
                                .relu(relu)
                                .reduce_range(reduce_range)
                                .input_quantization(mode)
                                .profile(profile)
                                .backend(b)
                                .build()
                                .unwrap();
                            let bytes = l.to_bytes();
                            let (m, r) = DynamicLinear::from_bytes_for(&bytes, b).unwrap();
                            assert!(!r.repacked);
                            assert_eq!(r.layer, Some(LayerKind::Dynamic));
                            assert_eq!(m.to_bytes(), bytes);
                            assert_eq!(m.reduce_range(), reduce_range);
                            assert_eq!(m.input_quantization(), mode);
                            assert_eq!(m.profile(), profile);
                            assert_eq!(m.bias(), l.bias());
                            assert_eq!(dynamic_out(&m, k), dynamic_out(&l, k), "{b} {n}x{k}");
                            let a = DynamicLinear::from_bytes(&bytes).unwrap();
                            assert_eq!(dynamic_out(&a, k), dynamic_out(&l, k));
                        }
                    }
                }
            }
        }
    }
}

/// The input quantization mode is one byte of the dynamic layer record (right after
/// reduce_range): 0 per-tensor, 1 per-row; any other value is corrupt, and a per-row
/// file loads as a per-row layer.
#[test]
fn input_quantization_byte() {
    let mut rng = Rng::new(41);
    let w = weight(&mut rng, 5, 6, true);
    let build = |mode| {
        DynamicLinear::builder(w.clone())
            .reduce_range(true)
            .input_quantization(mode)
            .backend(Backend::Reference)
            .build()
            .unwrap()
    };
    let per_tensor = build(InputQuantization::PerTensor).to_bytes();
    let per_row = build(InputQuantization::PerRow).to_bytes();
    assert_eq!(per_tensor.len(), per_row.len());
    let body = per_tensor.len() - CHECKSUM_LEN;
    let diff: Vec<usize> = (0..body).filter(|&i| per_tensor[i] != per_row[i]).collect();
    assert_eq!(diff.len(), 1, "exactly the mode byte differs: {diff:?}");
    let pos = diff[0];
    assert_eq!((per_tensor[pos], per_row[pos]), (0, 1));
    // reduce_range (1) is the byte before.
    assert_eq!(per_row[pos - 1], 1);
    let loaded = DynamicLinear::from_bytes(&per_row).unwrap();
    assert_eq!(loaded.input_quantization(), InputQuantization::PerRow);
    for bad in [2u8, 0x80, 0xFF] {
        let mut f = per_row.clone();
        f[pos] = bad;
        assert_eq!(
            corrupt(PackedWeights::from_bytes(&resealed(f))),
            Some("layer input quantization mode"),
            "mode byte {bad}"
        );
    }
}

#[test]
fn wrong_layer_kind_is_an_error() {
    let mut rng = Rng::new(24);
    let w = weight(&mut rng, 5, 6, true);
    let p = PackedWeights::new(&w, Backend::Auto).unwrap();
    let s = Linear::from_packed(p.clone(), act(0.1, 0), act(0.1, 0))
        .build()
        .unwrap()
        .to_bytes();
    let d = DynamicLinear::from_packed(p.clone())
        .build()
        .unwrap()
        .to_bytes();
    let only = p.to_bytes();
    assert!(corrupt(Linear::from_bytes(&only)).is_some());
    assert!(corrupt(Linear::from_bytes(&d)).is_some());
    assert!(corrupt(DynamicLinear::from_bytes(&only)).is_some());
    assert!(corrupt(DynamicLinear::from_bytes(&s)).is_some());
    assert!(Linear::from_bytes(&s).is_ok());
    assert!(DynamicLinear::from_bytes(&d).is_ok());
}

/// Pack for every available backend (and the reference), load for every other: the
/// loaded layer runs the requested kernel, says whether it repacked, and gives the
/// same bits.
#[test]
fn cross_kernel_loading() {
    let mut rng = Rng::new(25);
    for &(n, k) in SHAPES {
        let w = weight(&mut rng, n, k, true);
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.125).collect();
        for from in available_backends() {
            let l = Linear::builder(w.clone(), act(0.02, 100), act(0.04, 3))
                .bias(bias.clone())
                .backend(from)
                .build()
                .unwrap();
            let want = static_out(&l, k);
            let d = DynamicLinear::builder(w.clone())
                .bias(bias.clone())
                .backend(from)
                .build()
                .unwrap();
            let want_d = dynamic_out(&d, k);
            let (sb, db) = (l.to_bytes(), d.to_bytes());
            for to in available_backends() {
                let (m, r) = Linear::from_bytes_for(&sb, to).unwrap();
                let local = PackedWeights::new(&w, to).unwrap();
                assert_eq!(m.kernel_name(), local.kernel_name());
                assert_eq!(r.kernel, local.kernel_name());
                assert_eq!(r.stored_kernel, l.kernel_name());
                assert_eq!(
                    r.repacked,
                    local.layout() != l.packed().layout(),
                    "{from}->{to}"
                );
                assert_eq!(static_out(&m, k), want, "{from} -> {to}");
                assert_eq!(m.packed().to_bytes(), local.to_bytes(), "{from} -> {to}");
                let (md, _) = DynamicLinear::from_bytes_for(&db, to).unwrap();
                assert_eq!(dynamic_out(&md, k), want_d, "{from} -> {to}");
            }
        }
    }
}

/// Layouts no local kernel uses (other ISAs' and made-up ones) load everywhere by
/// repacking.
#[test]
fn foreign_layouts_repack() {
    let mut rng = Rng::new(26);
    let layouts = [
        ("neondot/gemm_8x8c4", PackedLayout { nr: 8, kr: 4 }),
        ("i8mm/gemm_8x8c8", PackedLayout { nr: 8, kr: 8 }),
        ("future/gemm_3x5", PackedLayout { nr: 3, kr: 5 }),
        ("reference", PackedLayout::ROW_MAJOR),
    ];
    for &(n, k) in SHAPES {
        let w = weight(&mut rng, n, k, n % 2 == 0);
        let want = PackedWeights::new(&w, Backend::Reference).unwrap();
        for (name, layout) in layouts {
            let bytes = serialize_v2(name, layout, &w);
            let (p, r) = PackedWeights::from_bytes_with_report(&bytes)
                .unwrap_or_else(|e| panic!("{name} {n}x{k}: {e}"));
            assert_eq!(p.unpack(), want.unpack(), "{name}");
            assert_eq!(r.stored_kernel, name);
            assert_eq!(r.stored_layout, layout);
            assert_eq!(r.repacked, p.layout() != layout);
            let (p, r) = PackedWeights::from_bytes_for(&bytes, Backend::Reference).unwrap();
            assert_eq!(p.to_bytes(), want.to_bytes());
            assert_eq!(r.repacked, layout != PackedLayout::ROW_MAJOR);
        }
    }
}

#[test]
fn version_1_still_loads() {
    let mut rng = Rng::new(27);
    for &(n, k) in SHAPES {
        let w = weight(&mut rng, n, k, true);
        for b in available_backends() {
            let p = PackedWeights::new(&w, b).unwrap();
            let v1 = serialize_v1(p.kernel_name(), p.layout(), &w);
            let (q, r) = PackedWeights::from_bytes_for(&v1, b).unwrap();
            assert_eq!(r.version, 1);
            assert!(!r.repacked);
            assert_eq!(q.to_bytes(), p.to_bytes());
            let mut bad = v1.clone();
            bad[4] = 3;
            assert!(corrupt(PackedWeights::from_bytes(&bad)).is_some());
        }
    }
}

/// An owner whose bytes start `shift` bytes past a 64-byte boundary.
struct Shifted {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Shifted {
    fn new(bytes: &[u8], shift: usize) -> Self {
        let mut buf = vec![0u8; bytes.len() + 128];
        let start = (64 - buf.as_ptr() as usize % 64) % 64 + shift;
        buf[start..start + bytes.len()].copy_from_slice(bytes);
        Shifted {
            buf,
            start,
            len: bytes.len(),
        }
    }
}

impl AsRef<[u8]> for Shifted {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// Leaks a buffer for `from_static`, keeping it reachable from a global so
/// LeakSanitizer (the CI's ASan stage) does not report the deliberate leak.
fn leak(s: Shifted) -> &'static Shifted {
    static KEEP: std::sync::Mutex<Vec<&'static Shifted>> = std::sync::Mutex::new(Vec::new());
    let leaked: &'static Shifted = Box::leak(Box::new(s));
    KEEP.lock().unwrap().push(leaked);
    leaked
}

#[test]
fn borrowed_loads() {
    let mut rng = Rng::new(28);
    for &(n, k) in SHAPES {
        let w = weight(&mut rng, n, k, true);
        let l = Linear::builder(w.clone(), act(0.02, 120), act(0.05, 7))
            .bias((0..n).map(|j| j as f32).collect())
            .relu(true)
            .build()
            .unwrap();
        let want = static_out(&l, k);
        let bytes = l.to_bytes();
        for shift in [0, 1, 4, 32] {
            let owner = Arc::new(Shifted::new(&bytes, shift));
            let (p, r) = PackedWeights::from_shared(owner.clone()).unwrap();
            assert_eq!(r.zero_copy, shift == 0, "shift {shift}: {r:?}");
            assert_eq!(p.is_borrowed(), shift == 0);
            assert!(!r.repacked);
            assert_eq!(p.unpack(), w);
            let (m, r) = Linear::from_shared(owner).unwrap();
            assert_eq!(r.zero_copy, shift == 0);
            assert_eq!(static_out(&m, k), want, "shift {shift}");
            // Clones share the borrowed bytes and stay valid after the original goes.
            let m2 = Linear::from_packed(p.clone(), act(0.02, 120), act(0.05, 7))
                .bias((0..n).map(|j| j as f32).collect())
                .relu(true)
                .build()
                .unwrap();
            drop(p);
            assert_eq!(static_out(&m2, k), want);
        }
        // A borrowed load of bytes for another layout repacks.
        let foreign = serialize_v2("future/x", PackedLayout { nr: 3, kr: 5 }, &w);
        let (p, r) = PackedWeights::from_shared(Arc::new(Shifted::new(&foreign, 0))).unwrap();
        assert!(r.repacked && !r.zero_copy && !p.is_borrowed());
        assert_eq!(p.unpack(), w);
        // 'static bytes.
        let leaked = leak(Shifted::new(&bytes, 0));
        let (p, r) = PackedWeights::from_static(leaked.as_ref()).unwrap();
        assert!(r.zero_copy && p.is_borrowed());
        assert_eq!(p.unpack(), w);
        let leaked = leak(Shifted::new(&bytes, 8));
        let (p, r) = PackedWeights::from_static(leaked.as_ref()).unwrap();
        assert!(!r.zero_copy && !p.is_borrowed());
        assert_eq!(p.unpack(), w);
        // A corrupt borrowed buffer is an error like any other.
        let mut bad = bytes.clone();
        let last = bad.len() - CHECKSUM_LEN - 1;
        bad[last] ^= 1;
        assert!(corrupt(PackedWeights::from_shared(Arc::new(Shifted::new(&bad, 0)))).is_some());
    }
}

/// Small files of every kind: each byte flipped (two ways), with and without a
/// recomputed checksum. Never a panic; without resealing always an error; with
/// resealing either an error or a faithful load of exactly those bytes.
#[test]
fn every_byte_flipped() {
    let mut rng = Rng::new(29);
    let (n, k) = (5, 6);
    let w = weight(&mut rng, n, k, true);
    let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.5).collect();
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    for b in available_backends() {
        let p = PackedWeights::new(&w, b).unwrap();
        files.push(("weights", p.to_bytes()));
        let s = Linear::from_packed(p.clone(), act(0.02, 120), act(0.05, 7))
            .bias(bias.clone())
            .relu(true)
            .build()
            .unwrap();
        files.push(("static", s.to_bytes()));
        let d = DynamicLinear::from_packed(p)
            .bias(bias.clone())
            .reduce_range(true)
            .build()
            .unwrap();
        files.push(("dynamic", d.to_bytes()));
    }
    for (kind, good) in &files {
        for pos in 0..good.len() {
            for mask in [0x01u8, 0x80] {
                let mut f = good.clone();
                f[pos] ^= mask;
                assert!(
                    corrupt(PackedWeights::from_bytes(&f)).is_some(),
                    "{kind}: flip {mask:#x} at {pos} accepted without reseal"
                );
                reseal(&mut f);
                if f == *good {
                    continue; // the flip was in the checksum itself
                }
                let loaded = PackedWeights::from_bytes_for(&f, Backend::Reference);
                if let Ok((p, _)) = &loaded {
                    // Only a change to a header value with no redundancy (a scale, a
                    // zero point, a bias, a flag, an activation qparam, or k within the
                    // same padded size, which turns zero padding into a zero column) can
                    // pass; a changed weight byte never does (the column sums).
                    assert!(
                        pos < data_offset(good),
                        "{kind}: data flip at {pos} accepted"
                    );
                    if p.in_features() == k {
                        assert_eq!(p.unpack().data(), w.data(), "{kind}: {pos}");
                    }
                }
                // Whatever loads re-serializes to exactly these bytes (when it kept the
                // stored kernel name, which is informational).
                match *kind {
                    "static" => {
                        if let Ok((l, r)) = Linear::from_bytes_for(&f, Backend::Auto) {
                            if r.kernel == r.stored_kernel {
                                assert_eq!(l.to_bytes(), f, "{kind}: {pos}");
                            }
                        }
                    }
                    "dynamic" => {
                        if let Ok((l, r)) = DynamicLinear::from_bytes_for(&f, Backend::Auto) {
                            if r.kernel == r.stored_kernel {
                                assert_eq!(l.to_bytes(), f, "{kind}: {pos}");
                            }
                        }
                    }
                    _ => {
                        if let Ok((p, r)) = PackedWeights::from_bytes_with_report(&f) {
                            if r.kernel == r.stored_kernel {
                                assert_eq!(p.to_bytes(), f, "{kind}: {pos}");
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn truncated_and_extended() {
    let mut rng = Rng::new(30);
    let w = weight(&mut rng, 7, 9, true);
    for b in available_backends() {
        let good = PackedWeights::new(&w, b).unwrap().to_bytes();
        for cut in 0..good.len() {
            assert!(corrupt(PackedWeights::from_bytes(&good[..cut])).is_some());
            if cut >= CHECKSUM_LEN {
                let t = resealed(good[..cut].to_vec());
                assert!(
                    corrupt(PackedWeights::from_bytes(&t)).is_some(),
                    "{b}: {cut}"
                );
            }
        }
        let mut long = good.clone();
        long.extend_from_slice(&[0; 8]);
        assert!(corrupt(PackedWeights::from_bytes(&resealed(long))).is_some());
    }
}

/// Every header field set to out-of-range values, with the checksum recomputed.
#[test]
fn header_fields_out_of_range() {
    let mut rng = Rng::new(31);
    let w = weight(&mut rng, 5, 6, true);
    for b in available_backends() {
        let good = PackedWeights::new(&w, b).unwrap().to_bytes();
        let set = |off: usize, v: &[u8]| {
            let mut f = good.clone();
            f[off..off + v.len()].copy_from_slice(v);
            resealed(f)
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("magic", set(0, b"QLPX")),
            ("version 0", set(4, &0u32.to_le_bytes())),
            ("version 3", set(4, &3u32.to_le_bytes())),
            ("n 0", set(8, &0u64.to_le_bytes())),
            ("n huge", set(8, &u64::MAX.to_le_bytes())),
            ("n 1<<62", set(8, &(1u64 << 62).to_le_bytes())),
            ("n +1", set(8, &6u64.to_le_bytes())),
            ("k 0", set(16, &0u64.to_le_bytes())),
            ("k > limit", set(16, &33_026u64.to_le_bytes())),
            ("k +3", set(16, &9u64.to_le_bytes())),
            ("nr 0", set(24, &0u32.to_le_bytes())),
            ("nr huge", set(24, &u32::MAX.to_le_bytes())),
            ("kr 0", set(28, &0u32.to_le_bytes())),
            ("kr 1000", set(28, &1000u32.to_le_bytes())),
            ("flags", set(32, &4u32.to_le_bytes())),
            ("flags per-tensor", set(32, &0u32.to_le_bytes())),
            ("flags layer", set(32, &3u32.to_le_bytes())),
            ("name_len 0", set(36, &0u32.to_le_bytes())),
            ("name_len 65", set(36, &65u32.to_le_bytes())),
            (
                "data_offset",
                set(40, &(data_offset(&good) as u64 + 64).to_le_bytes()),
            ),
            ("data_len", set(48, &1u64.to_le_bytes())),
            ("file_len", set(56, &(good.len() as u64 - 1).to_le_bytes())),
            ("name", set(64, b" ")),
            (
                "scale NaN",
                set(data_name_end(&good), &f32::NAN.to_le_bytes()),
            ),
            ("scale 0", set(data_name_end(&good), &0f32.to_le_bytes())),
            (
                "zp 200",
                set(data_name_end(&good) + 20, &200i32.to_le_bytes()),
            ),
            (
                "col sum",
                set(data_name_end(&good) + 40, &12345i32.to_le_bytes()),
            ),
            ("header pad", set(data_offset(&good) - 1, &[1])),
        ];
        for (what, f) in cases {
            let r = std::panic::catch_unwind(|| corrupt(PackedWeights::from_bytes(&f)));
            match r {
                Ok(Some(_)) => {}
                other => panic!("{b}: {what}: {other:?}"),
            }
        }
        let cs = set(data_name_end(&good) + 40, &12345i32.to_le_bytes());
        assert_eq!(
            corrupt(PackedWeights::from_bytes(&cs)),
            Some("column sums do not match the packed weight")
        );
    }
}

/// Offset of the first scale (after the kernel name and its zero fill).
fn data_name_end(bytes: &[u8]) -> usize {
    let name_len = u32::from_le_bytes(bytes[36..40].try_into().unwrap()) as usize;
    FIXED_HEADER_LEN + name_len.next_multiple_of(4)
}

/// Every padding byte (past k in the last group, columns past n) set to non-zero, with
/// the checksum (and, so only the padding is wrong, the column sums) recomputed.
#[test]
fn non_zero_padding_is_rejected() {
    let mut rng = Rng::new(32);
    let (n, k) = (5, 6);
    let w = weight(&mut rng, n, k, false);
    let mut layouts: Vec<(String, PackedLayout)> = available_backends()
        .into_iter()
        .map(|b| {
            let p = PackedWeights::new(&w, b).unwrap();
            (p.kernel_name().to_string(), p.layout())
        })
        .collect();
    layouts.push(("future/x".into(), PackedLayout { nr: 3, kr: 5 }));
    let mut tested = 0;
    for (name, layout) in layouts {
        let good = serialize_v2(&name, layout, &w);
        assert!(PackedWeights::from_bytes(&good).is_ok());
        let mut used = vec![false; layout.packed_len(n, k)];
        for col in 0..n {
            for kk in 0..k {
                used[layout.offset(col, kk, k)] = true;
            }
        }
        let data = data_offset(&good);
        for (pad, _) in used.iter().enumerate().filter(|(_, &u)| !u) {
            let mut bad = good.clone();
            assert_eq!(bad[data + pad], 0);
            bad[data + pad] = 0x80;
            let why = corrupt(PackedWeights::from_bytes(&resealed(bad)));
            assert!(
                why.is_some_and(|w| w.contains("padding")),
                "{name}: padding byte {pad}: {why:?}"
            );
            tested += 1;
        }
        // A changed weight byte is caught by the column sums.
        let mut w2 = good.clone();
        w2[data + layout.offset(0, 0, k)] ^= 0x10;
        assert_eq!(
            corrupt(PackedWeights::from_bytes(&resealed(w2))),
            Some("column sums do not match the packed weight")
        );
    }
    assert!(tested > 0);
}

#[test]
fn debug_is_short_and_clone_works() {
    let mut rng = Rng::new(33);
    let w = weight(&mut rng, 300, 200, true);
    let p = PackedWeights::new(&w, Backend::Auto).unwrap();
    let s = format!("{p:?}");
    assert!(s.len() < 400, "{s}");
    assert!(s.contains(p.kernel_name()));
    let q = p.clone();
    assert_eq!(q.to_bytes(), p.to_bytes());
}

#[test]
fn save_and_load_files() {
    let mut rng = Rng::new(34);
    let w = weight(&mut rng, 9, 10, true);
    let dir = std::env::temp_dir().join(format!("qlinear-packed-v2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let l = Linear::builder(w.clone(), act(0.02, 120), act(0.05, 7))
        .build()
        .unwrap();
    let path = dir.join("static.qlpw");
    l.save(&path).unwrap();
    let m = Linear::load(&path).unwrap();
    assert_eq!(static_out(&m, 10), static_out(&l, 10));
    match DynamicLinear::load(&path) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData),
        Ok(_) => panic!("a static layer's file loaded as a DynamicLinear"),
    }
    let d = DynamicLinear::builder(w.clone()).build().unwrap();
    d.save(&path).unwrap();
    assert_eq!(
        dynamic_out(&DynamicLinear::load(&path).unwrap(), 10),
        dynamic_out(&d, 10)
    );
    d.packed().save(&path).unwrap();
    assert_eq!(PackedWeights::load(&path).unwrap().unpack(), w);
    std::fs::remove_dir_all(&dir).unwrap();
}
