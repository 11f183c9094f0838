//! Public API behaviour on the reference backend, on `Backend::Auto` (whatever it resolves
//! to here) and on every other available backend, always compared bit for bit with the
//! oracle: row splits, M = 0, strided views with canaries, weight round trips, output
//! qparams changes, packed serialization, `from_float`, threads, and the conformance
//! vectors.

use qlinear::conformance::{self, Case};
use qlinear::{
    available_backends, ActQParams, Backend, DynamicLinear, Linear, MatMut, MatRef, Observer,
    PackedWeights, Profile, QuantizedWeight, WeightQParams,
};
use qlinear_reference::testkit::{Rng, StaticCase};

const CANARY: u8 = 0xA5;

/// Reference, Auto, then every other backend this CPU runs (each once).
fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Reference, Backend::Auto];
    for b in available_backends() {
        if !v.contains(&b) {
            v.push(b);
        }
    }
    v
}

fn weight_of(c: &StaticCase) -> QuantizedWeight {
    QuantizedWeight::new(c.w.clone(), c.n, c.k, c.wq.clone()).unwrap()
}

fn static_layer(c: &StaticCase, backend: Backend) -> Linear {
    Linear::builder(weight_of(c), c.x, c.y)
        .maybe_bias(c.bias.clone())
        .relu(c.relu)
        .profile(c.profile)
        .backend(backend)
        .build()
        .unwrap()
}

/// The oracle's answer for a case (dense `m x n`).
fn oracle_static(c: &StaticCase) -> Vec<u8> {
    let av = MatRef::new(&c.a, c.m, c.k, c.a_stride).unwrap();
    c.oracle(&av).unwrap()
}

/// A random dynamic setup: weight, bias, relu, profile, reduce_range, input `m x k`.
struct DynCase {
    m: usize,
    k: usize,
    n: usize,
    w: QuantizedWeight,
    bias: Option<Vec<f32>>,
    relu: bool,
    profile: Profile,
    reduce_range: bool,
    x: Vec<f32>,
}

impl DynCase {
    fn random(rng: &mut Rng, m: usize, k: usize, n: usize) -> Self {
        let c = StaticCase::random(rng, m, k, n);
        let amp = rng.log_uniform(1e-2, 1e2);
        let shift = if rng.coin() { 0.0 } else { amp * 0.5 };
        DynCase {
            m,
            k,
            n,
            w: weight_of(&c),
            bias: c.bias.as_ref().map(|_| rng.f32s(n, 2.0)),
            relu: c.relu,
            profile: c.profile,
            reduce_range: rng.coin(),
            x: rng
                .f32s(m * k, amp)
                .into_iter()
                .map(|v| v + shift)
                .collect(),
        }
    }

    fn layer(&self, backend: Backend) -> DynamicLinear {
        DynamicLinear::builder(self.w.clone())
            .maybe_bias(self.bias.clone())
            .relu(self.relu)
            .profile(self.profile)
            .reduce_range(self.reduce_range)
            .backend(backend)
            .build()
            .unwrap()
    }

    fn oracle(&self) -> Vec<f32> {
        let xv = MatRef::dense(&self.x, self.m, self.k).unwrap();
        qlinear_reference::dynamic_linear(
            &xv,
            self.w.data(),
            self.n,
            self.w.qparams(),
            self.bias.as_deref(),
            self.reduce_range,
            self.relu,
            self.profile,
        )
        .unwrap()
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 5),
    (2, 33, 31),
    (5, 64, 32),
    (7, 5, 33),
    (9, 100, 70),
    (17, 3, 65),
    (40, 37, 20),
];

// ---------------------------------------------------------------------------------------
// Full results and row splits
// ---------------------------------------------------------------------------------------

#[test]
fn static_forward_matches_oracle_on_every_backend() {
    let mut rng = Rng::new(1);
    for &(m, k, n) in SHAPES {
        for _ in 0..3 {
            let c = StaticCase::random(&mut rng, m, k, n);
            let want = oracle_static(&c);
            for b in backends() {
                let layer = static_layer(&c, b);
                let mut out = vec![0u8; m * n];
                layer
                    .forward(
                        MatRef::new(&c.a, m, k, c.a_stride).unwrap(),
                        MatMut::dense(&mut out, m, n).unwrap(),
                    )
                    .unwrap();
                assert_eq!(out, want, "{b} ({}) {m}x{k}x{n}", layer.kernel_name());
            }
        }
    }
}

