//! # The packed-weights file format (version 2)
//!
//! What [`PackedWeights::to_bytes`](crate::PackedWeights::to_bytes),
//! [`Linear::to_bytes`](crate::Linear::to_bytes) and
//! [`DynamicLinear::to_bytes`](crate::DynamicLinear::to_bytes) write, and what every
//! `from_bytes` reads. `docs/packed-format.md` has the same description with the
//! reasoning behind it.
//!
//! ## Goals
//!
//! * **Self-contained.** The file holds everything needed to run the weight: the packed
//!   bytes, their layout `(nr, kr)`, the column sums, the weight qparams and, optionally,
//!   the rest of a layer (bias, profile, activation qparams, ReLU / reduce_range /
//!   input quantization mode).
//! * **Portable.** A packing is fully described by its [`PackedLayout`]; the kernel name
//!   is informational. Bytes packed for a kernel this CPU lacks are unpacked through the
//!   generic layout and repacked for a local kernel; when a local kernel uses the same
//!   layout the bytes are used as they are.
//! * **Loading at memory speed.** The packed data starts at a 64-byte-aligned file
//!   offset, so a file mapped (or read) to an aligned address can be used in place
//!   ([`PackedWeights::from_shared`](crate::PackedWeights::from_shared)). Integrity is
//!   one xxh3-64 pass; the contents are then checked directly (zero padding, column
//!   sums recomputed from the packed bytes) without unpacking or repacking.
//!
//! ## Layout
//!
//! All integers little-endian; `f32` as IEEE-754 bits. `n_pad = round_up(n, nr)`,
//! `k_pad = round_up(k, kr)`, `c = n` for per-channel qparams and `1` for per-tensor.
//!
//! ```text
//! offset        size        field
//! ------------  ----------  --------------------------------------------------------
//!   0           4           magic "QLPW"
//!   4           4           version u32 = 2
//!   8           8           n u64 (out_features), >= 1 (and <= the input length)
//!  16           8           k u64 (in_features), 1 ..= 33_025 (K_LIMIT)
//!  24           4           nr u32 (columns per panel), 1 ..= 256
//!  28           4           kr u32 (k values per group), 1 ..= 256
//!  32           4           flags u32: bit 0 per-channel qparams, bit 1 layer record;
//!                           every other bit 0
//!  36           4           name_len u32, 1 ..= 64
//!  40           8           data_offset u64: where the packed data starts, a multiple
//!                           of 64 (the end of the header region, rounded up)
//!  48           8           data_len u64 = n_pad * k_pad
//!  56           8           file_len u64 = data_offset + data_len + 8
//! ------------  ----------  ------------------------------------------ header region
//!  64           name_len    kernel name that packed it (ASCII, no spaces/controls),
//!                           zero-filled to a multiple of 4 bytes
//!  ...          4 * c       weight scales f32 (finite, > 0)
//!  ...          4 * c       weight zero points i32 (-128 ..= 127)
//!  ...          4 * n_pad   column sums i32: sum over k of w[j, k]; 0 past n
//!  ...          20          layer record, only when flags bit 1:
//!                             u8 kind (1 static, 2 dynamic)
//!                             u8 profile (0 fbgemm, 1 qnnpack)
//!                             u8 relu (0 / 1)
//!                             u8 has_bias (0 / 1)
//!                             static: f32 input scale, i32 input zero point,
//!                                     f32 output scale, i32 output zero point
//!                             dynamic: u8 reduce_range (0 / 1), u8 input
//!                                      quantization (0 per-tensor / 1 per-row),
//!                                      14 zero bytes
//!  ...          4 * n       bias f32 (finite), only when has_bias
//!  ...          ...         zero bytes up to data_offset
//! ------------  ----------  -------------------------------------------- data region
//!  data_offset  data_len    packed weight, `PackedLayout { nr, kr }`: n_pad / nr
//!                           panels of k_pad / kr groups of nr * kr bytes; bytes past
//!                           k in the last group and columns past n are zero
//!  file_len-8   8           xxh3-64 (seed 0) of bytes [0, file_len - 8)
//! ```
//!
//! ## Validation
//!
//! Every field is checked on its own terms, in this order, and any failure is
//! [`Error::CorruptPacked`]: the input length against the smallest header; magic and
//! version; each fixed field's range; `data_len`, `data_offset` and `file_len` against
//! the values recomputed from `(n, k, nr, kr, flags, name_len)` with checked arithmetic
//! and against the input length (so no length read from the file sizes an allocation
//! the input cannot back); the checksum; the kernel name, qparams, layer record and
//! bias; zero fill in the header region; and then, in one streaming pass over the
//! packed data, the zero padding at the K and N tails and the column sums recomputed
//! from the packed bytes. A file whose checksum was recomputed after a change is still
//! rejected unless the change is a different valid file.
//!
//! Version 1 files (FNV-1a-64, no column sums, no layer record) still load: their
//! packed data is checked the same way and their column sums are computed.

