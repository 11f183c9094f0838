//! The packed-weights byte format as the fuzz targets see it.
//!
//! Format version 2 (`qlinear::packed_format`, `docs/packed-format.md`): a 64-byte fixed
//! header, the kernel name, qparams, column sums, an optional layer record, zero fill
//! up to a 64-byte-aligned data offset, the packed data, and the checksum: the last 8
//! bytes, xxh3-64 (seed 0) of every byte before them. Version 1 files (FNV-1a-64 in the
//! last 8 bytes) still load, so [`reseal`] seals by the version field: FNV-1a for 1,
//! xxh3 otherwise. [`reseal`] of any `to_bytes()` output is the identity (the seed
//! generator asserts it) and a resealed input is never rejected for its checksum
//! ([`check_resealed`] asserts that), so a drift of the format is caught at once.
//!
//! Every input goes through every loader: `PackedWeights::from_bytes_with_report`, the
//! borrowed `from_shared` (at whatever alignment the fuzzer's buffer has),
//! `from_bytes_for` each available backend (cross-kernel loads, repacking where the
//! layout differs), and `Linear::from_bytes` / `DynamicLinear::from_bytes` (layer
//! records). They must agree on accept vs reject and on the weight.

use std::sync::Arc;

use qlinear::{
    ActQParams, DynamicLinear, Error, LayerKind, Linear, LoadReport, MatMut, MatRef, PackedWeights,
    Profile, QuantizedWeight, WeightQParams,
};
use qlinear_reference::contract::PackedLayout;

/// The serialized form's magic bytes.
pub const MAGIC: &[u8; 4] = b"QLPW";
/// Bytes of the checksum field (the tail).
pub const CHECKSUM_LEN: usize = 8;
/// The shortest input that holds the magic, the version and the checksum: shorter
/// inputs are left as they are.
pub const MIN_SEALED_LEN: usize = 8 + CHECKSUM_LEN;

/// FNV-1a-64, the checksum of format version 1.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Rewrites the checksum field (the last 8 bytes) to match the rest: FNV-1a-64 when the
/// version field says 1, xxh3-64 otherwise. Returns false, and leaves `bytes` alone,
/// when it is shorter than [`MIN_SEALED_LEN`].
pub fn reseal(bytes: &mut [u8]) -> bool {
    if bytes.len() < MIN_SEALED_LEN {
        return false;
    }
    let v1 = bytes[4..8] == 1u32.to_le_bytes();
    let (body, tail) = bytes.split_at_mut(bytes.len() - CHECKSUM_LEN);
    let sum = if v1 {
        fnv1a(body)
    } else {
        xxhash_rust::xxh3::xxh3_64(body)
    };
    tail.copy_from_slice(&sum.to_le_bytes());
    true
}

