//! Every error variant reachable from the public API, each asserted exactly with
//! `matches!` (variant and the fields that identify the cause). Nothing may panic.

use qlinear::unstable::resolve;
use qlinear::{
    available_backends, ActQParams, Backend, DynamicLinear, Error, Linear, MatMut, MatRef,
    Observer, PackedWeights, QuantizedWeight, WeightQParams, K_LIMIT,
};
use qlinear_reference::contract::PackedLayout;

fn pt(scale: f32, zero_point: i32) -> WeightQParams {
    WeightQParams::PerTensor { scale, zero_point }
}

fn weight(n: usize, k: usize) -> QuantizedWeight {
    let data = (0..n * k).map(|i| (i as i32 % 251 - 125) as i8).collect();
    QuantizedWeight::new(data, n, k, pt(0.01, 3)).unwrap()
}

fn act(scale: f32, zero_point: i32) -> ActQParams {
    ActQParams { scale, zero_point }
}

/// Reference, Auto and everything else available, once each.
fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Reference, Backend::Auto];
    for b in available_backends() {
        if !v.contains(&b) {
            v.push(b);
        }
    }
    v
}

fn static_layer(n: usize, k: usize, b: Backend) -> Linear {
    Linear::builder(weight(n, k), act(0.1, 128), act(0.2, 10))
        .backend(b)
        .build()
        .unwrap()
}

fn dynamic_layer(n: usize, k: usize, b: Backend) -> DynamicLinear {
    DynamicLinear::builder(weight(n, k))
        .backend(b)
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Shape
// ---------------------------------------------------------------------------------------

#[test]
fn shape_input_columns() {
    let (n, k) = (5, 7);
    for b in backends() {
        let a = vec![0u8; 2 * (k + 1)];
        let mut out = vec![0u8; 2 * n];
        let r = static_layer(n, k, b).forward(
            MatRef::dense(&a, 2, k + 1).unwrap(),
            MatMut::dense(&mut out, 2, n).unwrap(),
        );
        assert!(
            matches!(r, Err(Error::Shape { expected: 7, got: 8, what }) if what.contains("input")),
            "{b}: {r:?}"
        );
        let x = vec![0f32; 2 * (k - 1)];
        let mut fout = vec![0f32; 2 * n];
        let r = dynamic_layer(n, k, b).forward(
            MatRef::dense(&x, 2, k - 1).unwrap(),
            MatMut::dense(&mut fout, 2, n).unwrap(),
        );
        assert!(
            matches!(
                r,
                Err(Error::Shape {
                    expected: 7,
                    got: 6,
                    ..
                })
            ),
            "{b}: {r:?}"
        );
        // forward_vec with a buffer that is not m * k long.
        let r = static_layer(n, k, b).forward_vec(&a[..k + 2], 1);
        assert!(matches!(r, Ok(_) | Err(Error::BufferTooSmall { .. })));
        let r = static_layer(n, k, b).forward_vec(&a[..k - 1], 1);
        assert!(matches!(r, Err(Error::BufferTooSmall { .. })), "{b}: {r:?}");
    }
}

#[test]
fn shape_output_rows_and_columns() {
    let (n, k) = (5, 7);
    for b in backends() {
        let a = vec![0u8; 3 * k];
        let mut out = vec![0u8; 4 * (n + 1)];
        let l = static_layer(n, k, b);
        let r = l.forward(
            MatRef::dense(&a, 3, k).unwrap(),
            MatMut::dense(&mut out, 2, n).unwrap(),
        );
        assert!(
            matches!(r, Err(Error::Shape { expected: 3, got: 2, what }) if what.contains("rows")),
            "{b}: {r:?}"
        );
        let r = l.forward(
            MatRef::dense(&a, 3, k).unwrap(),
            MatMut::dense(&mut out, 3, n + 1).unwrap(),
        );
        assert!(
            matches!(r, Err(Error::Shape { expected: 5, got: 6, what }) if what.contains("columns")),
            "{b}: {r:?}"
        );
        let x = vec![0f32; 3 * k];
        let mut fout = vec![0f32; 4 * n];
        let dl = dynamic_layer(n, k, b);
        let r = dl.forward(
            MatRef::dense(&x, 3, k).unwrap(),
            MatMut::dense(&mut fout, 4, n).unwrap(),
        );
        assert!(
            matches!(
                r,
                Err(Error::Shape {
                    expected: 3,
                    got: 4,
                    ..
                })
            ),
            "{b}: {r:?}"
        );
        let r = dl.forward(
            MatRef::dense(&x, 3, k).unwrap(),
            MatMut::dense(&mut fout, 3, n - 1).unwrap(),
        );
        assert!(
            matches!(
                r,
                Err(Error::Shape {
                    expected: 5,
                    got: 4,
                    ..
                })
            ),
            "{b}: {r:?}"
        );
    }
}

#[test]
fn shape_bias_length() {
    for b in backends() {
        for len in [4, 6, 0] {
            let r = Linear::builder(weight(5, 3), act(0.1, 0), act(0.1, 0))
                .bias(vec![0.0; len])
                .backend(b)
                .build();
            assert!(
                matches!(&r, Err(Error::Shape { what: "bias length", expected: 5, got }) if *got == len),
                "{b}: {:?}",
                r.err()
            );
            let r = DynamicLinear::builder(weight(5, 3))
                .bias(vec![0.0; len])
                .backend(b)
                .build();
            assert!(
                matches!(&r, Err(Error::Shape { what: "bias length", expected: 5, got }) if *got == len),
                "{b}: {:?}",
                r.err()
            );
        }
    }
}

#[test]
fn shape_per_channel_lengths() {
    let data = vec![0i8; 4 * 3];
    let r = QuantizedWeight::new(
        data.clone(),
        4,
        3,
        WeightQParams::PerChannel {
            scales: vec![0.1; 3],
            zero_points: vec![0; 4],
        },
    );
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                what: "per-channel weight scales",
                expected: 4,
                got: 3
            })
        ),
        "{r:?}"
    );
    let r = QuantizedWeight::new(
        data,
        4,
        3,
        WeightQParams::PerChannel {
            scales: vec![0.1; 4],
            zero_points: vec![0; 5],
        },
    );
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                what: "per-channel weight zero points",
                expected: 4,
                got: 5
            })
        ),
        "{r:?}"
    );
}

