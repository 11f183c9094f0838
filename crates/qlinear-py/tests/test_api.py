"""Properties, constructors, serialization and call conventions (docs/python.md)."""

import subprocess
import sys

import numpy as np
import pytest

import qlinear
from conftest import (
    assert_bitwise,
    f32,
    first_diff,
    make_dynamic,
    make_static,
    rand_bias,
    rand_f32,
    rand_scales,
    rand_u8,
    rand_weight,
)

N, K = 48, 80


def layers(rng, backend="auto"):
    """(name, layer, input) for every layer flavour."""
    out = []
    for pc in (False, True):
        for relu in (False, True):
            for profile in ("fbgemm", "qnnpack"):
                d = make_dynamic(rng, N, K, per_channel=pc, relu=relu, profile=profile, backend=backend)
                out.append((f"dynamic-pc{pc}-relu{relu}-{profile}", d, rand_f32(rng, (5, K))))
                s = make_static(rng, N, K, per_channel=pc, relu=relu, profile=profile, backend=backend)
                out.append((f"static-pc{pc}-relu{relu}-{profile}", s, rand_u8(rng, (5, K))))
    return out


# --------------------------------------------------------------------------- functions


def test_available_backends():
    b = qlinear.available_backends()
    assert isinstance(b, (list, tuple))
    assert len(b) >= 1
    assert all(isinstance(x, str) and x for x in b)
    assert b[-1] == "reference"
    assert len(set(b)) == len(b)
    assert "auto" not in b


def test_backend_error_class():
    assert issubclass(qlinear.BackendUnavailableError, RuntimeError)


# --------------------------------------------------------------------------- properties


def test_dynamic_properties():
    rng = np.random.default_rng(1)
    w = rand_weight(rng, N, K)
    s = rand_scales(rng, N)
    z = rng.integers(-128, 128, size=N).astype(np.int32)
    b = rand_bias(rng, N)
    layer = qlinear.DynamicLinear(w, s, z, bias=b, relu=True, profile="qnnpack", per_row=True, threads=3)
    assert layer.in_features == K
    assert layer.out_features == N
    assert layer.relu is True
    assert layer.profile == "qnnpack"
    assert layer.per_channel is True
    assert layer.per_row is True
    assert layer.reduce_range is False
    assert layer.threads == 3
    layer.threads = 1
    assert layer.threads == 1
    assert not hasattr(layer, "scale")
    assert not hasattr(layer, "zero_point")

    q = layer.weight()
    assert isinstance(q, qlinear.QuantizedWeight)
    assert_bitwise(np.asarray(q.int_repr), w, "int_repr")
    assert np.asarray(q.int_repr).dtype == np.int8
    assert_bitwise(np.asarray(q.scales), s, "scales")
    assert np.asarray(q.zero_points).dtype == np.int32
    assert_bitwise(np.asarray(q.zero_points), z, "zero_points")
    assert q.per_channel is True
    assert hasattr(q, "qscheme")
    deq = np.asarray(q.dequantize())
    assert deq.dtype == np.float32 and deq.shape == (N, K)
    exp = ((w.astype(np.int32) - z[:, None]).astype(np.float32) * s[:, None]).astype(np.float32)
    assert_bitwise(deq, exp, "dequantize")

    bb = layer.bias()
    assert_bitwise(bb, b, "bias")
    bb[:] = 0  # a copy: changing it changes nothing
    assert_bitwise(layer.bias(), b, "bias after modifying the returned copy")


def test_dynamic_per_tensor_properties():
    rng = np.random.default_rng(2)
    w = rand_weight(rng, N, K)
    layer = qlinear.DynamicLinear(w, f32(0.015625), -3)
    assert layer.per_channel is False
    assert layer.bias() is None
    assert layer.relu is False
    assert layer.profile == "fbgemm"
    assert layer.per_row is False
    q = layer.weight()
    assert q.per_channel is False
    assert_bitwise(np.asarray(q.scales), np.array([0.015625], np.float32), "scales")
    assert_bitwise(np.asarray(q.zero_points), np.array([-3], np.int32), "zero_points")
    assert_bitwise(np.asarray(q.int_repr), w, "int_repr")


