//! `conformance::parse` rejects every case the runner would otherwise fail at run time
//! (invalid qparams, non-finite bias or input, impossible shapes, K over the limit) and
//! duplicate ids, with an error naming the case id and the field: a malformed file, not
//! an exactness failure.
//!
//! Each variant edits one field of a valid case taken from
//! `conformance/torch-2.15-public.json`.
#![cfg(feature = "conformance")]

use qlinear::conformance::{self, Case};
use qlinear::{Backend, K_LIMIT};
use serde_json::{json, Value};

/// `public-0014-static-fbgemm` of the public file.
fn static_case() -> Value {
    json!({"kind": "static", "engine": "fbgemm", "m": 8, "k": 2, "n": 2, "relu": true,
        "weight": {"scales": [0.0008199003059417009], "zero_points": [0], "per_channel": false,
                   "data": "b1610b5d"},
        "bias": null,
        "input": {"scale": 0.011236545629799366, "zero_point": 64,
                  "data": "71b5c02697548b4096a3107ed2e01a2e"},
        "output": {"scale": 0.0002444133278913796, "zero_point": 143},
        "expected": "ffff8f8f8ff98faef9ffffffffffbe8f", "id": "public-0014-static-fbgemm"})
}

/// `public-0019-dynamic-fbgemm` of the public file.
fn dynamic_case() -> Value {
    json!({"kind": "dynamic", "engine": "fbgemm", "m": 3, "k": 16, "n": 2, "relu": false,
        "weight": {"scales": [0.00988305825740099], "zero_points": [-77], "per_channel": false,
                   "data": "6623419e009ccf73bc4320dcb269931d62e55f99ff62acf880fc423577bbf178"},
        "bias": "d7311dbf9d2221c0", "reduce_range": false,
        "input": {"data": concat!(
            "dedd72c1325aff40830f00426fccce416660fb3e150d04c02cff2f40a7cb3a4113eda7c18d790142",
            "d8ac4641070dd2412ad83842a1dcbfc0a58896c09c021142146127c160571b41adb667401d245dc1",
            "3f24b2c0ef31af410dd8efbf499a8c41997bbfc1cbf580c1a200bbbe53fa5541cf5b3841f69a2641",
            "a25131c2e5812842054f95c1e93c334143cc5442c8d75841690a90c1805d3e41958a8d418e81ed3f",
            "e152b4c1280940bfc387e2c1e58b90c1eb1dcbc0a221cc4122ef2a4161e72cc1")},
        "expected": "d2300d438813874310ff9e429b3e0643259404429dea48c1",
        "id": "public-0019-dynamic-fbgemm"})
}

/// `public-0167-observe_weight` of the public file.
fn observe_case() -> Value {
    json!({"kind": "observe_weight", "scheme": "per_tensor_symmetric", "reduce_range": false,
        "n": 2, "k": 4,
        "input": {"data": "e0d4933b1036423cbaa8c03cd55b1f3b6546c33ae8b1c83a011e2c3c14c20a3c"},
        "expected": {"scales": [0.00018445454770699143], "zero_points": [0],
                     "data": "18407f0d0808392e"},
        "quant_range": [-128, 127], "id": "public-0167-observe_weight"})
}

fn file(cases: &[Value]) -> String {
    json!({"format": "qlinear-conformance/1", "source": "test", "cases": cases}).to_string()
}

/// Sets `path` (dot-separated keys, or list indices) of `case` to `value`.
fn with(mut case: Value, path: &str, value: Value) -> Value {
    let mut at = &mut case;
    for key in path.split('.') {
        at = match key.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[key],
        };
    }
    *at = value;
    case
}

/// Replaces the first 8 hex digits (the first f32) of the hex string at `path`.
fn with_first_f32(case: Value, path: &str, bits: u32) -> Value {
    let mut at = &case;
    for key in path.split('.') {
        at = &at[key];
    }
    let old = at.as_str().expect("hex string").to_string();
    let new = format!("{}{}", hex_f32(bits), &old[8..]);
    with(case, path, Value::String(new))
}

