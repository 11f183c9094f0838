"""Every case of conformance/torch-2.15-public.json through the Python API, bit for bit,
on every backend this CPU runs (see conformance/FORMAT.md)."""

import collections

import numpy as np
import pytest

import qlinear
from conftest import (
    assert_bitwise,
    f32,
    f32_array,
    first_diff,
    hex_f32,
    hex_i8,
    hex_u8,
    load_conformance,
    rand_f32,
)


def cases(kind):
    return [c for c in load_conformance()["cases"] if c["kind"] == kind]


def test_file_is_well_formed():
    data = load_conformance()
    ids = [c["id"] for c in data["cases"]]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    counts = collections.Counter(c["kind"] for c in data["cases"])
    assert set(counts) <= {"static", "dynamic", "observe_weight"}, counts
    for kind in ("static", "dynamic", "observe_weight"):
        assert counts[kind] > 0, f"no {kind} cases in the file"


def weight_qparams(w):
    """Per-tensor: Python scalars; per-channel: 1-D float32 / int32 arrays."""
    if w["per_channel"]:
        return f32_array(w["scales"]), np.array(w["zero_points"], dtype=np.int32)
    assert len(w["scales"]) == 1 and len(w["zero_points"]) == 1
    return f32(w["scales"][0]), int(w["zero_points"][0])


def weight_of(c):
    w = hex_i8(c["weight"]["data"])
    assert w.size == c["n"] * c["k"], c["id"]
    return w.reshape(c["n"], c["k"])


def bias_of(c):
    if c["bias"] is None:
        return None
    b = hex_f32(c["bias"])
    assert b.size == c["n"], c["id"]
    return b


def static_layer(c, backend):
    s, z = weight_qparams(c["weight"])
    return qlinear.Linear(
        weight_of(c),
        s,
        z,
        bias=bias_of(c),
        scale=f32(c["output"]["scale"]),
        zero_point=int(c["output"]["zero_point"]),
        input_scale=f32(c["input"]["scale"]),
        input_zero_point=int(c["input"]["zero_point"]),
        relu=bool(c["relu"]),
        profile=c["engine"],
        backend=backend,
    )


def dynamic_layer(c, backend):
    s, z = weight_qparams(c["weight"])
    return qlinear.DynamicLinear(
        weight_of(c),
        s,
        z,
        bias=bias_of(c),
        relu=bool(c["relu"]),
        profile=c["engine"],
        reduce_range=bool(c["reduce_range"]),
        backend=backend,
    )


def run_all(kind, run_one):
    todo = cases(kind)
    failures = []
    ran = 0
    for c in todo:
        try:
            d = run_one(c)
        except Exception as e:  # report every case, not only the first
            d = f"raised {type(e).__name__}: {e}"
        ran += 1
        if d is not None:
            failures.append(f"{c['id']}: {d}")
    assert ran > 0
    assert ran == len(todo) == collections.Counter(
        x["kind"] for x in load_conformance()["cases"]
    )[kind]
    assert not failures, f"{len(failures)} of {ran} {kind} cases failed:\n" + "\n".join(
        failures[:40]
    )
    return ran


def test_static(backend):
    def one(c):
        m, k, n = c["m"], c["k"], c["n"]
        x = hex_u8(c["input"]["data"]).reshape(m, k)
        expected = hex_u8(c["expected"]).reshape(m, n)
        layer = static_layer(c, backend)
        got = layer(x)
        d = first_diff(got, expected)
        if d is not None:
            return "default input qparams: " + d
        # the same through per-call input qparams on a layer without defaults
        s, z = weight_qparams(c["weight"])
        bare = qlinear.Linear(
            weight_of(c),
            s,
            z,
            bias=bias_of(c),
            scale=f32(c["output"]["scale"]),
            zero_point=int(c["output"]["zero_point"]),
            relu=bool(c["relu"]),
            profile=c["engine"],
            backend=backend,
        )
        got = bare(
            x,
            input_scale=f32(c["input"]["scale"]),
            input_zero_point=int(c["input"]["zero_point"]),
        )
        d = first_diff(got, expected)
        if d is not None:
            return "per-call input qparams: " + d
        return None

    run_all("static", one)


