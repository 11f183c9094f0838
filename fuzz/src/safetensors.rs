//! `qlinear::safetensors` on arbitrary bytes: parsing, loading every layer the file
//! may hold as static and as dynamic, and quantizing it as a float checkpoint must each
//! return `Ok` or `Err`, never panic; what they accept must be right:
//!
//! * a layer that loads holds exactly the weight `QuantizedWeight::from_safetensors`
//!   reads (the owned path, independent of the pack-from-borrowed-bytes path), and its
//!   one-row forward equals `qlinear_reference::static_linear` / `dynamic_linear` on
//!   that weight with the loaded layer's settings, bit for bit;
//! * a quantized output parses, every quantized weight in it is exactly
//!   `QuantizedWeight::from_float` of the source tensor (decoded from F32 / F16 / BF16
//!   here, independently of the library), every other tensor is byte-identical, and
//!   its layers pass the checks above.

use qlinear::safetensors::{quantize_checkpoint, Checkpoint, Dtype, QuantizeOptions};
use qlinear::{DynamicLinear, InputQuantization, Linear, MatRef, QuantizedWeight};

/// At most this many layers of one input are checked (bounds the time per input).
const MAX_LAYERS: usize = 4;

/// The whole check for one input.
pub fn check(data: &[u8]) {
    let Ok(ck) = Checkpoint::parse(data) else {
        return;
    };
    // Every `P.weight`, whatever its dtype (so the loaders' dtype checks are reached).
    let mut prefixes: Vec<&str> = ck
        .tensors()
        .names()
        .into_iter()
        .filter_map(|n| n.strip_suffix(".weight"))
        .collect();
    prefixes.sort_unstable();
    for p in prefixes.into_iter().take(MAX_LAYERS) {
        check_layer(&ck, p);
    }
    // Options from the input's length, so the corpus covers all four observers.
    let opts = QuantizeOptions {
        per_channel: data.len() % 2 == 1,
        symmetric: data.len() % 4 < 2,
        include: Vec::new(),
        exclude: Vec::new(),
        reduce_range: data.len() % 8 < 4,
        input_quantization: if data.len() % 16 < 8 {
            qlinear::InputQuantization::PerTensor
        } else {
            qlinear::InputQuantization::PerRow
        },
    };
    let Ok((out, summary)) = quantize_checkpoint(data, &opts) else {
        return;
    };
    assert_eq!(summary.bytes_out, out.len());
    assert_eq!(summary.bytes_in, data.len());
    let q = Checkpoint::parse(&out).expect("quantize_checkpoint output parses");
    let added = if opts.per_channel { 3 } else { 2 };
    assert_eq!(
        q.tensors().len(),
        ck.tensors().len() + added * summary.quantized.len()
    );
    for (name, v) in ck.tensors().iter() {
        if summary.quantized.iter().any(|t| t.name == name) {
            continue;
        }
        let o = q.tensors().tensor(name).expect("copied tensor present");
        assert!(
            o.dtype() == v.dtype() && o.shape() == v.shape() && o.data() == v.data(),
            "{name} not copied unchanged"
        );
    }
    for t in summary.quantized.iter() {
        let p = t.name.strip_suffix(".weight").expect(".weight suffix");
        let src = ck.tensors().tensor(&t.name).expect("source tensor");
        let f = decode_floats(src.dtype(), src.data());
        let want = QuantizedWeight::from_float(&f, t.shape[0], t.shape[1], opts.observer())
            .expect("a quantized tensor quantizes");
        let got = QuantizedWeight::from_safetensors(&q, p).expect("quantized weight reads back");
        assert!(got == want, "{}: not from_float's weight", t.name);
        assert_eq!(q.metadata()[&format!("qlinear.{p}.kind")], "dynamic");
    }
    for t in summary.quantized.iter().take(MAX_LAYERS) {
        check_layer(&q, t.name.strip_suffix(".weight").expect("suffix"));
    }
}

fn decode_floats(dtype: Dtype, b: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        other => panic!("quantized a {other} tensor"),
    }
}

/// Loads `p` as a static and as a dynamic layer; whatever loads must run like the
/// reference on the weight read the owned way.
fn check_layer(ck: &Checkpoint<'_>, p: &str) {
    let owned = QuantizedWeight::from_safetensors(ck, p);
    if let Ok(l) = Linear::from_safetensors(ck, p).and_then(|b| b.threads(1).build()) {
        let w = owned
            .clone()
            .expect("a static layer loads but its weight does not");
        assert!(
            l.weight() == w,
            "static layer's weight differs from the file's"
        );
        let (n, k) = (w.out_features(), w.in_features());
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
            (Ok(g), Ok(r)) => assert!(
                g == r,
                "static layer from safetensors differs from the reference"
            ),
            (Err(_), Err(_)) => {}
            _ => panic!("static layer from safetensors: api {got:?}, reference {want:?}"),
        }
    }
    if let Ok(l) = DynamicLinear::from_safetensors(ck, p).and_then(|b| b.threads(1).build()) {
        let w = owned.expect("a dynamic layer loads but its weight does not");
        assert!(
            l.weight() == w,
            "dynamic layer's weight differs from the file's"
        );
        let (n, k) = (w.out_features(), w.in_features());
        let xf: Vec<f32> = (0..k)
            .map(|i| ((i * 37 % 255) as f32 - 127.0) * 0.031_25)
            .collect();
        let xr = MatRef::dense(&xf, 1, k).expect("input view");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // The literal for the layer's input quantization mode (`qlinear.P.input_quantization`).
        let literal = match l.input_quantization() {
            InputQuantization::PerTensor => qlinear_reference::dynamic_linear,
            InputQuantization::PerRow => qlinear_reference::dynamic_linear_per_row,
        };
        let want = literal(
            &xr,
            w.data(),
            n,
            w.qparams(),
            l.bias(),
            l.reduce_range(),
            l.relu(),
            l.profile(),
        );
        let got = l.forward_vec(&xf, 1);
        let same = match (&got, &want) {
            (Ok(g), Ok(r)) => bits(g) == bits(r),
            (Err(_), Err(_)) => true,
            _ => false,
        };
        assert!(
            same,
            "dynamic layer from safetensors differs from the reference: {got:?} vs {want:?}"
        );
    }
}
