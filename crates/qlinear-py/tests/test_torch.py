"""torch interop: from_torch and qlinear.torch.quantize_dynamic (skipped without torch)."""

import contextlib
import copy
import platform

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: torch interop tests skipped")

import qlinear  # noqa: E402
import qlinear.torch  # noqa: E402
from conftest import first_diff, rand_f32  # noqa: E402

nnq = torch.ao.nn.quantized
nnqd = torch.ao.nn.quantized.dynamic
nniq = torch.ao.nn.intrinsic.quantized
try:
    import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
except ImportError:  # pragma: no cover - older torch
    nniqd = None

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

ENGINES = ["x86", "fbgemm", "qnnpack"]
M_VALUES = [1, 7, 64]


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def require_engine(engine, exact_full_range=True):
    if engine not in torch.backends.quantized.supported_engines:
        pytest.skip(f"torch engine {engine!r} not in {torch.backends.quantized.supported_engines}")
    if engine in ("x86", "fbgemm") and exact_full_range:
        machine = platform.machine().lower()
        if machine in ("x86_64", "amd64") and "avx512_vnni" not in cpu_flags():
            pytest.skip(
                "torch's fbgemm saturates i16 pair sums without AVX512-VNNI "
                "(docs/semantics.md), so it is not a bit-exact oracle on this CPU"
            )


@contextlib.contextmanager
def engine_ctx(engine):
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = old


def rand_qweight(rng, n, k, per_channel, symmetric=False):
    ints = rng.integers(-128, 128, size=(n, k), dtype=np.int16).astype(np.int8)
    ints.flat[0], ints.flat[-1] = -128, 127
    iw = torch.from_numpy(ints.copy())
    if per_channel:
        scales = torch.from_numpy((10.0 ** rng.uniform(-3.5, -1.5, size=n)).astype(np.float32).astype(np.float64))
        if symmetric:
            zps = torch.zeros(n, dtype=torch.long)
        else:
            zps = torch.from_numpy(rng.integers(-20, 21, size=n).astype(np.int64))
        return torch._make_per_channel_quantized_tensor(iw, scales, zps, 0)
    scale = float(np.float32(10.0 ** rng.uniform(-3.5, -1.5)))
    zp = 0 if symmetric else int(rng.integers(-20, 21))
    return torch._make_per_tensor_quantized_tensor(iw, scale, zp)


def rand_bias(rng, n):
    return torch.from_numpy(rand_f32(rng, (n,)))


def rand_x(rng, shape):
    return torch.from_numpy(rand_f32(rng, shape) * np.float32(2.0))


def assert_float_equal(got, exp, what):
    assert isinstance(got, torch.Tensor), f"{what}: got {type(got)}, expected a torch tensor"
    assert got.dtype == torch.float32 and exp.dtype == torch.float32, what
    assert got.shape == exp.shape, f"{what}: shape {tuple(got.shape)} != {tuple(exp.shape)}"
    if not torch.equal(got.contiguous().view(torch.int32), exp.contiguous().view(torch.int32)):
        d = first_diff(got.detach().numpy(), exp.detach().numpy())
        raise AssertionError(f"{what}: {d}")


def assert_quint8_equal(got, exp, what):
    assert isinstance(got, torch.Tensor), f"{what}: got {type(got)}"
    assert got.dtype == torch.quint8, f"{what}: dtype {got.dtype}"
    assert got.shape == exp.shape, f"{what}: shape {tuple(got.shape)} != {tuple(exp.shape)}"
    assert got.q_scale() == exp.q_scale(), f"{what}: q_scale {got.q_scale()} != {exp.q_scale()}"
    assert got.q_zero_point() == exp.q_zero_point(), f"{what}: zp {got.q_zero_point()} != {exp.q_zero_point()}"
    if not torch.equal(got.int_repr(), exp.int_repr()):
        d = first_diff(got.int_repr().numpy(), exp.int_repr().numpy())
        raise AssertionError(f"{what}: {d}")


