//! Quantized weights, and the same weights packed once for one kernel.
//!
//! [`PackedWeights`] depends on the weight only (bytes, qparams, column sums): never on
//! activation or output parameters, so one packing serves static, dynamic and M = 1
//! calls, and a layer's output scale can change without repacking.
//!
//! Serialized form ([`PackedWeights::to_bytes`]), all integers little-endian:
//!
//! ```text
//! "QLPW" | version u32 = 1 | name_len u32 | kernel name (utf-8)
//! n u64 | k u64 | nr u32 | kr u32 | per_channel u8
//! scales f32 x (n or 1) | zero points i32 x (n or 1)
//! packed_len u64 | packed bytes | FNV-1a-64 of everything before it
//! ```
//!
//! [`PackedWeights::from_bytes`] checks every field (lengths, layout against the named
//! kernel, qparams ranges, zero padding, checksum) and returns
//! [`Error::CorruptPacked`] rather than trusting any of it.

use qlinear_reference::contract::PackedLayout;
use qlinear_reference::params::check_layer_dims;
use qlinear_reference::{pack, Error, Observer, Result, WeightQParams};

use crate::backend::{resolve, Backend, Engine};
use crate::packing;

pub use crate::packing::AlignedBytes;

/// An `N x K` int8 weight (out_features x in_features, like torch) with its qparams:
/// what `from_reference` takes and what `weight()` / unpack gives back, exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeight {
    data: Vec<i8>,
    n: usize,
    k: usize,
    qparams: WeightQParams,
}

impl QuantizedWeight {
    /// Validates and wraps an `n x k` row-major i8 weight.
    pub fn new(data: Vec<i8>, n: usize, k: usize, qparams: WeightQParams) -> Result<Self> {
        check_layer_dims(n, k)?;
        let expected = n
            .checked_mul(k)
            .ok_or(Error::Dimension("n * k overflows"))?;
        if data.len() != expected {
            return Err(Error::Shape {
                what: "weight elements (n * k)",
                expected,
                got: data.len(),
            });
        }
        qparams.validate(n)?;
        Ok(QuantizedWeight {
            data,
            n,
            k,
            qparams,
        })
    }

    /// Quantizes an `n x k` f32 weight the way torch's `from_float` does: run the
    /// observer, then `quantize_per_tensor` / `quantize_per_channel` clamped to the
    /// observer's range.
    pub fn from_float(w: &[f32], n: usize, k: usize, observer: Observer) -> Result<Self> {
        let qparams = qlinear_reference::observe_weight(w, n, k, observer)?;
        let data = qlinear_reference::quantize_weight(w, n, k, &qparams, observer.quant_range())?;
        QuantizedWeight::new(data, n, k, qparams)
    }

    /// The `n x k` int8 values.
    pub fn data(&self) -> &[i8] {
        &self.data
    }
    /// out_features.
    pub fn out_features(&self) -> usize {
        self.n
    }
    /// in_features.
    pub fn in_features(&self) -> usize {
        self.k
    }
    /// The qparams.
    pub fn qparams(&self) -> &WeightQParams {
        &self.qparams
    }
    /// Dequantized f32 weight (`(q - zp) * scale`).
    pub fn dequantize(&self) -> Vec<f32> {
        self.data
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let j = i / self.k;
                (q as i32 - self.qparams.zero_point(j)) as f32 * self.qparams.scale(j)
            })
            .collect()
    }
}

/// A weight packed for one engine, with its pack-time column sums.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    pub(crate) engine: Engine,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) qparams: WeightQParams,
    pub(crate) layout: PackedLayout,
    pub(crate) data: AlignedBytes,
    /// `n_pad` column sums (zeros past `n`).
    pub(crate) col_sums: Vec<i32>,
}

impl PackedWeights {
    /// Packs `w` for `backend` (resolved once, here).
    pub fn new(w: &QuantizedWeight, backend: Backend) -> Result<Self> {
        let engine = resolve(backend)?;
        Ok(Self::for_engine(w, engine))
    }

    pub(crate) fn for_engine(w: &QuantizedWeight, engine: Engine) -> Self {
        let packing::Packed {
            layout,
            data,
            col_sums,
        } = packing::pack_weight(&w.data, w.n, w.k, engine);
        PackedWeights {
            engine,
            n: w.n,
            k: w.k,
            qparams: w.qparams.clone(),
            layout,
            data,
            col_sums,
        }
    }

