//! The differential target's case: every parameter of a layer call chosen by the fuzzer
//! (through `arbitrary`), the data bytes taken from the rest of the input and, when that
//! runs out, from a fuzzer-chosen seed; then the API on one available backend against
//! the reference oracle, static (bytes) and dynamic (f32 bits). Every dynamic case runs
//! twice: per-tensor input quantization against `dynamic_linear` and per-row
//! (`InputQuantization::PerRow`) against `dynamic_linear_per_row`; the mode is not an
//! `Input` field, so the checked-in seeds decode to the same cases as before.
//!
//! Invalid parameters (zero dimensions, K over the limit, scales that are 0, negative,
//! NaN or infinite, zero points out of range, non-finite bias or input) are part of the
//! space: the API must then return `Err` (never panic) exactly when the reference does.
//! Output views are strided inside a larger buffer: every element outside the view must
//! keep its canary value.

use arbitrary::Arbitrary;
use qlinear::{
    ActQParams, Backend, DynamicLinear, InputQuantization, Linear, MatMut, MatRef,
    PackedWeights, Profile,
    QuantizedWeight, Result, WeightQParams, K_LIMIT,
};
use qlinear_reference::testkit::Rng;

/// Cap on `max(m, 1) * k * n` so that one execution stays in the milliseconds (the
/// reference is scalar, and the targets run under AddressSanitizer).
pub const MAX_MACS: usize = 2_000_000;

/// What the fuzzer chooses. The field order is the order `arbitrary` reads the input;
/// `data` takes the rest of it.
#[derive(Arbitrary, Debug, Clone)]
pub struct Input {
    /// m, k, n.
    pub shape: Shape,
    /// Input (activation) qparams of the static layer.
    pub x: ActSpec,
    /// Output qparams of the static layer.
    pub y: OutSpec,
    /// Weight qparams.
    pub w: WeightSpec,
    /// Bias, if any.
    pub bias: Option<BiasSpec>,
    /// The dynamic layer's f32 input.
    pub dyn_input: DynSpec,
    /// How the u8 activations are filled.
    pub a_fill: Fill,
    /// How the i8 weights are filled.
    pub w_fill: Fill,
    /// Fused ReLU.
    pub relu: bool,
    /// Profile::Qnnpack instead of Profile::Fbgemm.
    pub qnnpack: bool,
    /// The dynamic layer's reduce_range.
    pub reduce_range: bool,
    /// Static, dynamic or both.
    pub mode: Mode,
    /// Index into `available_backends()` (modulo its length).
    pub backend: u8,
    /// Threads: `1 + threads % 4`.
    pub threads: u8,
    /// Set the threads on the builder and call `forward`, rather than `forward_with_threads`.
    pub threads_via_builder: bool,
    /// Build from `PackedWeights::new` + `from_packed` rather than from the weight.
    pub via_packed: bool,
    /// Build the static layer with placeholder output qparams, then
    /// `set_output_qparams` the real ones (the epilogue is refolded).
    pub late_output: bool,
    /// Input row padding (stride - k).
    pub a_pad: u8,
    /// Output row padding (stride - n).
    pub out_pad: u8,
    /// Elements of the output buffer after the view's last row (0..=8).
    pub out_tail: u8,
    /// Seed of the generator that continues the data once `data` runs out.
    pub seed: u64,
    /// Data bytes (activations, weights, bias, dynamic input, in that order).
    pub data: Vec<u8>,
}

/// The layer shape.
#[derive(Arbitrary, Debug, Clone)]
pub struct Shape {
    /// `m % 41`, or 64..=164 (enough rows for the driver to split M) from 205 up.
    pub m: u8,
    /// in_features.
    pub k: KSpec,
    /// `n % 151`.
    pub n: u8,
}

/// in_features.
#[derive(Arbitrary, Debug, Clone)]
pub enum KSpec {
    /// `v % 41` (0 is invalid).
    Tiny(u8),
    /// `1 + v % 700`.
    Small(u16),
    /// A multiple of 16 up to 704.
    Aligned(u8),
    /// `K_LIMIT - 2 ..= K_LIMIT + 1` (the last one is invalid).
    NearLimit(u8),
}

