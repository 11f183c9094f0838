"""Bad and unusual inputs: dtypes, shapes, layouts, array-likes, qparams, backends."""

import os
import platform

import numpy as np
import pytest

import qlinear
from conftest import (
    assert_bitwise,
    make_dynamic,
    make_static,
    rand_bias,
    rand_f32,
    rand_scales,
    rand_u8,
    rand_weight,
)

N, K = 40, 72


@pytest.fixture(scope="module")
def dyn():
    return make_dynamic(np.random.default_rng(100), N, K, threads=1)


@pytest.fixture(scope="module")
def stat():
    return make_static(np.random.default_rng(101), N, K, threads=1)


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", ["float64", "float16", "int8", "int32", "uint8", "int64", "bool", "complex64"])
def test_dynamic_wrong_dtype(dyn, dtype):
    x = np.ones((3, K), dtype=dtype)
    with pytest.raises(ValueError) as e:
        dyn(x)
    assert dtype in str(e.value), f"message does not name {dtype}: {e.value}"


@pytest.mark.parametrize("dtype", ["float64", "float16", "int8", "int32", "uint16", "bool"])
def test_static_wrong_dtype(stat, dtype):
    x = np.ones((3, K), dtype=dtype)
    with pytest.raises(ValueError) as e:
        stat(x)
    assert dtype in str(e.value), f"message does not name {dtype}: {e.value}"


def test_list_input_is_float64_and_rejected(dyn, stat):
    rows = [[0.5] * K, [1.0] * K]
    assert np.asarray(rows).dtype == np.float64
    with pytest.raises(ValueError):
        dyn(rows)
    with pytest.raises(ValueError):
        stat([[1] * K])  # int64 (or platform int), not uint8


def test_object_arrays(dyn, stat):
    xo = np.empty((2, K), dtype=object)
    xo[:] = 1.0
    with pytest.raises(ValueError):
        dyn(xo)
    with pytest.raises(ValueError):
        stat(xo)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("last", [0, 1, K - 1, K + 1, 2 * K])
def test_wrong_last_dim(dyn, stat, last):
    with pytest.raises(ValueError):
        dyn(np.ones((3, last), np.float32))
    with pytest.raises(ValueError):
        stat(np.ones((3, last), np.uint8))
    with pytest.raises(ValueError):
        dyn(np.ones((last,), np.float32))


def test_transposed_shape_is_rejected(dyn):
    # [K, 3] instead of [3, K]
    with pytest.raises(ValueError):
        dyn(np.ones((K, 3), np.float32))


def test_zero_d(dyn, stat):
    with pytest.raises(ValueError):
        dyn(np.float32(1.0))
    with pytest.raises(ValueError):
        dyn(np.array(1.0, np.float32))
    with pytest.raises(ValueError):
        stat(np.array(3, np.uint8))


def test_one_d(dyn, stat):
    rng = np.random.default_rng(102)
    x = rand_f32(rng, (K,))
    y = dyn(x)
    assert y.shape == (N,) and y.dtype == np.float32
    assert_bitwise(y, dyn(x[None, :])[0])
    xu = rand_u8(rng, (K,))
    y = stat(xu)
    assert y.shape == (N,) and y.dtype == np.uint8
    assert_bitwise(y, stat(xu[None, :])[0])


# --------------------------------------------------------------------------- non-finite


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("pos", [(0, 0), (2, K - 1), (1, 17)])
def test_non_finite_input(dyn, stat, bad, pos):
    rng = np.random.default_rng(103)
    x = rand_f32(rng, (3, K))
    x[pos] = bad
    before = x.copy()
    with pytest.raises(ValueError):
        dyn(x)
    with pytest.raises(ValueError):
        stat(x)  # the float path of a static layer
    with pytest.raises(ValueError):
        qlinear.quantize_per_tensor(x, 0.5, 3)
    assert_bitwise(x, before, "input modified by a failing call")


def test_non_finite_input_per_row():
    rng = np.random.default_rng(104)
    layer = make_dynamic(rng, N, K, per_row=True)
    x = rand_f32(rng, (4, K))
    x[3, 5] = np.nan
    with pytest.raises(ValueError):
        layer(x)


