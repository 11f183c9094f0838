//! Helpers shared by the packed-format test files: an independent v2 writer (from
//! `docs/packed-format.md`, not the library's), checksum resealing, and error matching.
#![allow(dead_code)] // each test file uses its own subset

use qlinear::packed_format::CHECKSUM_LEN;
use qlinear::{Error, QuantizedWeight, WeightQParams};
use qlinear_reference::contract::PackedLayout;
use qlinear_reference::pack;

/// Rewrites the trailing xxh3-64 checksum after an edit, so a test reaches the checks
/// behind it.
pub fn reseal(bytes: &mut [u8]) {
    let body = bytes.len() - CHECKSUM_LEN;
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..body]);
    bytes[body..].copy_from_slice(&sum.to_le_bytes());
}

/// [`reseal`] by value.
pub fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
    reseal(&mut bytes);
    bytes
}

/// Why a load was refused as a bad file (a corrupt one, or a version this build does not
/// read), or `None` for `Ok` and any other error.
pub fn corrupt<T>(r: Result<T, Error>) -> Option<&'static str> {
    match r {
        Err(Error::CorruptPacked(why)) => Some(why),
        Err(Error::UnsupportedPackedVersion { .. }) => Some("unsupported version"),
        _ => None,
    }
}

/// A hand-written v2 serializer for any layout (no layer record), following
/// `docs/packed-format.md`: the tests' independent statement of the format.
pub fn serialize_v2(name: &str, layout: PackedLayout, w: &QuantizedWeight) -> Vec<u8> {
    let (n, k) = (w.out_features(), w.in_features());
    let n_pad = layout.n_padded(n);
    let data = pack::pack(w.data(), n, k, layout);
    let mut sums = pack::column_sums(w.data(), n, k);
    sums.resize(n_pad, 0);
    let (scales, zps) = match w.qparams() {
        WeightQParams::PerTensor { scale, zero_point } => (vec![*scale], vec![*zero_point]),
        WeightQParams::PerChannel {
            scales,
            zero_points,
        } => (scales.clone(), zero_points.clone()),
    };
    let mut body = Vec::new();
    body.extend_from_slice(name.as_bytes());
    body.resize(name.len().next_multiple_of(4), 0);
    scales
        .iter()
        .for_each(|s| body.extend_from_slice(&s.to_le_bytes()));
    zps.iter()
        .for_each(|z| body.extend_from_slice(&z.to_le_bytes()));
    sums.iter()
        .for_each(|s| body.extend_from_slice(&s.to_le_bytes()));
    let data_offset = (64 + body.len()).next_multiple_of(64);
    let file_len = data_offset + data.len() + 8;
    let mut out = Vec::new();
    out.extend_from_slice(b"QLPW");
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.extend_from_slice(&(k as u64).to_le_bytes());
    out.extend_from_slice(&(layout.nr as u32).to_le_bytes());
    out.extend_from_slice(&(layout.kr as u32).to_le_bytes());
    out.extend_from_slice(&(w.qparams().is_per_channel() as u32).to_le_bytes());
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data_offset as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&(file_len as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out.resize(data_offset, 0);
    out.extend_from_slice(&data);
    out.extend_from_slice(&[0; 8]);
    resealed(out)
}