pub use qlinear_reference::contract::PackedLayout;
use qlinear_reference::params::check_layer_dims;

use crate::packing::{advise_huge_pages, advise_spare_capacity};
use crate::InputQuantization;
use qlinear_reference::{ActQParams, Error, Profile, Result, WeightQParams};

/// The four magic bytes that start every packed-weights file.
pub const MAGIC: [u8; 4] = *b"QLPW";
/// The version [`to_bytes`](crate::PackedWeights::to_bytes) writes.
pub const VERSION: u32 = 2;
/// Alignment of the packed data's file offset (and of the memory a borrowed load
/// needs).
pub const DATA_ALIGN: usize = 64;
/// Bytes of the fixed header.
pub const FIXED_HEADER_LEN: usize = 64;
/// Longest kernel name a file may carry.
pub const MAX_NAME_LEN: usize = 64;
/// Largest `nr` or `kr` a file may declare.
pub const MAX_LAYOUT_DIM: usize = 256;
/// Bytes of the layer record's fixed part.
pub const LAYER_RECORD_LEN: usize = 20;
/// Bytes of the checksum at the end of the file.
pub const CHECKSUM_LEN: usize = 8;

const FLAG_PER_CHANNEL: u32 = 1;
const FLAG_LAYER: u32 = 2;

/// What kind of layer a file describes, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// A static [`Linear`](crate::Linear).
    Static,
    /// A [`DynamicLinear`](crate::DynamicLinear).
    Dynamic,
}

/// What a load did: which file it read, which kernel runs it now, and whether the bytes
/// were used as they are, copied, or unpacked and repacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// The file's format version (1 or 2).
    pub version: u32,
    /// The kernel named in the file (informational: the one that packed it).
    pub stored_kernel: String,
    /// The layout of the stored bytes.
    pub stored_layout: PackedLayout,
    /// The kernel that runs the loaded weight.
    pub kernel: &'static str,
    /// True when the stored layout differs from the local kernel's, so the weight was
    /// unpacked and packed again.
    pub repacked: bool,
    /// True when the packed data is used in place (no copy): a borrowed load whose data
    /// was 64-byte aligned in memory and whose layout a local kernel uses.
    pub zero_copy: bool,
    /// The layer record the file carries, if any.
    pub layer: Option<LayerKind>,
}

/// The layer half of a file: everything a [`crate::Linear`] or
/// [`crate::DynamicLinear`] adds to its packed weight (threads and backend choice are
/// runtime settings and are not stored).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LayerRecord {
    Static {
        input: ActQParams,
        output: ActQParams,
        relu: bool,
        profile: Profile,
        bias: Option<Vec<f32>>,
    },
    Dynamic {
        reduce_range: bool,
        input_quantization: InputQuantization,
        relu: bool,
        profile: Profile,
        bias: Option<Vec<f32>>,
    },
}

impl LayerRecord {
    pub(crate) fn kind(&self) -> LayerKind {
        match self {
            LayerRecord::Static { .. } => LayerKind::Static,
            LayerRecord::Dynamic { .. } => LayerKind::Dynamic,
        }
    }
    fn bias(&self) -> Option<&[f32]> {
        match self {
            LayerRecord::Static { bias, .. } | LayerRecord::Dynamic { bias, .. } => bias.as_deref(),
        }
    }
    fn byte_len(&self) -> usize {
        LAYER_RECORD_LEN + self.bias().map_or(0, |b| 4 * b.len())
    }
}

