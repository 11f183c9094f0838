//! Reader and runner for conformance vectors (`qlinear-conformance/1`, see
//! `conformance/FORMAT.md`): cases produced by a real PyTorch, replayed on any backend
//! and compared bit for bit. The `qlinear conformance` command and the test suite both
//! use this module, so what CI checks is what a user can run on their own files.
//!
//! [`parse`] validates everything the layers would reject at run time (scales finite and
//! positive *as f32*, zero points in range, finite bias and f32 inputs, shapes, K within
//! [`K_LIMIT`], unique ids), so a case that cannot run is a malformed file, reported
//! with its id and field, never an exactness failure of [`run`].

use std::collections::HashMap;

use serde_json::Value;

use crate::{
    ActQParams, Backend, DynamicLinear, Linear, MatRef, Observer, Profile, QuantizedWeight,
    WeightQParams, K_LIMIT,
};

/// A malformed conformance file. The message names the case (by id, or by its index in
/// `cases` when it has no usable id) and the field, e.g.
/// `case "static_3": field "output.zero_point": 300 is outside [0, 255]`.
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

/// What is wrong with one field of a case; the case id is added by [`parse_case`].
#[derive(Debug)]
struct FieldError {
    /// Dotted path of the field in the case, e.g. `weight.scales[2]`.
    field: String,
    /// What is wrong with it.
    msg: String,
}

type FieldResult<T> = Result<T, FieldError>;

fn bad<T>(field: impl Into<String>, msg: impl Into<String>) -> FieldResult<T> {
    Err(FieldError {
        field: field.into(),
        msg: msg.into(),
    })
}

/// The value at dotted `path` (object keys only) of a case.
fn get<'a>(case: &'a Value, path: &str) -> FieldResult<&'a Value> {
    let mut at = case;
    let mut end = 0;
    for key in path.split('.') {
        if !at.is_object() {
            return bad(&path[..end.max(1) - 1], "must be an object");
        }
        end += key.len();
        at = match at.get(key) {
            Some(v) => v,
            None => return bad(&path[..end], "missing"),
        };
        end += 1;
    }
    Ok(at)
}

fn usize_at(case: &Value, path: &str) -> FieldResult<usize> {
    match get(case, path)?.as_u64().map(usize::try_from) {
        Some(Ok(x)) => Ok(x),
        Some(Err(_)) => bad(path, "does not fit this machine's usize"),
        None => bad(path, "must be a non-negative integer"),
    }
}

fn bool_at(case: &Value, path: &str) -> FieldResult<bool> {
    get(case, path)?.as_bool().ok_or_else(|| FieldError {
        field: path.into(),
        msg: "must be a boolean".into(),
    })
}

fn str_at<'a>(case: &'a Value, path: &str) -> FieldResult<&'a str> {
    get(case, path)?.as_str().ok_or_else(|| FieldError {
        field: path.into(),
        msg: "must be a string".into(),
    })
}

fn list_at<'a>(case: &'a Value, path: &str) -> FieldResult<&'a [Value]> {
    get(case, path)?
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| FieldError {
            field: path.into(),
            msg: "must be a list".into(),
        })
}

/// A scale: a JSON number whose f32 value (`as f32`, as FORMAT.md prescribes) is finite
/// and > 0. A decimal beyond the f32 range becomes infinite, a tiny one 0: both are
/// rejected here, naming the number as written.
fn scale_of(v: &Value, field: &str) -> FieldResult<f32> {
    let Some(x) = v.as_f64() else {
        return bad(field, format!("{v} is not a number"));
    };
    let s = x as f32;
    let rule = "a scale must be finite and > 0";
    if x.is_nan() || x <= 0.0 {
        bad(field, format!("{v} is not > 0 ({rule})"))
    } else if s.is_infinite() {
        bad(field, format!("{v} overflows f32 (becomes inf; {rule})"))
    } else if s == 0.0 {
        bad(field, format!("{v} underflows f32 (becomes 0; {rule})"))
    } else {
        Ok(s)
    }
}