# --------------------------------------------------------------------------- layouts


def layouts(x):
    """(name, non-contiguous view with the same values as x)."""
    m, k = x.shape
    big = np.zeros((m, k + 13), dtype=x.dtype)
    big[:, :k] = x
    wide = np.zeros((m, 2 * k), dtype=x.dtype)
    wide[:, ::2] = x
    rev = np.ascontiguousarray(x[::-1])
    crev = np.ascontiguousarray(x[:, ::-1])
    tr = np.ascontiguousarray(x.T)
    tall = np.zeros((2 * m, k), dtype=x.dtype)
    tall[::2] = x
    out = [
        ("row-strided x_big[:, :K]", big[:, :k]),
        ("column-strided x[:, ::2]", wide[:, ::2]),
        ("negative row stride", rev[::-1]),
        ("negative column stride", crev[:, ::-1]),
        ("fortran order", np.asfortranarray(x)),
        ("transposed view", tr.T),
        ("every other row", tall[::2]),
    ]
    for name, v in out:
        assert np.array_equal(v, x), name
    if m > 1:  # numpy calls a single row contiguous whatever its stride
        assert not big[:, :k].flags.c_contiguous
        assert not np.asfortranarray(x).flags.c_contiguous
    return out


@pytest.mark.parametrize("m", [1, 5, 33])
def test_non_contiguous_inputs(m, backend):
    rng = np.random.default_rng(105 + m)
    dyn = make_dynamic(rng, N, K, backend=backend)
    stat = make_static(rng, N, K, backend=backend)
    for layer, x in (
        (dyn, rand_f32(rng, (m, K))),
        (stat, rand_u8(rng, (m, K))),
        (stat, rand_f32(rng, (m, K))),
    ):
        ref = layer(np.ascontiguousarray(x))
        for name, v in layouts(x):
            before = v.copy()
            y = layer(v)
            assert_bitwise(y, ref, f"{type(layer).__name__} {x.dtype} {name}")
            assert_bitwise(v, before, f"{name}: input modified")


def test_non_contiguous_3d(dyn):
    rng = np.random.default_rng(106)
    x = rand_f32(rng, (K, 3, 4)).transpose(1, 2, 0)  # [3, 4, K], nothing contiguous
    assert not x.flags.c_contiguous
    assert_bitwise(dyn(x), dyn(np.ascontiguousarray(x)))


def test_readonly_and_unaligned_inputs(dyn, stat):
    rng = np.random.default_rng(107)
    x = rand_f32(rng, (4, K))
    ref = dyn(x)
    ro = x.copy()
    ro.flags.writeable = False
    assert_bitwise(dyn(ro), ref, "read-only")
    raw = np.zeros(x.nbytes + 1, dtype=np.uint8)
    un = raw[1:].view(np.float32).reshape(4, K)
    un[:] = x
    assert not un.flags.aligned or un.ctypes.data % 4 != 0
    assert_bitwise(dyn(un), ref, "unaligned")
    be = x.astype(">f4")
    # a big-endian float32 is still float32 by value; either it works and matches, or
    # it is a ValueError (never wrong bits)
    try:
        assert_bitwise(dyn(be), ref, "big-endian")
    except ValueError:
        pass


# --------------------------------------------------------------------------- array-likes


class OnlyArray:
    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        if dtype is not None:
            return self._a.astype(dtype)
        return self._a


class OnlyDlpack:
    def __init__(self, a):
        self._a = a

    def __dlpack__(self, *args, **kwargs):
        return self._a.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_array_protocol(dyn, stat):
    rng = np.random.default_rng(108)
    xf = rand_f32(rng, (3, K))
    xu = rand_u8(rng, (3, K))
    for layer, x in ((dyn, xf), (stat, xu), (stat, xf)):
        y = layer(OnlyArray(x))
        assert type(y) is np.ndarray
        assert_bitwise(y, layer(x), "__array__")