def test_reduce_range_default_follows_profile():
    rng = np.random.default_rng(3)
    w = rand_weight(rng, 4, 8)
    assert qlinear.DynamicLinear(w, 0.1).reduce_range is True
    assert qlinear.DynamicLinear(w, 0.1, profile="fbgemm").reduce_range is True
    assert qlinear.DynamicLinear(w, 0.1, profile="qnnpack").reduce_range is False
    assert qlinear.DynamicLinear(w, 0.1, profile="fbgemm", reduce_range=False).reduce_range is False
    assert qlinear.DynamicLinear(w, 0.1, profile="qnnpack", reduce_range=True).reduce_range is True
    f = rand_f32(np.random.default_rng(4), (4, 8))
    assert qlinear.DynamicLinear.from_float(f).reduce_range is True
    assert qlinear.DynamicLinear.from_float(f, profile="qnnpack").reduce_range is False


def test_reduce_range_changes_fbgemm_output():
    """reduce_range=None with fbgemm is reduce_range=True, and differs from False."""
    rng = np.random.default_rng(5)
    w = rand_weight(rng, 32, 64)
    s = rand_scales(rng, 32)
    x = rand_f32(rng, (9, 64))
    d = qlinear.DynamicLinear(w, s, np.zeros(32, np.int32))(x)
    t = qlinear.DynamicLinear(w, s, np.zeros(32, np.int32), reduce_range=True)(x)
    f = qlinear.DynamicLinear(w, s, np.zeros(32, np.int32), reduce_range=False)(x)
    assert_bitwise(d, t, "default vs reduce_range=True")
    assert first_diff(d, f) is not None, "reduce_range had no effect"


def test_static_properties():
    rng = np.random.default_rng(6)
    w = rand_weight(rng, N, K)
    s = rand_scales(rng, N)
    z = rng.integers(-128, 128, size=N).astype(np.int32)
    b = rand_bias(rng, N)
    layer = qlinear.Linear(
        w, s, z, scale=f32(0.5), zero_point=7, bias=b, input_scale=f32(0.25),
        input_zero_point=128, relu=True, profile="fbgemm", threads=2,
    )
    assert layer.in_features == K and layer.out_features == N
    assert layer.scale == 0.5 and layer.zero_point == 7
    assert layer.input_scale == 0.25 and layer.input_zero_point == 128
    assert layer.relu is True and layer.profile == "fbgemm" and layer.per_channel is True
    assert layer.threads == 2
    layer.threads = 5
    assert layer.threads == 5
    assert not hasattr(layer, "reduce_range")
    assert not hasattr(layer, "per_row")
    q = layer.weight()
    assert_bitwise(np.asarray(q.int_repr), w, "int_repr")
    assert_bitwise(np.asarray(q.scales), s, "scales")
    assert_bitwise(np.asarray(q.zero_points), z, "zero_points")
    assert_bitwise(layer.bias(), b, "bias")

    bare = qlinear.Linear(w, 0.01, 0, scale=1.0, zero_point=0)
    assert bare.input_scale is None and bare.input_zero_point is None
    assert bare.bias() is None and bare.relu is False and bare.profile == "fbgemm"
    assert bare.per_channel is False


def test_zero_d_array_qparams_are_per_tensor():
    rng = np.random.default_rng(8)
    w = rand_weight(rng, 16, 24)
    x = rand_f32(rng, (3, 24))
    a = qlinear.DynamicLinear(w, np.array(0.03125, np.float32), np.array(5, np.int32))
    b = qlinear.DynamicLinear(w, 0.03125, 5)
    assert a.per_channel is False
    assert_bitwise(a(x), b(x), "0-d array qparams vs Python numbers")


def test_kernel_names(backend):
    rng = np.random.default_rng(9)
    for layer in (make_dynamic(rng, N, K, backend=backend), make_static(rng, N, K, backend=backend)):
        kn = layer.kernel_name
        assert isinstance(kn, str) and kn
        assert kn.split("/")[0] == backend, (kn, backend)
        for m in (1, 64):
            k1 = layer.kernel_name_for(m)
            assert isinstance(k1, str) and k1
            assert k1.split("/")[0] == backend, (k1, backend)