def input_shapes(m, k):
    return [(m, k), (2, m, k)]


# --------------------------------------------------------------------------- dynamic


DYN_CLASSES = [("Linear", nnqd.Linear)]
if nniqd is not None:
    DYN_CLASSES.append(("LinearReLU", nniqd.LinearReLU))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cls_name,cls", DYN_CLASSES)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("has_bias", [False, True])
def test_from_torch_dynamic(engine, cls_name, cls, per_channel, has_bias):
    # the module runs reduce_range=True on fbgemm (7-bit activations): never saturates
    require_engine(engine, exact_full_range=False)
    rng = np.random.default_rng(500 + per_channel * 2 + has_bias)
    k, n = 96, 80
    with engine_ctx(engine):
        m = cls(k, n, has_bias, dtype=torch.qint8)  # the bias flag is bias_ or bias
        w = rand_qweight(rng, n, k, per_channel)
        b = rand_bias(rng, n) if has_bias else None
        m.set_weight_bias(w, b)
        layer = qlinear.from_torch(m)
        assert isinstance(layer, qlinear.DynamicLinear)
        assert layer.in_features == k and layer.out_features == n
        assert layer.per_channel is per_channel
        assert layer.relu is (cls_name == "LinearReLU")
        assert layer.profile == ("qnnpack" if engine == "qnnpack" else "fbgemm")
        for mm in M_VALUES:
            for shape in input_shapes(mm, k):
                x = rand_x(rng, shape)
                exp = m(x)
                got = layer(x)
                assert_float_equal(got, exp, f"{engine} {cls_name} pc={per_channel} bias={has_bias} {shape}")


@pytest.mark.parametrize("engine", ENGINES)
def test_from_torch_quantize_dynamic_model(engine):
    require_engine(engine, exact_full_range=False)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))
    with engine_ctx(engine):
        tq = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
        layers = [qlinear.from_torch(tq[0]), qlinear.from_torch(tq[2])]
        rng = np.random.default_rng(510)
        for mm in M_VALUES:
            for shape in input_shapes(mm, 64):
                x = rand_x(rng, shape)
                exp = tq(x)
                got = layers[1](torch.relu(layers[0](x)))
                assert_float_equal(got, exp, f"{engine} quantize_dynamic {shape}")


# --------------------------------------------------------------------------- static


STATIC_CLASSES = [("Linear", nnq.Linear), ("LinearReLU", nniq.LinearReLU)]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cls_name,cls", STATIC_CLASSES)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("has_bias", [False, True])
def test_from_torch_static(engine, cls_name, cls, per_channel, has_bias):
    require_engine(engine)
    rng = np.random.default_rng(520 + per_channel * 2 + has_bias)
    k, n = 96, 80
    in_scale, in_zp = float(np.float32(0.0390625)), 118
    with engine_ctx(engine):
        m = cls(k, n, has_bias, dtype=torch.qint8)  # the bias flag is bias_ or bias
        w = rand_qweight(rng, n, k, per_channel)
        b = rand_bias(rng, n) if has_bias else None
        m.set_weight_bias(w, b)
        m.scale = float(np.float32(0.4375))
        m.zero_point = 97
        layer = qlinear.from_torch(m)
        assert isinstance(layer, qlinear.Linear)
        assert layer.in_features == k and layer.out_features == n
        assert layer.scale == m.scale and layer.zero_point == m.zero_point
        assert layer.relu is (cls_name == "LinearReLU")
        assert layer.per_channel is per_channel
        assert layer.profile == ("qnnpack" if engine == "qnnpack" else "fbgemm")
        for mm in M_VALUES:
            for shape in input_shapes(mm, k):
                ints = rng.integers(0, 256, size=shape, dtype=np.int16).astype(np.uint8)
                ints.flat[0], ints.flat[-1] = 0, 255
                xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(ints), in_scale, in_zp)
                exp = m(xq)
                got = layer(xq)
                assert_quint8_equal(got, exp, f"{engine} {cls_name} pc={per_channel} bias={has_bias} {shape}")
                # the numpy path with explicit input qparams gives the same bytes
                gn = layer(ints, input_scale=in_scale, input_zero_point=in_zp)
                assert first_diff(gn, exp.int_repr().numpy()) is None