def test_dlpack_protocol(dyn, stat):
    rng = np.random.default_rng(109)
    xf = rand_f32(rng, (3, K))
    xu = rand_u8(rng, (3, K))
    for layer, x in ((dyn, xf), (stat, xu), (stat, xf)):
        y = layer(OnlyDlpack(x))
        assert type(y) is np.ndarray
        assert_bitwise(y, layer(x), "__dlpack__")


def test_array_protocol_wrong_dtype(dyn):
    with pytest.raises(ValueError):
        dyn(OnlyArray(np.ones((2, K), np.float64)))
    with pytest.raises(ValueError):
        dyn(OnlyDlpack(np.ones((2, K), np.float64)))


def test_non_array_objects(dyn):
    for bad in (None, "abc", object(), 3.5, {1: 2}):
        with pytest.raises((ValueError, TypeError)):
            dyn(bad)


def test_input_not_modified(dyn, stat):
    rng = np.random.default_rng(110)
    for layer, x in ((dyn, rand_f32(rng, (6, K))), (stat, rand_u8(rng, (6, K))), (stat, rand_f32(rng, (6, K)))):
        before = x.copy()
        layer(x)
        layer(x[:, :])
        assert_bitwise(x, before)
    # per-row and relu layers too
    layer = make_dynamic(rng, N, K, per_row=True, relu=True)
    x = rand_f32(rng, (6, K))
    before = x.copy()
    layer(x)
    assert_bitwise(x, before)


def test_output_does_not_alias_input(dyn):
    rng = np.random.default_rng(111)
    layer = make_dynamic(rng, K, K)
    x = rand_f32(rng, (3, K))
    y = layer(x)
    assert not np.shares_memory(x, y)
    y2 = layer(x)
    assert not np.shares_memory(y, y2)


# --------------------------------------------------------------------------- constructor errors

GOOD_STATIC = dict(scale=0.5, zero_point=10)


def both_kinds(w, s, z, **kw):
    """Calls both constructors with the same weight arguments; each must raise."""
    with pytest.raises(ValueError):
        qlinear.DynamicLinear(w, s, z, **kw)
    with pytest.raises(ValueError):
        qlinear.Linear(w, s, z, **GOOD_STATIC, **kw)


@pytest.mark.parametrize("bad", [np.nan, 0.0, -0.0, -0.5, np.inf, -np.inf, 1e-46])
def test_bad_weight_scale_per_tensor(bad):
    w = rand_weight(np.random.default_rng(120), N, K)
    both_kinds(w, bad, 0)