/// A scale: typical, wide, subnormal, tiny, huge, special or raw bits.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct ScaleSpec {
    /// Which kind (`sel % 16`).
    pub sel: u8,
    /// Where in that kind's range.
    pub bits: u32,
}

/// Scales of note: the extremes of f32 and the values torch special-cases.
const SPECIAL_SCALES: [f32; 12] = [
    f32::MAX,
    f32::MIN_POSITIVE,
    1e-45,
    1.0,
    0.5,
    6.1e-5,
    1e-10,
    3.4e38,
    1.0e-38,
    2.0e-45,
    65_536.0,
    1.0 / 255.0,
];

/// Invalid scales.
const BAD_SCALES: [f32; 7] = [
    0.0,
    -0.0,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    -1.0,
    -1e-45,
];

/// f32 values of note for biases and dynamic inputs.
const SPECIAL_F32: [f32; 20] = [
    0.0,
    -0.0,
    1e-45,
    -1e-45,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    f32::MAX,
    f32::MIN,
    1.0,
    -1.0,
    0.5,
    -0.5,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    1e-30,
    -1e30,
    2_147_483_520.0,
    -2_147_483_648.0,
    3e9,
];

fn log_uniform(bits: u32, lo: f32, hi: f32) -> f32 {
    let t = bits as f64 / u32::MAX as f64;
    ((lo as f64).ln() + ((hi as f64).ln() - (lo as f64).ln()) * t).exp() as f32
}

impl ScaleSpec {
    /// The scale (possibly invalid).
    pub fn value(&self) -> f32 {
        let b = self.bits;
        match self.sel % 16 {
            0..=8 => log_uniform(b, 1e-5, 1.0),
            9 => log_uniform(b, 1e-30, 1e30),
            // Subnormal, 1e-45 (bits 1) included.
            10 => f32::from_bits(1 + b % 0x007f_ffff),
            // Tiny normal: 2^-126 .. 2^-94.
            11 => f32::from_bits(0x0080_0000 + b % 0x1000_0000),
            // Huge: ~1.7e29 ..= f32::MAX.
            12 => f32::from_bits(0x7000_0000 + b % 0x0f80_0000),
            13 => SPECIAL_SCALES[b as usize % SPECIAL_SCALES.len()],
            14 => f32::from_bits(b),
            _ => BAD_SCALES[b as usize % BAD_SCALES.len()],
        }
    }
}

/// A u8 zero point (activations and outputs): in range, or out of it.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct ActZp {
    /// Which kind (`sel % 16`).
    pub sel: u8,
    /// The in-range value.
    pub v: u8,
    /// The raw (likely invalid) value.
    pub raw: i32,
}

impl ActZp {
    /// The zero point (possibly invalid).
    pub fn value(&self) -> i32 {
        match self.sel % 16 {
            0..=13 => self.v as i32,
            14 => self.raw,
            _ => [-1, 256][(self.raw & 1) as usize],
        }
    }
}

/// An i8 zero point (weights): the full range, its ends, or a raw (likely invalid) value.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct WZp {
    /// Which kind (`sel % 32`).
    pub sel: u8,
    /// The in-range value.
    pub v: i8,
    /// The raw value.
    pub raw: i32,
}

impl WZp {
    /// The zero point (possibly invalid).
    pub fn value(&self) -> i32 {
        match self.sel % 32 {
            0..=27 => self.v as i32,
            28 => 0,
            29 => -128,
            30 => 127,
            _ => self.raw,
        }
    }
}

/// Static input qparams.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct ActSpec {
    /// Scale.
    pub scale: ScaleSpec,
    /// Zero point.
    pub zp: ActZp,
}

