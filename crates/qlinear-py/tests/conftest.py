"""Shared helpers for the qlinear Python test suite.

* ``repo_root()`` finds the repository by walking up from this file until
  ``conformance/torch-2.15-public.json`` exists; tests read data only from there (and
  from ``tmp_path``), never from elsewhere on the machine.
* Every test that takes a ``backend`` argument is parametrized over
  ``qlinear.available_backends()`` (computed on the machine running the tests).
"""

import json
import pathlib

import numpy as np
import pytest

import qlinear

CONFORMANCE_NAME = "torch-2.15-public.json"


def repo_root() -> pathlib.Path:
    here = pathlib.Path(__file__).resolve().parent
    for d in (here, *here.parents):
        if (d / "conformance" / CONFORMANCE_NAME).is_file():
            return d
    raise RuntimeError(
        f"repository root not found: no conformance/{CONFORMANCE_NAME} above {here}"
    )


def conformance_path() -> pathlib.Path:
    return repo_root() / "conformance" / CONFORMANCE_NAME


_CONFORMANCE = None


def load_conformance() -> dict:
    global _CONFORMANCE
    if _CONFORMANCE is None:
        with open(conformance_path(), "r", encoding="utf-8") as f:
            _CONFORMANCE = json.load(f)
        assert _CONFORMANCE.get("format") == "qlinear-conformance/1", _CONFORMANCE.get("format")
    return _CONFORMANCE


def backends():
    return list(qlinear.available_backends())


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backends())
    if "kernel_backend" in metafunc.fixturenames:
        # the optimized backends only (compared against "reference"); an empty list
        # (a CPU with no kernel backend) makes pytest report the test as skipped
        metafunc.parametrize("kernel_backend", [b for b in backends() if b != "reference"])


@pytest.fixture(scope="session")
def all_backends():
    return backends()


# --------------------------------------------------------------------------- decoding


def hex_u8(s):
    return np.frombuffer(bytes.fromhex(s), dtype=np.uint8).copy()


def hex_i8(s):
    return np.frombuffer(bytes.fromhex(s), dtype=np.int8).copy()


def hex_f32(s):
    return np.frombuffer(bytes.fromhex(s), dtype="<f4").astype(np.float32).copy()


def f32(v) -> float:
    """A JSON scale -> the exact f32 value, as a Python float (exactly equal)."""
    x = np.float32(float(v))
    assert np.isfinite(x)
    assert float(x) == float(v), f"scale {v!r} is not exactly representable in f32"
    return float(x)


def f32_array(vals):
    a = np.array([float(v) for v in vals], dtype=np.float64).astype(np.float32)
    assert np.array_equal(a.astype(np.float64), np.array([float(v) for v in vals]))
    return a


# --------------------------------------------------------------------------- comparing


def bits(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.float32:
        return a.view(np.uint32)
    return a


def first_diff(actual, expected):
    """None if bitwise equal (same shape and dtype), else a description of the first
    differing element."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.dtype != expected.dtype:
        return f"dtype {actual.dtype} != expected {expected.dtype}"
    if actual.shape != expected.shape:
        return f"shape {actual.shape} != expected {expected.shape}"
    ab, eb = bits(actual), bits(expected)
    ne = np.flatnonzero(ab.ravel() != eb.ravel())
    if ne.size == 0:
        return None
    i = int(ne[0])
    idx = np.unravel_index(i, actual.shape)
    return (
        f"{ne.size} of {actual.size} elements differ; first at {tuple(int(j) for j in idx)}: "
        f"got {actual.ravel()[i]!r} (bits {ab.ravel()[i]:#x}), "
        f"expected {expected.ravel()[i]!r} (bits {eb.ravel()[i]:#x})"
    )


def assert_bitwise(actual, expected, what=""):
    d = first_diff(actual, expected)
    assert d is None, f"{what}: {d}" if what else d


# --------------------------------------------------------------------------- data


def rand_weight(rng, n, k):
    """int8 across the full range, including both extremes."""
    w = rng.integers(-128, 128, size=(n, k), dtype=np.int16).astype(np.int8)
    w.flat[0] = -128
    w.flat[-1] = 127
    return w


def rand_u8(rng, shape):
    x = rng.integers(0, 256, size=shape, dtype=np.int16).astype(np.uint8)
    x.flat[0] = 0
    x.flat[-1] = 255
    return x


def rand_f32(rng, shape):
    """Mixed magnitudes and signs: most values ~N(0,1), some scaled by 10^[-4, 2]."""
    x = rng.standard_normal(size=shape)
    mag = 10.0 ** rng.uniform(-4, 2, size=shape)
    mix = rng.random(size=shape) < 0.3
    x = np.where(mix, x * mag, x)
    return x.astype(np.float32)


def rand_scales(rng, n):
    return (10.0 ** rng.uniform(-4, -1, size=n)).astype(np.float32)


def rand_bias(rng, n):
    return rand_f32(rng, (n,))


def make_dynamic(rng, n, k, *, per_channel=True, bias=True, **kw):
    w = rand_weight(rng, n, k)
    if per_channel:
        s = rand_scales(rng, n)
        z = rng.integers(-128, 128, size=n).astype(np.int32)
        z[0] = 0
    else:
        s = float(rand_scales(rng, 1)[0])
        z = int(rng.integers(-128, 128))
    b = rand_bias(rng, n) if bias else None
    return qlinear.DynamicLinear(w, s, z, bias=b, **kw)


def make_static(rng, n, k, *, per_channel=True, bias=True, with_input_qparams=True, **kw):
    w = rand_weight(rng, n, k)
    if per_channel:
        s = rand_scales(rng, n)
        z = rng.integers(-128, 128, size=n).astype(np.int32)
    else:
        s = float(rand_scales(rng, 1)[0])
        z = int(rng.integers(-128, 128))
    b = rand_bias(rng, n) if bias else None
    extra = {}
    if with_input_qparams:
        extra = dict(input_scale=0.0478515625, input_zero_point=97)
    kw = {**dict(scale=f32(0.75), zero_point=113), **extra, **kw}
    return qlinear.Linear(w, s, z, bias=b, **kw)
