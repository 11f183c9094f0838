//! criterion benches for qlinear; see benches/benches/.
