//! The `PackedWeights` byte format as the fuzz targets see it.
//!
//! Format (`crates/qlinear/src/packed.rs`, all integers little-endian):
//!
//! ```text
//! "QLPW" | version u32 = 1 | name_len u32 | kernel name (utf-8)
//! n u64 | k u64 | nr u32 | kr u32 | per_channel u8
//! scales f32 x (n or 1) | zero points i32 x (n or 1)
//! packed_len u64 | packed bytes | FNV-1a-64 of everything before it
//! ```
//!
//! The checksum is the last 8 bytes, FNV-1a-64 (offset basis 0xcbf29ce484222325, prime
//! 0x100000001b3) over every byte before them. `packed.rs` keeps its `fnv1a` private,
//! so it is restated here; [`reseal`] of any `to_bytes()` output is the identity (the
//! seed generator asserts it) and a resealed input is never rejected for its checksum
//! ([`check_resealed`] asserts that), so a drift of the format is caught at once.

use qlinear::{
    ActQParams, DynamicLinear, Error, Linear, MatMut, MatRef, PackedWeights, Profile,
    QuantizedWeight, WeightQParams,
};
use qlinear_reference::contract::PackedLayout;

/// The serialized form's magic bytes.
pub const MAGIC: &[u8; 4] = b"QLPW";
/// Bytes of the checksum field (the tail).
pub const CHECKSUM_LEN: usize = 8;
/// The shortest input that holds the fixed part of the header (magic, version,
/// name_len) and the checksum: shorter inputs are left as they are.
pub const MIN_SEALED_LEN: usize = 12 + CHECKSUM_LEN;

/// FNV-1a-64, as `packed.rs` computes the checksum.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Rewrites the checksum field (the last 8 bytes) to match the rest. Returns false, and
/// leaves `bytes` alone, when it is shorter than [`MIN_SEALED_LEN`].
pub fn reseal(bytes: &mut [u8]) -> bool {
    if bytes.len() < MIN_SEALED_LEN {
        return false;
    }
    let (body, tail) = bytes.split_at_mut(bytes.len() - CHECKSUM_LEN);
    tail.copy_from_slice(&fnv1a(body).to_le_bytes());
    true
}

/// Serializes a packing by hand, for layouts whose kernel this CPU cannot run (so
/// `PackedWeights::new` refuses them): the bytes `to_bytes` gives on a CPU that can.
pub fn serialize(kernel: &str, layout: PackedLayout, w: &QuantizedWeight) -> Vec<u8> {
    let (n, k) = (w.out_features(), w.in_features());
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(kernel.len() as u32).to_le_bytes());
    out.extend_from_slice(kernel.as_bytes());
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.extend_from_slice(&(k as u64).to_le_bytes());
    out.extend_from_slice(&(layout.nr as u32).to_le_bytes());
    out.extend_from_slice(&(layout.kr as u32).to_le_bytes());
    let (scales, zps) = match w.qparams() {
        WeightQParams::PerTensor { scale, zero_point } => (vec![*scale], vec![*zero_point]),
        WeightQParams::PerChannel {
            scales,
            zero_points,
        } => (scales.clone(), zero_points.clone()),
    };
    out.push(w.qparams().is_per_channel() as u8);
    scales
        .iter()
        .for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
    zps.iter()
        .for_each(|z| out.extend_from_slice(&z.to_le_bytes()));
    let packed = qlinear_reference::pack::pack(w.data(), n, k, layout);
    out.extend_from_slice(&(packed.len() as u64).to_le_bytes());
    out.extend_from_slice(&packed);
    out.extend_from_slice(&fnv1a(&out).to_le_bytes());
    out
}

/// `PackedWeights::from_bytes` on arbitrary bytes: never a panic, and anything accepted
/// passes [`check_accepted`].
pub fn check_raw(data: &[u8]) {
    if let Ok(p) = PackedWeights::from_bytes(data) {
        check_accepted(&p, data);
    }
}

/// The input with its checksum rewritten (when it is long enough to have one), then
/// [`check_raw`]. A resealed input must never fail on its checksum.
pub fn check_resealed(data: &[u8]) {
    let mut bytes = data.to_vec();
    let sealed = reseal(&mut bytes);
    match PackedWeights::from_bytes(&bytes) {
        Ok(p) => check_accepted(&p, &bytes),
        Err(Error::CorruptPacked("checksum mismatch")) if sealed => {
            panic!("resealed bytes fail the checksum: the fuzz crate's FNV-1a no longer matches packed.rs")
        }
        Err(_) => {}
    }
}

/// What an accepted blob must satisfy:
/// * `to_bytes` gives back exactly the input;
/// * `unpack` gives a weight that validates as a fresh `QuantizedWeight`, with the
///   packing's shape and qparams;
/// * packing that weight again for the same kernel gives the same bytes, and so does
///   `repack` to the same backend; every other available backend's packing unpacks to
///   the same weight;
/// * a one-row forward (static, both profiles, with and without bias; dynamic, both
///   profiles, with and without bias) through a layer built `from_packed` equals the
///   reference on the unpacked weight (u8 bytes; f32 bits).
pub fn check_accepted(p: &PackedWeights, data: &[u8]) {
    let bytes = p.to_bytes();
    assert!(
        bytes == data,
        "accepted bytes must round-trip through to_bytes"
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

    let again = PackedWeights::new(&w, p.backend()).expect("the packing's backend runs here");
    assert_eq!(
        again.kernel_name(),
        p.kernel_name(),
        "same backend, same kernel"
    );
    assert!(
        again.to_bytes() == data,
        "repacking the unpacked weight changes the bytes"
    );
    let same = p.repack(p.backend()).expect("repack to the same backend");
    assert!(
        same.to_bytes() == data,
        "repack to the same backend changes the bytes"
    );
    for &b in crate::backends() {
        if b == p.backend() {
            continue;
        }
        let other = p
            .repack(b)
            .unwrap_or_else(|e| panic!("repack to available backend {b}: {e}"));
        assert!(
            other.unpack() == w,
            "repack to {b} unpacks to another weight"
        );
        let round = PackedWeights::from_bytes(&other.to_bytes())
            .unwrap_or_else(|e| panic!("{b}'s packing does not parse back: {e}"));
        assert!(
            round.unpack() == w,
            "{b}'s packing parses back to another weight"
        );
    }

    forward_one_row(p, &w);
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