@pytest.mark.parametrize("engine", ENGINES)
def test_from_torch_static_float_path(engine):
    """QuantStub -> Linear -> DeQuantStub: qlinear's float path equals torch's."""
    require_engine(engine)
    rng = np.random.default_rng(530)
    k, n = 64, 48
    in_scale, in_zp = float(np.float32(0.03125)), 130
    with engine_ctx(engine):
        m = nnq.Linear(k, n, dtype=torch.qint8)
        m.set_weight_bias(rand_qweight(rng, n, k, True), rand_bias(rng, n))
        m.scale, m.zero_point = float(np.float32(0.25)), 70
        layer = qlinear.from_torch(m)
        x = rand_x(rng, (9, k))
        exp = m(torch.quantize_per_tensor(x, in_scale, in_zp, torch.quint8)).dequantize()
        got = layer(x.numpy(), input_scale=in_scale, input_zero_point=in_zp)
        assert first_diff(got, exp.numpy()) is None, first_diff(got, exp.numpy())
        # a float32 tensor in gives a float32 tensor out
        assert_float_equal(layer(x, input_scale=in_scale, input_zero_point=in_zp), exp, f"{engine} tensor")
        # and torch's quantize_per_tensor is qlinear.quantize_per_tensor
        q = qlinear.quantize_per_tensor(x.numpy(), in_scale, in_zp)
        tq = torch.quantize_per_tensor(x, in_scale, in_zp, torch.quint8).int_repr().numpy()
        assert first_diff(q, tq) is None, first_diff(q, tq)


# --------------------------------------------------------------------------- tensors in, tensors out


def test_torch_tensor_in_torch_tensor_out():
    rng = np.random.default_rng(540)
    layer = qlinear.DynamicLinear.from_float(rand_f32(rng, (32, 48)))
    xn = rand_f32(rng, (5, 48))
    xt = torch.from_numpy(xn.copy())
    yt = layer(xt)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32
    assert first_diff(yt.numpy(), layer(xn)) is None
    # non-contiguous tensors
    big = torch.zeros(48, 5)
    big.copy_(xt.T)
    yt2 = layer(big.T)
    assert first_diff(yt2.numpy(), layer(xn)) is None
    # float64 tensors are rejected like float64 arrays
    with pytest.raises(ValueError):
        layer(xt.double())
    # numpy in stays numpy out
    assert type(layer(xn)) is np.ndarray


def test_quint8_tensor_in():
    rng = np.random.default_rng(541)
    layer = qlinear.Linear.from_float(rand_f32(rng, (16, 24)), scale=0.5, zero_point=3)
    ints = rng.integers(0, 256, size=(4, 24)).astype(np.uint8)
    xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(ints), 0.0625, 100)
    y = layer(xq)
    assert y.dtype == torch.quint8
    assert y.q_scale() == 0.5 and y.q_zero_point() == 3
    assert first_diff(y.int_repr().numpy(), layer(ints, input_scale=0.0625, input_zero_point=100)) is None


# --------------------------------------------------------------------------- quantize_dynamic


def mlp():
    torch.manual_seed(1234)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))


def test_quantize_dynamic_reproduces_torch():
    require_engine("x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm", exact_full_range=False)
    model = mlp()
    tq = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    ql = qlinear.torch.quantize_dynamic(model, qscheme="per_tensor_symmetric", reduce_range=True)
    rng = np.random.default_rng(550)
    with torch.no_grad():
        for shape in [(1, 64), (7, 64), (64, 64), (3, 5, 64)]:
            x = rand_x(rng, shape)
            assert_float_equal(ql(x), tq(x), f"quantize_dynamic {shape}")


