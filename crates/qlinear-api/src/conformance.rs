//! Reader and runner for conformance vectors (`qlinear-conformance/1`, see
//! `conformance/FORMAT.md`): cases produced by a real PyTorch, replayed on any backend
//! and compared bit for bit. The `qlinear conformance` command and the test suite both
//! use this module, so what CI checks is what a user can run on their own files.

use serde_json::Value;

use crate::{
    ActQParams, Backend, DynamicLinear, Linear, MatRef, Observer, Profile, QuantizedWeight,
    WeightQParams,
};

/// A malformed conformance file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("conformance file: {0}")]
pub struct FormatError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError(msg.into()))
}

/// One case of a file.
#[derive(Debug, Clone)]
pub enum Case {
    /// `quantized.linear[_relu]`, u8 -> u8.
    Static(LinearCase<ActQParams, u8>),
    /// `quantized.linear[_relu]_dynamic`, f32 -> f32.
    Dynamic(LinearCase<bool, f32>),
    /// Observer + quantize of a float weight.
    ObserveWeight(ObserveCase),
}

impl Case {
    /// The case's unique id.
    pub fn id(&self) -> &str {
        match self {
            Case::Static(c) => &c.id,
            Case::Dynamic(c) => &c.id,
            Case::ObserveWeight(c) => &c.id,
        }
    }
}

/// A static or dynamic linear case. `P` is the extra parameter (output qparams for
/// static, `reduce_range` for dynamic); `T` the output element type.
#[derive(Debug, Clone)]
pub struct LinearCase<P, T> {
    /// Unique id.
    pub id: String,
    /// Arithmetic profile (`engine`).
    pub profile: Profile,
    /// Rows.
    pub m: usize,
    /// Fused ReLU.
    pub relu: bool,
    /// Input qparams (static only).
    pub input_qparams: Option<ActQParams>,
    /// Static input (u8) or dynamic input (f32), `m x k` dense.
    pub input: Input,
    /// Weight.
    pub weight: QuantizedWeight,
    /// Bias.
    pub bias: Option<Vec<f32>>,
    /// Output qparams (static) or reduce_range (dynamic).
    pub param: P,
    /// Expected `m x n` output.
    pub expected: Vec<T>,
}

/// Input of a linear case.
#[derive(Debug, Clone)]
pub enum Input {
    /// u8 activations.
    U8(Vec<u8>),
    /// f32 activations.
    F32(Vec<f32>),
}

/// An `observe_weight` case.
#[derive(Debug, Clone)]
pub struct ObserveCase {
    /// Unique id.
    pub id: String,
    /// The observer.
    pub observer: Observer,
    /// `[qmin, qmax]` the observer must use.
    pub quant_range: (i32, i32),
    /// Shape.
    pub n: usize,
    /// Shape.
    pub k: usize,
    /// Float weight.
    pub input: Vec<f32>,
    /// Expected qparams and data.
    pub expected: QuantizedWeight,
}

fn hex(v: &Value, what: &str) -> Result<Vec<u8>, FormatError> {
    let s = match v.as_str() {
        Some(s) => s,
        None => return err(format!("{what}: expected a hex string")),
    };
    if s.len() % 2 != 0 {
        return err(format!("{what}: odd hex length"));
    }
    // `from_str_radix` alone would accept a sign ("+f"), which is not hex.
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return err(format!("{what}: bad hex"));
    }
    (0..s.len() / 2)
        .map(|i| {
            u8::from_str_radix(s.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
                .or_else(|_| err(format!("{what}: bad hex")))
        })
        .collect()
}

fn hex_len<T>(
    v: &Value,
    what: &str,
    count: usize,
    conv: fn(&[u8]) -> T,
    size: usize,
) -> Result<Vec<T>, FormatError> {
    let bytes = hex(v, what)?;
    if Some(bytes.len()) != count.checked_mul(size) {
        return err(format!(
            "{what}: expected {count} elements, got {} bytes",
            bytes.len()
        ));
    }
    Ok(bytes.chunks_exact(size).map(conv).collect())
}