/// Per-call input qparams (torch's input tensor carries its own): the layer built with
/// the case's input qparams, called with them through another layer's
/// `forward_with_input_qparams`, gives the oracle's bits, u8 and f32, on every backend;
/// the layer's own qparams and settings are untouched; invalid qparams are errors.
#[test]
fn per_call_input_qparams_match_a_layer_built_with_them() {
    let mut rng = Rng::new(17);
    for &(m, k, n) in SHAPES {
        let c = StaticCase::random(&mut rng, m, k, n);
        let want = oracle_static(&c);
        let other = ActQParams::new(c.x.scale * 1.75 + 0.01, (c.x.zero_point + 77) % 256).unwrap();
        let xf: Vec<f32> = rng.f32s(m * k, 20.0);
        for b in backends() {
            // Built with `other`, called with the case's qparams.
            let mut case_other = c.clone();
            case_other.x = other;
            let layer = static_layer(&case_other, b);
            let mut out = vec![0u8; m * n];
            layer
                .forward_with_input_qparams(
                    c.x,
                    MatRef::new(&c.a, m, k, c.a_stride).unwrap(),
                    MatMut::dense(&mut out, m, n).unwrap(),
                    1,
                )
                .unwrap();
            assert_eq!(out, want, "{b} ({}) {m}x{k}x{n}", layer.kernel_name());
            assert_eq!(
                layer.input_qparams(),
                other,
                "the layer keeps its own qparams"
            );
            // The f32 path quantizes with the call's qparams.
            let built = static_layer(&c, b);
            let mut got = vec![0f32; m * n];
            layer
                .forward_f32_with_input_qparams(
                    c.x,
                    MatRef::dense(&xf, m, k).unwrap(),
                    MatMut::dense(&mut got, m, n).unwrap(),
                    2,
                )
                .unwrap();
            let expect = built.forward_f32_vec(&xf, m).unwrap();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                expect.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{b} f32 {m}x{k}x{n}"
            );
            // Its own qparams through the same method: the plain call.
            let mut own = vec![0u8; m * n];
            let mut plain = vec![0u8; m * n];
            let a = MatRef::new(&c.a, m, k, c.a_stride).unwrap();
            layer
                .forward_with_input_qparams(other, a, MatMut::dense(&mut own, m, n).unwrap(), 1)
                .unwrap();
            layer
                .forward(a, MatMut::dense(&mut plain, m, n).unwrap())
                .unwrap();
            assert_eq!(own, plain, "{b} own qparams");
            // Twice more with the same foreign qparams (the cached fold), then after an
            // output qparams change, which must not reuse the stale fold.
            let mut again = vec![0u8; m * n];
            layer
                .forward_with_input_qparams(c.x, a, MatMut::dense(&mut again, m, n).unwrap(), 1)
                .unwrap();
            assert_eq!(again, want, "{b} cached fold");
            let mut changed = layer.clone();
            let new_out =
                ActQParams::new(c.y.scale * 0.5 + 0.001, (c.y.zero_point + 31) % 256).unwrap();
            changed.set_output_qparams(new_out).unwrap();
            let mut case_out = c.clone();
            case_out.y = new_out;
            let want_out = oracle_static(&case_out);
            let mut got_out = vec![0u8; m * n];
            changed
                .forward_with_input_qparams(c.x, a, MatMut::dense(&mut got_out, m, n).unwrap(), 1)
                .unwrap();
            assert_eq!(got_out, want_out, "{b} after set_output_qparams (clone)");
            let mut in_place = static_layer(&case_other, b);
            in_place
                .forward_with_input_qparams(c.x, a, MatMut::dense(&mut again, m, n).unwrap(), 1)
                .unwrap();
            in_place.set_output_qparams(new_out).unwrap();
            in_place
                .forward_with_input_qparams(c.x, a, MatMut::dense(&mut again, m, n).unwrap(), 1)
                .unwrap();
            assert_eq!(again, want_out, "{b} after set_output_qparams (in place)");
            let bad = ActQParams {
                scale: f32::NAN,
                zero_point: 0,
            };
            assert!(layer
                .forward_with_input_qparams(bad, a, MatMut::dense(&mut own, m, n).unwrap(), 1)
                .is_err());
            let bad_zp = ActQParams {
                scale: 0.1,
                zero_point: 300,
            };
            assert!(layer
                .forward_f32_with_input_qparams(
                    bad_zp,
                    MatRef::dense(&xf, m, k).unwrap(),
                    MatMut::dense(&mut got, m, n).unwrap(),
                    1
                )
                .is_err());
        }
    }
}

#[test]
fn dynamic_forward_matches_oracle_on_every_backend() {
    let mut rng = Rng::new(2);
    for &(m, k, n) in SHAPES {
        for _ in 0..3 {
            let c = DynCase::random(&mut rng, m, k, n);
            let want = bits(&c.oracle());
            for b in backends() {
                let layer = c.layer(b);
                let got = layer.forward_vec(&c.x, m).unwrap();
                assert_eq!(
                    bits(&got),
                    want,
                    "{b} ({}) {m}x{k}x{n}",
                    layer.kernel_name()
                );
            }
        }
    }
}