fn hex_f32(bits: u32) -> String {
    bits.to_le_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const NAN: u32 = 0x7fc0_0000;
const INF: u32 = 0x7f80_0000;
const NEG_INF: u32 = 0xff80_0000;

/// Parsing `case` alone fails, and the message names the case id, the field and
/// every extra fragment.
#[track_caller]
fn rejected(case: Value, field: &str, fragments: &[&str]) {
    let id = case["id"].as_str().expect("id").to_string();
    let text = file(&[case]);
    let err = match conformance::parse(&text) {
        Ok(_) => panic!("case {id}: field {field}: accepted"),
        Err(e) => e.to_string(),
    };
    let want_id = format!("case \"{id}\"");
    let want_field = format!("field \"{field}\"");
    assert!(err.contains(&want_id), "no {want_id} in: {err}");
    assert!(err.contains(&want_field), "no {want_field} in: {err}");
    for f in fragments {
        assert!(err.contains(f), "no `{f}` in: {err}");
    }
}

#[test]
fn the_base_cases_are_valid_and_pass() {
    let cases = conformance::parse(&file(&[static_case(), dynamic_case(), observe_case()]))
        .expect("valid cases");
    assert_eq!(cases.len(), 3);
    let report = conformance::run(&cases, Backend::Reference);
    assert!(report.failures.is_empty(), "{report}");
    assert_eq!(report.passed, 3);
}

#[test]
fn activation_zero_points_out_of_range() {
    for (field, v) in [
        ("output.zero_point", 300),
        ("output.zero_point", 256),
        ("output.zero_point", -1),
        ("input.zero_point", 300),
        ("input.zero_point", -5),
    ] {
        let msg = format!("{v} is outside [0, 255]");
        rejected(with(static_case(), field, json!(v)), field, &[&msg]);
    }
    // Beyond i32 too: still a range error naming the value, not a type error.
    rejected(
        with(static_case(), "output.zero_point", json!(1_i64 << 40)),
        "output.zero_point",
        &["1099511627776", "outside [0, 255]"],
    );
}

#[test]
fn weight_zero_points_out_of_range() {
    for v in [128, -129, 300] {
        let msg = format!("{v} is outside [-128, 127]");
        let case = with(static_case(), "weight.zero_points", json!([v]));
        rejected(case, "weight.zero_points[0]", &[&msg]);
        let case = with(dynamic_case(), "weight.zero_points", json!([v]));
        rejected(case, "weight.zero_points[0]", &[&msg]);
    }
    // Per channel: the index of the bad entry is named.
    let case = with(static_case(), "weight.per_channel", json!(true));
    let case = with(case, "weight.scales", json!([0.5, 0.25]));
    let case = with(case, "weight.zero_points", json!([0, 128]));
    rejected(case, "weight.zero_points[1]", &["128"]);
}

#[test]
fn scales_not_finite_and_positive() {
    // 1e39 is a finite JSON number, but infinite as f32.
    for field in ["input.scale", "output.scale"] {
        rejected(
            with(static_case(), field, json!(1e39)),
            field,
            &["1e+39", "inf"],
        );
        rejected(with(static_case(), field, json!(0.0)), field, &["> 0"]);
        rejected(with(static_case(), field, json!(-0.5)), field, &["-0.5"]);
        // Positive, but rounds to 0 as f32.
        rejected(
            with(static_case(), field, json!(1e-50)),
            field,
            &["underflows"],
        );
    }
    rejected(
        with(static_case(), "weight.scales", json!([1e39])),
        "weight.scales[0]",
        &["inf"],
    );
    rejected(
        with(dynamic_case(), "weight.scales", json!([-1.0])),
        "weight.scales[0]",
        &["> 0"],
    );
    rejected(
        with(observe_case(), "expected.scales", json!([3.5e38])),
        "expected.scales[0]",
        &["inf"],
    );
}

#[test]
fn non_finite_bias_and_inputs() {
    let nan_bias = format!("{}{}", hex_f32(NAN), hex_f32(0x3f80_0000));
    rejected(
        with(static_case(), "bias", json!(nan_bias)),
        "bias",
        &["index 0", "NaN"],
    );
    let inf_bias = format!("{}{}", hex_f32(0x3f80_0000), hex_f32(INF));
    rejected(
        with(static_case(), "bias", json!(inf_bias)),
        "bias",
        &["index 1", "inf"],
    );
    rejected(
        with_first_f32(dynamic_case(), "bias", NEG_INF),
        "bias",
        &["index 0", "-inf"],
    );
    rejected(
        with_first_f32(dynamic_case(), "input.data", NAN),
        "input.data",
        &["index 0", "NaN"],
    );
    rejected(
        with_first_f32(dynamic_case(), "input.data", INF),
        "input.data",
        &["index 0"],
    );
    rejected(
        with_first_f32(observe_case(), "input.data", NAN),
        "input.data",
        &["index 0"],
    );
}

#[test]
fn shapes_and_k_limit() {
    let over = K_LIMIT + 1;
    for case in [static_case(), dynamic_case()] {
        rejected(
            with(case.clone(), "k", json!(over)),
            "k",
            &[&over.to_string(), &K_LIMIT.to_string()],
        );
        rejected(with(case.clone(), "k", json!(0)), "k", &["at least 1"]);
        rejected(with(case, "n", json!(0)), "n", &["at least 1"]);
    }
    rejected(
        with(observe_case(), "k", json!(over)),
        "k",
        &[&K_LIMIT.to_string()],
    );
    rejected(with(observe_case(), "n", json!(0)), "n", &["at least 1"]);
    // Per-channel lists must have n entries.
    let case = with(static_case(), "weight.per_channel", json!(true));
    rejected(case, "weight.scales", &["2"]);
    // Data lengths must match the shape.
    rejected(
        with(static_case(), "expected", json!("ffff")),
        "expected",
        &[],
    );
    rejected(
        with(dynamic_case(), "input.data", json!("00000000")),
        "input.data",
        &[],
    );
    // An observer range must be a sub-range of qint8.
    for range in [json!([5, 2]), json!([-129, 127]), json!([-128, 128])] {
        rejected(
            with(observe_case(), "quant_range", range),
            "quant_range",
            &[],
        );
    }
}

/// M = 0 is a legitimate (empty) batch for the layers, so it is a valid case.
#[test]
fn zero_rows_are_a_valid_case() {
    let case = with(static_case(), "m", json!(0));
    let case = with(case, "input.data", json!(""));
    let case = with(case, "expected", json!(""));
    let cases = conformance::parse(&file(&[case])).expect("m = 0 parses");
    let report = conformance::run(&cases, Backend::Reference);
    assert!(report.failures.is_empty(), "{report}");
}

#[test]
fn duplicate_ids_in_one_file() {
    let a = static_case();
    let b = with(dynamic_case(), "id", json!("public-0014-static-fbgemm"));
    let err = conformance::parse(&file(&[a, observe_case(), b]))
        .expect_err("duplicate ids accepted")
        .to_string();
    assert!(err.contains("\"public-0014-static-fbgemm\""), "{err}");
    assert!(err.contains("duplicate"), "{err}");
    // Distinct ids are fine.
    let cases = conformance::parse(&file(&[static_case(), dynamic_case()])).unwrap();
    assert_eq!(
        cases.iter().map(Case::id).collect::<Vec<_>>(),
        ["public-0014-static-fbgemm", "public-0019-dynamic-fbgemm"]
    );
}

/// The vendored torch file is still accepted whole.
#[test]
fn public_file_still_parses() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../conformance/torch-2.15-public.json"
    ))
    .unwrap();
    assert_eq!(conformance::parse(&text).unwrap().len(), 280);
}