def test_quantize_dynamic_default_is_more_accurate():
    model = mlp()
    tq = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    ql = qlinear.torch.quantize_dynamic(model)
    rng = np.random.default_rng(551)
    x = rand_x(rng, (256, 64))
    with torch.no_grad():
        ref = model(x).double()
        err_q = (ql(x).double() - ref).abs().max().item()
        err_t = (tq(x).double() - ref).abs().max().item()
    print(f"max abs error: qlinear default {err_q:.6g}, torch quantize_dynamic {err_t:.6g}")
    assert err_q < err_t, f"qlinear default error {err_q} is not below torch's {err_t}"


def test_quantize_dynamic_not_inplace():
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model]
    ql = qlinear.torch.quantize_dynamic(model)
    assert ql is not model
    assert [type(m) for m in model] == types
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert isinstance(ql[0], qlinear.torch.QLinearDynamic)
    assert isinstance(ql[2], qlinear.torch.QLinearDynamic)
    assert isinstance(ql[1], torch.nn.ReLU)
    assert not any(isinstance(m, torch.nn.Linear) for m in ql.modules())


def test_quantize_dynamic_inplace():
    model = mlp()
    out = qlinear.torch.quantize_dynamic(model, inplace=True)
    assert isinstance(model[0], qlinear.torch.QLinearDynamic)
    assert isinstance(model[2], qlinear.torch.QLinearDynamic)
    assert out is model or out is None


def test_quantize_dynamic_nested():
    torch.manual_seed(7)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.GELU())
            self.out = torch.nn.Linear(32, 16, bias=False)

        def forward(self, x):
            return self.out(self.inner(x))

    model = Block()
    ql = qlinear.torch.quantize_dynamic(model)
    assert isinstance(ql.inner[0], qlinear.torch.QLinearDynamic)
    assert isinstance(ql.out, qlinear.torch.QLinearDynamic)
    x = rand_x(np.random.default_rng(552), (4, 32))
    with torch.no_grad():
        y = ql(x)
    assert y.shape == (4, 16) and y.dtype == torch.float32


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("affine", [False, True])
def test_from_torch_dynamic_quantize_per_channel(engine, affine):
    """A dynamic Linear built with set_weight_bias from torch.quantize_per_channel."""
    require_engine(engine, exact_full_range=False)
    rng = np.random.default_rng(560 + affine)
    k, n = 200, 67
    wf = torch.from_numpy(rand_f32(rng, (n, k)))
    amax = wf.abs().amax(dim=1).double()
    scales = (amax / 127.0).clamp_min(1e-6).float().double()  # exactly f32 values
    zps = torch.from_numpy(rng.integers(-10, 11, size=n)) if affine else torch.zeros(n, dtype=torch.long)
    qw = torch.quantize_per_channel(wf, scales, zps, 0, torch.qint8)
    with engine_ctx(engine):
        m = nnqd.Linear(k, n, dtype=torch.qint8)
        m.set_weight_bias(qw, rand_bias(rng, n))
        layer = qlinear.from_torch(m)
        assert layer.per_channel is True
        w = layer.weight()
        assert np.array_equal(np.asarray(w.int_repr), qw.int_repr().numpy())
        assert np.array_equal(np.asarray(w.scales), qw.q_per_channel_scales().float().numpy())
        assert np.array_equal(np.asarray(w.zero_points).astype(np.int64), qw.q_per_channel_zero_points().numpy())
        for mm in M_VALUES:
            for shape in input_shapes(mm, k):
                x = rand_x(rng, shape)
                assert_float_equal(layer(x), m(x), f"{engine} affine={affine} {shape}")