/// Every way of cutting M into row blocks (forwarding each block on a sub-view of the
/// input into the matching rows of one strided output) gives the full result.
#[test]
fn any_row_split_gives_identical_outputs() {
    let mut rng = Rng::new(3);
    let (m, k, n) = (11, 45, 37);
    let out_stride = n + 3;
    let c = StaticCase::random(&mut rng, m, k, n);
    let d = DynCase::random(&mut rng, m, k, n);
    let want = oracle_static(&c);
    let want_dyn = d.oracle();
    let splits: Vec<Vec<usize>> = vec![
        vec![11],
        vec![1; 11],
        vec![5, 6],
        vec![0, 3, 0, 8],
        vec![8, 1, 2],
        vec![2, 2, 2, 2, 3],
    ];
    for b in backends() {
        let layer = static_layer(&c, b);
        let dlayer = d.layer(b);
        let input = MatRef::new(&c.a, m, k, c.a_stride).unwrap();
        let dinput = MatRef::dense(&d.x, m, k).unwrap();
        for split in &splits {
            let mut out = vec![CANARY; (m - 1) * out_stride + n];
            let mut dout = vec![f32::NAN; (m - 1) * out_stride + n];
            let mut r0 = 0;
            for &rows in split {
                let r1 = r0 + rows;
                // Static: sub-view by row_range; output by offset into the strided buffer.
                let start = (r0 * out_stride).min(out.len());
                layer
                    .forward(
                        input.row_range(r0, r1).unwrap(),
                        MatMut::new(&mut out[start..], rows, n, out_stride).unwrap(),
                    )
                    .unwrap();
                // Dynamic: each block picks its own input qparams, so the oracle for a
                // block is the oracle on that block alone.
                let dstart = (r0 * out_stride).min(dout.len());
                dlayer
                    .forward(
                        dinput.row_range(r0, r1).unwrap(),
                        MatMut::new(&mut dout[dstart..], rows, n, out_stride).unwrap(),
                    )
                    .unwrap();
                let sub = qlinear_reference::dynamic_linear(
                    &dinput.row_range(r0, r1).unwrap(),
                    d.w.data(),
                    n,
                    d.w.qparams(),
                    d.bias.as_deref(),
                    d.reduce_range,
                    d.relu,
                    d.profile,
                )
                .unwrap();
                for i in 0..rows {
                    assert_eq!(
                        bits(&dout[(r0 + i) * out_stride..(r0 + i) * out_stride + n]),
                        bits(&sub[i * n..(i + 1) * n]),
                        "{b}: dynamic split {split:?}, row {}",
                        r0 + i
                    );
                }
                r0 = r1;
            }
            assert_eq!(r0, m);
            for i in 0..m {
                assert_eq!(
                    &out[i * out_stride..i * out_stride + n],
                    &want[i * n..(i + 1) * n],
                    "{b}: static split {split:?}, row {i}"
                );
                if i + 1 < m {
                    assert!(
                        out[i * out_stride + n..(i + 1) * out_stride]
                            .iter()
                            .all(|&v| v == CANARY),
                        "{b}: gap after row {i} overwritten"
                    );
                }
            }
            // With one block the dynamic result is the whole-matrix oracle.
            if split == &vec![11] {
                for i in 0..m {
                    assert_eq!(
                        bits(&dout[i * out_stride..i * out_stride + n]),
                        bits(&want_dyn[i * n..(i + 1) * n])
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// M = 0, strided views
// ---------------------------------------------------------------------------------------

#[test]
fn m_zero_works_and_writes_nothing() {
    let mut rng = Rng::new(4);
    let (k, n) = (19, 13);
    let c = StaticCase::random(&mut rng, 1, k, n);
    let d = DynCase::random(&mut rng, 1, k, n);
    for b in backends() {
        let layer = static_layer(&c, b);
        let mut buf = vec![CANARY; 64];
        layer
            .forward(
                MatRef::new(&[], 0, k, k).unwrap(),
                MatMut::new(&mut buf, 0, n, n).unwrap(),
            )
            .unwrap();
        assert!(buf.iter().all(|&v| v == CANARY), "{b}: static M=0 wrote");
        assert_eq!(layer.forward_vec(&[], 0).unwrap(), Vec::<u8>::new());
        for t in [1, 2, 3] {
            layer
                .forward_with_threads(
                    MatRef::new(&c.a[..0], 0, k, k + 5).unwrap(),
                    MatMut::new(&mut buf[..0], 0, n, n + 2).unwrap(),
                    t,
                )
                .unwrap();
        }

        let dlayer = d.layer(b);
        let mut fbuf = vec![f32::from_bits(0xA5A5_A5A5); 64];
        dlayer
            .forward(
                MatRef::new(&[], 0, k, k).unwrap(),
                MatMut::new(&mut fbuf, 0, n, n).unwrap(),
            )
            .unwrap();
        assert!(
            fbuf.iter().all(|v| v.to_bits() == 0xA5A5_A5A5),
            "{b}: dynamic M=0 wrote"
        );
        assert_eq!(dlayer.forward_vec(&[], 0).unwrap(), Vec::<f32>::new());
    }
}

#[test]
fn strided_input_and_output_leave_gaps_untouched() {
    let mut rng = Rng::new(5);
    for &(m, k, n) in SHAPES {
        let c = StaticCase::random(&mut rng, m, k, n);
        let want = oracle_static(&c);
        let d = DynCase::random(&mut rng, m, k, n);
        let want_dyn = bits(&d.oracle());
        let (in_stride, out_stride) = (k + 7, n + 5);
        // Input with junk in the gaps (must be ignored) and a tail after the last row.
        let mut a = rng.bytes(m * in_stride + 3);
        let mut x = vec![f32::NAN; m * in_stride + 3];
        for i in 0..m {
            a[i * in_stride..i * in_stride + k].copy_from_slice(&c.a[i * c.a_stride..][..k]);
            x[i * in_stride..i * in_stride + k].copy_from_slice(&d.x[i * k..(i + 1) * k]);
        }
        // Non-finite values in the gaps must not trip the dynamic finiteness check.
        for b in backends() {
            for t in [1, 2, 0] {
                // Output: canary before, in the gaps and after.
                let lead = 3;
                let mut out = vec![CANARY; lead + m * out_stride + 4];
                static_layer(&c, b)
                    .forward_with_threads(
                        MatRef::new(&a, m, k, in_stride).unwrap(),
                        MatMut::new(&mut out[lead..], m, n, out_stride).unwrap(),
                        t,
                    )
                    .unwrap();
                for (p, &v) in out.iter().enumerate() {
                    let in_view = p >= lead && {
                        let q = p - lead;
                        q / out_stride < m && q % out_stride < n
                    };
                    if in_view {
                        let q = p - lead;
                        assert_eq!(v, want[(q / out_stride) * n + q % out_stride], "{b} t={t}");
                    } else {
                        assert_eq!(v, CANARY, "{b} t={t}: byte {p} outside the view changed");
                    }
                }

                let canary = f32::from_bits(0xA5A5_A5A5);
                let mut fout = vec![canary; lead + m * out_stride + 4];
                d.layer(b)
                    .forward_with_threads(
                        MatRef::new(&x, m, k, in_stride).unwrap(),
                        MatMut::new(&mut fout[lead..], m, n, out_stride).unwrap(),
                        t,
                    )
                    .unwrap();
                for (p, &v) in fout.iter().enumerate() {
                    let in_view = p >= lead && {
                        let q = p - lead;
                        q / out_stride < m && q % out_stride < n
                    };
                    if in_view {
                        let q = p - lead;
                        assert_eq!(
                            v.to_bits(),
                            want_dyn[(q / out_stride) * n + q % out_stride],
                            "{b} t={t}"
                        );
                    } else {
                        assert_eq!(v.to_bits(), 0xA5A5_A5A5, "{b} t={t}: elem {p} changed");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Weights, qparams, packing
// ---------------------------------------------------------------------------------------

#[test]
fn weight_returns_exactly_the_weights_given() {
    let mut rng = Rng::new(6);
    for &(m, k, n) in SHAPES {
        for per_channel in [false, true] {
            let mut c = StaticCase::random(&mut rng, m, k, n);
            if per_channel != c.wq.is_per_channel() {
                c.wq = if per_channel {
                    WeightQParams::PerChannel {
                        scales: (0..n).map(|_| rng.log_uniform(1e-4, 1.0)).collect(),
                        zero_points: (0..n).map(|_| rng.range_i32(-128, 127)).collect(),
                    }
                } else {
                    WeightQParams::PerTensor {
                        scale: 0.03,
                        zero_point: -7,
                    }
                };
            }
            let w = weight_of(&c);
            for b in backends() {
                let layer = static_layer(&c, b);
                assert_eq!(layer.weight(), w, "{b}");
                assert_eq!(layer.packed().unpack(), w, "{b}");
                assert_eq!(layer.packed().out_features(), n);
                assert_eq!(layer.packed().in_features(), k);
                assert_eq!(layer.packed().qparams(), &c.wq);
                let dl = DynamicLinear::builder(w.clone())
                    .backend(b)
                    .build()
                    .unwrap();
                assert_eq!(dl.weight(), w, "{b}");
                // A repack to the reference layout and back is lossless too.
                let rp = layer.packed().repack(Backend::Reference).unwrap();
                assert_eq!(rp.unpack(), w);
            }
        }
    }
}

#[test]
fn set_output_qparams_equals_rebuilding() {
    let mut rng = Rng::new(7);
    for &(m, k, n) in SHAPES {
        let c = StaticCase::random(&mut rng, m, k, n);
        let input = MatRef::new(&c.a, m, k, c.a_stride).unwrap();
        for b in backends() {
            let mut layer = static_layer(&c, b);
            for _ in 0..4 {
                let y2 = ActQParams::new(
                    c.y.scale * rng.log_uniform(0.1, 10.0),
                    rng.range_i32(0, 255),
                )
                .unwrap();
                layer.set_output_qparams(y2).unwrap();
                assert_eq!(layer.output_qparams(), y2);
                let mut c2 = c.clone();
                c2.y = y2;
                let fresh = static_layer(&c2, b);
                let mut got = vec![0u8; m * n];
                let mut want = vec![0u8; m * n];
                layer
                    .forward(input, MatMut::dense(&mut got, m, n).unwrap())
                    .unwrap();
                fresh
                    .forward(input, MatMut::dense(&mut want, m, n).unwrap())
                    .unwrap();
                assert_eq!(got, want, "{b}");
                assert_eq!(got, oracle_static(&c2), "{b}");
            }
            // An invalid output leaves the layer unchanged.
            let before = layer.output_qparams();
            assert!(layer
                .set_output_qparams(ActQParams {
                    scale: -1.0,
                    zero_point: 0
                })
                .is_err());
            assert_eq!(layer.output_qparams(), before);
        }
    }
}

#[test]
fn packed_bytes_round_trip() {
    let mut rng = Rng::new(8);
    for &(m, k, n) in SHAPES {
        let c = StaticCase::random(&mut rng, m, k, n);
        let w = weight_of(&c);
        for b in backends() {
            let p = PackedWeights::new(&w, b).unwrap();
            let bytes = p.to_bytes();
            let (q, report) = PackedWeights::from_bytes_for(&bytes, b).unwrap();
            assert!(!report.repacked, "{b}");
            assert_eq!(q.to_bytes(), bytes, "{b}");
            assert_eq!(q.unpack(), w, "{b}");
            assert_eq!(q.unpack(), p.unpack(), "{b}");
            assert_eq!(q.kernel_name(), p.kernel_name());
            assert_eq!(q.backend(), p.backend());
            assert_eq!(q.packed_len(), p.packed_len());
            // A layer from the deserialized packing computes the same bits.
            let layer = Linear::from_packed(q, c.x, c.y)
                .maybe_bias(c.bias.clone())
                .relu(c.relu)
                .profile(c.profile)
                .build()
                .unwrap();
            assert_eq!(layer.kernel_name(), p.kernel_name());
            let mut out = vec![0u8; m * n];
            layer
                .forward(
                    MatRef::new(&c.a, m, k, c.a_stride).unwrap(),
                    MatMut::dense(&mut out, m, n).unwrap(),
                )
                .unwrap();
            assert_eq!(out, oracle_static(&c), "{b}");
        }
    }
}

#[test]
fn from_float_equals_observe_then_quantize() {
    let mut rng = Rng::new(9);
    for &(_, k, n) in SHAPES {
        let amp = rng.log_uniform(1e-3, 10.0);
        let wf: Vec<f32> = rng
            .f32s(n * k, amp)
            .into_iter()
            .map(|v| v + amp * 0.3)
            .collect();
        for bits3 in 0..8u8 {
            let obs = Observer {
                per_channel: bits3 & 1 != 0,
                symmetric: bits3 & 2 != 0,
                reduce_range: bits3 & 4 != 0,
            };
            let wq = qlinear_reference::observe_weight(&wf, n, k, obs).unwrap();
            let data =
                qlinear_reference::quantize_weight(&wf, n, k, &wq, obs.quant_range()).unwrap();
            let manual = QuantizedWeight::new(data, n, k, wq).unwrap();
            assert_eq!(QuantizedWeight::from_float(&wf, n, k, obs).unwrap(), manual);
            let x = ActQParams::new(0.02, 120).unwrap();
            let y = ActQParams::new(0.05, 60).unwrap();
            for b in backends() {
                let l = Linear::from_float(&wf, n, k, obs, x, y)
                    .unwrap()
                    .backend(b)
                    .build()
                    .unwrap();
                assert_eq!(l.weight(), manual, "{b} {obs:?}");
                let dl = DynamicLinear::from_float(&wf, n, k, obs)
                    .unwrap()
                    .backend(b)
                    .build()
                    .unwrap();
                assert_eq!(dl.weight(), manual, "{b} {obs:?}");
            }
        }
    }
}

#[test]
fn layers_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Linear>();
    assert_send_sync::<DynamicLinear>();
    assert_send_sync::<PackedWeights>();
    assert_send_sync::<QuantizedWeight>();
}

#[test]
fn thread_counts_give_identical_results() {
    let mut rng = Rng::new(10);
    // Small M (N split) and large M (row split) with non-zero weight zero points.
    for &(m, k, n) in &[(1, 77, 130), (3, 16, 70), (50, 33, 45), (100, 8, 100)] {
        let mut c = StaticCase::random(&mut rng, m, k, n);
        c.wq = WeightQParams::PerChannel {
            scales: (0..n).map(|_| rng.log_uniform(1e-3, 1e-2)).collect(),
            zero_points: (0..n).map(|_| rng.range_i32(-128, 127)).collect(),
        };
        let want = oracle_static(&c);
        let d = DynCase::random(&mut rng, m, k, n);
        let want_dyn = bits(&d.oracle());
        for b in backends() {
            let mut layer = static_layer(&c, b);
            let dlayer = d.layer(b);
            for t in [1, 2, 3, 0] {
                let mut out = vec![0u8; m * n];
                layer
                    .forward_with_threads(
                        MatRef::new(&c.a, m, k, c.a_stride).unwrap(),
                        MatMut::dense(&mut out, m, n).unwrap(),
                        t,
                    )
                    .unwrap();
                assert_eq!(out, want, "{b} threads={t} {m}x{k}x{n}");
                let mut dout = vec![0f32; m * n];
                dlayer
                    .forward_with_threads(
                        MatRef::dense(&d.x, m, k).unwrap(),
                        MatMut::dense(&mut dout, m, n).unwrap(),
                        t,
                    )
                    .unwrap();
                assert_eq!(bits(&dout), want_dyn, "{b} threads={t} {m}x{k}x{n}");
            }
            layer.set_threads(3);
            assert_eq!(layer.forward_vec(&dense_a(&c), m).unwrap(), want, "{b}");
        }
    }
}

fn dense_a(c: &StaticCase) -> Vec<u8> {
    (0..c.m)
        .flat_map(|i| c.a[i * c.a_stride..i * c.a_stride + c.k].to_vec())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Conformance vectors
// ---------------------------------------------------------------------------------------

const PUBLIC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../conformance/torch-2.15-public.json"
);

#[test]
fn conformance_public_vectors_pass_on_every_backend() {
    let text = std::fs::read_to_string(PUBLIC).unwrap();
    let cases = conformance::parse(&text).unwrap();
    assert_eq!(cases.len(), 280);
    let mut ids: Vec<&str> = cases.iter().map(Case::id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 280, "case ids must be unique");
    let kinds = |f: fn(&Case) -> bool| cases.iter().filter(|c| f(c)).count();
    assert!(kinds(|c| matches!(c, Case::Static(_))) > 0);
    assert!(kinds(|c| matches!(c, Case::Dynamic(_))) > 0);
    assert!(kinds(|c| matches!(c, Case::ObserveWeight(_))) > 0);
    let mut all = available_backends();
    all.push(Backend::Auto);
    for b in all {
        let report = conformance::run(&cases, b);
        let failed: Vec<String> = report
            .failures
            .iter()
            .map(|f| format!("{}: {}", f.id, f.detail))
            .collect();
        assert!(
            failed.is_empty(),
            "{b}: {} failures:\n{}",
            failed.len(),
            failed.join("\n")
        );
        assert_eq!(report.passed, 280, "{b}");
    }
}

/// A tiny valid file; the malformed variants below each break one thing.
fn mini_file(format: &str, kind: &str, wdata: &str, input: &str, expected: &str) -> String {
    format!(
        r#"{{"format":"{format}","source":"test","cases":[
        {{"id":"mini-static","kind":"{kind}","engine":"fbgemm","m":1,"k":2,"n":2,"relu":false,
          "weight":{{"per_channel":false,"scales":[0.5],"zero_points":[0],"data":"{wdata}"}},
          "bias":null,
          "input":{{"scale":0.25,"zero_point":3,"data":"{input}"}},
          "output":{{"scale":1.0,"zero_point":10}},
          "expected":"{expected}"}}]}}"#
    )
}

const GOOD: (&str, &str, &str, &str, &str) = (
    "qlinear-conformance/1",
    "static",
    "01ff02fe",
    "0507",
    "0b0a",
);

#[test]
fn conformance_mini_file_parses_and_runs() {
    let (f, k, w, i, e) = GOOD;
    let cases = conformance::parse(&mini_file(f, k, w, i, e)).unwrap();
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].id(), "mini-static");
    // raw: row (5-3, 7-3) = (2, 4); w rows (1, -1), (2, -2): raw = -2, -4;
    // mult = 0.125; y = -0.25, -0.5 -> cvt 0, -0 (ties to even) -> out 10, 10.
    let report = conformance::run(&cases, Backend::Reference);
    assert_eq!(report.passed + report.failures.len(), 1);
    let want: Vec<u8> = vec![10, 10];
    let wt = QuantizedWeight::new(
        vec![1, -1, 2, -2],
        2,
        2,
        WeightQParams::PerTensor {
            scale: 0.5,
            zero_point: 0,
        },
    )
    .unwrap();
    let l = Linear::builder(
        wt,
        ActQParams::new(0.25, 3).unwrap(),
        ActQParams::new(1.0, 10).unwrap(),
    )
    .build()
    .unwrap();
    assert_eq!(l.forward_vec(&[5, 7], 1).unwrap(), want);
    // The file's expected "0b0a" (11, 10) is deliberately wrong: the runner must notice.
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].id, "mini-static");
    let fixed = conformance::parse(&mini_file(f, k, w, i, "0a0a")).unwrap();
    let ok = conformance::run(&fixed, Backend::Reference);
    assert!(ok.failures.is_empty(), "{ok}");
    assert_eq!(ok.passed, 1);
}

#[test]
fn conformance_parse_rejects_malformed_files() {
    let (f, k, w, i, e) = GOOD;
    let bad = [
        (
            "bad format tag",
            mini_file("qlinear-conformance/2", k, w, i, e),
        ),
        (
            "missing format",
            mini_file("", k, w, i, e).replace(r#""format":"","#, ""),
        ),
        ("unknown kind", mini_file(f, "conv2d", w, i, e)),
        ("bad hex digit", mini_file(f, k, "01fg02fe", i, e)),
        ("odd hex length", mini_file(f, k, "01ff02f", i, e)),
        ("weight too short", mini_file(f, k, "01ff02", i, e)),
        ("weight too long", mini_file(f, k, "01ff02fe00", i, e)),
        ("input too short", mini_file(f, k, w, "05", e)),
        ("expected too long", mini_file(f, k, w, i, "0b0a0c")),
        (
            "wrong qparams count",
            mini_file(f, k, w, i, e).replace(r#""scales":[0.5]"#, r#""scales":[0.5,0.5]"#),
        ),
        (
            "bad engine",
            mini_file(f, k, w, i, e).replace("fbgemm", "onednn"),
        ),
        (
            "missing key",
            mini_file(f, k, w, i, e).replace(r#""relu":false,"#, ""),
        ),
        ("not json", "{".to_string()),
        (
            "cases not a list",
            r#"{"format":"qlinear-conformance/1","cases":3}"#.to_string(),
        ),
    ];
    for (what, text) in bad {
        assert!(
            conformance::parse(&text).is_err(),
            "{what}: parse accepted a malformed file"
        );
    }
    // The unknown-kind error names the case.
    let err = conformance::parse(&mini_file(f, "conv2d", w, i, e)).unwrap_err();
    assert!(err.to_string().contains("mini-static"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Randomized cross-backend agreement
// ---------------------------------------------------------------------------------------

mod random {
    use super::*;
    use proptest::prelude::*;
    use qlinear_reference::testkit::Rng;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random shapes (GEMV and GEMM, tile edges), strides, thread counts: every
        /// backend gives the oracle's bits, static and dynamic, and leaves the output
        /// gaps alone.
        #[test]
        fn every_backend_matches_oracle(
            m in prop_oneof![Just(0usize), Just(1usize), 1usize..70],
            k in prop_oneof![1usize..80, 200usize..700],
            n in prop_oneof![1usize..40, 60usize..140],
            out_pad in 0usize..4,
            threads in 0usize..5,
            extreme: bool,
            seed: u64,
        ) {
            let mut rng = Rng::new(seed);
            let c = if extreme {
                StaticCase::extreme(m, k, n, &mut rng)
            } else {
                StaticCase::random(&mut rng, m, k, n)
            };
            let want = oracle_static(&c);
            let d = DynCase::random(&mut rng, m, k, n);
            let want_dyn = bits(&d.oracle());
            let os = n + out_pad;
            let len = if m == 0 { 0 } else { (m - 1) * os + n };
            for b in backends() {
                let mut out = vec![CANARY; len + 2];
                static_layer(&c, b)
                    .forward_with_threads(
                        MatRef::new(&c.a, m, k, c.a_stride).unwrap(),
                        MatMut::new(&mut out, m, n, os).unwrap(),
                        threads,
                    )
                    .unwrap();
                let mut fout = vec![-7.5f32; len + 2];
                d.layer(b)
                    .forward_with_threads(
                        MatRef::dense(&d.x, m, k).unwrap(),
                        MatMut::new(&mut fout, m, n, os).unwrap(),
                        threads,
                    )
                    .unwrap();
                for p in 0..len + 2 {
                    let (i, j) = (p / os, p % os);
                    if i < m && j < n {
                        prop_assert_eq!(out[p], want[i * n + j], "{} static ({}, {})", b, i, j);
                        prop_assert_eq!(fout[p].to_bits(), want_dyn[i * n + j], "{} dynamic ({}, {})", b, i, j);
                    } else {
                        prop_assert_eq!(out[p], CANARY, "{} static gap {}", b, p);
                        prop_assert_eq!(fout[p], -7.5, "{} dynamic gap {}", b, p);
                    }
                }
            }
        }
    }
}

/// Dynamic inputs at the edges of the qparams choice: all zero, constant, one-signed,
/// tiny (scale floor), huge, single non-zero: every backend equals the oracle.
#[test]
fn dynamic_edge_inputs_match_oracle() {
    let mut rng = Rng::new(11);
    let (m, k, n) = (3, 37, 40);
    let inputs: Vec<(&str, Vec<f32>)> = vec![
        ("zeros", vec![0.0; m * k]),
        ("negative zeros", vec![-0.0; m * k]),
        ("constant positive", vec![3.25; m * k]),
        ("constant negative", vec![-0.75; m * k]),
        ("tiny", rng.f32s(m * k, 1e-6)),
        (
            "tiny positive",
            rng.f32s(m * k, 1e-7).iter().map(|v| v.abs()).collect(),
        ),
        ("subnormal", vec![1e-40; m * k]),
        ("huge", rng.f32s(m * k, 1e30)),
        ("max", {
            let mut v = vec![0.0; m * k];
            v[0] = f32::MAX;
            v[1] = -f32::MAX;
            v
        }),
        ("one spike", {
            let mut v = vec![0.01; m * k];
            v[m * k / 2] = 1e4;
            v
        }),
        (
            "all negative",
            rng.f32s(m * k, 5.0)
                .iter()
                .map(|v| -v.abs() - 1.0)
                .collect(),
        ),
    ];
    for (what, x) in inputs {
        for rr in [false, true] {
            for profile in [Profile::Fbgemm, Profile::Qnnpack] {
                let mut d = DynCase::random(&mut rng, m, k, n);
                d.x = x.clone();
                d.reduce_range = rr;
                d.profile = profile;
                let want = bits(&d.oracle());
                for b in backends() {
                    for t in [1, 2] {
                        let mut out = vec![0f32; m * n];
                        d.layer(b)
                            .forward_with_threads(
                                MatRef::dense(&d.x, m, k).unwrap(),
                                MatMut::dense(&mut out, m, n).unwrap(),
                                t,
                            )
                            .unwrap();
                        assert_eq!(bits(&out), want, "{b} {what} rr={rr} {profile:?} t={t}");
                    }
                }
            }
        }
    }
}

/// Absurd but valid scales (finite, > 0) that push the float epilogue to 0, inf and NaN:
/// `atws` underflowing to 0 (bias / 0 = inf, inf * 0 = NaN), multipliers overflowing to
/// inf. SEMANTICS: cvt saturates and NaN converts to 0; every backend must match.
#[test]
fn absurd_scales_match_oracle() {
    let mut rng = Rng::new(12);
    let (m, k, n) = (3, 9, 35);
    // (scale_x, scale_w, scale_y)
    let combos: &[(f32, f32, f32)] = &[
        (1e-30, 1e-30, 1.0),           // atws underflows to 0
        (1e-30, 1e-30, 1e-45),         // 0 / denormal
        (1e30, 1e8, 1e-30),            // mult overflows to inf
        (f32::MAX, 2.0, 1.0),          // atws = inf
        (1.0, 1.0, f32::MIN_POSITIVE), // huge but finite mult
        (1e-20, 1e-20, 1e-38),
    ];
    for &(sx, sw, sy) in combos {
        for per_channel in [false, true] {
            for bias in [None, Some(0.0f32), Some(1.5), Some(-2.0)] {
                for profile in [Profile::Fbgemm, Profile::Qnnpack] {
                    let mut c = StaticCase::random(&mut rng, m, k, n);
                    // A zero row makes raw = 0 (the NaN case for inf multipliers).
                    c.a[..k].fill(c.x.zero_point as u8);
                    c.x.scale = sx;
                    c.y.scale = sy;
                    c.wq = if per_channel {
                        WeightQParams::PerChannel {
                            scales: vec![sw; n],
                            zero_points: (0..n).map(|_| rng.range_i32(-128, 127)).collect(),
                        }
                    } else {
                        WeightQParams::PerTensor {
                            scale: sw,
                            zero_point: rng.range_i32(-128, 127),
                        }
                    };
                    c.bias = bias.map(|v| vec![v; n]);
                    c.profile = profile;
                    for relu in [false, true] {
                        c.relu = relu;
                        let want = oracle_static(&c);
                        for b in backends() {
                            let layer = static_layer(&c, b);
                            let mut out = vec![0u8; m * n];
                            layer
                                .forward(
                                    MatRef::new(&c.a, m, k, c.a_stride).unwrap(),
                                    MatMut::dense(&mut out, m, n).unwrap(),
                                )
                                .unwrap();
                            assert_eq!(
                                out, want,
                                "{b}: sx={sx} sw={sw} sy={sy} pc={per_channel} bias={bias:?} \
                                 {profile:?} relu={relu}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The dynamic output multiplier `f(s * scale_w)` overflowing to inf (raw = 0 gives NaN):
/// all backends must agree bit for bit with the oracle, NaN payload included.
#[test]
fn dynamic_absurd_weight_scale_matches_oracle() {
    let (m, k, n) = (2, 5, 33);
    let wq = WeightQParams::PerTensor {
        scale: f32::MAX,
        zero_point: 0,
    };
    let w: Vec<i8> = (0..n * k).map(|i| (i % 7) as i8 - 3).collect();
    let qw = QuantizedWeight::new(w, n, k, wq).unwrap();
    // Row 0 all zero (raw = 0 -> 0 * inf = NaN); row 1 mixed.
    let x: Vec<f32> = (0..m * k)
        .map(|i| if i < k { 0.0 } else { i as f32 - 7.0 })
        .collect();
    for profile in [Profile::Fbgemm, Profile::Qnnpack] {
        for relu in [false, true] {
            for bias in [None, Some(vec![0.5f32; n])] {
                let d = DynCase {
                    m,
                    k,
                    n,
                    w: qw.clone(),
                    bias: bias.clone(),
                    relu,
                    profile,
                    reduce_range: false,
                    x: x.clone(),
                };
                let want = bits(&d.oracle());
                for b in backends() {
                    let got = bits(&d.layer(b).forward_vec(&x, m).unwrap());
                    assert_eq!(
                        got,
                        want,
                        "{b}: {profile:?} relu={relu} bias={}",
                        bias.is_some()
                    );
                }
            }
        }
    }
}

/// Hex with a sign character is not hex: `u8::from_str_radix("+f", 16)` accepts it, the
/// reader must not.
#[test]
fn conformance_parse_rejects_signed_hex() {
    let (f, k, _, i, e) = GOOD;
    for bad in ["01+f02fe", "+1ff02fe", "01ff-2fe"] {
        let r = conformance::parse(&mini_file(f, k, bad, i, e));
        assert!(r.is_err(), "weight data {bad:?} accepted: {r:?}");
    }
}

/// Absurd sizes in a file are a format error, never an overflow panic.
#[test]
fn conformance_parse_huge_sizes_do_not_panic() {
    let (f, k, w, i, e) = GOOD;
    for m in ["4611686018427387904", "18446744073709551615"] {
        let text = mini_file(f, k, w, i, e).replace(r#""m":1"#, &format!(r#""m":{m}"#));
        let r = std::panic::catch_unwind(|| conformance::parse(&text).is_err());
        assert!(matches!(r, Ok(true)), "m = {m}: panicked or accepted");
    }
}

/// A static case that cannot run (no input qparams) must be reported as a failure, never
/// counted as passed.
#[test]
fn conformance_static_case_without_input_qparams_is_not_a_pass() {
    let (f, k, w, i, _) = GOOD;
    let mut cases = conformance::parse(&mini_file(f, k, w, i, "0a0a")).unwrap();
    assert!(conformance::run(&cases, Backend::Reference)
        .failures
        .is_empty());
    if let Case::Static(c) = &mut cases[0] {
        c.input_qparams = None;
        c.expected = vec![0xEE, 0xEE]; // cannot be right either
    } else {
        panic!("expected a static case");
    }
    let report = conformance::run(&cases, Backend::Reference);
    assert_eq!(report.passed, 0, "{report}");
    assert_eq!(report.failures.len(), 1, "{report}");
}