/// `a * b`, or an error when the sizes in a file overflow.
fn product(a: usize, b: usize) -> Result<usize, FormatError> {
    a.checked_mul(b)
        .ok_or_else(|| FormatError(format!("sizes {a} x {b} overflow")))
}

fn f32_le(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, FormatError> {
    v.get(key)
        .ok_or_else(|| FormatError(format!("missing key `{key}`")))
}

fn usize_of(v: &Value, key: &str) -> Result<usize, FormatError> {
    field(v, key)?
        .as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| FormatError(format!("`{key}` must be a non-negative integer")))
}

fn bool_of(v: &Value, key: &str) -> Result<bool, FormatError> {
    field(v, key)?
        .as_bool()
        .ok_or_else(|| FormatError(format!("`{key}` must be a boolean")))
}

fn f32_of(v: &Value, key: &str) -> Result<f32, FormatError> {
    field(v, key)?
        .as_f64()
        .map(|x| x as f32)
        .ok_or_else(|| FormatError(format!("`{key}` must be a number")))
}

fn i32_of(v: &Value, key: &str) -> Result<i32, FormatError> {
    field(v, key)?
        .as_i64()
        .and_then(|x| i32::try_from(x).ok())
        .ok_or_else(|| FormatError(format!("`{key}` must be an integer")))
}

fn f32_list(v: &Value, key: &str) -> Result<Vec<f32>, FormatError> {
    field(v, key)?
        .as_array()
        .ok_or_else(|| FormatError(format!("`{key}` must be a list")))?
        .iter()
        .map(|x| x.as_f64().map(|f| f as f32))
        .collect::<Option<_>>()
        .ok_or_else(|| FormatError(format!("`{key}` must hold numbers")))
}

