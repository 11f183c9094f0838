//! Differential fuzzing: a case derived from the input bytes (shape, parameters, data)
//! runs on every available backend, static and dynamic, and must equal the reference
//! oracle bit for bit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qlinear_api::{available_backends, DynamicLinear, Linear, MatMut, MatRef, QuantizedWeight};
use qlinear_reference::testkit::{Rng, StaticCase};

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let m = data[0] as usize % 24;
    let k = 1 + (u16::from_le_bytes([data[1], data[2]]) as usize % 700);
    let n = 1 + (u16::from_le_bytes([data[3], data[4]]) as usize % 150);
    let seed = u64::from_le_bytes(data[4..12].try_into().unwrap());
    let mut rng = Rng::new(seed);
    let mut c = StaticCase::random(&mut rng, m, k, n);
    // Let the fuzzer steer the activation and weight bytes directly.
    for (dst, &src) in c.a.iter_mut().zip(&data[12..]) {
        *dst = src;
    }
    for (dst, &src) in c.w.iter_mut().zip(data[12..].iter().rev()) {
        *dst = src as i8;
    }
    let a = MatRef::new(&c.a, m, k, c.a_stride).unwrap();
    let want = qlinear_reference::static_linear(
        &a, c.x, &c.w, n, &c.wq, c.bias.as_deref(), c.y, c.relu, c.profile,
    )
    .unwrap();
    let xf: Vec<f32> = c.a.iter().map(|&v| (v as f32 - 100.0) * 0.37).collect();
    let xin = MatRef::new(&xf, m, k, c.a_stride).unwrap();
    let want_dyn = qlinear_reference::dynamic_linear(
        &xin, &c.w, n, &c.wq, c.bias.as_deref(), false, c.relu, c.profile,
    )
    .unwrap();
    let w = QuantizedWeight::new(c.w.clone(), n, k, c.wq.clone()).unwrap();
    for backend in available_backends() {
        let layer = Linear::builder(w.clone(), c.x, c.y)
            .maybe_bias(c.bias.clone())
            .relu(c.relu)
            .profile(c.profile)
            .backend(backend)
            .build()
            .unwrap();
        let mut out = vec![0u8; m * n];
        layer
            .forward(a, MatMut::dense(&mut out, m, n).unwrap())
            .unwrap();
        assert_eq!(out, want, "{backend} static");
        let dynamic = DynamicLinear::builder(w.clone())
            .maybe_bias(c.bias.clone())
            .relu(c.relu)
            .profile(c.profile)
            .backend(backend)
            .build()
            .unwrap();
        let mut outf = vec![0f32; m * n];
        dynamic
            .forward(xin, MatMut::dense(&mut outf, m, n).unwrap())
            .unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&outf), bits(&want_dyn), "{backend} dynamic");
    }
});