    /// The kernel that runs this packing, e.g. `"avx512vnni/gemm_8x32c4"`.
    pub fn kernel_name(&self) -> &'static str {
        self.engine.kernel_name()
    }
    /// The backend of that kernel.
    pub fn backend(&self) -> Backend {
        self.engine.backend()
    }
    /// out_features.
    pub fn out_features(&self) -> usize {
        self.n
    }
    /// in_features.
    pub fn in_features(&self) -> usize {
        self.k
    }
    /// The weight qparams.
    pub fn qparams(&self) -> &WeightQParams {
        &self.qparams
    }
    /// Bytes of packed weight data.
    pub fn packed_len(&self) -> usize {
        self.data.len()
    }

    /// Recovers the exact int8 weight and qparams (torch's `unpack`).
    pub fn unpack(&self) -> QuantizedWeight {
        QuantizedWeight {
            data: pack::unpack(&self.data, self.n, self.k, self.layout),
            n: self.n,
            k: self.k,
            qparams: self.qparams.clone(),
        }
    }

    /// The same weight packed for another backend.
    pub fn repack(&self, backend: Backend) -> Result<Self> {
        PackedWeights::new(&self.unpack(), backend)
    }

    /// Serializes the packing (format in the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 64 + 8 * self.n);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        let name = self.kernel_name().as_bytes();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(self.n as u64).to_le_bytes());
        out.extend_from_slice(&(self.k as u64).to_le_bytes());
        out.extend_from_slice(&(self.layout.nr as u32).to_le_bytes());
        out.extend_from_slice(&(self.layout.kr as u32).to_le_bytes());
        let (scales, zps): (Vec<f32>, Vec<i32>) = match &self.qparams {
            WeightQParams::PerTensor { scale, zero_point } => (vec![*scale], vec![*zero_point]),
            WeightQParams::PerChannel {
                scales,
                zero_points,
            } => (scales.clone(), zero_points.clone()),
        };
        out.push(self.qparams.is_per_channel() as u8);
        scales
            .iter()
            .for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
        zps.iter()
            .for_each(|z| out.extend_from_slice(&z.to_le_bytes()));
        out.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.data);
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parses and validates serialized packed weights. The named kernel must be
    /// available on this CPU ([`Error::BackendUnavailable`] otherwise; unpack on a
    /// machine that has it, or use `repack`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let corrupt = Error::CorruptPacked;
        if bytes.len() < 8 {
            return Err(corrupt("too short"));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 8);
        if fnv1a(body).to_le_bytes() != tail {
            return Err(corrupt("checksum mismatch"));
        }
        let mut r = Reader(body);
        if r.take(4)? != MAGIC {
            return Err(corrupt("bad magic"));
        }
        if r.u32()? != 1 {
            return Err(corrupt("unsupported version"));
        }
        let name_len = r.u32()? as usize;
        let name = std::str::from_utf8(r.take(name_len)?).map_err(|_| corrupt("kernel name"))?;
        let n = usize::try_from(r.u64()?).map_err(|_| corrupt("n"))?;
        let k = usize::try_from(r.u64()?).map_err(|_| corrupt("k"))?;
        check_layer_dims(n, k).map_err(|_| corrupt("dimensions out of range"))?;
        // The packing holds at least n bytes; a larger n would overflow `packed_len`.
        if n > bytes.len() {
            return Err(corrupt("dimensions out of range"));
        }
        let nr = r.u32()? as usize;
        let kr = r.u32()? as usize;
        let per_channel = match r.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return Err(corrupt("per_channel flag")),
        };
        let count = if per_channel { n } else { 1 };
        if count > r.0.len() / 8 {
            return Err(corrupt("truncated qparams"));
        }
        let scales = (0..count)
            .map(|_| r.u32().map(f32::from_bits))
            .collect::<Result<Vec<_>>>()?;
        let zps = (0..count)
            .map(|_| r.u32().map(|v| v as i32))
            .collect::<Result<Vec<_>>>()?;
        let qparams = if per_channel {
            WeightQParams::PerChannel {
                scales,
                zero_points: zps,
            }
        } else {
            WeightQParams::PerTensor {
                scale: scales[0],
                zero_point: zps[0],
            }
        };
        qparams
            .validate(n)
            .map_err(|_| corrupt("qparams out of range"))?;
        let engine = if name == "reference" {
            Engine::Reference
        } else {
            let desc = crate::backend::compiled_kernels()
                .find(|d| d.name == name)
                .ok_or(corrupt("unknown kernel name"))?;
            let backend: Backend = desc.backend.parse()?;
            match resolve(backend)? {
                e @ Engine::Kernel(d) if d.name == name => e,
                _ => return Err(Error::BackendUnavailable(name.to_string())),
            }
        };
        let layout = match engine {
            Engine::Reference => PackedLayout::ROW_MAJOR,
            Engine::Kernel(d) => d.layout,
        };
        if layout != (PackedLayout { nr, kr }) {
            return Err(corrupt("layout does not match the kernel"));
        }
        let len = usize::try_from(r.u64()?).map_err(|_| corrupt("length"))?;
        if len != layout.packed_len(n, k) {
            return Err(corrupt("packed length does not match the shape"));
        }
        let data = r.take(len)?;
        if !r.0.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        let weight = pack::unpack(data, n, k, layout);
        // Padding must be zero: repacking must reproduce the bytes exactly.
        let w = QuantizedWeight {
            data: weight,
            n,
            k,
            qparams,
        };
        let packed = PackedWeights::for_engine(&w, engine);
        if packed.data.as_slice() != data {
            return Err(corrupt("non-zero padding"));
        }
        Ok(packed)
    }
}

const MAGIC: &[u8; 4] = b"QLPW";

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if len > self.0.len() {
            return Err(Error::CorruptPacked("truncated"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}