/// The parts of a packing the writer needs.
pub(crate) struct WriteParts<'a> {
    pub kernel_name: &'a str,
    pub n: usize,
    pub k: usize,
    pub layout: PackedLayout,
    pub qparams: &'a WeightQParams,
    pub col_sums: &'a [i32],
    pub data: &'a [u8],
}

fn corrupt(what: &'static str) -> Error {
    Error::CorruptPacked(what)
}

/// Sizes of the regions, from the header's independent fields (checked arithmetic).
struct Geometry {
    n_pad: usize,
    data_offset: usize,
    data_len: usize,
    file_len: usize,
}

fn geometry(
    n: usize,
    k: usize,
    layout: PackedLayout,
    per_channel: bool,
    name_len: usize,
    layer_len: usize,
) -> Option<Geometry> {
    let n_pad = n.checked_next_multiple_of(layout.nr)?;
    let data_len = layout.checked_packed_len(n, k)?;
    let c = if per_channel { n } else { 1 };
    let header = FIXED_HEADER_LEN
        .checked_add(name_len.checked_next_multiple_of(4)?)?
        .checked_add(c.checked_mul(8)?)?
        .checked_add(n_pad.checked_mul(4)?)?
        .checked_add(layer_len)?;
    let data_offset = header.checked_next_multiple_of(DATA_ALIGN)?;
    let file_len = data_offset
        .checked_add(data_len)?
        .checked_add(CHECKSUM_LEN)?;
    Some(Geometry {
        n_pad,
        data_offset,
        data_len,
        file_len,
    })
}

/// Serializes a packing (and an optional layer record) as version 2.
pub(crate) fn write(p: &WriteParts<'_>, layer: Option<&LayerRecord>) -> Vec<u8> {
    let per_channel = p.qparams.is_per_channel();
    let name = p.kernel_name.as_bytes();
    let g = geometry(
        p.n,
        p.k,
        p.layout,
        per_channel,
        name.len(),
        layer.map_or(0, LayerRecord::byte_len),
    )
    .expect("a packing in memory has sizes that fit usize");
    let mut out = Vec::with_capacity(g.file_len);
    advise_huge_pages(out.spare_capacity_mut());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(p.n as u64).to_le_bytes());
    out.extend_from_slice(&(p.k as u64).to_le_bytes());
    out.extend_from_slice(&(p.layout.nr as u32).to_le_bytes());
    out.extend_from_slice(&(p.layout.kr as u32).to_le_bytes());
    let flags = if per_channel { FLAG_PER_CHANNEL } else { 0 }
        | if layer.is_some() { FLAG_LAYER } else { 0 };
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&(g.data_offset as u64).to_le_bytes());
    out.extend_from_slice(&(g.data_len as u64).to_le_bytes());
    out.extend_from_slice(&(g.file_len as u64).to_le_bytes());
    debug_assert_eq!(out.len(), FIXED_HEADER_LEN);
    out.extend_from_slice(name);
    out.resize(out.len().next_multiple_of(4), 0);
    match p.qparams {
        WeightQParams::PerTensor { scale, zero_point } => {
            out.extend_from_slice(&scale.to_le_bytes());
            out.extend_from_slice(&zero_point.to_le_bytes());
        }
        WeightQParams::PerChannel {
            scales,
            zero_points,
        } => {
            scales
                .iter()
                .for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
            zero_points
                .iter()
                .for_each(|z| out.extend_from_slice(&z.to_le_bytes()));
        }
    }
    p.col_sums
        .iter()
        .for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
    if let Some(rec) = layer {
        let (kind, profile, relu, tail) = match rec {
            LayerRecord::Static {
                input,
                output,
                relu,
                profile,
                ..
            } => {
                let mut t = [0u8; 16];
                t[0..4].copy_from_slice(&input.scale.to_le_bytes());
                t[4..8].copy_from_slice(&input.zero_point.to_le_bytes());
                t[8..12].copy_from_slice(&output.scale.to_le_bytes());
                t[12..16].copy_from_slice(&output.zero_point.to_le_bytes());
                (1u8, *profile, *relu, t)
            }
            LayerRecord::Dynamic {
                reduce_range,
                input_quantization,
                relu,
                profile,
                ..
            } => {
                let mut t = [0u8; 16];
                t[0] = *reduce_range as u8;
                t[1] = match input_quantization {
                    InputQuantization::PerTensor => 0,
                    InputQuantization::PerRow => 1,
                };
                (2u8, *profile, *relu, t)
            }
        };
        let profile = match profile {
            Profile::Fbgemm => 0u8,
            Profile::Qnnpack => 1u8,
        };
        let bias = rec.bias();
        out.extend_from_slice(&[kind, profile, relu as u8, bias.is_some() as u8]);
        out.extend_from_slice(&tail);
        if let Some(b) = bias {
            b.iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
    }
    out.resize(g.data_offset, 0);
    out.extend_from_slice(p.data);
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    debug_assert_eq!(out.len(), g.file_len);
    out
}