/// A zero point: an integer in `[min, max]`.
fn zero_point_of(v: &Value, field: &str, min: i32, max: i32) -> FieldResult<i32> {
    let in_range = if let Some(z) = v.as_i64() {
        (min as i64..=max as i64).contains(&z).then_some(z as i32)
    } else if v.is_u64() {
        None // above i64::MAX: out of range too
    } else {
        return bad(field, format!("{v} is not an integer"));
    };
    in_range.ok_or_else(|| FieldError {
        field: field.into(),
        msg: format!("{v} is outside [{min}, {max}]"),
    })
}

fn scales_at(case: &Value, path: &str) -> FieldResult<Vec<f32>> {
    list_at(case, path)?
        .iter()
        .enumerate()
        .map(|(i, v)| scale_of(v, &format!("{path}[{i}]")))
        .collect()
}

fn zero_points_at(case: &Value, path: &str, min: i32, max: i32) -> FieldResult<Vec<i32>> {
    list_at(case, path)?
        .iter()
        .enumerate()
        .map(|(i, v)| zero_point_of(v, &format!("{path}[{i}]"), min, max))
        .collect()
}

/// The bytes of the hex string at `path`, which must encode `count` elements of `size`
/// bytes.
fn hex_at(case: &Value, path: &str, count: usize, size: usize) -> FieldResult<Vec<u8>> {
    let Some(s) = get(case, path)?.as_str() else {
        return bad(path, "must be a hex string");
    };
    // `from_str_radix` alone would accept a sign ("+f"), which is not hex.
    if let Some(i) = s.bytes().position(|b| !b.is_ascii_hexdigit()) {
        return bad(path, format!("bad hex digit at character {i}"));
    }
    if s.len() % 2 != 0 {
        return bad(path, "odd hex length");
    }
    let want = count.checked_mul(size).and_then(|b| b.checked_mul(2));
    if Some(s.len()) != want {
        return bad(
            path,
            format!(
                "expected {count} elements of {size} byte(s), got {} bytes",
                s.len() / 2
            ),
        );
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    };
    Ok(s.as_bytes()
        .chunks_exact(2)
        .map(|p| nibble(p[0]) << 4 | nibble(p[1]))
        .collect())
}

fn u8s_at(case: &Value, path: &str, count: usize) -> FieldResult<Vec<u8>> {
    hex_at(case, path, count, 1)
}

fn i8s_at(case: &Value, path: &str, count: usize) -> FieldResult<Vec<i8>> {
    Ok(hex_at(case, path, count, 1)?
        .into_iter()
        .map(|b| b as i8)
        .collect())
}

/// Little-endian f32s of the hex string at `path`; with `finite`, a NaN or infinity is
/// an error naming its index.
fn f32s_at(case: &Value, path: &str, count: usize, finite: bool) -> FieldResult<Vec<f32>> {
    let v: Vec<f32> = hex_at(case, path, count, 4)?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if finite {
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return bad(
                path,
                format!("element at index {i} is {}; must be finite", v[i]),
            );
        }
    }
    Ok(v)
}

/// `n` (out_features) and `k` (in_features) of a layer: at least 1, K at most
/// [`K_LIMIT`], and `n * k` elements addressable.
fn layer_dims(case: &Value) -> FieldResult<(usize, usize, usize)> {
    let (n, k) = (usize_at(case, "n")?, usize_at(case, "k")?);
    if n == 0 {
        return bad("n", "must be at least 1");
    }
    if k == 0 {
        return bad("k", "must be at least 1");
    }
    if k > K_LIMIT {
        return bad("k", format!("K = {k} exceeds the limit {K_LIMIT}"));
    }
    let nk = product(n, k, "n")?;
    Ok((n, k, nk))
}