fn i32_list(v: &Value, key: &str) -> Result<Vec<i32>, FormatError> {
    field(v, key)?
        .as_array()
        .ok_or_else(|| FormatError(format!("`{key}` must be a list")))?
        .iter()
        .map(|x| x.as_i64().and_then(|i| i32::try_from(i).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| FormatError(format!("`{key}` must hold integers")))
}

fn qparams(
    scales: Vec<f32>,
    zps: Vec<i32>,
    per_channel: bool,
    n: usize,
) -> Result<WeightQParams, FormatError> {
    let want = if per_channel { n } else { 1 };
    if scales.len() != want || zps.len() != want {
        return err(format!("expected {want} weight scales and zero points"));
    }
    Ok(if per_channel {
        WeightQParams::PerChannel {
            scales,
            zero_points: zps,
        }
    } else {
        WeightQParams::PerTensor {
            scale: scales[0],
            zero_point: zps[0],
        }
    })
}

fn parse_case(c: &Value) -> Result<Case, FormatError> {
    let id = field(c, "id")?
        .as_str()
        .ok_or_else(|| FormatError("`id` must be a string".into()))?
        .to_string();
    let ctx = |e: FormatError| FormatError(format!("case {id}: {}", e.0));
    let kind = field(c, "kind").map_err(ctx)?.as_str().unwrap_or("");
    match kind {
        "static" | "dynamic" => parse_linear(c, &id, kind == "static").map_err(ctx),
        "observe_weight" => parse_observe(c, &id).map_err(ctx),
        other => Err(ctx(FormatError(format!("unknown kind `{other}`")))),
    }
}

fn parse_linear(c: &Value, id: &str, is_static: bool) -> Result<Case, FormatError> {
    let profile = match field(c, "engine")?.as_str() {
        Some("fbgemm") | Some("x86") => Profile::Fbgemm,
        Some("qnnpack") => Profile::Qnnpack,
        _ => return err("`engine` must be fbgemm or qnnpack"),
    };
    let (m, k, n) = (usize_of(c, "m")?, usize_of(c, "k")?, usize_of(c, "n")?);
    let (mk, nk, mn) = (product(m, k)?, product(n, k)?, product(m, n)?);
    let relu = bool_of(c, "relu")?;
    let w = field(c, "weight")?;
    let per_channel = bool_of(w, "per_channel")?;
    let wq = qparams(
        f32_list(w, "scales")?,
        i32_list(w, "zero_points")?,
        per_channel,
        n,
    )?;
    let wdata = hex_len(field(w, "data")?, "weight data", nk, |b| b[0] as i8, 1)?;
    let weight = QuantizedWeight::new(wdata, n, k, wq).map_err(|e| FormatError(e.to_string()))?;
    let bias = match field(c, "bias")? {
        Value::Null => None,
        b => Some(hex_len(b, "bias", n, f32_le, 4)?),
    };
    let input = field(c, "input")?;
    if is_static {
        let x = ActQParams {
            scale: f32_of(input, "scale")?,
            zero_point: i32_of(input, "zero_point")?,
        };
        let out = field(c, "output")?;
        let y = ActQParams {
            scale: f32_of(out, "scale")?,
            zero_point: i32_of(out, "zero_point")?,
        };
        Ok(Case::Static(LinearCase {
            id: id.to_string(),
            profile,
            m,
            relu,
            input_qparams: Some(x),
            input: Input::U8(hex_len(
                field(input, "data")?,
                "input data",
                mk,
                |b| b[0],
                1,
            )?),
            weight,
            bias,
            param: y,
            expected: hex_len(field(c, "expected")?, "expected", mn, |b| b[0], 1)?,
        }))
    } else {
        Ok(Case::Dynamic(LinearCase {
            id: id.to_string(),
            profile,
            m,
            relu,
            input_qparams: None,
            input: Input::F32(hex_len(field(input, "data")?, "input data", mk, f32_le, 4)?),
            weight,
            bias,
            param: bool_of(c, "reduce_range")?,
            expected: hex_len(field(c, "expected")?, "expected", mn, f32_le, 4)?,
        }))
    }
}

fn parse_observe(c: &Value, id: &str) -> Result<Case, FormatError> {
    let scheme = field(c, "scheme")?.as_str().unwrap_or("");
    let (per_channel, symmetric) = match scheme {
        "per_tensor_symmetric" => (false, true),
        "per_tensor_affine" => (false, false),
        "per_channel_symmetric" => (true, true),
        "per_channel_affine" => (true, false),
        other => return err(format!("unknown scheme `{other}`")),
    };
    let observer = Observer {
        per_channel,
        symmetric,
        reduce_range: bool_of(c, "reduce_range")?,
    };
    let range = i32_list(c, "quant_range")?;
    if range.len() != 2 {
        return err("`quant_range` must have two entries");
    }
    let (n, k) = (usize_of(c, "n")?, usize_of(c, "k")?);
    let nk = product(n, k)?;
    let input = hex_len(
        field(field(c, "input")?, "data")?,
        "input data",
        nk,
        f32_le,
        4,
    )?;
    let e = field(c, "expected")?;
    let wq = qparams(
        f32_list(e, "scales")?,
        i32_list(e, "zero_points")?,
        per_channel,
        n,
    )?;
    let data = hex_len(field(e, "data")?, "expected data", nk, |b| b[0] as i8, 1)?;
    let expected = QuantizedWeight::new(data, n, k, wq).map_err(|e| FormatError(e.to_string()))?;
    Ok(Case::ObserveWeight(ObserveCase {
        id: id.to_string(),
        observer,
        quant_range: (range[0], range[1]),
        n,
        k,
        input,
        expected,
    }))
}

/// Parses a whole file.
pub fn parse(text: &str) -> Result<Vec<Case>, FormatError> {
    let v: Value = serde_json::from_str(text).map_err(|e| FormatError(e.to_string()))?;
    match v.get("format").and_then(Value::as_str) {
        Some("qlinear-conformance/1") => {}
        other => return err(format!("unsupported format {other:?}")),
    }
    field(&v, "cases")?
        .as_array()
        .ok_or_else(|| FormatError("`cases` must be a list".into()))?
        .iter()
        .map(parse_case)
        .collect()
}

/// One failed case: its id and the first difference.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Case id.
    pub id: String,
    /// What differed first.
    pub detail: String,
}

/// The outcome of running cases on one backend.
#[derive(Debug, Clone)]
pub struct Report {
    /// The backend the cases ran on.
    pub backend: Backend,
    /// Cases that matched bit for bit.
    pub passed: usize,
    /// Cases that did not.
    pub failures: Vec<Failure>,
}