/// A parsed, validated file. `data` is the packed weight inside the input.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub version: u32,
    pub kernel_name: &'a str,
    pub n: usize,
    pub k: usize,
    pub layout: PackedLayout,
    pub qparams: WeightQParams,
    pub col_sums: Vec<i32>,
    pub data: &'a [u8],
    pub layer: Option<LayerRecord>,
}

/// Where the validated packed data goes while it is checked: nowhere (it will be used in
/// place, or repacked), or appended to an aligned buffer.
pub(crate) type Sink<'s> = Option<&'s mut crate::packing::AlignedBytes>;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if len > self.0.len() {
            return Err(corrupt("truncated"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_le_bytes)
    }
    fn f32s(&mut self, count: usize) -> Result<Vec<f32>> {
        let s = self.take(count.checked_mul(4).ok_or(corrupt("truncated"))?)?;
        Ok(s.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    fn i32s(&mut self, count: usize) -> Result<Vec<i32>> {
        let s = self.take(count.checked_mul(4).ok_or(corrupt("truncated"))?)?;
        Ok(s.chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

fn to_usize(v: u64, what: &'static str) -> Result<usize> {
    usize::try_from(v).map_err(|_| corrupt(what))
}

fn bool_byte(b: u8, what: &'static str) -> Result<bool> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(corrupt(what)),
    }
}

fn check_dims(n: usize, k: usize, layout: PackedLayout, input_len: usize) -> Result<()> {
    check_layer_dims(n, k).map_err(|_| corrupt("dimensions out of range"))?;
    // Every column needs at least one packed byte: an n larger than the input is a lie,
    // and rejecting it here bounds every n-sized allocation by the input length.
    if n > input_len {
        return Err(corrupt("dimensions out of range"));
    }
    if !(1..=MAX_LAYOUT_DIM).contains(&layout.nr) || !(1..=MAX_LAYOUT_DIM).contains(&layout.kr) {
        return Err(corrupt("layout (nr, kr) out of range"));
    }
    Ok(())
}

fn check_name(name: &[u8]) -> Result<&str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.iter().all(|b| b.is_ascii_graphic()) {
        return Err(corrupt("kernel name"));
    }
    std::str::from_utf8(name).map_err(|_| corrupt("kernel name"))
}

/// Weight qparams from a file's scales and zero points: all of them per channel, else the
/// first of each per tensor. Not validated.
pub(crate) fn weight_qparams_from(
    per_channel: bool,
    scales: Vec<f32>,
    zps: Vec<i32>,
) -> WeightQParams {
    if per_channel {
        WeightQParams::PerChannel {
            scales,
            zero_points: zps,
        }
    } else {
        WeightQParams::PerTensor {
            scale: scales[0],
            zero_point: zps[0],
        }
    }
}

fn weight_qparams(
    per_channel: bool,
    scales: Vec<f32>,
    zps: Vec<i32>,
    n: usize,
) -> Result<WeightQParams> {
    let q = weight_qparams_from(per_channel, scales, zps);
    q.validate(n)
        .map_err(|_| corrupt("weight qparams out of range"))?;
    Ok(q)
}

/// Parses and validates a version 1 or 2 file. The packed data is checked (padding,
/// column sums) in one streaming pass and, when `sink` is given, appended to it as it
/// is checked.
pub(crate) fn parse<'a>(bytes: &'a [u8], sink: Sink<'_>) -> Result<Parsed<'a>> {
    if bytes.len() < 8 {
        return Err(corrupt("truncated"));
    }
    if bytes[..4] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    match version {
        2 => parse_v2(bytes, sink),
        1 => parse_v1(bytes, sink),
        found => Err(Error::UnsupportedPackedVersion {
            found,
            oldest: 1,
            newest: VERSION,
        }),
    }
}

fn parse_v2<'a>(bytes: &'a [u8], sink: Sink<'_>) -> Result<Parsed<'a>> {
    if bytes.len() < FIXED_HEADER_LEN + CHECKSUM_LEN {
        return Err(corrupt("truncated"));
    }
    let mut r = Reader(&bytes[8..FIXED_HEADER_LEN]);
    let n = to_usize(r.u64()?, "dimensions out of range")?;
    let k = to_usize(r.u64()?, "dimensions out of range")?;
    let nr = r.u32()? as usize;
    let kr = r.u32()? as usize;
    let layout = PackedLayout { nr, kr };
    check_dims(n, k, layout, bytes.len())?;
    let flags = r.u32()?;
    if flags & !(FLAG_PER_CHANNEL | FLAG_LAYER) != 0 {
        return Err(corrupt("unknown flags"));
    }
    let per_channel = flags & FLAG_PER_CHANNEL != 0;
    let has_layer = flags & FLAG_LAYER != 0;
    let name_len = r.u32()? as usize;
    if !(1..=MAX_NAME_LEN).contains(&name_len) {
        return Err(corrupt("kernel name length"));
    }
    let data_offset = r.u64()?;
    let data_len = r.u64()?;
    let file_len = r.u64()?;

    // The layer record's length depends on its has_bias byte: read it (bounds-checked)
    // before the geometry, from where it must be.
    let pre_layer =
        geometry(n, k, layout, per_channel, name_len, 0).ok_or(corrupt("sizes overflow"))?;
    let layer_start = FIXED_HEADER_LEN
        + name_len.next_multiple_of(4)
        + if per_channel { 8 * n } else { 8 }
        + 4 * pre_layer.n_pad;
    let layer_len = if has_layer {
        let has_bias = *bytes.get(layer_start + 3).ok_or(corrupt("truncated"))?;
        LAYER_RECORD_LEN
            + if bool_byte(has_bias, "layer has_bias flag")? {
                4 * n
            } else {
                0
            }
    } else {
        0
    };
    let g = geometry(n, k, layout, per_channel, name_len, layer_len)
        .ok_or(corrupt("sizes overflow"))?;
    if data_len != g.data_len as u64 {
        return Err(corrupt("data length does not match n, k, nr, kr"));
    }
    if data_offset != g.data_offset as u64 {
        return Err(corrupt("data offset does not match the header"));
    }
    if file_len != g.file_len as u64 {
        return Err(corrupt("file length does not match the header"));
    }
    if bytes.len() < g.file_len {
        return Err(corrupt("truncated"));
    }
    if bytes.len() > g.file_len {
        return Err(corrupt("trailing bytes"));
    }

    // Checksum, streamed together with the data checks (one pass over the big part).
    let stored_sum = u64::from_le_bytes(
        bytes[g.file_len - CHECKSUM_LEN..]
            .try_into()
            .map_err(|_| corrupt("truncated"))?,
    );
    let data = &bytes[g.data_offset..g.data_offset + g.data_len];

    // The header region's contents, checked before the data but reported after the
    // checksum: a damaged file says "checksum mismatch" wherever the damage is.
    let header = (|| -> Result<(&str, WeightQParams, Vec<i32>, Option<LayerRecord>)> {
        let mut r = Reader(&bytes[FIXED_HEADER_LEN..g.data_offset]);
        let name_field = r.take(name_len.next_multiple_of(4))?;
        let (name, name_pad) = name_field.split_at(name_len);
        let c = if per_channel { n } else { 1 };
        let scales = r.f32s(c)?;
        let zps = r.i32s(c)?;
        let col_sums = r.i32s(g.n_pad)?;
        let layer = if has_layer {
            let kind = r.u8()?;
            let profile = match r.u8()? {
                0 => Profile::Fbgemm,
                1 => Profile::Qnnpack,
                _ => return Err(corrupt("layer profile")),
            };
            let relu = bool_byte(r.u8()?, "layer relu flag")?;
            let has_bias = bool_byte(r.u8()?, "layer has_bias flag")?;
            let tail: [u8; 16] = r.array()?;
            let word = |i: usize| [tail[i], tail[i + 1], tail[i + 2], tail[i + 3]];
            let bias = if has_bias {
                let b = r.f32s(n)?;
                if !b.iter().all(|v| v.is_finite()) {
                    return Err(corrupt("non-finite bias"));
                }
                Some(b)
            } else {
                None
            };
            Some(match kind {
                1 => {
                    let input = ActQParams {
                        scale: f32::from_le_bytes(word(0)),
                        zero_point: i32::from_le_bytes(word(4)),
                    };
                    let output = ActQParams {
                        scale: f32::from_le_bytes(word(8)),
                        zero_point: i32::from_le_bytes(word(12)),
                    };
                    input
                        .validate("input")
                        .map_err(|_| corrupt("layer input qparams out of range"))?;
                    output
                        .validate("output")
                        .map_err(|_| corrupt("layer output qparams out of range"))?;
                    LayerRecord::Static {
                        input,
                        output,
                        relu,
                        profile,
                        bias,
                    }
                }
                2 => {
                    if tail[2..].iter().any(|&b| b != 0) {
                        return Err(corrupt("non-zero reserved bytes in a dynamic layer record"));
                    }
                    LayerRecord::Dynamic {
                        reduce_range: bool_byte(tail[0], "layer reduce_range flag")?,
                        input_quantization: match tail[1] {
                            0 => InputQuantization::PerTensor,
                            1 => InputQuantization::PerRow,
                            _ => return Err(corrupt("layer input quantization mode")),
                        },
                        relu,
                        profile,
                        bias,
                    }
                }
                _ => return Err(corrupt("layer kind")),
            })
        } else {
            None
        };
        if name_pad.iter().any(|&b| b != 0) || r.0.iter().any(|&b| b != 0) {
            return Err(corrupt("non-zero header padding"));
        }
        let kernel_name = check_name(name)?;
        let qparams = weight_qparams(per_channel, scales, zps, n)?;
        Ok((kernel_name, qparams, col_sums, layer))
    })();

    // The checksum and the data checks read the same bytes independently: for big files
    // they run on two threads (each is memory-bound on its own).
    let sealed = &bytes[..g.file_len - CHECKSUM_LEN];
    let (digest, sums) = join_if_big(
        data.len(),
        || xxhash_rust::xxh3::xxh3_64(sealed),
        || check_data(data, n, k, layout, sink),
    );
    if digest != stored_sum {
        return Err(corrupt("checksum mismatch"));
    }
    let (kernel_name, qparams, col_sums, layer) = header?;
    let sums = sums?;
    if sums != col_sums {
        return Err(corrupt("column sums do not match the packed weight"));
    }
    Ok(Parsed {
        version: 2,
        kernel_name,
        n,
        k,
        layout,
        qparams,
        col_sums,
        data,
        layer,
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Version 1: `"QLPW" | 1 | name_len u32 | name | n u64 | k u64 | nr u32 | kr u32 |
/// per_channel u8 | scales | zero points | packed_len u64 | packed | FNV-1a-64`.
fn parse_v1<'a>(bytes: &'a [u8], sink: Sink<'_>) -> Result<Parsed<'a>> {
    if bytes.len() < 16 {
        return Err(corrupt("truncated"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 8);
    if fnv1a(body).to_le_bytes() != tail {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader(&body[8..]);
    let name_len = r.u32()? as usize;
    if !(1..=MAX_NAME_LEN).contains(&name_len) {
        return Err(corrupt("kernel name length"));
    }
    let kernel_name = check_name(r.take(name_len)?)?;
    let n = to_usize(r.u64()?, "dimensions out of range")?;
    let k = to_usize(r.u64()?, "dimensions out of range")?;
    let layout = PackedLayout {
        nr: r.u32()? as usize,
        kr: r.u32()? as usize,
    };
    check_dims(n, k, layout, bytes.len())?;
    let per_channel = bool_byte(r.u8()?, "per_channel flag")?;
    let c = if per_channel { n } else { 1 };
    let scales = r.f32s(c)?;
    let zps = r.i32s(c)?;
    let qparams = weight_qparams(per_channel, scales, zps, n)?;
    let len = to_usize(r.u64()?, "packed length does not match the shape")?;
    if Some(len) != layout.checked_packed_len(n, k) {
        return Err(corrupt("packed length does not match the shape"));
    }
    let data = r.take(len)?;
    if !r.0.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    let col_sums = check_data(data, n, k, layout, sink)?;
    Ok(Parsed {
        version: 1,
        kernel_name,
        n,
        k,
        layout,
        qparams,
        col_sums,
        data,
        layer: None,
    })
}

/// One streaming pass over the packed data, panel by panel, in L1-sized blocks (each
/// block is read from memory once, then summed and copied from cache): checks that the
/// padding at the K tail (bytes past `k` in the last group) and the N tail (columns past `n`) is zero,
/// recomputes the `n_pad` column sums, and appends the panel to `sink`.
///
/// Column sums without unpacking: inside a panel, group `g` holds column `c`'s values at
/// bytes `[g * nr * kr + c * kr, .. + kr)`, a pattern with period `nr * kr`. Summing
/// i8 -> i32 element-wise over consecutive chunks of `w` (a multiple of that period, at
/// least 64 bytes wide) is a plain vectorizable loop; folding the `w` lanes per column
/// afterwards costs `w` adds per panel.
pub(crate) fn check_data(
    data: &[u8],
    n: usize,
    k: usize,
    layout: PackedLayout,
    mut sink: Sink<'_>,
) -> Result<Vec<i32>> {
    let PackedLayout { nr, kr } = layout;
    let panel_bytes = layout.panel_bytes(k);
    let n_pad = layout.n_padded(n);
    debug_assert_eq!(data.len(), panel_bytes * (n_pad / nr));
    let period = nr * kr;
    let w = period * 64usize.div_ceil(period).max(1);
    let k_tail = k % kr;
    let panels = n_pad / nr;
    let mut sums = vec![0i32; n_pad];
    let mut acc = vec![0i32; w];
    let mut acc16 = vec![0i16; w];
    if let Some(s) = sink.as_deref_mut() {
        s.reserve(data.len());
        advise_spare_capacity(s);
    }
    // Sub-blocks of 256 chunks of `w` bytes (16 or 32 KiB): summed, then copied from L1.
    let block = w * 256;
    for (p, panel) in data.chunks_exact(panel_bytes).enumerate() {
        // K tail: the last group's bytes [k_tail, kr) of every column.
        if k_tail != 0 {
            let last = &panel[panel_bytes - period..];
            let bad = last
                .chunks_exact(kr)
                .any(|col| col[k_tail..].iter().any(|&b| b != 0));
            if bad {
                return Err(corrupt("non-zero padding past k"));
            }
        }
        // N tail: columns [n % nr, nr) of the last panel, in every group.
        let cols = (n - p * nr).min(nr);
        if cols < nr && p + 1 == panels {
            let bad = panel
                .chunks_exact(period)
                .any(|g| g[cols * kr..].iter().fold(0u8, |a, &b| a | b) != 0);
            if bad {
                return Err(corrupt("non-zero padding past n"));
            }
        }
        acc.fill(0);
        for sub in panel.chunks(block) {
            lane_sums(sub, &mut acc, &mut acc16);
            if let Some(s) = sink.as_deref_mut() {
                s.extend_from_slice(sub);
            }
        }
        let out = &mut sums[p * nr..(p + 1) * nr];
        for rep in acc.chunks_exact(period) {
            for (s, col) in out.iter_mut().zip(rep.chunks_exact(kr)) {
                *s += col.iter().sum::<i32>();
            }
        }
    }
    Ok(sums)
}

/// `acc[i] += sum over chunks c of panel.chunks(acc.len()) of c[i] as i8` (the last
/// chunk may be short). Runs the same portable loop compiled for AVX-512BW or AVX2 when
/// the CPU has them (the loop is memory-bound with them, compute-bound on SSE2).
fn lane_sums(panel: &[u8], acc: &mut [i32], acc16: &mut [i16]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU supports AVX-512BW (checked just above), the only
            // requirement of a `#[target_feature]` function; the body is safe code.
            return unsafe { lane_sums_avx512(panel, acc, acc16) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of
            // a `#[target_feature]` function; the body is safe code.
            return unsafe { lane_sums_avx2(panel, acc, acc16) };
        }
    }
    lane_sums_portable(panel, acc, acc16)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn lane_sums_avx512(panel: &[u8], acc: &mut [i32], acc16: &mut [i16]) {
    lane_sums_portable(panel, acc, acc16)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn lane_sums_avx2(panel: &[u8], acc: &mut [i32], acc16: &mut [i16]) {
    lane_sums_portable(panel, acc, acc16)
}

/// Sums in i16 lanes (twice the width of i32 lanes per instruction) for up to 256
/// chunks at a time, exact because `256 * 128 = 32768` fits an i16 with the sign
/// (`-128 * 256 = i16::MIN`, `127 * 256 < i16::MAX`), then widens into `acc`.
#[inline(always)]
fn lane_sums_portable(panel: &[u8], acc: &mut [i32], acc16: &mut [i16]) {
    // The common widths (the x86 kernels' layouts give 64 and 128) with the lanes in a
    // fixed-size local array, so they stay in registers across the loop.
    match acc.len() {
        64 => return lane_sums_fixed::<64>(panel, acc),
        128 => return lane_sums_fixed::<128>(panel, acc),
        _ => {}
    }
    let w = acc.len();
    let mut chunks = panel.chunks_exact(w);
    loop {
        acc16.fill(0);
        let mut count = 0;
        for chunk in chunks.by_ref().take(256) {
            for (a, &b) in acc16.iter_mut().zip(chunk) {
                *a = a.wrapping_add(b as i8 as i16);
            }
            count += 1;
        }
        for (a, &s) in acc.iter_mut().zip(acc16.iter()) {
            *a += s as i32;
        }
        if count < 256 {
            break;
        }
    }
    for (a, &b) in acc.iter_mut().zip(chunks.remainder()) {
        *a += b as i8 as i32;
    }
}

#[inline(always)]
fn lane_sums_fixed<const W: usize>(panel: &[u8], acc: &mut [i32]) {
    let mut chunks = panel.chunks_exact(W);
    loop {
        let mut lanes = [0i16; W];
        let mut count = 0;
        for chunk in chunks.by_ref().take(256) {
            let chunk: &[u8; W] = chunk.try_into().expect("chunks_exact gives W bytes");
            for (a, &b) in lanes.iter_mut().zip(chunk) {
                *a = a.wrapping_add(b as i8 as i16);
            }
            count += 1;
        }
        for (a, &s) in acc.iter_mut().zip(lanes.iter()) {
            *a += s as i32;
        }
        if count < 256 {
            break;
        }
    }
    for (a, &b) in acc.iter_mut().zip(chunks.remainder()) {
        *a += b as i8 as i32;
    }
}

/// `(a(), b())`, on two threads (rayon) when `len` bytes make it worth a thread hop.
fn join_if_big<A, B, RA, RB>(len: usize, a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    #[cfg(feature = "rayon")]
    if len >= 4 << 20 {
        return rayon::join(a, b);
    }
    let _ = len;
    (a(), b())
}