/// `a * b`, or an error on `field` when the sizes in a file overflow.
fn product(a: usize, b: usize, field: &str) -> FieldResult<usize> {
    a.checked_mul(b).ok_or_else(|| FieldError {
        field: field.into(),
        msg: format!("sizes {a} x {b} overflow"),
    })
}

/// Per-tensor or per-channel qparams of the `scales` / `zero_points` lists under
/// `at` (`weight` or `expected`): n entries each when per channel, else 1; qint8 zero
/// points.
fn weight_qparams(
    case: &Value,
    at: &str,
    per_channel: bool,
    n: usize,
) -> FieldResult<WeightQParams> {
    let want = if per_channel { n } else { 1 };
    let how = if per_channel {
        format!("per channel with n = {n}")
    } else {
        "per tensor".to_string()
    };
    let mut lists = Vec::new();
    for key in ["scales", "zero_points"] {
        let path = format!("{at}.{key}");
        let got = list_at(case, &path)?.len();
        if got != want {
            return bad(path, format!("expected {want} entries ({how}), got {got}"));
        }
        lists.push(path);
    }
    let scales = scales_at(case, &lists[0])?;
    let zero_points = zero_points_at(case, &lists[1], -128, 127)?;
    Ok(if per_channel {
        WeightQParams::PerChannel {
            scales,
            zero_points,
        }
    } else {
        WeightQParams::PerTensor {
            scale: scales[0],
            zero_point: zero_points[0],
        }
    })
}

/// A weight the checks above have validated; any remaining library objection is still
/// reported against the field rather than trusted away.
fn checked_weight(
    data: Vec<i8>,
    n: usize,
    k: usize,
    q: WeightQParams,
    at: &str,
) -> FieldResult<QuantizedWeight> {
    QuantizedWeight::new(data, n, k, q).map_err(|e| FieldError {
        field: at.into(),
        msg: e.to_string(),
    })
}

fn act_qparams(case: &Value, at: &str) -> FieldResult<ActQParams> {
    Ok(ActQParams {
        scale: scale_of(get(case, &format!("{at}.scale"))?, &format!("{at}.scale"))?,
        zero_point: zero_point_of(
            get(case, &format!("{at}.zero_point"))?,
            &format!("{at}.zero_point"),
            0,
            255,
        )?,
    })
}

/// Parses case `index` of a file; errors name its id (or its index) and the field.
fn parse_case(c: &Value, index: usize) -> Result<Case, FormatError> {
    if !c.is_object() {
        return err(format!("cases[{index}]: must be an object"));
    }
    let id = match get(c, "id").map(Value::as_str) {
        Ok(Some(id)) if !id.is_empty() => id.to_string(),
        Ok(_) => {
            return err(format!(
                "cases[{index}]: field \"id\": must be a non-empty string"
            ))
        }
        Err(e) => return err(format!("cases[{index}]: field \"{}\": {}", e.field, e.msg)),
    };
    let parsed = match str_at(c, "kind") {
        Ok("static") => parse_linear(c, &id, true),
        Ok("dynamic") => parse_linear(c, &id, false),
        Ok("observe_weight") => parse_observe(c, &id),
        Ok(other) => bad(
            "kind",
            format!("unknown kind `{other}` (expected static, dynamic or observe_weight)"),
        ),
        Err(e) => Err(e),
    };
    parsed.or_else(|e| err(format!("case {id:?}: field \"{}\": {}", e.field, e.msg)))
}