/// Static output qparams.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct OutSpec {
    /// `spread % 4 != 0`: a scale that spreads the outputs over the u8 range, times
    /// `2^((spread >> 2) % 8 - 4)`; else `scale`.
    pub spread: u8,
    /// The scale when not spread.
    pub scale: ScaleSpec,
    /// Zero point.
    pub zp: ActZp,
}

/// Weight qparams.
#[derive(Arbitrary, Debug, Clone)]
pub struct WeightSpec {
    /// Per channel instead of per tensor.
    pub per_channel: bool,
    /// The per-tensor scale, or the base of the per-channel ones.
    pub scale: ScaleSpec,
    /// The per-tensor zero point, or the base of the per-channel ones.
    pub zp: WZp,
    /// Channels past `scales`: base (0), base times 2^[-3, 3] (1), typical (2).
    pub fill_scales: u8,
    /// Channels past `zps`: base (0), 0 (1), full range (2), -128 / 127 (3).
    pub fill_zps: u8,
    /// The first channels' scales.
    pub scales: Vec<ScaleSpec>,
    /// The first channels' zero points.
    pub zps: Vec<WZp>,
}

/// The bias.
#[derive(Arbitrary, Debug, Clone)]
pub struct BiasSpec {
    /// Typical (0), bytes times `amp` (1), raw f32 bits (2), one special value (3).
    pub kind: u8,
    /// Amplitude (kind 1), or which special value (kind 3, `amp.sel`).
    pub amp: ScaleSpec,
    /// `(index % n, special value)` overrides.
    pub specials: Vec<(u16, u8)>,
}

/// The dynamic layer's f32 input (padding between rows included).
#[derive(Arbitrary, Debug, Clone)]
pub struct DynSpec {
    /// Signed bytes times `amp` (0), random in `[-amp, amp]` (1), raw f32 bits (2), one
    /// special value (3), non-negative bytes times `amp` (4).
    pub kind: u8,
    /// Amplitude, or which special value (kind 3, `amp.sel`).
    pub amp: ScaleSpec,
    /// `(index % len, special value)` overrides.
    pub specials: Vec<(u16, u8)>,
}

/// How a data buffer is filled.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Fill {
    /// From the data (0, 1), the constant `v` (2), extremes (3).
    pub sel: u8,
    /// The constant.
    pub v: u8,
}

/// Which layers run.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Static and dynamic.
    Both,
    /// Static only.
    Static,
    /// Dynamic only.
    Dynamic,
}

/// The input's data bytes, then a seeded generator.
struct Stream<'a> {
    data: &'a [u8],
    pos: usize,
    rng: Rng,
}

impl Stream<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => self.rng.next_u64() as u8,
        }
    }
    fn f32_bits(&mut self) -> f32 {
        f32::from_bits(u32::from_le_bytes([
            self.u8(),
            self.u8(),
            self.u8(),
            self.u8(),
        ]))
    }
}

fn pad(v: u8) -> usize {
    match v {
        0..=127 => 0,
        128..=239 => v as usize % 9,
        _ => v as usize - 200,
    }
}

/// Elements of an `m x cols` view with row stride `stride` (plus `tail`).
fn view_len(m: usize, cols: usize, stride: usize, tail: usize) -> usize {
    if m == 0 {
        tail
    } else {
        (m - 1) * stride + cols + tail
    }
}

/// The canary in output bytes outside the view.
pub const CANARY_U8: u8 = 0xa5;
/// The canary in f32 outputs outside the view (a NaN with a payload no kernel makes).
pub const CANARY_F32_BITS: u32 = 0x7fa5_a5a5;

/// A concrete case, derived deterministically from an [`Input`].
#[derive(Debug, Clone)]
pub struct Case {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// u8 activations, `m` rows of stride `a_stride` (the last row `k` bytes).
    pub a: Vec<u8>,
    /// f32 input of the dynamic layer, same shape and stride as `a`.
    pub xf: Vec<f32>,
    pub a_stride: usize,
    pub x: ActQParams,
    pub y: ActQParams,
    /// `n x k` weight.
    pub w: Vec<i8>,
    pub wq: WeightQParams,
    pub bias: Option<Vec<f32>>,
    pub relu: bool,
    pub profile: Profile,
    pub reduce_range: bool,
    pub run_static: bool,
    pub run_dynamic: bool,
    pub backend: Backend,
    pub threads: usize,
    pub threads_via_builder: bool,
    pub via_packed: bool,
    pub late_output: bool,
    pub out_stride: usize,
    pub out_tail: usize,
}