#[test]
fn shape_weight_length() {
    let r = QuantizedWeight::new(vec![0; 11], 4, 3, pt(0.1, 0));
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                expected: 12,
                got: 11,
                ..
            })
        ),
        "{r:?}"
    );
    let r = QuantizedWeight::from_float(&[0.5; 13], 4, 3, Observer::PER_TENSOR_SYMMETRIC);
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                expected: 12,
                got: 13,
                ..
            })
        ),
        "{r:?}"
    );
    let r = Linear::from_float(
        &[0.5; 13],
        4,
        3,
        Observer::default(),
        act(0.1, 0),
        act(0.1, 0),
    );
    assert!(matches!(r, Err(Error::Shape { .. })));
    let r = DynamicLinear::from_float(&[0.5; 11], 4, 3, Observer::default());
    assert!(matches!(r, Err(Error::Shape { .. })));
}

// ---------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------

#[test]
fn buffer_too_small() {
    let buf = [0u8; 10];
    // 3 rows of stride 4, last row 3 wide: needs 2 * 4 + 3 = 11.
    let r = MatRef::new(&buf, 3, 3, 4);
    assert!(
        matches!(
            r,
            Err(Error::BufferTooSmall {
                needed: 11,
                len: 10,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(MatRef::new(&buf[..], 3, 2, 4).is_ok()); // needs 10: exactly enough
    let r = MatRef::dense(&buf[..5], 2, 3);
    assert!(
        matches!(
            r,
            Err(Error::BufferTooSmall {
                needed: 6,
                len: 5,
                ..
            })
        ),
        "{r:?}"
    );
    let mut out = [0f32; 7];
    let r = MatMut::new(&mut out, 2, 4, 4);
    assert!(
        matches!(
            r,
            Err(Error::BufferTooSmall {
                needed: 8,
                len: 7,
                what: "output",
                rows: 2,
                cols: 4,
                stride: 4,
            })
        ),
        "{r:?}"
    );
    let mut out = [0u8; 5];
    let r = MatMut::dense(&mut out, 1, 6);
    assert!(matches!(
        r,
        Err(Error::BufferTooSmall {
            needed: 6,
            len: 5,
            ..
        })
    ));
    // The convenience forwards report it too.
    let l = static_layer(3, 4, Backend::Reference);
    let r = l.forward_vec(&[1, 2, 3, 4, 5], 2);
    assert!(
        matches!(
            r,
            Err(Error::BufferTooSmall {
                needed: 8,
                len: 5,
                ..
            })
        ),
        "{r:?}"
    );
    let dl = dynamic_layer(3, 4, Backend::Reference);
    let r = dl.forward_vec(&[1.0; 7], 2);
    assert!(
        matches!(
            r,
            Err(Error::BufferTooSmall {
                needed: 8,
                len: 7,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn stride_smaller_than_row() {
    let buf = [0u8; 64];
    let r = MatRef::new(&buf, 2, 5, 4);
    assert!(
        matches!(
            r,
            Err(Error::Stride {
                stride: 4,
                cols: 5,
                ..
            })
        ),
        "{r:?}"
    );
    let mut out = [0f32; 64];
    let r = MatMut::new(&mut out, 3, 8, 7);
    assert!(
        matches!(
            r,
            Err(Error::Stride {
                stride: 7,
                cols: 8,
                ..
            })
        ),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Scales and zero points
// ---------------------------------------------------------------------------------------

const BAD_SCALES: [f32; 6] = [0.0, -0.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];

fn is_invalid_scale<T>(r: &Result<T, Error>, want_what: &str, v: f32) -> bool {
    matches!(r, Err(Error::InvalidScale { what, value })
        if *what == want_what && (value.to_bits() == v.to_bits() || (value.is_nan() && v.is_nan())))
}

#[test]
fn invalid_scales() {
    for v in BAD_SCALES {
        let r = ActQParams::new(v, 0);
        assert!(matches!(r, Err(Error::InvalidScale { .. })), "{v}: {r:?}");
        for b in backends() {
            let r = Linear::builder(weight(2, 3), act(v, 0), act(0.1, 0))
                .backend(b)
                .build();
            assert!(
                is_invalid_scale(&r, "input", v),
                "{b} input {v}: {:?}",
                r.err()
            );
            let r = Linear::builder(weight(2, 3), act(0.1, 0), act(v, 0))
                .backend(b)
                .build();
            assert!(
                is_invalid_scale(&r, "output", v),
                "{b} output {v}: {:?}",
                r.err()
            );
            let mut l = static_layer(2, 3, b);
            let r = l.set_output_qparams(act(v, 0));
            assert!(
                is_invalid_scale(&r, "output", v),
                "{b} set_output {v}: {r:?}"
            );
        }
        let r = QuantizedWeight::new(vec![0; 6], 2, 3, pt(v, 0));
        assert!(is_invalid_scale(&r, "weight", v), "weight {v}: {r:?}");
        let r = QuantizedWeight::new(
            vec![0; 6],
            2,
            3,
            WeightQParams::PerChannel {
                scales: vec![0.5, v],
                zero_points: vec![0, 0],
            },
        );
        assert!(is_invalid_scale(&r, "weight", v), "per-channel {v}: {r:?}");
    }
}

#[test]
fn zero_points_out_of_range() {
    for z in [-1, 256, i32::MIN, i32::MAX] {
        let r = ActQParams::new(0.1, z);
        assert!(
            matches!(r, Err(Error::ZeroPointOutOfRange { value, min: 0, max: 255, .. }) if value == z as i64),
            "{z}: {r:?}"
        );
        for b in backends() {
            let r = Linear::builder(weight(2, 3), act(0.1, z), act(0.1, 0))
                .backend(b)
                .build();
            assert!(
                matches!(&r, Err(Error::ZeroPointOutOfRange { what: "input", value, .. }) if *value == z as i64),
                "{b}: {:?}",
                r.err()
            );
            let r = Linear::builder(weight(2, 3), act(0.1, 0), act(0.1, z))
                .backend(b)
                .build();
            assert!(
                matches!(&r, Err(Error::ZeroPointOutOfRange { what: "output", value, .. }) if *value == z as i64),
                "{b}: {:?}",
                r.err()
            );
            let mut l = static_layer(2, 3, b);
            let r = l.set_output_qparams(act(0.1, z));
            assert!(matches!(r, Err(Error::ZeroPointOutOfRange { .. })), "{b}");
        }
    }
    for z in [-129, 128, i32::MIN, i32::MAX] {
        let r = QuantizedWeight::new(vec![0; 6], 2, 3, pt(0.1, z));
        assert!(
            matches!(r, Err(Error::ZeroPointOutOfRange { value, min: -128, max: 127, .. }) if value == z as i64),
            "{z}: {r:?}"
        );
        let r = QuantizedWeight::new(
            vec![0; 6],
            2,
            3,
            WeightQParams::PerChannel {
                scales: vec![0.1; 2],
                zero_points: vec![127, z],
            },
        );
        assert!(
            matches!(r, Err(Error::ZeroPointOutOfRange { value, min: -128, max: 127, .. }) if value == z as i64),
            "{z}: {r:?}"
        );
    }
    // The boundaries themselves are fine.
    assert!(ActQParams::new(0.1, 0).is_ok() && ActQParams::new(0.1, 255).is_ok());
    assert!(QuantizedWeight::new(vec![0; 6], 2, 3, pt(0.1, -128)).is_ok());
    assert!(QuantizedWeight::new(vec![0; 6], 2, 3, pt(0.1, 127)).is_ok());
}

// ---------------------------------------------------------------------------------------
// K, dimensions
// ---------------------------------------------------------------------------------------

#[test]
fn k_too_large() {
    let k = 33_026;
    assert_eq!(K_LIMIT, 33_025);
    let r = QuantizedWeight::new(vec![0; k], 1, k, pt(0.1, 0));
    assert!(
        matches!(
            r,
            Err(Error::KTooLarge {
                k: 33_026,
                limit: 33_025
            })
        ),
        "{r:?}"
    );
    let r = QuantizedWeight::from_float(&vec![0.25; k], 1, k, Observer::default());
    assert!(
        matches!(r, Err(Error::KTooLarge { k: 33_026, .. })),
        "{r:?}"
    );
    // K_LIMIT itself is accepted and exact at the worst case on every backend.
    let w = QuantizedWeight::new(vec![-128; K_LIMIT], 1, K_LIMIT, pt(1e-3, 127)).unwrap();
    if cfg!(miri) {
        // Interpreted, packing this K_LIMIT-long weight takes ~40 s per layer and each
        // forward longer still: under Miri only the weight is checked. The K_LIMIT dot
        // product runs under Miri in qlinear-reference's `integer_core_exact_at_k_limit`.
        return;
    }
    for b in backends() {
        let l = Linear::builder(w.clone(), act(1.0, 0), act(1e4, 0))
            .backend(b)
            .build()
            .unwrap();
        // raw = 255 * (-255) * K = -2_147_460_375; y = raw * 1e-3 / 1e4 ~ -214.7 -> 0.
        assert_eq!(
            l.forward_vec(&vec![255; K_LIMIT], 1).unwrap(),
            vec![0],
            "{b}"
        );
        let l = Linear::builder(w.clone(), act(1.0, 255), act(1e4, 0))
            .backend(b)
            .build()
            .unwrap();
        // raw = (-255) * (-255) * K = +2_147_460_375 -> y ~ 214.7 -> 215.
        assert_eq!(
            l.forward_vec(&vec![0; K_LIMIT], 1).unwrap(),
            vec![215],
            "{b}"
        );
    }
}

#[test]
fn zero_dimensions() {
    let r = QuantizedWeight::new(vec![], 0, 3, pt(0.1, 0));
    assert!(matches!(r, Err(Error::Dimension(_))), "{r:?}");
    let r = QuantizedWeight::new(vec![], 3, 0, pt(0.1, 0));
    assert!(matches!(r, Err(Error::Dimension(_))), "{r:?}");
    let r = QuantizedWeight::from_float(&[], 0, 4, Observer::default());
    assert!(matches!(r, Err(Error::Dimension(_))), "{r:?}");
    let r = QuantizedWeight::from_float(&[], 4, 0, Observer::PER_CHANNEL_SYMMETRIC);
    assert!(matches!(r, Err(Error::Dimension(_))), "{r:?}");
}

// ---------------------------------------------------------------------------------------
// Non-finite values
// ---------------------------------------------------------------------------------------

#[test]
fn non_finite_dynamic_input_reports_flat_index() {
    let (n, k, m) = (3, 5, 4);
    let stride = k + 3;
    for b in backends() {
        let l = dynamic_layer(n, k, b);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for (row, col) in [(0, 0), (2, 3), (3, 4)] {
                // Strided input: the index is row * k + col (logical), not the offset.
                let mut x = vec![0.5f32; (m - 1) * stride + k];
                x[row * stride + col] = bad;
                // A later non-finite value must not be the one reported.
                x[(m - 1) * stride + k - 1] = f32::NAN;
                if (row, col) == (m - 1, k - 1) {
                    x[(m - 1) * stride + k - 1] = bad;
                }
                let mut out = vec![0f32; m * n];
                let r = l.forward(
                    MatRef::new(&x, m, k, stride).unwrap(),
                    MatMut::dense(&mut out, m, n).unwrap(),
                );
                let want = row * k + col;
                assert!(
                    matches!(r, Err(Error::NonFinite { what: "input", index }) if index == want),
                    "{b} {bad} at ({row},{col}): {r:?}"
                );
                let r = l.forward_with_threads(
                    MatRef::new(&x, m, k, stride).unwrap(),
                    MatMut::dense(&mut out, m, n).unwrap(),
                    2,
                );
                assert!(
                    matches!(r, Err(Error::NonFinite { index, .. }) if index == want),
                    "{b}: {r:?}"
                );
            }
        }
    }
}

#[test]
fn non_finite_bias_and_float_weight() {
    for b in backends() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let r = Linear::builder(weight(4, 3), act(0.1, 0), act(0.1, 0))
                .bias(vec![0.0, 1.0, bad, 2.0])
                .backend(b)
                .build();
            assert!(
                matches!(
                    &r,
                    Err(Error::NonFinite {
                        what: "bias",
                        index: 2
                    })
                ),
                "{b}: {:?}",
                r.err()
            );
            let r = DynamicLinear::builder(weight(4, 3))
                .bias(vec![bad, 0.0, 0.0, 0.0])
                .backend(b)
                .build();
            assert!(
                matches!(
                    &r,
                    Err(Error::NonFinite {
                        what: "bias",
                        index: 0
                    })
                ),
                "{b}: {:?}",
                r.err()
            );
        }
    }
    for obs in [
        Observer::default(),
        Observer::PER_CHANNEL_SYMMETRIC,
        Observer::PER_TENSOR_SYMMETRIC,
    ] {
        let mut w = vec![0.5f32; 12];
        w[7] = f32::INFINITY;
        let r = QuantizedWeight::from_float(&w, 4, 3, obs);
        assert!(
            matches!(r, Err(Error::NonFinite { index: 7, .. })),
            "{obs:?}: {r:?}"
        );
        let r = Linear::from_float(&w, 4, 3, obs, act(0.1, 0), act(0.1, 0));
        assert!(matches!(r, Err(Error::NonFinite { index: 7, .. })));
        w[7] = 0.0;
        w[11] = f32::NAN;
        let r = DynamicLinear::from_float(&w, 4, 3, obs);
        assert!(matches!(r, Err(Error::NonFinite { index: 11, .. })));
    }
}

// ---------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_backend() {
    let r = "foo".parse::<Backend>();
    assert!(
        matches!(&r, Err(Error::UnknownBackend(s)) if s == "foo"),
        "{r:?}"
    );
    assert!(matches!(
        "".parse::<Backend>(),
        Err(Error::UnknownBackend(_))
    ));
    // Known names parse, case- and whitespace-insensitively.
    for b in std::iter::once(Backend::Auto).chain(Backend::PREFERENCE) {
        assert_eq!(b.name().parse::<Backend>().unwrap(), b);
        assert_eq!(
            format!(" {} ", b.name().to_uppercase())
                .parse::<Backend>()
                .unwrap(),
            b
        );
    }
}

/// A backend whose ISA this CPU certainly lacks.
fn foreign_backend() -> Backend {
    if cfg!(target_arch = "aarch64") {
        Backend::Avx2
    } else {
        Backend::Neon
    }
}

#[test]
fn backend_unavailable() {
    let b = foreign_backend();
    let r = resolve(b);
    assert!(
        matches!(&r, Err(Error::BackendUnavailable(s)) if s == b.name()),
        "{r:?}"
    );
    assert!(!available_backends().contains(&b));
    let r = Linear::builder(weight(2, 3), act(0.1, 0), act(0.1, 0))
        .backend(b)
        .build();
    assert!(matches!(r, Err(Error::BackendUnavailable(_))));
    let r = DynamicLinear::builder(weight(2, 3)).backend(b).build();
    assert!(matches!(r, Err(Error::BackendUnavailable(_))));
    let r = PackedWeights::new(&weight(2, 3), b);
    assert!(matches!(r, Err(Error::BackendUnavailable(_))));
    let p = PackedWeights::new(&weight(2, 3), Backend::Reference).unwrap();
    assert!(matches!(p.repack(b), Err(Error::BackendUnavailable(_))));
    let r = Linear::from_packed(p, act(0.1, 0), act(0.1, 0))
        .backend(b)
        .build();
    assert!(matches!(r, Err(Error::BackendUnavailable(_))));
    // Every backend that is not available reports exactly this.
    for c in Backend::PREFERENCE {
        if !available_backends().contains(&c) {
            assert!(
                matches!(resolve(c), Err(Error::BackendUnavailable(_))),
                "{c}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Corrupt packed weights
// ---------------------------------------------------------------------------------------

/// Rewrites the trailing checksum (xxh3-64 of everything before it, format version 2)
/// so only the intended corruption remains.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let body = bytes.len() - 8;
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..body]);
    bytes[body..].copy_from_slice(&sum.to_le_bytes());
    bytes
}

fn corrupt(r: Result<PackedWeights, Error>) -> Option<&'static str> {
    match r {
        Err(Error::CorruptPacked(why)) => Some(why),
        _ => None,
    }
}

fn field(bytes: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap())
}

/// Offset of the first weight scale (after the 64-byte fixed header and the kernel name
/// with its zero fill); see `qlinear::packed_format`.
fn scales_offset(bytes: &[u8]) -> usize {
    let name_len = u32::from_le_bytes(bytes[36..40].try_into().unwrap()) as usize;
    64 + name_len.next_multiple_of(4)
}

#[test]
fn corrupt_packed_basic() {
    for b in backends() {
        let p = PackedWeights::new(&weight(5, 6), b).unwrap();
        let good = p.to_bytes();
        assert!(PackedWeights::from_bytes(&good).is_ok());
        // Our checksum matches the library's.
        assert_eq!(reseal(good.clone()), good);

        // Truncated anywhere (and empty).
        for cut in [0, 1, 7, 8, 20, 64, good.len() / 2, good.len() - 1] {
            assert!(
                corrupt(PackedWeights::from_bytes(&good[..cut])).is_some(),
                "{b}: truncated to {cut}"
            );
            // Truncated and resealed: the structure itself must be rejected.
            if cut > 8 {
                let t = reseal(good[..cut].to_vec());
                assert!(
                    corrupt(PackedWeights::from_bytes(&t)).is_some(),
                    "{b}: resealed truncation at {cut}"
                );
            }
        }
        // A flipped byte in the packed data or the checksum breaks the checksum.
        let data = field(&good, 40) as usize;
        for pos in [data, data + 3, good.len() - 9, good.len() - 1] {
            let mut f = good.clone();
            f[pos] ^= 0x40;
            assert_eq!(
                corrupt(PackedWeights::from_bytes(&f)),
                Some("checksum mismatch"),
                "{b}: flip at {pos}"
            );
        }
        // Bad magic with a valid checksum.
        let mut m = good.clone();
        m[0] = b'X';
        assert_eq!(
            corrupt(PackedWeights::from_bytes(&reseal(m))),
            Some("bad magic"),
            "{b}"
        );
        // Unsupported versions.
        for v in [0u8, 3, 255] {
            let mut f = good.clone();
            f[4] = v;
            let err = PackedWeights::from_bytes(&reseal(f)).unwrap_err();
            assert_eq!(
                err,
                Error::UnsupportedPackedVersion {
                    found: v as u32,
                    oldest: 1,
                    newest: 2
                },
                "{b}: version {v}"
            );
            assert!(err.to_string().contains(&format!("version {v} ")), "{err}");
        }
        // Trailing bytes before the checksum.
        let mut t = good[..good.len() - 8].to_vec();
        t.push(0);
        t.extend_from_slice(&[0; 8]);
        assert!(
            corrupt(PackedWeights::from_bytes(&reseal(t))).is_some(),
            "{b}"
        );

        let set = |off: usize, v: &[u8]| {
            let mut f = good.clone();
            f[off..off + v.len()].copy_from_slice(v);
            corrupt(PackedWeights::from_bytes(&reseal(f)))
        };
        // n = 0, k above the limit, nr / kr = 0, unknown flag bits, name length 0.
        assert!(set(8, &0u64.to_le_bytes()).is_some(), "{b}");
        assert!(
            set(16, &(K_LIMIT as u64 + 1).to_le_bytes()).is_some(),
            "{b}"
        );
        assert!(set(24, &0u32.to_le_bytes()).is_some(), "{b}");
        assert!(set(28, &0u32.to_le_bytes()).is_some(), "{b}");
        assert!(set(32, &0x10u32.to_le_bytes()).is_some(), "{b}");
        assert!(set(36, &0u32.to_le_bytes()).is_some(), "{b}");
        // A layout (nr) that does not describe the data: lengths disagree.
        let nr = u32::from_le_bytes(good[24..28].try_into().unwrap());
        assert!(set(24, &(nr + 1).to_le_bytes()).is_some(), "{b}");
        // data_offset, data_len, file_len that disagree with the rest.
        assert!(
            set(40, &(field(&good, 40) + 64).to_le_bytes()).is_some(),
            "{b}"
        );
        assert!(
            set(48, &(field(&good, 48) - 1).to_le_bytes()).is_some(),
            "{b}"
        );
        assert!(
            set(56, &(field(&good, 56) + 1).to_le_bytes()).is_some(),
            "{b}"
        );
        // Weight scale NaN and zero point 200 (qparams out of range).
        let s = scales_offset(&good);
        assert!(set(s, &f32::NAN.to_le_bytes()).is_some(), "{b}");
        assert!(set(s + 4, &200i32.to_le_bytes()).is_some(), "{b}");
        // A kernel name with a control character.
        assert!(set(64, b"\n").is_some(), "{b}");
        // A wrong column sum.
        assert_eq!(
            set(s + 8, &1_000_000i32.to_le_bytes()),
            Some("column sums do not match the packed weight"),
            "{b}"
        );
    }
}

/// A non-zero padding byte (with a recomputed checksum) is rejected. Only layouts with
/// padding can carry it: the reference layout (nr = kr = 1) has none, so this runs on
/// every available kernel backend whose layout pads the chosen shape.
#[test]
fn corrupt_packed_non_zero_padding() {
    let (n, k) = (5, 6);
    let mut tested = 0;
    for b in available_backends() {
        let p = PackedWeights::new(&weight(n, k), b).unwrap();
        if p.packed_len() == n * k {
            continue;
        }
        let good = p.to_bytes();
        let nr = u32::from_le_bytes(good[24..28].try_into().unwrap()) as usize;
        let kr = u32::from_le_bytes(good[28..32].try_into().unwrap()) as usize;
        let layout = PackedLayout { nr, kr };
        assert_eq!(layout, p.layout());
        assert_eq!(layout.packed_len(n, k), p.packed_len());
        let data = field(&good, 40) as usize;
        assert_eq!(data % 64, 0);
        let mut used = vec![false; p.packed_len()];
        for col in 0..n {
            for kk in 0..k {
                used[layout.offset(col, kk, k)] = true;
            }
        }
        for (pad, _) in used.iter().enumerate().filter(|(_, &u)| !u).take(40) {
            let mut bad = good.clone();
            assert_eq!(bad[data + pad], 0, "{b}: padding byte {pad} not zero");
            bad[data + pad] = 1;
            let why = corrupt(PackedWeights::from_bytes(&reseal(bad)));
            assert!(
                why.is_some_and(|w| w.starts_with("non-zero padding")),
                "{b}: padding byte {pad}: {why:?}"
            );
            tested += 1;
        }
        // A changed weight byte (not padding) no longer matches the stored column sums;
        // with the column sum updated too it is accepted as a different weight.
        let first = layout.offset(0, 0, k);
        let mut w2 = good.clone();
        w2[data + first] = w2[data + first].wrapping_add(1);
        assert_eq!(
            corrupt(PackedWeights::from_bytes(&reseal(w2.clone()))),
            Some("column sums do not match the packed weight"),
            "{b}"
        );
        let s = scales_offset(&good) + 8;
        let sum = i32::from_le_bytes(w2[s..s + 4].try_into().unwrap());
        w2[s..s + 4].copy_from_slice(&(sum + 1).to_le_bytes());
        let q = PackedWeights::from_bytes_for(&reseal(w2), b).unwrap().0;
        assert_eq!(
            q.unpack().data()[0],
            weight(n, k).data()[0].wrapping_add(1),
            "{b}"
        );
    }
    if tested == 0 {
        eprintln!("note: no available backend pads a {n}x{k} weight; padding check skipped");
    }
}

/// Sizes whose product overflows usize are a `Dimension` error, not a panic.
#[test]
fn dimension_overflow() {
    let buf = [0u8; 16];
    let r = MatRef::new(&buf, usize::MAX, 4, 4);
    assert!(matches!(r, Err(Error::Dimension(_))), "{r:?}");
    let mut out = [0f32; 16];
    let r = MatMut::new(&mut out, usize::MAX / 2, 3, 3);
    assert!(matches!(r, Err(Error::Dimension(_))), "{r:?}");
    let r = QuantizedWeight::new(vec![0; 6], usize::MAX / 2, 3, pt(0.1, 0));
    assert!(matches!(r, Err(Error::Dimension(_))), "{r:?}");
}

/// Thread counts far above the pool size or the number of panels are fine.
#[test]
fn many_threads_are_fine() {
    for b in backends() {
        let l = static_layer(7, 5, b);
        let a: Vec<u8> = (0..3 * 5).map(|i| (i * 37) as u8).collect();
        let want = l.forward_vec(&a, 3).unwrap();
        for t in [64, 1000] {
            let mut out = vec![0u8; 3 * 7];
            l.forward_with_threads(
                MatRef::dense(&a, 3, 5).unwrap(),
                MatMut::dense(&mut out, 3, 7).unwrap(),
                t,
            )
            .unwrap();
            assert_eq!(out, want, "{b} threads={t}");
        }
    }
}

/// A header claiming an absurd `n` (so `packed_len(n, k)` overflows usize) is corrupt,
/// not a panic.
#[test]
fn corrupt_packed_huge_n_does_not_panic() {
    for b in backends() {
        let good = PackedWeights::new(&weight(5, 6), b).unwrap().to_bytes();
        for n in [1u64 << 62, u64::MAX / 3, u64::MAX] {
            for off in [8, 48, 56] {
                let mut h = good.clone();
                h[off..off + 8].copy_from_slice(&n.to_le_bytes());
                let h = reseal(h);
                let r =
                    std::panic::catch_unwind(|| corrupt(PackedWeights::from_bytes(&h)).is_some());
                assert!(
                    matches!(r, Ok(true)),
                    "{b}: field {off} = {n}: panicked or accepted"
                );
            }
        }
    }
}

/// An absurd row count with a short input is an error, checked before any output is
/// allocated for it (no capacity overflow, no huge allocation).
#[test]
fn forward_vec_absurd_rows() {
    for b in backends() {
        let l = static_layer(3, 4, b);
        assert!(matches!(
            l.forward_vec(&[0u8; 8], usize::MAX / 2),
            Err(Error::BufferTooSmall { .. }) | Err(Error::Dimension(_))
        ));
        let d = dynamic_layer(3, 4, b);
        assert!(matches!(
            d.forward_vec(&[0f32; 8], usize::MAX / 3),
            Err(Error::BufferTooSmall { .. }) | Err(Error::Dimension(_))
        ));
    }
}

/// A row range outside a view is an error, not a panic.
#[test]
fn row_range_out_of_bounds() {
    let data = [0u8; 12];
    let v = MatRef::dense(&data, 3, 4).unwrap();
    assert!(matches!(
        v.row_range(1, 4),
        Err(Error::Shape {
            expected: 3,
            got: 4,
            ..
        })
    ));
    assert!(matches!(v.row_range(2, 1), Err(Error::Dimension(_))));
    assert_eq!(v.row_range(1, 3).unwrap().rows(), 2);
    assert_eq!(v.row_range(3, 3).unwrap().rows(), 0);
}
