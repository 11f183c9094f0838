//! Review of the activation observers and `ActQParams`' matrix forms on degenerate
//! views: a view with no columns holds no values, whatever its row count, so it is a
//! no-op that returns at once (it used to walk all of its rows: `usize::MAX` empty rows
//! never returned).

use qlinear_reference::observer::{
    ActivationObserver, MinMaxObserver, MovingAverageMinMaxObserver,
};
use qlinear_reference::{ActQParams, MatMut, MatRef};

#[test]
fn zero_column_views_with_huge_row_counts_return_at_once() {
    let empty: [f32; 0] = [];
    let rows = usize::MAX;
    let view = MatRef::new(&empty, rows, 0, 0).expect("a 0-column view needs no data");

    let mut mm = MinMaxObserver::new();
    mm.observe(&[-1.0, 2.0]).unwrap();
    mm.observe_mat(view).unwrap();
    assert_eq!(
        mm.min_max(),
        Some((-1.0, 2.0)),
        "an empty batch changes nothing"
    );

    let mut ma = MovingAverageMinMaxObserver::new();
    ma.observe_mat(view).unwrap();
    assert_eq!(ma.min_max(), None);

    let p = ActQParams::new(0.5, 3).unwrap();
    let mut none: [u8; 0] = [];
    p.quantize_mat(view, MatMut::new(&mut none, rows, 0, 0).unwrap())
        .unwrap();
    let mut nonef: [f32; 0] = [];
    let q: [u8; 0] = [];
    p.dequantize_mat(
        MatRef::new(&q, rows, 0, 0).unwrap(),
        MatMut::new(&mut nonef, rows, 0, 0).unwrap(),
    )
    .unwrap();
}