@pytest.mark.parametrize("bad", [np.nan, 0.0, -0.5, np.inf])
def test_bad_weight_scale_per_channel(bad):
    rng = np.random.default_rng(121)
    w = rand_weight(rng, N, K)
    s = rand_scales(rng, N)
    s[N // 2] = bad
    both_kinds(w, s, np.zeros(N, np.int32))


@pytest.mark.parametrize("bad", [128, -129, 1000, -100000])
def test_bad_weight_zero_point(bad):
    rng = np.random.default_rng(122)
    w = rand_weight(rng, N, K)
    both_kinds(w, 0.01, bad)
    z = np.zeros(N, np.int32)
    z[-1] = bad
    both_kinds(w, rand_scales(rng, N), z)


def test_weight_qparams_kind_and_length_mismatch():
    rng = np.random.default_rng(123)
    w = rand_weight(rng, N, K)
    s = rand_scales(rng, N)
    z = np.zeros(N, np.int32)
    both_kinds(w, s[:-1], z[:-1])  # N-1 channels
    both_kinds(w, s, z[:-1])
    both_kinds(w, s[:-1], z)
    both_kinds(w, np.concatenate([s, s[:1]]), np.zeros(N + 1, np.int32))
    both_kinds(w, 0.01, z)  # per-tensor scale with per-channel zero points
    both_kinds(w, s.reshape(N, 1), z.reshape(N, 1))  # 2-D qparams


def test_per_channel_scales_with_a_scalar_zero_point_broadcast():
    """docs/python.md: a per-channel scale with a scalar zero point uses it for every
    channel; the layer equals the one given the full 1-D zero points."""
    rng = np.random.default_rng(123)
    w = rand_weight(rng, N, K)
    s = rand_scales(rng, N)
    x = rand_f32(rng, (5, K))
    for z in (0, np.array(0, np.int32), 3, np.int64(-7)):
        full = np.full(N, int(z), np.int32)
        a = qlinear.DynamicLinear(w, s, z)
        b = qlinear.DynamicLinear(w, s, full)
        assert a.per_channel and a.weight() == b.weight()
        assert_bitwise(a(x), b(x), f"zero point {z!r}")
        sa = qlinear.Linear(w, s, z, **GOOD_STATIC, input_scale=0.05, input_zero_point=128)
        sb = qlinear.Linear(w, s, full, **GOOD_STATIC, input_scale=0.05, input_zero_point=128)
        xq = qlinear.quantize_per_tensor(x, 0.05, 128)
        assert_bitwise(sa(xq), sb(xq), f"static, zero point {z!r}")
    # Out of range is still an error, per channel too.
    both_kinds(w, s, 128)


def test_bad_weight_shape_and_dtype():
    rng = np.random.default_rng(124)
    w = rand_weight(rng, N, K)
    both_kinds(w[0], 0.01, 0)  # 1-D
    both_kinds(w.reshape(2, N // 2, K), 0.01, 0)  # 3-D
    both_kinds(np.array(5, np.int8), 0.01, 0)  # 0-d
    both_kinds(np.zeros((0, K), np.int8), 0.01, 0)  # no output channels
    both_kinds(np.zeros((N, 0), np.int8), 0.01, 0)  # no input features
    both_kinds(w.astype(np.float32), 0.01, 0)  # float weight in the int8 constructor
    both_kinds(w.astype(np.uint8), 0.01, 0)
    both_kinds(w.astype(np.int32), 0.01, 0)


def test_k_limit():
    w = np.ones((1, 33_026), np.int8)
    both_kinds(w, 0.01, 0)
    # the limit itself is fine
    layer = qlinear.DynamicLinear(np.ones((1, 33_025), np.int8), 0.01, 0)
    assert layer.in_features == 33_025


def test_bad_bias():
    rng = np.random.default_rng(125)
    w = rand_weight(rng, N, K)
    b = rand_bias(rng, N)
    both_kinds(w, 0.01, 0, bias=b[:-1])
    both_kinds(w, 0.01, 0, bias=np.concatenate([b, b[:1]]))
    both_kinds(w, 0.01, 0, bias=b.reshape(1, N))
    for bad in (np.nan, np.inf, -np.inf):
        bb = b.copy()
        bb[3] = bad
        both_kinds(w, 0.01, 0, bias=bb)


@pytest.mark.parametrize(
    "kw",
    [
        dict(scale=0.0, zero_point=0),
        dict(scale=-1.0, zero_point=0),
        dict(scale=float("nan"), zero_point=0),
        dict(scale=float("inf"), zero_point=0),
        dict(scale=0.5, zero_point=256),
        dict(scale=0.5, zero_point=-1),
        dict(scale=0.5, zero_point=0, input_scale=0.0, input_zero_point=0),
        dict(scale=0.5, zero_point=0, input_scale=float("nan"), input_zero_point=0),
        dict(scale=0.5, zero_point=0, input_scale=0.5, input_zero_point=256),
        dict(scale=0.5, zero_point=0, input_scale=0.5, input_zero_point=-1),
    ],
)
def test_bad_static_activation_qparams(kw):
    w = rand_weight(np.random.default_rng(126), N, K)
    with pytest.raises(ValueError):
        qlinear.Linear(w, 0.01, 0, **kw)


@pytest.mark.parametrize(
    "s,z", [(0.0, 0), (-0.5, 0), (float("nan"), 0), (float("inf"), 0), (0.5, 256), (0.5, -1)]
)
def test_bad_per_call_input_qparams(stat, s, z):
    x = rand_u8(np.random.default_rng(127), (2, K))
    with pytest.raises(ValueError):
        stat(x, input_scale=s, input_zero_point=z)


def test_bad_quantize_args():
    x = np.ones((2, 3), np.float32)
    for s, z in ((0.0, 0), (-1.0, 0), (float("nan"), 0), (0.5, 256), (0.5, -1), (1e-45, 0)):
        with pytest.raises(ValueError):
            qlinear.quantize_per_tensor(x, s, z)
    with pytest.raises(ValueError):
        qlinear.quantize_per_tensor(x.astype(np.float64), 0.5, 0)
    with pytest.raises(ValueError):
        qlinear.dequantize(np.ones((2, 3), np.int8), 0.5, 0)


def test_bad_quantize_weight_args():
    rng = np.random.default_rng(128)
    wf = rand_f32(rng, (N, K))
    with pytest.raises(ValueError):
        qlinear.quantize_weight(wf, qscheme="per_tensor_banana")
    with pytest.raises(ValueError):
        qlinear.quantize_weight(wf.astype(np.float64))
    with pytest.raises(ValueError):
        qlinear.quantize_weight(wf[0])
    bad = wf.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError):
        qlinear.quantize_weight(bad)
    with pytest.raises(ValueError):
        qlinear.DynamicLinear.from_float(bad)
    with pytest.raises(ValueError):
        qlinear.DynamicLinear.from_float(wf, qscheme="nope")


def test_unknown_profile():
    w = rand_weight(np.random.default_rng(129), N, K)
    with pytest.raises(ValueError):
        qlinear.DynamicLinear(w, 0.01, 0, profile="tflite")
    with pytest.raises(ValueError):
        qlinear.Linear(w, 0.01, 0, scale=0.5, zero_point=0, profile="onednn")


# --------------------------------------------------------------------------- backends


def test_unknown_backend():
    rng = np.random.default_rng(130)
    w = rand_weight(rng, N, K)
    for name in ("sse9", "", "cuda"):
        with pytest.raises(ValueError) as e:
            qlinear.DynamicLinear(w, 0.01, 0, backend=name)
        assert not isinstance(e.value, qlinear.BackendUnavailableError)
        with pytest.raises(ValueError):
            qlinear.Linear(w, 0.01, 0, scale=0.5, zero_point=0, backend=name)
    data = bytes(qlinear.DynamicLinear(w, 0.01, 0).to_bytes())
    with pytest.raises(ValueError):
        qlinear.DynamicLinear.from_bytes(data, backend="sse9")


def unavailable_backend():
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686", "x86"):
        candidates = ["neon", "dotprod", "i8mm"]
    elif machine in ("aarch64", "arm64"):
        candidates = ["avx2", "avxvnni", "avx512vnni"]
    else:
        pytest.skip(f"no known foreign backend for machine {machine!r}")
    have = set(qlinear.available_backends())
    for c in candidates:
        if c not in have:
            return c
    pytest.skip(f"all of {candidates} are available on {machine!r}")


def test_backend_unavailable():
    name = unavailable_backend()
    rng = np.random.default_rng(131)
    w = rand_weight(rng, N, K)
    with pytest.raises(qlinear.BackendUnavailableError) as e:
        qlinear.DynamicLinear(w, 0.01, 0, backend=name)
    assert isinstance(e.value, RuntimeError)
    assert not isinstance(e.value, ValueError)
    with pytest.raises(qlinear.BackendUnavailableError):
        qlinear.Linear(w, 0.01, 0, scale=0.5, zero_point=0, backend=name)
    with pytest.raises(RuntimeError):
        qlinear.DynamicLinear.from_float(rand_f32(rng, (N, K)), backend=name)
    data = bytes(qlinear.DynamicLinear(w, 0.01, 0).to_bytes())
    with pytest.raises(qlinear.BackendUnavailableError):
        qlinear.DynamicLinear.from_bytes(data, backend=name)


def test_backend_auto_and_reference():
    w = rand_weight(np.random.default_rng(132), N, K)
    best = qlinear.available_backends()[0]
    a = qlinear.DynamicLinear(w, 0.01, 0, backend="auto")
    if not os.environ.get("QLINEAR_BACKEND"):
        assert a.kernel_name.split("/")[0] == best, (a.kernel_name, best)
    assert a.kernel_name.split("/")[0] in qlinear.available_backends()
    r = qlinear.DynamicLinear(w, 0.01, 0, backend="reference")
    assert r.kernel_name == "reference"


# --------------------------------------------------------------------------- more layouts


def test_zero_strides_and_3d_views(backend):
    """Broadcast views (stride 0) and leading dimensions that cannot be flattened into
    one row stride give the bits of the contiguous copy."""
    rng = np.random.default_rng(140)
    dyn = make_dynamic(rng, N, K, backend=backend)
    stat = make_static(rng, N, K, backend=backend)
    row = rand_f32(rng, (K,))
    rowu = rand_u8(rng, (K,))
    x3 = rand_f32(rng, (2, 3, K))
    x3u = rand_u8(rng, (2, 3, K))
    wide3 = rand_f32(rng, (2, 3, K + 5))
    perm = rand_f32(rng, (3, 2, K))
    views = [
        (dyn, "broadcast row", np.broadcast_to(row, (5, K))),
        (dyn, "broadcast scalar", np.broadcast_to(np.float32(0.7), (3, K))),
        (dyn, "3-D, every other middle row", x3[:, ::2, :]),
        (dyn, "3-D, first two middle rows", x3[:, :2, :]),
        (dyn, "3-D row-strided", wide3[:, :, :K]),
        (dyn, "3-D permuted", perm.transpose(1, 0, 2)),
        (stat, "broadcast u8 row", np.broadcast_to(rowu, (4, K))),
        (stat, "3-D u8, first two middle rows", x3u[:, :2, :]),
        (stat, "broadcast float row (float path)", np.broadcast_to(row, (5, K))),
    ]
    for layer, name, v in views:
        assert_bitwise(layer(v), layer(np.ascontiguousarray(v)), name)


def test_non_contiguous_constructor_arrays():
    """Weights, per-channel qparams and bias given as strided views build the same layer."""
    rng = np.random.default_rng(141)
    w = rand_weight(rng, N, K)
    s = rand_scales(rng, N)
    z = rng.integers(-128, 128, size=N).astype(np.int32)
    b = rand_bias(rng, N)

    def strided(a):
        big = np.zeros((2 * a.shape[0],) + a.shape[1:], a.dtype)
        big[::2] = a
        return big[::2]

    x = rand_f32(rng, (6, K))
    ref = qlinear.DynamicLinear(w, s, z, bias=b)(x)
    for name, ww in (
        ("fortran weight", np.asfortranarray(w)),
        ("transposed weight", np.ascontiguousarray(w.T).T),
        ("negative-stride weight", np.ascontiguousarray(w[::-1])[::-1]),
        ("row-strided weight", strided(w)),
    ):
        assert_bitwise(qlinear.DynamicLinear(ww, s, z, bias=b)(x), ref, name)
    assert_bitwise(qlinear.DynamicLinear(w, strided(s), strided(z), bias=strided(b))(x), ref, "strided qparams/bias")
    assert_bitwise(qlinear.DynamicLinear(w, s[::-1].copy()[::-1], z, bias=b[::-1].copy()[::-1])(x), ref, "reversed")


def test_numpy_scalar_qparams():
    rng = np.random.default_rng(142)
    w = rand_weight(rng, N, K)
    x = rand_u8(rng, (4, K))
    a = qlinear.Linear(w, 0.015625, 0, scale=0.5, zero_point=3)
    b = qlinear.Linear(w, np.float32(0.015625), np.int8(0), scale=np.float32(0.5), zero_point=np.uint8(3))
    ref = a(x, input_scale=0.25, input_zero_point=7)
    assert_bitwise(b(x, input_scale=0.25, input_zero_point=7), ref)
    assert_bitwise(a(x, input_scale=np.float32(0.25), input_zero_point=np.int64(7)), ref)
    assert_bitwise(a(x, input_scale=np.float64(0.25), input_zero_point=np.uint8(7)), ref)


# --------------------------------------------------------------------------- layouts numpy allows and Rust must not read raw


def _record_field(values: np.ndarray) -> np.ndarray:
    """``values`` (float32, [rows, k]) as a field of a packed record array: byte row
    stride 4k + 1, not a multiple of 4, and an unaligned data pointer."""
    rows, k = values.shape
    rec = np.zeros(rows, dtype=[("tag", "u1"), ("x", "<f4", (k,))])
    rec["x"] = values
    field = rec["x"]
    assert field.strides[0] % 4 != 0 and not field.flags.aligned
    return field


def test_odd_byte_strides_and_unaligned_fields_read_exactly(dyn, stat):
    """Packed record fields (row stride 4k + 1 bytes, unaligned) and 1-byte-offset views
    give the dense input's bits: Rust never reads them as raw f32 slices."""
    rng = np.random.default_rng(130)
    x = rand_f32(rng, (5, K))
    field = _record_field(x)
    assert_bitwise(dyn(field), dyn(x), "dynamic, record field")
    assert_bitwise(stat(field), stat(x), "static float path, record field")
    assert_bitwise(
        qlinear.quantize_per_tensor(field, 0.05, 128),
        qlinear.quantize_per_tensor(x, 0.05, 128),
        "quantize_per_tensor, record field",
    )
    # u8 input as a field with a 2-byte tag: stride K + 2, aligned trivially.
    xu = rand_u8(rng, (5, K))
    rec = np.zeros(5, dtype=[("tag", "u2"), ("x", "u1", (K,))])
    rec["x"] = xu
    assert_bitwise(stat(rec["x"]), stat(xu), "static u8, record field")


def test_unaligned_weight_bias_and_scales_are_read_exactly():
    rng = np.random.default_rng(131)
    w = rand_weight(rng, N, K)
    b = rand_bias(rng, N)
    s = rand_scales(rng, N)
    brec = np.zeros(N, dtype=[("tag", "u1"), ("b", "<f4")])
    brec["b"] = b
    srec = np.zeros(N, dtype=[("tag", "u1"), ("s", "<f4")])
    srec["s"] = s
    odd = qlinear.DynamicLinear(w, srec["s"], 0, bias=brec["b"])
    plain = qlinear.DynamicLinear(w, s, 0, bias=b)
    assert_bitwise(odd.bias(), plain.bias(), "bias")
    assert odd.weight() == plain.weight()
    wf = rng.standard_normal((N, K)).astype(np.float32)
    assert qlinear.quantize_weight(_record_field(wf)) == qlinear.quantize_weight(wf)


def test_impossible_copy_is_a_memory_error_not_an_abort(dyn):
    """A broadcast view of a billion rows needs a copy numpy cannot make: MemoryError
    (or the output allocation's), never a process abort."""
    x = np.broadcast_to(np.ones(K, np.float32), (10**12, K))
    with pytest.raises(MemoryError):
        dyn(x)


# --------------------------------------------------------------------------- argument types


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(zero_point=2**70),
        dict(input_zero_point=2**70, input_scale=0.1),
        dict(scale=10**400),
        dict(scale=None),
        dict(profile=None),
        dict(backend=None),
        dict(threads=2**64),
        dict(threads=-1),
    ],
)
def test_out_of_range_and_mistyped_arguments_are_value_errors(kwargs):
    w = rand_weight(np.random.default_rng(132), N, K)
    args = dict(scale=0.5, zero_point=10)
    args.update(kwargs)
    with pytest.raises(ValueError):
        qlinear.Linear(w, 0.01, 0, **args)


def test_call_and_function_arguments_are_value_errors(dyn, stat):
    x = rand_u8(np.random.default_rng(133), (2, K))
    with pytest.raises(ValueError):
        stat(x, 0.1, 2**70)
    with pytest.raises(ValueError):
        stat(x, 10**400, 3)
    with pytest.raises(ValueError):
        qlinear.quantize_per_tensor(np.ones(3, np.float32), 0.1, 2**70)
    with pytest.raises(ValueError):
        dyn.kernel_name_for(-1)
    with pytest.raises(ValueError):
        qlinear.DynamicLinear.from_bytes(5)
    with pytest.raises(ValueError):
        qlinear.DynamicLinear(rand_weight(np.random.default_rng(1), N, K), 0.01, np.array([2**63], np.uint64))


def test_masked_arrays_are_rejected(dyn):
    x = np.ma.masked_array(np.ones((2, K), np.float32), mask=False)
    with pytest.raises(ValueError, match="masked"):
        dyn(x)