def test_dynamic(backend):
    def one(c):
        m, k, n = c["m"], c["k"], c["n"]
        x = hex_f32(c["input"]["data"]).reshape(m, k)
        expected = hex_f32(c["expected"]).reshape(m, n)
        got = dynamic_layer(c, backend)(x)
        return first_diff(got, expected)

    run_all("dynamic", one)


SCHEMES = {
    "per_tensor_symmetric",
    "per_tensor_affine",
    "per_channel_symmetric",
    "per_channel_affine",
}


def test_observe_weight():
    def one(c):
        n, k = c["n"], c["k"]
        assert c["scheme"] in SCHEMES, c["scheme"]
        w = hex_f32(c["input"]["data"]).reshape(n, k)
        exp = c["expected"]
        q = qlinear.quantize_weight(
            w, qscheme=c["scheme"], reduce_range=bool(c["reduce_range"])
        )
        d = first_diff(np.asarray(q.int_repr), hex_i8(exp["data"]).reshape(n, k))
        if d is not None:
            return "int_repr: " + d
        d = first_diff(np.asarray(q.scales), f32_array(exp["scales"]))
        if d is not None:
            return "scales: " + d
        zp = np.asarray(q.zero_points)
        if zp.dtype != np.int32:
            return f"zero_points dtype {zp.dtype}, expected int32"
        d = first_diff(zp, np.array(exp["zero_points"], dtype=np.int32))
        if d is not None:
            return "zero_points: " + d
        per_channel = c["scheme"].startswith("per_channel")
        if bool(q.per_channel) != per_channel:
            return f"per_channel {q.per_channel}, scheme {c['scheme']}"
        lo, hi = c["quant_range"]
        ir = np.asarray(q.int_repr)
        if ir.min() < lo or ir.max() > hi:
            return f"int_repr outside quant_range {lo}..{hi}: [{ir.min()}, {ir.max()}]"
        return None

    run_all("observe_weight", one)


def test_observe_weight_from_float_matches(backend):
    """from_float packs exactly the weight quantize_weight computes: a layer built by
    from_float reports the expected int_repr / scales / zero points."""

    def one(c):
        n, k = c["n"], c["k"]
        w = hex_f32(c["input"]["data"]).reshape(n, k)
        exp = c["expected"]
        layer = qlinear.DynamicLinear.from_float(
            w,
            qscheme=c["scheme"],
            weight_reduce_range=bool(c["reduce_range"]),
            backend=backend,
        )
        q = layer.weight()
        d = first_diff(np.asarray(q.int_repr), hex_i8(exp["data"]).reshape(n, k))
        if d is not None:
            return "int_repr: " + d
        d = first_diff(np.asarray(q.scales), f32_array(exp["scales"]))
        if d is not None:
            return "scales: " + d
        d = first_diff(
            np.asarray(q.zero_points).astype(np.int64),
            np.array(exp["zero_points"], dtype=np.int64),
        )
        if d is not None:
            return "zero_points: " + d
        return None

    run_all("observe_weight", one)


def test_static_float_path(backend):
    """Linear(x_f32) == dequantize(Linear(quantize_per_tensor(x_f32)))."""
    rng = np.random.default_rng(20261129)

    def one(c):
        m, k = c["m"], c["k"]
        layer = static_layer(c, backend)
        in_s, in_z = f32(c["input"]["scale"]), int(c["input"]["zero_point"])
        out_s, out_z = f32(c["output"]["scale"]), int(c["output"]["zero_point"])
        # values spanning the input's whole quantized range and beyond (clamping)
        lo = (0 - in_z) * in_s
        hi = (255 - in_z) * in_s
        x = rng.uniform(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), size=(m, k))
        x = x.astype(np.float32)
        x.flat[::7] = rand_f32(rng, x.flat[::7].shape)
        q = qlinear.quantize_per_tensor(x, in_s, in_z)
        if np.asarray(q).dtype != np.uint8:
            return f"quantize_per_tensor dtype {np.asarray(q).dtype}"
        expected = qlinear.dequantize(layer(q), out_s, out_z)
        got = layer(x)
        return first_diff(got, expected)

    run_all("static", one)