def test_repr():
    rng = np.random.default_rng(10)
    for layer in (make_dynamic(rng, 768 // 8, 3072 // 8), make_static(rng, 96, 384)):
        r = repr(layer)
        assert f"in_features={layer.in_features}" in r, r
        assert f"out_features={layer.out_features}" in r, r
    r = repr(make_dynamic(rng, 96, 384))
    assert r.startswith("DynamicLinear("), r
    assert "dtype=torch.qint8" in r, r
    assert "qscheme=torch.per_channel_affine" in r, r
    r = repr(make_dynamic(rng, 96, 384, per_channel=False))
    assert "qscheme=torch.per_tensor_affine" in r, r
    r = repr(make_static(rng, 96, 384))
    assert r.startswith("Linear("), r


# --------------------------------------------------------------------------- from_float


@pytest.mark.parametrize(
    "qscheme", ["per_tensor_symmetric", "per_tensor_affine", "per_channel_symmetric", "per_channel_affine"]
)
@pytest.mark.parametrize("wrr", [False, True])
def test_from_float_matches_quantize_weight(qscheme, wrr, backend):
    rng = np.random.default_rng(11)
    wf = rand_f32(rng, (N, K))
    b = rand_bias(rng, N)
    q = qlinear.quantize_weight(wf, qscheme=qscheme, reduce_range=wrr)
    ir, sc, zp = np.asarray(q.int_repr), np.asarray(q.scales), np.asarray(q.zero_points)
    per_channel = qscheme.startswith("per_channel")
    assert q.per_channel is per_channel
    if per_channel:
        s_arg, z_arg = sc, zp
    else:
        assert sc.shape == (1,) and zp.shape == (1,)
        s_arg, z_arg = float(sc[0]), int(zp[0])

    xf = rand_f32(rng, (7, K))
    for relu in (False, True):
        for profile in ("fbgemm", "qnnpack"):
            d1 = qlinear.DynamicLinear.from_float(
                wf, b, qscheme=qscheme, weight_reduce_range=wrr, relu=relu, profile=profile, backend=backend
            )
            d2 = qlinear.DynamicLinear(ir, s_arg, z_arg, bias=b, relu=relu, profile=profile, backend=backend)
            assert_bitwise(np.asarray(d1.weight().int_repr), ir, "from_float int_repr")
            assert_bitwise(d1(xf), d2(xf), f"dynamic from_float {profile} relu={relu}")

            kw = dict(scale=f32(0.125), zero_point=100, input_scale=f32(0.0625), input_zero_point=120,
                      relu=relu, profile=profile, backend=backend)
            s1 = qlinear.Linear.from_float(wf, b, qscheme=qscheme, weight_reduce_range=wrr, **kw)
            s2 = qlinear.Linear(ir, s_arg, z_arg, bias=b, **kw)
            xu = rand_u8(rng, (7, K))
            assert_bitwise(s1(xu), s2(xu), f"static from_float {profile} relu={relu}")
            assert_bitwise(s1(xf), s2(xf), f"static float path from_float {profile} relu={relu}")


def test_from_float_default_is_per_channel_symmetric():
    rng = np.random.default_rng(12)
    wf = rand_f32(rng, (N, K))
    q = qlinear.quantize_weight(wf)
    q2 = qlinear.quantize_weight(wf, qscheme="per_channel_symmetric", reduce_range=False)
    assert q.per_channel is True
    assert_bitwise(np.asarray(q.int_repr), np.asarray(q2.int_repr))
    assert_bitwise(np.asarray(q.scales), np.asarray(q2.scales))
    assert np.all(np.asarray(q.zero_points) == 0)
    d = qlinear.DynamicLinear.from_float(wf)
    assert d.per_channel is True
    assert_bitwise(np.asarray(d.weight().int_repr), np.asarray(q.int_repr))
    assert_bitwise(np.asarray(d.weight().scales), np.asarray(q.scales))


# --------------------------------------------------------------------------- shapes


def test_batch_dims_flattened(backend):
    rng = np.random.default_rng(13)
    for name, layer, x2 in layers(rng, backend):
        x = (rand_f32(rng, (2, 3, K)) if x2.dtype == np.float32 else rand_u8(rng, (2, 3, K)))
        y = layer(x)
        assert y.shape == (2, 3, N), (name, y.shape)
        y2 = layer(x.reshape(6, K))
        assert_bitwise(y, y2.reshape(2, 3, N), name)
        x4 = x.reshape(1, 2, 3, K)
        assert_bitwise(layer(x4), y2.reshape(1, 2, 3, N), name + " 4-D")


def test_one_d_input_is_one_row():
    rng = np.random.default_rng(14)
    for name, layer, x2 in layers(rng):
        y1 = layer(x2[2])
        assert y1.shape == (N,), (name, y1.shape)
        if x2.dtype == np.float32 and isinstance(layer, qlinear.DynamicLinear):
            # per-tensor dynamic quantization depends on the whole tensor: compare with
            # the 1-row 2-D call
            ref = layer(x2[2:3])[0]
        else:
            ref = layer(x2)[2]
        assert_bitwise(y1, ref, name)


def test_empty_rows_do_not_crash():
    """docs are silent on M = 0; it must not crash, and if it returns, the shape is
    (0, N) (and (2, 0, N) for a [2, 0, K] input)."""
    rng = np.random.default_rng(15)
    for name, layer, x2 in layers(rng):
        for shape, oshape in (((0, K), (0, N)), ((2, 0, K), (2, 0, N))):
            x = np.zeros(shape, dtype=x2.dtype)
            try:
                y = layer(x)
            except ValueError:
                continue
            assert isinstance(y, np.ndarray), name
            assert y.shape == oshape, (name, y.shape)
            assert y.dtype == x2.dtype, (name, y.dtype)


def test_forward_equals_call():
    rng = np.random.default_rng(16)
    for name, layer, x in layers(rng):
        assert_bitwise(layer.forward(x), layer(x), name)


def test_output_dtype_and_type():
    rng = np.random.default_rng(17)
    for name, layer, x in layers(rng):
        y = layer(x)
        assert type(y) is np.ndarray, (name, type(y))
        assert y.dtype == x.dtype, name
        assert y.flags.c_contiguous and y.flags.writeable, name


# --------------------------------------------------------------------------- static input qparams


def test_static_per_call_input_qparams_override():
    rng = np.random.default_rng(18)
    w = rand_weight(rng, N, K)
    s = rand_scales(rng, N)
    z = rng.integers(-128, 128, size=N).astype(np.int32)
    b = rand_bias(rng, N)
    common = dict(scale=f32(0.375), zero_point=64, bias=b)
    a = qlinear.Linear(w, s, z, input_scale=f32(0.046875), input_zero_point=10, **common)
    other = qlinear.Linear(w, s, z, input_scale=f32(0.5), input_zero_point=200, **common)
    bare = qlinear.Linear(w, s, z, **common)
    x = rand_u8(rng, (11, K))
    ya = a(x)
    yo = other(x)
    assert first_diff(ya, yo) is not None, "test data does not distinguish the qparams"
    assert_bitwise(a(x, input_scale=f32(0.5), input_zero_point=200), yo, "override")
    assert_bitwise(a(x, f32(0.5), 200), yo, "override, positional")
    assert_bitwise(bare(x, input_scale=f32(0.5), input_zero_point=200), yo, "bare with qparams")
    assert_bitwise(a(x), ya, "defaults unchanged after an override")
    # float path with an override quantizes with the override's qparams
    xf = rand_f32(rng, (11, K))
    exp = qlinear.dequantize(other(qlinear.quantize_per_tensor(xf, f32(0.5), 200)), f32(0.375), 64)
    assert_bitwise(a(xf, input_scale=f32(0.5), input_zero_point=200), exp, "float path override")


def test_static_missing_input_qparams():
    rng = np.random.default_rng(19)
    w = rand_weight(rng, N, K)
    bare = qlinear.Linear(w, 0.01, 0, scale=1.0, zero_point=0)
    with pytest.raises(ValueError):
        bare(rand_u8(rng, (2, K)))
    with pytest.raises(ValueError):
        bare(rand_f32(rng, (2, K)))


# --------------------------------------------------------------------------- serialization


def same_settings(a, b):
    assert type(a) is type(b)
    for attr in ("in_features", "out_features", "relu", "profile", "per_channel"):
        assert getattr(a, attr) == getattr(b, attr), attr
    if isinstance(a, qlinear.Linear):
        for attr in ("scale", "zero_point", "input_scale", "input_zero_point"):
            assert getattr(a, attr) == getattr(b, attr), attr
    else:
        for attr in ("reduce_range", "per_row"):
            assert getattr(a, attr) == getattr(b, attr), attr
    qa, qb = a.weight(), b.weight()
    assert_bitwise(np.asarray(qa.int_repr), np.asarray(qb.int_repr))
    assert_bitwise(np.asarray(qa.scales), np.asarray(qb.scales))
    assert_bitwise(np.asarray(qa.zero_points), np.asarray(qb.zero_points))
    ba, bb = a.bias(), b.bias()
    assert (ba is None) == (bb is None)
    if ba is not None:
        assert_bitwise(ba, bb)


def ser_layers(rng):
    out = list(layers(rng))
    out.append(("dynamic-per-row", make_dynamic(rng, N, K, per_row=True, reduce_range=False), rand_f32(rng, (5, K))))
    out.append(("dynamic-nobias", make_dynamic(rng, N, K, bias=False), rand_f32(rng, (5, K))))
    out.append(("static-nobias", make_static(rng, N, K, bias=False), rand_u8(rng, (5, K))))
    return out


def test_to_bytes_round_trip(backend):
    rng = np.random.default_rng(20)
    for name, layer, x in ser_layers(rng):
        data = layer.to_bytes()
        assert isinstance(data, (bytes, bytearray, memoryview))
        data = bytes(data)
        assert data[:4] == b"QLPW", name
        cls = type(layer)
        back = cls.from_bytes(data, backend=backend)
        same_settings(layer, back)
        assert back.kernel_name.split("/")[0] == backend
        assert_bitwise(back(x), layer(x), name)
        back2 = cls.from_bytes(data)
        assert_bitwise(back2(x), layer(x), name + " (auto)")


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(21)
    for i, (name, layer, x) in enumerate(ser_layers(rng)):
        p = tmp_path / f"layer{i}.qlpw"
        layer.save(p)
        assert p.read_bytes() == bytes(layer.to_bytes()), name
        back = type(layer).load(p)
        same_settings(layer, back)
        assert_bitwise(back(x), layer(x), name)
        back = type(layer).load(str(p), backend="reference")
        assert_bitwise(back(x), layer(x), name + " (reference)")


def test_safetensors_round_trip(tmp_path):
    rng = np.random.default_rng(22)
    for i, (name, layer, x) in enumerate(ser_layers(rng)):
        p = tmp_path / f"layer{i}.safetensors"
        layer.save_safetensors(p)
        back = type(layer).from_safetensors(p, "linear")
        same_settings(layer, back)
        assert_bitwise(back(x), layer(x), name)
        p2 = tmp_path / f"layer{i}-prefixed.safetensors"
        layer.save_safetensors(str(p2), prefix="enc.layer.0.fc")
        back = type(layer).from_safetensors(str(p2), "enc.layer.0.fc", threads=1)
        assert back.threads == 1
        assert_bitwise(back(x), layer(x), name + " (prefix)")
        with pytest.raises(ValueError):
            type(layer).from_safetensors(str(p2), "no.such.prefix")


def test_corrupt_bytes():
    rng = np.random.default_rng(23)
    for name, layer, x in ser_layers(rng)[:4]:
        data = bytes(layer.to_bytes())
        cls = type(layer)
        bad = [
            b"",
            b"hello",
            data[:-1],
            data[: len(data) // 2],
            data + b"\0",
        ]
        for pos in (0, 5, 9, 40, len(data) // 2, len(data) - 20, len(data) - 1):
            flipped = bytearray(data)
            flipped[pos] ^= 0x55
            bad.append(bytes(flipped))
        for j, d in enumerate(bad):
            with pytest.raises(ValueError):
                cls.from_bytes(d)
                pytest.fail(f"{name}: corrupt variant {j} loaded")


def test_corrupt_files(tmp_path):
    rng = np.random.default_rng(24)
    layer = make_dynamic(rng, N, K)
    p = tmp_path / "x.qlpw"
    p.write_bytes(b"QLPW" + b"\0" * 100)
    with pytest.raises(ValueError):
        qlinear.DynamicLinear.load(p)
    p.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError):
        qlinear.DynamicLinear.from_safetensors(p, "linear")
    with pytest.raises(OSError):
        qlinear.DynamicLinear.load(tmp_path / "missing.qlpw")
    with pytest.raises(OSError):
        qlinear.DynamicLinear.from_safetensors(tmp_path / "missing.safetensors", "linear")
    with pytest.raises(OSError):
        layer.save(tmp_path / "no_such_dir" / "x.qlpw")


def test_wrong_kind_from_bytes():
    """A static layer's bytes are not a dynamic layer and vice versa."""
    rng = np.random.default_rng(25)
    d = make_dynamic(rng, N, K)
    s = make_static(rng, N, K)
    with pytest.raises(ValueError):
        qlinear.Linear.from_bytes(bytes(d.to_bytes()))
    with pytest.raises(ValueError):
        qlinear.DynamicLinear.from_bytes(bytes(s.to_bytes()))


def test_torch_not_imported():
    """docs/python.md: torch is never imported unless a torch object reaches qlinear."""
    code = r"""
import sys
import numpy as np
import qlinear
w = np.ones((8, 16), np.int8)
d = qlinear.DynamicLinear(w, 0.01, 0)
d(np.ones((2, 16), np.float32))
s = qlinear.Linear(w, 0.01, 0, scale=0.5, zero_point=3, input_scale=0.25, input_zero_point=1)
s(np.ones((2, 16), np.uint8)); s(np.ones((2, 16), np.float32))
qlinear.DynamicLinear.from_bytes(d.to_bytes())
qlinear.quantize_weight(np.ones((4, 4), np.float32))
repr(d); repr(s)
try:
    d(np.ones((2, 16), np.float64))
except ValueError:
    pass
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH_MODULES", bad)
sys.exit(1 if bad else 0)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"torch was imported:\n{r.stdout}\n{r.stderr}"


# --------------------------------------------------------------------------- pickle, and what a layer can store


def test_pickle_and_deepcopy_keep_the_layer(tmp_path):
    import copy
    import pickle

    rng = np.random.default_rng(600)
    dyn = make_dynamic(rng, 24, 40, threads=3, per_row=True)
    stat = make_static(rng, 24, 40, threads=2)
    bare = make_static(rng, 24, 40, with_input_qparams=False)
    x = rand_f32(rng, (3, 40))
    xu = rand_u8(rng, (3, 40))
    for layer, call in [(dyn, lambda l: l(x)), (stat, lambda l: l(xu)), (bare, lambda l: l(xu, 0.05, 100))]:
        for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
            assert type(clone) is type(layer) and clone.threads == layer.threads
            assert clone.weight() == layer.weight()
            assert_bitwise(call(clone), call(layer), repr(layer))
    # A static layer without default input qparams stays without them.
    clone = pickle.loads(pickle.dumps(bare))
    assert clone.input_scale is None and clone.input_zero_point is None
    with pytest.raises(ValueError, match="no default input qparams"):
        clone(xu)


def test_a_layer_without_default_input_qparams_cannot_be_stored(tmp_path):
    """Its file would have to carry made-up input qparams: saving it is an error."""
    bare = make_static(np.random.default_rng(601), 8, 16, with_input_qparams=False)
    for store in (bare.to_bytes, lambda: bare.save(tmp_path / "b.qlinear"), lambda: bare.save_safetensors(tmp_path / "b.st")):
        with pytest.raises(ValueError, match="no default input qparams"):
            store()
    assert not (tmp_path / "b.qlinear").exists() and not (tmp_path / "b.st").exists()


def test_per_call_input_qparams_alternating_threads_and_bits():
    """Calls with different input qparams, in any order and from many threads at once,
    each give the bits of a layer built with those qparams."""
    import threading

    rng = np.random.default_rng(602)
    n, k = 48, 96
    bare = make_static(rng, n, k, with_input_qparams=False, threads=1)
    w = bare.weight()
    qps = [(0.05, 128), (0.013, 3), (0.2, 250), (0.05, 127)]
    xs = [rand_u8(rng, (5, k)) for _ in qps]
    built = [
        qlinear.Linear(
            w.int_repr, w.scales, w.zero_points, bias=bare.bias(), scale=bare.scale,
            zero_point=bare.zero_point, input_scale=s, input_zero_point=z, threads=1,
        )
        for s, z in qps
    ]
    want = [b(x) for b, x in zip(built, xs)]
    errors = []

    def worker(seed):
        order = np.random.default_rng(seed).integers(0, len(qps), 200)
        for i in order:
            got = bare(xs[i], *qps[i])
            if not np.array_equal(got, want[i]):
                errors.append((seed, i))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]


def test_from_bytes_takes_buffers():
    layer = make_dynamic(np.random.default_rng(603), 8, 16)
    data = layer.to_bytes()
    x = rand_f32(np.random.default_rng(604), (2, 16))
    for buf in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert_bitwise(qlinear.DynamicLinear.from_bytes(buf)(x), layer(x), type(buf).__name__)