fn parse_linear(c: &Value, id: &str, is_static: bool) -> FieldResult<Case> {
    let profile = match str_at(c, "engine")? {
        "fbgemm" | "x86" => Profile::Fbgemm,
        "qnnpack" => Profile::Qnnpack,
        other => return bad("engine", format!("`{other}` is not fbgemm, x86 or qnnpack")),
    };
    let m = usize_at(c, "m")?;
    let (n, k, nk) = layer_dims(c)?;
    let (mk, mn) = (product(m, k, "m")?, product(m, n, "m")?);
    let relu = bool_at(c, "relu")?;
    let per_channel = bool_at(c, "weight.per_channel")?;
    let wq = weight_qparams(c, "weight", per_channel, n)?;
    let weight = checked_weight(i8s_at(c, "weight.data", nk)?, n, k, wq, "weight")?;
    let bias = match get(c, "bias")? {
        Value::Null => None,
        _ => Some(f32s_at(c, "bias", n, true)?),
    };
    if is_static {
        let x = act_qparams(c, "input")?;
        let y = act_qparams(c, "output")?;
        Ok(Case::Static(LinearCase {
            id: id.to_string(),
            profile,
            m,
            relu,
            input_qparams: Some(x),
            input: Input::U8(u8s_at(c, "input.data", mk)?),
            weight,
            bias,
            param: y,
            expected: u8s_at(c, "expected", mn)?,
        }))
    } else {
        Ok(Case::Dynamic(LinearCase {
            id: id.to_string(),
            profile,
            m,
            relu,
            input_qparams: None,
            input: Input::F32(f32s_at(c, "input.data", mk, true)?),
            weight,
            bias,
            param: bool_at(c, "reduce_range")?,
            expected: f32s_at(c, "expected", mn, false)?,
        }))
    }
}

fn parse_observe(c: &Value, id: &str) -> FieldResult<Case> {
    let (per_channel, symmetric) = match str_at(c, "scheme")? {
        "per_tensor_symmetric" => (false, true),
        "per_tensor_affine" => (false, false),
        "per_channel_symmetric" => (true, true),
        "per_channel_affine" => (true, false),
        other => return bad("scheme", format!("unknown scheme `{other}`")),
    };
    let observer = Observer {
        per_channel,
        symmetric,
        reduce_range: bool_at(c, "reduce_range")?,
    };
    let range = list_at(c, "quant_range")?;
    let (qmin, qmax) = match range {
        [lo, hi] => match (lo.as_i64(), hi.as_i64()) {
            (Some(lo), Some(hi)) if -128 <= lo && lo < hi && hi <= 127 => (lo as i32, hi as i32),
            _ => {
                return bad(
                    "quant_range",
                    format!(
                        "{} is not [qmin, qmax] with -128 <= qmin < qmax <= 127",
                        get(c, "quant_range")?
                    ),
                )
            }
        },
        _ => return bad("quant_range", "must have two entries"),
    };
    let (n, k, nk) = layer_dims(c)?;
    let input = f32s_at(c, "input.data", nk, true)?;
    let wq = weight_qparams(c, "expected", per_channel, n)?;
    let data = i8s_at(c, "expected.data", nk)?;
    let expected = checked_weight(data, n, k, wq, "expected")?;
    Ok(Case::ObserveWeight(ObserveCase {
        id: id.to_string(),
        observer,
        quant_range: (qmin, qmax),
        n,
        k,
        input,
        expected,
    }))
}

/// Parses and validates a whole file: every case, and that no two share an id.
pub fn parse(text: &str) -> Result<Vec<Case>, FormatError> {
    let v: Value = serde_json::from_str(text).map_err(|e| FormatError(e.to_string()))?;
    match v.get("format").and_then(Value::as_str) {
        Some("qlinear-conformance/1") => {}
        other => return err(format!("unsupported format {other:?}")),
    }
    let cases = match v.get("cases").map(Value::as_array) {
        Some(Some(list)) => list,
        Some(None) => return err("`cases` must be a list"),
        None => return err("missing key `cases`"),
    };
    let cases = cases
        .iter()
        .enumerate()
        .map(|(i, c)| parse_case(c, i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, c) in cases.iter().enumerate() {
        if let Some(first) = seen.insert(c.id(), i) {
            return err(format!(
                "case {:?}: field \"id\": duplicate id (cases[{first}] and cases[{i}])",
                c.id()
            ));
        }
    }
    Ok(cases)
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