impl Case {
    /// The case an input describes (on this machine's backends).
    pub fn new(input: &Input) -> Case {
        let mut m = match input.shape.m {
            v @ 0..=204 => v as usize % 41,
            v => 64 + (v as usize - 205) * 2,
        };
        let k = match input.shape.k {
            KSpec::Tiny(v) => v as usize % 41,
            KSpec::Small(v) => 1 + v as usize % 700,
            KSpec::Aligned(v) => 16 * (1 + v as usize % 44),
            KSpec::NearLimit(v) => K_LIMIT - 2 + v as usize % 4,
        };
        let mut n = input.shape.n as usize % 151;
        if m.max(1) * k * n > MAX_MACS {
            n = (MAX_MACS / (m.max(1) * k)).max(1);
            if m.max(1) * k * n > MAX_MACS {
                m = MAX_MACS / (k * n);
            }
        }
        let mut s = Stream {
            data: &input.data,
            pos: 0,
            rng: Rng::new(input.seed),
        };

        let a_stride = k + pad(input.a_pad);
        let a_len = view_len(m, k, a_stride, 0);
        let a: Vec<u8> = match input.a_fill.sel % 4 {
            2 => vec![input.a_fill.v; a_len],
            3 => (0..a_len)
                .map(|_| if s.u8().is_multiple_of(8) { 0 } else { 255 })
                .collect(),
            _ => (0..a_len).map(|_| s.u8()).collect(),
        };

        let w: Vec<i8> = match input.w_fill.sel % 4 {
            2 => vec![input.w_fill.v as i8; n * k],
            3 => {
                // Whole rows of -128 or 127: the largest |raw| the contract allows.
                let mut w = Vec::with_capacity(n * k);
                for _ in 0..n {
                    let v = if s.u8() & 1 == 0 { -128 } else { 127 };
                    w.extend(std::iter::repeat_n(v, k));
                }
                w
            }
            _ => (0..n * k).map(|_| s.u8() as i8).collect(),
        };

        let ws = &input.w;
        let wq = if ws.per_channel {
            let base = ws.scale.value();
            let scales = (0..n)
                .map(|j| match ws.scales.get(j) {
                    Some(sp) => sp.value(),
                    None => match ws.fill_scales % 3 {
                        0 => base,
                        1 => base * s.rng.log_uniform(0.125, 8.0),
                        _ => s.rng.log_uniform(1e-4, 1e-1),
                    },
                })
                .collect();
            let base = ws.zp.value();
            let zero_points = (0..n)
                .map(|j| match ws.zps.get(j) {
                    Some(z) => z.value(),
                    None => match ws.fill_zps % 4 {
                        0 => base,
                        1 => 0,
                        2 => s.rng.range_i32(-128, 127),
                        _ => [-128, 127][s.rng.coin() as usize],
                    },
                })
                .collect();
            WeightQParams::PerChannel {
                scales,
                zero_points,
            }
        } else {
            WeightQParams::PerTensor {
                scale: ws.scale.value(),
                zero_point: ws.zp.value(),
            }
        };
        let w_scale0 = if n > 0 || !wq.is_per_channel() {
            wq.scale(0)
        } else {
            1.0
        };

        let x = ActQParams {
            scale: input.x.scale.value(),
            zero_point: input.x.zp.value(),
        };
        // The scale of a typical |raw| (as in testkit::StaticCase::random).
        let spread = 5476.0 * (k.max(1) as f32).sqrt() * x.scale * w_scale0;
        let y = ActQParams {
            scale: if !input.y.spread.is_multiple_of(4) {
                spread / 40.0 * 2f32.powi(((input.y.spread >> 2) % 8) as i32 - 4)
            } else {
                input.y.scale.value()
            },
            zero_point: input.y.zp.value(),
        };

        let bias = input.bias.as_ref().map(|b| {
            let mut v: Vec<f32> = match b.kind % 4 {
                0 => {
                    let amp = spread * 0.02 * s.rng.log_uniform(0.1, 10.0);
                    s.rng.f32s(n, amp)
                }
                1 => {
                    let amp = b.amp.value();
                    (0..n).map(|_| (s.u8() as f32 - 128.0) * amp).collect()
                }
                2 => (0..n).map(|_| s.f32_bits()).collect(),
                _ => vec![SPECIAL_F32[b.amp.sel as usize % SPECIAL_F32.len()]; n],
            };
            if n > 0 {
                for &(i, sel) in &b.specials {
                    v[i as usize % n] = SPECIAL_F32[sel as usize % SPECIAL_F32.len()];
                }
            }
            v
        });

        let d = &input.dyn_input;
        let mut xf: Vec<f32> = match d.kind % 5 {
            0 => {
                let amp = d.amp.value();
                (0..a_len).map(|_| (s.u8() as f32 - 128.0) * amp).collect()
            }
            1 => s.rng.f32s(a_len, d.amp.value()),
            2 => (0..a_len).map(|_| s.f32_bits()).collect(),
            3 => vec![SPECIAL_F32[d.amp.sel as usize % SPECIAL_F32.len()]; a_len],
            _ => {
                let amp = d.amp.value();
                (0..a_len).map(|_| s.u8() as f32 * amp).collect()
            }
        };
        if a_len > 0 {
            for &(i, sel) in &d.specials {
                xf[i as usize % a_len] = SPECIAL_F32[sel as usize % SPECIAL_F32.len()];
            }
        }

        let backends = crate::backends();
        Case {
            m,
            k,
            n,
            a,
            xf,
            a_stride,
            x,
            y,
            w,
            wq,
            bias,
            relu: input.relu,
            profile: if input.qnnpack {
                Profile::Qnnpack
            } else {
                Profile::Fbgemm
            },
            reduce_range: input.reduce_range,
            run_static: input.mode != Mode::Dynamic,
            run_dynamic: input.mode != Mode::Static,
            backend: backends[input.backend as usize % backends.len()],
            threads: 1 + input.threads as usize % 4,
            threads_via_builder: input.threads_via_builder,
            via_packed: input.via_packed,
            late_output: input.late_output,
            out_stride: n + pad(input.out_pad),
            out_tail: input.out_tail as usize % 9,
        }
    }