def test_quantize_dequantize_match_torch_formula():
    """quantize_per_tensor / dequantize follow docs/semantics.md:
    q = clamp(round_half_even(f(x * f(1/scale))) + zp, 0, 255), x = f(f32(q - zp) * scale)."""
    rng = np.random.default_rng(7)
    x = rand_f32(rng, (37, 53)) * np.float32(3)
    x[0, :6] = [127.5, 128.5, -0.5, 0.5, 1e30, -1e30]
    scale, zp = f32(0.0625), 131
    inv = np.float32(1.0) / np.float32(scale)
    expected = np.clip(np.rint(x * inv).astype(np.float64) + zp, 0, 255).astype(np.uint8)
    q = qlinear.quantize_per_tensor(x, scale, zp)
    assert_bitwise(q, expected, "quantize_per_tensor")
    deq = (q.astype(np.int32) - zp).astype(np.float32) * np.float32(scale)
    assert_bitwise(qlinear.dequantize(q, scale, zp), deq.astype(np.float32), "dequantize")


# --------------------------------------------------------------------------- beyond the file

SHAPES = [(1, 1, 1), (1, 7, 3), (3, 4, 33), (8, 295, 64), (17, 64, 31), (33, 129, 97), (65, 260, 130)]


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_backends_agree_with_reference(m, k, n, kernel_backend):
    """Random layers of awkward shapes (tails in every dimension): every backend gives
    the reference backend's bits, for every flavour."""
    from conftest import make_dynamic, make_static, rand_u8

    backend = kernel_backend
    seed = 1000 + m * 7 + k * 13 + n
    for pc in (False, True):
        for profile in ("fbgemm", "qnnpack"):
            for relu in (False, True):
                for bias in (False, True):
                    what = f"pc={pc} {profile} relu={relu} bias={bias}"
                    rng = np.random.default_rng(seed)
                    kw = dict(per_channel=pc, bias=bias, relu=relu, profile=profile)
                    dyn = [make_dynamic(np.random.default_rng(seed), n, k, backend=b, **kw) for b in (backend, "reference")]
                    xf = rand_f32(rng, (m, k))
                    assert_bitwise(dyn[0](xf), dyn[1](xf), "dynamic " + what)
                    for rr in (False, True):
                        pr = [make_dynamic(np.random.default_rng(seed), n, k, backend=b, per_row=True, reduce_range=rr, **kw)
                              for b in (backend, "reference")]
                        assert_bitwise(pr[0](xf), pr[1](xf), f"dynamic per_row rr={rr} " + what)
                    st = [make_static(np.random.default_rng(seed), n, k, backend=b, **kw) for b in (backend, "reference")]
                    xu = rand_u8(rng, (m, k))
                    assert_bitwise(st[0](xu), st[1](xu), "static " + what)
                    assert_bitwise(st[0](xf), st[1](xf), "static float path " + what)


@pytest.mark.parametrize("profile", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_per_row_is_per_tensor_on_each_row(profile, reduce_range, backend):
    """docs/semantics.md: per-row output row m == the per-tensor layer on row m alone."""
    from conftest import make_dynamic

    rng = np.random.default_rng(1100)
    n, k = 45, 70
    kw = dict(profile=profile, reduce_range=reduce_range, backend=backend, relu=False)
    pr = make_dynamic(np.random.default_rng(5), n, k, per_row=True, **kw)
    pt = make_dynamic(np.random.default_rng(5), n, k, per_row=False, **kw)
    x = rand_f32(rng, (9, k))
    x[3] *= np.float32(1000)  # rows of very different magnitudes
    x[4] *= np.float32(1e-3)
    x[5] = 0
    y = pr(x)
    for i in range(x.shape[0]):
        assert_bitwise(y[i], pt(x[i : i + 1])[0], f"row {i}")
    assert first_diff(y, pt(x)) is not None, "per_row made no difference on rows of mixed magnitude"


def test_qnnpack_ignores_reduce_range(backend):
    from conftest import make_dynamic

    rng = np.random.default_rng(1200)
    x = rand_f32(rng, (13, 77))
    a = make_dynamic(np.random.default_rng(6), 50, 77, profile="qnnpack", reduce_range=True, backend=backend)
    b = make_dynamic(np.random.default_rng(6), 50, 77, profile="qnnpack", reduce_range=False, backend=backend)
    assert_bitwise(a(x), b(x), "qnnpack reduce_range=True vs False")
