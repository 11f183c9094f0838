//! Shape suites of `qlinear bench` and the `MxKxN` parser.
//!
//! `M` is the batch (rows of activations), `K` in_features, `N` out_features. The
//! criterion benches (`benches/src/lib.rs`) carry a copy of the small tables they use.

use std::fmt;

/// One GEMM shape: `M x K` activations times an `N x K` weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape {
    /// Rows of activations.
    pub m: usize,
    /// in_features.
    pub k: usize,
    /// out_features.
    pub n: usize,
}

impl Shape {
    /// `Shape { m, k, n }`.
    pub const fn new(m: usize, k: usize, n: usize) -> Self {
        Shape { m, k, n }
    }
    /// Multiply-accumulates of one forward call.
    pub fn macs(&self) -> f64 {
        self.m as f64 * self.k as f64 * self.n as f64
    }
    /// Bytes of the int8 weight.
    pub fn weight_bytes(&self) -> usize {
        self.k * self.n
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.m, self.k, self.n)
    }
}

impl std::str::FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_shape(s)
    }
}

/// Parses `MxKxN` (each a positive integer; `x` or `X` separators, spaces ignored).
///
/// `M = 0` is rejected too, although the layers accept an empty batch: a bench of zero
/// rows times nothing and has no GMAC/s. Whether a well-formed shape can actually run
/// (the K limit, sizes, memory) is checked separately, by [`crate::limits`].
pub fn parse_shape(s: &str) -> Result<Shape, String> {
    let parts: Vec<&str> = s.trim().split(['x', 'X']).map(str::trim).collect();
    if parts.len() != 3 {
        return Err(format!(
            "shape `{s}`: expected MxKxN (three positive integers separated by `x`)"
        ));
    }
    let mut dims = [0usize; 3];
    for (d, (p, what)) in dims.iter_mut().zip(parts.iter().zip(["M", "K", "N"])) {
        let v: usize = match p.parse() {
            Ok(v) => v,
            Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
                return Err(format!(
                    "shape `{s}`: {what} = `{p}` is too large (at most {})",
                    usize::MAX
                ))
            }
            Err(_) => {
                return Err(format!(
                    "shape `{s}`: {what} = `{p}` is not a positive integer"
                ))
            }
        };
        if v == 0 {
            return Err(format!("shape `{s}`: {what} must be at least 1"));
        }
        *d = v;
    }
    Ok(Shape::new(dims[0], dims[1], dims[2]))
}

/// The nine shapes of the default suite (`docs/performance.md`).
pub const DEFAULT_SUITE: [Shape; 9] = [
    Shape::new(1, 4096, 4096),
    Shape::new(1, 4096, 14336),
    Shape::new(1, 768, 3072),
    Shape::new(8, 4096, 4096),
    Shape::new(32, 768, 768),
    Shape::new(128, 768, 768),
    Shape::new(128, 768, 3072),
    Shape::new(128, 3072, 768),
    Shape::new(512, 4096, 4096),
];

/// BERT-base layer weights (`K x N`): qkv/out projections, FFN up, FFN down.
pub const BERT_WEIGHTS: [(usize, usize); 3] = [(768, 768), (768, 3072), (3072, 768)];
/// Batch sizes of the `bert` suite.
pub const BERT_MS: [usize; 5] = [1, 8, 32, 128, 512];
/// Llama-style weights (`K x N`): attention, MLP up (7B and 8B widths), MLP down.
pub const LLM_WEIGHTS: [(usize, usize); 4] =
    [(4096, 4096), (4096, 11008), (4096, 14336), (11008, 4096)];
/// Batch sizes of the `llm` suite.
pub const LLM_MS: [usize; 4] = [1, 8, 32, 128];

fn cross(weights: &[(usize, usize)], ms: &[usize]) -> Vec<Shape> {
    ms.iter()
        .flat_map(|&m| weights.iter().map(move |&(k, n)| Shape::new(m, k, n)))
        .collect()
}

/// The shapes of suite `name` (`default`, `bert` or `llm`).
pub fn suite(name: &str) -> Result<Vec<Shape>, String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "default" => Ok(DEFAULT_SUITE.to_vec()),
        "bert" => Ok(cross(&BERT_WEIGHTS, &BERT_MS)),
        "llm" => Ok(cross(&LLM_WEIGHTS, &LLM_MS)),
        other => Err(format!(
            "unknown suite `{other}` (expected default, bert or llm)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shapes() {
        assert_eq!(parse_shape("1x4096x4096"), Ok(Shape::new(1, 4096, 4096)));
        assert_eq!(parse_shape(" 8 X 768x 3072 "), Ok(Shape::new(8, 768, 3072)));
        assert_eq!("2x3x4".parse::<Shape>(), Ok(Shape::new(2, 3, 4)));
        assert_eq!(Shape::new(2, 3, 4).to_string(), "2x3x4");
    }

    #[test]
    fn rejects_bad_shapes() {
        for bad in [
            "", "1x2", "1x2x3x4", "0x2x3", "1x0x3", "1x2x0", "ax2x3", "1x-2x3", "1x2x3.5", "1xx3",
            "1x1x", "x1x1", "1x2x3 4", "1,2,3",
        ] {
            let err = parse_shape(bad).expect_err(bad);
            assert!(err.contains("shape"), "{bad}: {err}");
        }
        assert!(parse_shape("1x0x3")
            .unwrap_err()
            .contains("K must be at least 1"));
        assert!(parse_shape("1xzx3").unwrap_err().contains("K = `z`"));
        assert!(parse_shape("0x5x5")
            .unwrap_err()
            .contains("M must be at least 1"));
        assert!(parse_shape("99999999999999999999x1x1")
            .unwrap_err()
            .contains("M = `99999999999999999999` is too large"));
        // Well-formed but impossible shapes parse; `limits` rejects them.
        assert_eq!(
            parse_shape("18446744073709551615x1x1"),
            Ok(Shape::new(usize::MAX, 1, 1))
        );
    }

    #[test]
    fn suites_have_expected_sizes() {
        assert_eq!(suite("default").unwrap().len(), 9);
        assert_eq!(suite("bert").unwrap().len(), 15);
        assert_eq!(suite("LLM").unwrap().len(), 16);
        assert!(suite("gpt").is_err());
        assert!(suite("llm")
            .unwrap()
            .contains(&Shape::new(128, 11008, 4096)));
    }
}