    fn a_view(&self) -> MatRef<'_, u8> {
        MatRef::new(&self.a, self.m, self.k, self.a_stride).expect("the harness sized a")
    }

    fn xf_view(&self) -> MatRef<'_, f32> {
        MatRef::new(&self.xf, self.m, self.k, self.a_stride).expect("the harness sized xf")
    }

    fn out_len(&self) -> usize {
        view_len(self.m, self.n, self.out_stride, self.out_tail)
    }

    /// The reference's static result (None when the mode skips it).
    pub fn reference_static(&self) -> Option<Result<Vec<u8>>> {
        self.run_static.then(|| {
            qlinear_reference::static_linear(
                &self.a_view(),
                self.x,
                &self.w,
                self.n,
                &self.wq,
                self.bias.as_deref(),
                self.y,
                self.relu,
                self.profile,
            )
        })
    }

    /// The reference's dynamic result (None when the mode skips it).
    pub fn reference_dynamic(&self) -> Option<Result<Vec<f32>>> {
        self.reference_dynamic_mode(InputQuantization::PerTensor)
    }

    /// The reference's dynamic result with the given input quantization
    /// (`dynamic_linear` or `dynamic_linear_per_row`; None when the mode skips it).
    pub fn reference_dynamic_mode(&self, mode: InputQuantization) -> Option<Result<Vec<f32>>> {
        let literal = match mode {
            InputQuantization::PerTensor => qlinear_reference::dynamic_linear,
            InputQuantization::PerRow => qlinear_reference::dynamic_linear_per_row,
        };
        self.run_dynamic.then(|| {
            literal(
                &self.xf_view(),
                &self.w,
                self.n,
                &self.wq,
                self.bias.as_deref(),
                self.reduce_range,
                self.relu,
                self.profile,
            )
        })
    }

    fn packed(&self) -> Result<(QuantizedWeight, Option<PackedWeights>)> {
        let qw = QuantizedWeight::new(self.w.clone(), self.n, self.k, self.wq.clone())?;
        let p = if self.via_packed {
            Some(PackedWeights::new(&qw, self.backend)?)
        } else {
            None
        };
        Ok((qw, p))
    }

    /// The API's static output buffer (the view and the canary around it).
    pub fn api_static(&self) -> Result<Vec<u8>> {
        let (qw, p) = self.packed()?;
        let y0 = if self.late_output {
            ActQParams {
                scale: 1.0,
                zero_point: 0,
            }
        } else {
            self.y
        };
        let b = match p {
            Some(p) => Linear::from_packed(p, self.x, y0),
            None => Linear::builder(qw, self.x, y0).backend(self.backend),
        };
        let mut b = b
            .maybe_bias(self.bias.clone())
            .relu(self.relu)
            .profile(self.profile);
        if self.threads_via_builder {
            b = b.threads(self.threads);
        }
        let mut layer = b.build()?;
        if self.late_output {
            layer.set_output_qparams(self.y)?;
            assert_eq!(layer.output_qparams(), self.y, "set_output_qparams");
        }
        assert_eq!(layer.packed().backend(), self.backend, "layer backend");
        let mut buf = vec![CANARY_U8; self.out_len()];
        let out = MatMut::new(&mut buf, self.m, self.n, self.out_stride)
            .expect("the harness sized the output");
        if self.threads_via_builder {
            layer.forward(self.a_view(), out)?;
        } else {
            layer.forward_with_threads(self.a_view(), out, self.threads)?;
        }
        Ok(buf)
    }

    /// The API's dynamic output buffer (the view and the canary around it).
    pub fn api_dynamic(&self) -> Result<Vec<f32>> {
        self.api_dynamic_mode(InputQuantization::PerTensor)
    }

    /// [`Case::api_dynamic`] with the given input quantization.
    pub fn api_dynamic_mode(&self, mode: InputQuantization) -> Result<Vec<f32>> {
        let (qw, p) = self.packed()?;
        let b = match p {
            Some(p) => DynamicLinear::from_packed(p),
            None => DynamicLinear::builder(qw).backend(self.backend),
        };
        let mut b = b
            .maybe_bias(self.bias.clone())
            .relu(self.relu)
            .profile(self.profile)
            .reduce_range(self.reduce_range)
            .input_quantization(mode);
        if self.threads_via_builder {
            b = b.threads(self.threads);
        }
        let layer = b.build()?;
        assert_eq!(layer.packed().backend(), self.backend, "layer backend");
        assert_eq!(layer.input_quantization(), mode, "layer input quantization");
        let mut buf = vec![f32::from_bits(CANARY_F32_BITS); self.out_len()];
        let out = MatMut::new(&mut buf, self.m, self.n, self.out_stride)
            .expect("the harness sized the output");
        if self.threads_via_builder {
            layer.forward(self.xf_view(), out)?;
        } else {
            layer.forward_with_threads(self.xf_view(), out, self.threads)?;
        }
        Ok(buf)
    }

    /// A one-line description for failure messages.
    pub fn describe(&self) -> String {
        let wq = match &self.wq {
            WeightQParams::PerTensor { scale, zero_point } => {
                format!("per-tensor scale {scale:e} zp {zero_point}")
            }
            WeightQParams::PerChannel {
                scales,
                zero_points,
            } => format!(
                "per-channel scales {} zps {:?}{}",
                short(scales),
                &zero_points[..zero_points.len().min(4)],
                if zero_points.len() > 4 { ".." } else { "" },
            ),
        };
        format!(
            "backend {} m {} k {} n {} a_stride {} out_stride {} tail {} threads {}{}{}{} {:?} relu {} reduce_range {} x {:?} y {:?} w {} bias {}",
            self.backend,
            self.m,
            self.k,
            self.n,
            self.a_stride,
            self.out_stride,
            self.out_tail,
            self.threads,
            if self.threads_via_builder { " (builder)" } else { "" },
            if self.via_packed { " from_packed" } else { "" },
            if self.late_output { " set_output_qparams" } else { "" },
            self.profile,
            self.relu,
            self.reduce_range,
            self.x,
            self.y,
            wq,
            match &self.bias {
                None => "none".to_string(),
                Some(b) => short(b),
            }
        )
    }

    /// Runs the API and the reference and panics on any difference: Ok vs Err, an output
    /// byte or f32 bit inside the view, or a canary outside it.
    pub fn check(&self) {
        if let Some(want) = self.reference_static() {
            let got = self.api_static();
            match (got, want) {
                (Ok(buf), Ok(want)) => {
                    self.compare(&buf, &want, |v| *v as u32, CANARY_U8 as u32, "static")
                }
                (Err(_), Err(_)) => {}
                (got, want) => panic!(
                    "static: api {:?} but reference {:?}\ncase: {}",
                    got.map(|_| "Ok"),
                    want.map(|_| "Ok"),
                    self.describe()
                ),
            }
        }
        // Every dynamic case runs in both input quantization modes (the `Input` stays
        // as it was, so the seed corpus decodes to the same cases).
        for (mode, what) in [
            (InputQuantization::PerTensor, "dynamic"),
            (InputQuantization::PerRow, "dynamic per-row"),
        ] {
            let Some(want) = self.reference_dynamic_mode(mode) else {
                continue;
            };
            let got = self.api_dynamic_mode(mode);
            match (got, want) {
                (Ok(buf), Ok(want)) => {
                    self.compare(&buf, &want, |v| v.to_bits(), CANARY_F32_BITS, what)
                }
                (Err(_), Err(_)) => {}
                (got, want) => panic!(
                    "{what}: api {:?} but reference {:?}\ncase: {}",
                    got.map(|_| "Ok"),
                    want.map(|_| "Ok"),
                    self.describe()
                ),
            }
        }
    }

    fn compare<T: std::fmt::Debug>(
        &self,
        buf: &[T],
        want: &[T],
        bits: impl Fn(&T) -> u32,
        canary: u32,
        what: &str,
    ) {
        let (m, n, os) = (self.m, self.n, self.out_stride);
        assert_eq!(want.len(), m * n, "reference output length");
        for i in 0..m {
            for j in 0..n {
                let (g, r) = (&buf[i * os + j], &want[i * n + j]);
                if bits(g) != bits(r) {
                    panic!(
                        "{what}: output ({i}, {j}) is {g:?} ({:#x}), the reference gives {r:?} ({:#x})\ncase: {}",
                        bits(g),
                        bits(r),
                        self.describe()
                    );
                }
            }
        }
        for (idx, v) in buf.iter().enumerate() {
            let inside = idx / os < m && idx % os < n;
            if !inside && bits(v) != canary {
                panic!(
                    "{what}: element {idx} (row {}, column {}) outside the output view was overwritten with {v:?}\ncase: {}",
                    idx / os,
                    idx % os,
                    self.describe()
                );
            }
        }
    }
}

/// The first few values of a list, in `{:e}` form.
fn short(v: &[f32]) -> String {
    let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:e}")).collect();
    format!(
        "[{}{}]",
        head.join(", "),
        if v.len() > 4 { ", .." } else { "" }
    )
}

/// The fuzz target's body.
pub fn run(input: &Input) {
    Case::new(input).check();
}