@pytest.mark.parametrize("engine", ENGINES)
def test_from_torch_static_per_tensor_quantize(engine):
    """A static Linear whose weight comes from torch.quantize_per_tensor (not int_repr)."""
    require_engine(engine)
    rng = np.random.default_rng(570)
    k, n = 130, 41
    wf = torch.from_numpy(rand_f32(rng, (n, k)) * np.float32(0.05))
    qw = torch.quantize_per_tensor(wf, float(np.float32(0.0009765625)), 3, torch.qint8)
    with engine_ctx(engine):
        m = nniq.LinearReLU(k, n)
        m.set_weight_bias(qw, rand_bias(rng, n) * 0.1)
        m.scale, m.zero_point = float(np.float32(0.046875)), 5
        layer = qlinear.from_torch(m)
        for mm in M_VALUES:
            ints = rng.integers(0, 256, size=(mm, k)).astype(np.uint8)
            xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(ints), float(np.float32(0.0625)), 131)
            assert_quint8_equal(layer(xq), m(xq), f"{engine} M={mm}")


# --------------------------------------------------------------------------- unusual inputs


@pytest.mark.parametrize("engine", ENGINES)
def test_from_torch_dynamic_extreme_inputs(engine):
    """Inputs that hit ChooseQuantizationParams' corner cases: all zeros (scale 0.1),
    tiny ranges (the 6.1e-5 floor), one sign only, huge magnitudes."""
    require_engine(engine, exact_full_range=False)
    rng = np.random.default_rng(580)
    k, n = 50, 30
    with engine_ctx(engine):
        m = nnqd.Linear(k, n)
        m.set_weight_bias(rand_qweight(rng, n, k, True), rand_bias(rng, n))
        layer = qlinear.from_torch(m)
        base = rand_f32(rng, (4, k))
        xs = {
            "zeros": np.zeros((4, k), np.float32),
            "negative zeros": np.full((4, k), -0.0, np.float32),
            "tiny": base * np.float32(1e-20),
            "below floor": base * np.float32(1e-6),
            "positive only": np.abs(base),
            "negative only": -np.abs(base),
            "huge": base * np.float32(1e30),
            "one element": np.eye(4, k, dtype=np.float32) * np.float32(3.5),
            "denormals": np.full((4, k), 1e-40, np.float32),
        }
        for name, xn in xs.items():
            x = torch.from_numpy(xn.copy())
            assert_float_equal(layer(x), m(x), f"{engine} {name}")


def test_from_torch_static_non_contiguous_quint8():
    require_engine("fbgemm")
    rng = np.random.default_rng(590)
    k, n = 40, 24
    with engine_ctx("fbgemm"):
        m = nnq.Linear(k, n)
        m.set_weight_bias(rand_qweight(rng, n, k, False), rand_bias(rng, n))
        m.scale, m.zero_point = 0.25, 100
        layer = qlinear.from_torch(m)
        ints = rng.integers(0, 256, size=(k, 6)).astype(np.uint8)
        xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(ints), 0.0625, 120).t()
        assert not xq.is_contiguous()
        assert_quint8_equal(layer(xq), m(xq.contiguous()), "transposed quint8")