impl std::fmt::Display for Report {
    /// `<backend>: N passed, M failed`, then one line per failure.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} passed, {} failed",
            self.backend,
            self.passed,
            self.failures.len()
        )?;
        for fail in &self.failures {
            writeln!(f, "  FAIL {}: {}", fail.id, fail.detail)?;
        }
        Ok(())
    }
}

fn first_diff<T: PartialEq + std::fmt::Debug>(
    got: &[T],
    want: &[T],
    same: impl Fn(&T, &T) -> bool,
) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("length {} != expected {}", got.len(), want.len()));
    }
    got.iter()
        .zip(want)
        .position(|(a, b)| !same(a, b))
        .map(|i| format!("element {i}: got {:?}, expected {:?}", got[i], want[i]))
}

fn run_case(case: &Case, backend: Backend) -> Option<String> {
    let describe = |e: crate::Error| Some(format!("error: {e}"));
    match case {
        Case::Static(c) => {
            let Input::U8(x) = &c.input else {
                return Some("static case without u8 input".into());
            };
            let Some(xq) = c.input_qparams else {
                return Some("static case without input qparams".into());
            };
            let layer = Linear::builder(c.weight.clone(), xq, c.param)
                .maybe_bias(c.bias.clone())
                .relu(c.relu)
                .profile(c.profile)
                .backend(backend)
                .threads(1)
                .build();
            match layer.and_then(|l| l.forward_vec(x, c.m)) {
                Ok(y) => first_diff(&y, &c.expected, |a, b| a == b),
                Err(e) => describe(e),
            }
        }
        Case::Dynamic(c) => {
            let Input::F32(x) = &c.input else {
                return Some("dynamic case without f32 input".into());
            };
            let layer = DynamicLinear::builder(c.weight.clone())
                .maybe_bias(c.bias.clone())
                .relu(c.relu)
                .profile(c.profile)
                .reduce_range(c.param)
                .backend(backend)
                .threads(1)
                .build();
            match layer.and_then(|l| l.forward_vec(x, c.m)) {
                Ok(y) => first_diff(&y, &c.expected, |a, b| a.to_bits() == b.to_bits()),
                Err(e) => describe(e),
            }
        }
        Case::ObserveWeight(c) => {
            if c.observer.quant_range() != c.quant_range {
                return Some(format!(
                    "quant_range {:?}, expected {:?}",
                    c.observer.quant_range(),
                    c.quant_range
                ));
            }
            let got = match QuantizedWeight::from_float(&c.input, c.n, c.k, c.observer) {
                Ok(g) => g,
                Err(e) => return describe(e),
            };
            let (gq, wq) = (got.qparams(), c.expected.qparams());
            let scales = |q: &WeightQParams| (0..c.n).map(|j| q.scale(j)).collect::<Vec<_>>();
            let zps = |q: &WeightQParams| (0..c.n).map(|j| q.zero_point(j)).collect::<Vec<_>>();
            first_diff(&scales(gq), &scales(wq), |a, b| a.to_bits() == b.to_bits())
                .map(|d| format!("scales: {d}"))
                .or_else(|| {
                    first_diff(&zps(gq), &zps(wq), |a, b| a == b)
                        .map(|d| format!("zero points: {d}"))
                })
                .or_else(|| {
                    first_diff(got.data(), c.expected.data(), |a, b| a == b)
                        .map(|d| format!("data: {d}"))
                })
        }
    }
}

/// Runs every case on `backend` (single-threaded, so failures are reproducible).
pub fn run(cases: &[Case], backend: Backend) -> Report {
    let mut report = Report {
        backend,
        passed: 0,
        failures: Vec::new(),
    };
    for case in cases {
        match run_case(case, backend) {
            None => report.passed += 1,
            Some(detail) => report.failures.push(Failure {
                id: case.id().to_string(),
                detail,
            }),
        }
    }
    report
}

/// Convenience used by tests: `MatRef` over a case input (dense).
pub fn input_view(x: &[u8], m: usize, k: usize) -> crate::Result<MatRef<'_, u8>> {
    MatRef::dense(x, m, k)
}