/// Serializes a packing by hand as version 2 (weights only), for layouts whose kernel
/// this CPU cannot run: the bytes `to_bytes` gives on a CPU that can.
pub fn serialize(kernel: &str, layout: PackedLayout, w: &QuantizedWeight) -> Vec<u8> {
    let (n, k) = (w.out_features(), w.in_features());
    let data = qlinear_reference::pack::pack(w.data(), n, k, layout);
    let mut sums = qlinear_reference::pack::column_sums(w.data(), n, k);
    sums.resize(layout.n_padded(n), 0);
    let (scales, zps) = match w.qparams() {
        WeightQParams::PerTensor { scale, zero_point } => (vec![*scale], vec![*zero_point]),
        WeightQParams::PerChannel {
            scales,
            zero_points,
        } => (scales.clone(), zero_points.clone()),
    };
    let mut body = Vec::new();
    body.extend_from_slice(kernel.as_bytes());
    body.resize(kernel.len().next_multiple_of(4), 0);
    scales
        .iter()
        .for_each(|s| body.extend_from_slice(&s.to_le_bytes()));
    zps.iter()
        .for_each(|z| body.extend_from_slice(&z.to_le_bytes()));
    sums.iter()
        .for_each(|s| body.extend_from_slice(&s.to_le_bytes()));
    let data_offset = (64 + body.len()).next_multiple_of(64);
    let file_len = data_offset + data.len() + CHECKSUM_LEN;
    let mut out = Vec::with_capacity(file_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.extend_from_slice(&(k as u64).to_le_bytes());
    out.extend_from_slice(&(layout.nr as u32).to_le_bytes());
    out.extend_from_slice(&(layout.kr as u32).to_le_bytes());
    out.extend_from_slice(&(w.qparams().is_per_channel() as u32).to_le_bytes());
    out.extend_from_slice(&(kernel.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data_offset as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&(file_len as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out.resize(data_offset, 0);
    out.extend_from_slice(&data);
    out.extend_from_slice(&[0; CHECKSUM_LEN]);
    assert!(reseal(&mut out));
    out
}

/// Every loader on arbitrary bytes: never a panic; they agree on accept vs reject and on
/// the weight; anything accepted passes [`check_accepted`] and, for layer records,
/// [`check_layer`].
pub fn check_raw(data: &[u8]) {
    let first = PackedWeights::from_bytes_with_report(data);
    // The borrowed load, at the fuzzer buffer's own alignment.
    let shared = PackedWeights::from_shared(Arc::new(data.to_vec()));
    match (&first, &shared) {
        (Ok((p, r)), Ok((q, rq))) => {
            assert!(
                p.unpack() == q.unpack(),
                "borrowed load gives another weight"
            );
            assert_eq!(r.kernel, rq.kernel, "borrowed load picks another kernel");
            assert_eq!(rq.zero_copy, q.is_borrowed(), "zero_copy report");
            if rq.zero_copy {
                assert!(!rq.repacked, "zero-copy and repacked");
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "borrowed and copying loads disagree"),
        _ => panic!(
            "borrowed and copying loads disagree: {:?} vs {:?}",
            first.as_ref().map(|(_, r)| r),
            shared.as_ref().map(|(_, r)| r)
        ),
    }
    let Ok((p, report)) = first else {
        for &b in crate::backends() {
            assert!(
                PackedWeights::from_bytes_for(data, b).is_err(),
                "rejected for Auto, accepted for {b}"
            );
        }
        assert!(Linear::from_bytes(data).is_err());
        assert!(DynamicLinear::from_bytes(data).is_err());
        return;
    };
    check_accepted(&p, &report, data);
    check_layer(data, &p, &report);
}

/// The input with its checksum rewritten (when it is long enough to have one), then
/// [`check_raw`]. A resealed input must never fail on its checksum.
pub fn check_resealed(data: &[u8]) {
    let mut bytes = data.to_vec();
    let sealed = reseal(&mut bytes);
    match PackedWeights::from_bytes(&bytes) {
        Err(Error::CorruptPacked("checksum mismatch")) if sealed => {
            panic!("resealed bytes fail the checksum: the fuzz crate's reseal no longer matches the format")
        }
        _ => check_raw(&bytes),
    }
}

/// What an accepted blob must satisfy:
/// * when it is a version 2 weights-only file loaded for the kernel it names,
///   `to_bytes` gives back exactly the input; in every case the canonical bytes
///   (`to_bytes`) load back to the same packing;
/// * `unpack` gives a weight that validates as a fresh `QuantizedWeight`, with the
///   packing's shape and qparams;
/// * packing that weight again for the same kernel gives the same bytes, and so does
///   `repack` to the same backend; loading the input for every available backend
///   (cross-kernel, repacking when the layout differs) gives the same weight, the
///   backend's kernel, and a `repacked` flag that says whether the layouts differ;
/// * a one-row forward (static, both profiles, with and without bias; dynamic, both
///   profiles, with and without bias) through a layer built `from_packed` equals the
///   reference on the unpacked weight (u8 bytes; f32 bits).
pub fn check_accepted(p: &PackedWeights, report: &LoadReport, data: &[u8]) {
    let bytes = p.to_bytes();
    if report.version == 2 && report.layer.is_none() && report.kernel == report.stored_kernel {
        assert!(
            bytes == data,
            "accepted bytes must round-trip through to_bytes"
        );
    }
    assert_eq!(
        report.kernel,
        p.kernel_name(),
        "report names another kernel"
    );
    assert_eq!(
        report.repacked,
        report.stored_layout != p.layout(),
        "repacked flag"
    );
    let (n, k) = (p.out_features(), p.in_features());
    let w = p.unpack();
    assert_eq!(
        (w.out_features(), w.in_features()),
        (n, k),
        "unpacked shape"
    );
    assert_eq!(w.qparams(), p.qparams(), "unpacked qparams");
    let fresh = QuantizedWeight::new(w.data().to_vec(), n, k, w.qparams().clone())
        .expect("an accepted packing unpacks to a valid weight");
    assert_eq!(fresh, w);
    let canonical = PackedWeights::from_bytes_for(&bytes, p.backend())
        .expect("to_bytes output loads back")
        .0;
    assert!(canonical.to_bytes() == bytes, "to_bytes is not canonical");

    let again = PackedWeights::new(&w, p.backend()).expect("the packing's backend runs here");
    assert_eq!(
        again.kernel_name(),
        p.kernel_name(),
        "same backend, same kernel"
    );
    assert!(
        again.to_bytes() == bytes,
        "repacking the unpacked weight changes the bytes"
    );
    let same = p.repack(p.backend()).expect("repack to the same backend");
    assert!(
        same.to_bytes() == bytes,
        "repack to the same backend changes the bytes"
    );
    for &b in crate::backends() {
        let (other, r) = PackedWeights::from_bytes_for(data, b)
            .unwrap_or_else(|e| panic!("accepted for Auto, rejected for {b}: {e}"));
        assert!(other.unpack() == w, "loading for {b} gives another weight");
        assert_eq!(
            other.backend(),
            b,
            "loading for {b} runs {}",
            other.kernel_name()
        );
        assert_eq!(
            r.repacked,
            r.stored_layout != other.layout(),
            "{b}: repacked flag"
        );
        if b == p.backend() {
            continue;
        }
        let round = PackedWeights::from_bytes(&other.to_bytes())
            .unwrap_or_else(|e| panic!("{b}'s packing does not parse back: {e}"));
        assert!(
            round.unpack() == w,
            "{b}'s packing parses back to another weight"
        );
    }

    forward_one_row(p, &w);
}

/// A file with a layer record loads as that layer and only as that layer; the loaded
/// layer serializes back to the input (when it runs the kernel the file names) and its
/// one-row forward equals the reference with the record's parameters.
pub fn check_layer(data: &[u8], p: &PackedWeights, report: &LoadReport) {
    let w = p.unpack();
    let (n, k) = (w.out_features(), w.in_features());
    let same_kernel = report.kernel == report.stored_kernel;
    match report.layer {
        None => {
            assert!(
                Linear::from_bytes(data).is_err(),
                "weights-only file as a Linear"
            );
            assert!(
                DynamicLinear::from_bytes(data).is_err(),
                "weights-only file as a DynamicLinear"
            );
        }
        Some(LayerKind::Static) => {
            assert!(
                DynamicLinear::from_bytes(data).is_err(),
                "static file as dynamic"
            );
            let l = Linear::from_bytes(data).expect("a valid static layer file loads");
            if same_kernel {
                assert!(l.to_bytes() == data, "static layer does not round-trip");
            }
            let a: Vec<u8> = (0..k).map(|i| (i * 151 + 7) as u8).collect();
            let ar = MatRef::dense(&a, 1, k).expect("input view");
            let want = qlinear_reference::static_linear(
                &ar,
                l.input_qparams(),
                w.data(),
                n,
                w.qparams(),
                l.bias(),
                l.output_qparams(),
                l.relu(),
                l.profile(),
            );
            let got = l.forward_vec(&a, 1);
            match (&got, &want) {
                (Ok(g), Ok(r)) => assert!(g == r, "loaded static layer differs from the reference"),
                (Err(_), Err(_)) => {}
                _ => panic!("loaded static layer: api {got:?}, reference {want:?}"),
            }
        }
        Some(LayerKind::Dynamic) => {
            assert!(Linear::from_bytes(data).is_err(), "dynamic file as static");
            let l = DynamicLinear::from_bytes(data).expect("a valid dynamic layer file loads");
            if same_kernel {
                assert!(l.to_bytes() == data, "dynamic layer does not round-trip");
            }
            let xf: Vec<f32> = (0..k)
                .map(|i| ((i * 37 % 255) as f32 - 127.0) * 0.031_25)
                .collect();
            let xr = MatRef::dense(&xf, 1, k).expect("input view");
            let got = l.forward_vec(&xf, 1);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let want = qlinear_reference::dynamic_linear(
                &xr,
                w.data(),
                n,
                w.qparams(),
                l.bias(),
                l.reduce_range(),
                l.relu(),
                l.profile(),
            );
            let matches = match (&got, &want) {
                (Ok(g), Ok(r)) => bits(g) == bits(r),
                (Err(_), Err(_)) => true,
                _ => false,
            };
            assert!(
                matches,
                "loaded dynamic layer differs from the reference: {got:?}"
            );
        }
    }
}

/// A fixed one-row input through layers built from the packing, against the reference.
fn forward_one_row(p: &PackedWeights, w: &QuantizedWeight) {
    let (n, k) = (p.out_features(), p.in_features());
    let a: Vec<u8> = (0..k).map(|i| (i * 151 + 7) as u8).collect();
    let xf: Vec<f32> = (0..k)
        .map(|i| ((i * 37 % 255) as f32 - 127.0) * 0.031_25)
        .collect();
    let bias: Vec<f32> = (0..n).map(|j| (j as f32 - 2.5) * 0.75).collect();
    let x = ActQParams {
        scale: 0.02,
        zero_point: 120,
    };
    // An output scale that spreads the outputs, when the weight scale allows one.
    let spread = 5476.0 * (k as f32).sqrt() * x.scale * w.qparams().scale(0) / 40.0;
    let y = ActQParams {
        scale: if spread.is_finite() && spread > 0.0 {
            spread
        } else {
            1.0
        },
        zero_point: 128,
    };
    let ar = MatRef::dense(&a, 1, k).expect("input view");
    let xr = MatRef::dense(&xf, 1, k).expect("input view");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for profile in [Profile::Fbgemm, Profile::Qnnpack] {
        for b in [None, Some(bias.clone())] {
            let want = qlinear_reference::static_linear(
                &ar,
                x,
                w.data(),
                n,
                w.qparams(),
                b.as_deref(),
                y,
                false,
                profile,
            );
            let got = Linear::from_packed(p.clone(), x, y)
                .maybe_bias(b.clone())
                .profile(profile)
                .build()
                .and_then(|layer| {
                    assert_eq!(layer.kernel_name(), p.kernel_name(), "from_packed repacked");
                    let mut out = vec![0u8; n];
                    layer.forward_with_threads(ar, MatMut::dense(&mut out, 1, n)?, 1)?;
                    Ok(out)
                });
            match (&got, &want) {
                (Ok(g), Ok(r)) => assert!(
                    g == r,
                    "static forward of {} ({profile:?}, bias {}) differs from the reference:\n got {g:?}\nwant {r:?}\nqparams {:?}",
                    p.kernel_name(),
                    b.is_some(),
                    w.qparams()
                ),
                (Err(_), Err(_)) => {}
                _ => panic!(
                    "static forward of {} ({profile:?}, bias {}): api {got:?}, reference {want:?}",
                    p.kernel_name(),
                    b.is_some()
                ),
            }

            let want = qlinear_reference::dynamic_linear(
                &xr,
                w.data(),
                n,
                w.qparams(),
                b.as_deref(),
                false,
                false,
                profile,
            );
            let got = DynamicLinear::from_packed(p.clone())
                .maybe_bias(b.clone())
                .profile(profile)
                .reduce_range(false)
                .build()
                .and_then(|layer| {
                    let mut out = vec![0f32; n];
                    layer.forward_with_threads(xr, MatMut::dense(&mut out, 1, n)?, 1)?;
                    Ok(out)
                });
            match (&got, &want) {
                (Ok(g), Ok(r)) => {
                    if bits(g) != bits(r) {
                        let j = (0..n).find(|&j| g[j].to_bits() != r[j].to_bits()).unwrap();
                        panic!(
                            "dynamic forward of {} ({profile:?}, bias {}) differs from the reference at column {j}: got {:e} ({:#010x}), want {:e} ({:#010x}); weight scale {:e}",
                            p.kernel_name(),
                            b.is_some(),
                            g[j],
                            g[j].to_bits(),
                            r[j],
                            r[j].to_bits(),
                            w.qparams().scale(j)
                        );
                    }
                }
                (Err(_), Err(_)) => {}
                _ => panic!(
                    "dynamic forward of {} ({profile:?}, bias {}): api {got:?}, reference {want:?}",
                    p.kernel_name(),
                    b.is_some()
                ),
            }
        }
    }
}