def test_requires_grad_input():
    """A quantized model with float layers left (LayerNorm) run outside no_grad: the
    qlinear layer sees a tensor that requires grad, as torch's dynamic Linear does."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.LayerNorm(64), torch.nn.Linear(64, 32))
    tq = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    ql = qlinear.torch.quantize_dynamic(model, qscheme="per_tensor_symmetric", reduce_range=True)
    x = rand_x(np.random.default_rng(591), (5, 64))
    exp = tq(x)
    got = ql(x)
    assert_float_equal(got.detach(), exp.detach(), "requires_grad input")
    layer = qlinear.from_torch(tq[1])
    xr = model[0](x)
    assert xr.requires_grad
    assert_float_equal(layer(xr).detach(), tq[1](xr).detach(), "from_torch, requires_grad input")


@pytest.mark.parametrize("engine", ENGINES)
def test_from_torch_double_scales(engine):
    """Scales that are not f32 values (torch keeps them as doubles): the module's bits
    and its output q_scale() are reproduced exactly."""
    require_engine(engine)
    rng = np.random.default_rng(600)
    k, n = 72, 36
    ints = torch.from_numpy(rng.integers(-128, 128, size=(n, k)).astype(np.int8))
    with engine_ctx(engine):
        # static, per-tensor weight scale 0.01, output scale 0.1, input scale 0.05
        m = nnq.Linear(k, n)
        m.set_weight_bias(torch._make_per_tensor_quantized_tensor(ints, 0.01, 0), rand_bias(rng, n))
        m.scale, m.zero_point = 0.1, 128
        layer = qlinear.from_torch(m)
        xi = torch.from_numpy(rng.integers(0, 256, size=(11, k)).astype(np.uint8))
        xq = torch._make_per_tensor_quantized_tensor(xi, 0.05, 77)
        assert_quint8_equal(layer(xq), m(xq), f"{engine} static double scales")
        # dynamic, per-channel double scales
        sc = torch.from_numpy(rng.uniform(0.001, 0.02, size=n))  # float64, not f32 values
        d = nnqd.Linear(k, n)
        d.set_weight_bias(torch._make_per_channel_quantized_tensor(ints, sc, torch.zeros(n, dtype=torch.long), 0),
                          rand_bias(rng, n))
        dl = qlinear.from_torch(d)
        x = rand_x(rng, (11, k))
        assert_float_equal(dl(x), d(x), f"{engine} dynamic double per-channel scales")


def test_quantize_dequantize_match_torch():
    rng = np.random.default_rng(610)
    for scale, zp in ((1.0, 0), (0.1, 128), (float(np.float32(0.0123)), 7), (3.0, 255), (1e-3, 0)):
        x = rand_f32(rng, (40, 50)) * np.float32(scale * 40)
        # (no values beyond the i32 range: there fbgemm's conversion returns INT_MIN and
        # qlinear deliberately saturates, docs/semantics.md)
        x[0, :8] = np.array([0.5, 1.5, 2.5, -0.5, 127.5, 128.5, 1e6, -1e6], np.float32) * np.float32(scale)
        q = qlinear.quantize_per_tensor(x, scale, zp)
        tq = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, torch.quint8)
        d = first_diff(q, tq.int_repr().numpy())
        assert d is None, f"quantize scale={scale} zp={zp}: {d}"
        deq = qlinear.dequantize(q, scale, zp)
        d = first_diff(deq, tq.dequantize().numpy())
        assert d is None, f"dequantize scale={scale} zp={zp}: {d}"


# --------------------------------------------------------------------------- persistence with torch


def test_from_torch_static_survives_pickle_and_deepcopy():
    """A from_torch static layer keeps torch's exact (double) output qparams through
    pickle and deepcopy, so its output tensors stay equal to the module's."""
    import pickle

    rng = np.random.default_rng(700)
    k, n = 48, 40
    m = nnq.Linear(k, n, dtype=torch.qint8)
    m.set_weight_bias(rand_qweight(rng, n, k, True), rand_bias(rng, n))
    m.scale, m.zero_point = 0.137, 97  # not an f32 value: the module's double matters
    layer = qlinear.from_torch(m)
    ints = rng.integers(0, 256, size=(5, k), dtype=np.int16).astype(np.uint8)
    xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(ints), 0.05, 120)
    exp = m(xq)
    for clone in (layer, pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        got = clone(xq)
        assert got.q_scale() == exp.q_scale() and got.q_zero_point() == exp.q_zero_point()
        assert torch.equal(got, exp)
        assert clone.input_scale is None  # the module has no input qparams of its own


def test_quantize_dynamic_state_dict_round_trip():
    """QLinearDynamic's packed layer is in the state dict: load_state_dict into a model
    quantized from different weights reproduces the original's outputs bit for bit."""
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    b = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    qa, qb = qlinear.torch.quantize_dynamic(a), qlinear.torch.quantize_dynamic(b)
    x = torch.randn(7, 32)
    assert not torch.equal(qa(x), qb(x))
    sd = qa.state_dict()
    assert set(sd) == {"0.qlinear_packed", "2.qlinear_packed"}
    qb.load_state_dict(sd)
    assert torch.equal(qb(x).view(torch.int32), qa(x).view(torch.int32))
    with pytest.raises(RuntimeError, match="qlinear_packed"):
        qb.load_state_dict({})
