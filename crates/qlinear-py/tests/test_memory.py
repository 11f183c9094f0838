"""No memory growth over many calls (outputs, errors)."""

import os
import sys

import numpy as np
import pytest

import qlinear
from conftest import make_dynamic, make_static, rand_f32, rand_u8

CALLS = 10_000
WARMUP = 500
LIMIT = 4 * 1024 * 1024


def rss_bytes():
    if not sys.platform.startswith("linux") or not os.path.exists("/proc/self/statm"):
        pytest.skip(f"RSS is read from /proc/self/statm, which {sys.platform} lacks")
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def growth(fn):
    rss_bytes()  # skip early on non-Linux
    for _ in range(WARMUP):
        fn()
    before = rss_bytes()
    for _ in range(CALLS):
        fn()
    after = rss_bytes()
    return after - before


def check(fn, what, out_bytes):
    g = growth(fn)
    assert g < LIMIT, (
        f"{what}: RSS grew by {g / 2**20:.2f} MiB over {CALLS} calls "
        f"(a leaked output would be {CALLS * out_bytes / 2**20:.0f} MiB)"
    )


@pytest.mark.parametrize(
    "what,make,input_kind,rows,n",
    [
        ("DynamicLinear", make_dynamic, "f32", 1, 2048),
        ("DynamicLinear per_row", lambda rng, n, k, **kw: make_dynamic(rng, n, k, per_row=True, **kw), "f32", 2, 1024),
        ("Linear u8", make_static, "u8", 2, 2048),
        ("Linear float path", make_static, "f32", 1, 2048),
    ],
)
def test_forward_no_growth(what, make, input_kind, rows, n):
    rng = np.random.default_rng(400 + rows + n)
    K = 256
    layer = make(rng, n, K, threads=1)
    x = rand_f32(rng, (rows, K)) if input_kind == "f32" else rand_u8(rng, (rows, K))
    y = layer(x)
    assert y.nbytes >= 4096
    check(lambda: layer(x), what, y.nbytes)


def test_non_contiguous_input_no_growth():
    rng = np.random.default_rng(404)
    K, N = 256, 1024
    layer = make_dynamic(rng, N, K, threads=1)
    x = np.asfortranarray(rand_f32(rng, (4, K)))  # copied per call
    y = layer(x)
    check(lambda: layer(x), "DynamicLinear, Fortran-order input", y.nbytes + x.nbytes)


def test_error_path_no_growth():
    rng = np.random.default_rng(405)
    K, N = 256, 2048
    dyn = make_dynamic(rng, N, K, threads=1)
    stat = make_static(rng, N, K, threads=1)
    x = rand_f32(rng, (4, K))
    x[3, K - 1] = np.nan  # found after the whole input was scanned
    xf64 = np.ones((4, K), np.float64)
    xbad = np.ones((4, K + 1), np.float32)

    def fails():
        for layer, arg in ((dyn, x), (stat, x), (dyn, xf64), (stat, xbad)):
            try:
                layer(arg)
            except ValueError:
                pass
            else:
                raise AssertionError(f"{type(layer).__name__} accepted a bad input")

    # 4 failing calls per fn(): CALLS iterations = 4 * CALLS errors; keep the count
    # at CALLS errors of each kind
    check(fails, "error path (NaN, float64, wrong K)", 4 * 4 * K)


def test_serialization_no_growth(tmp_path):
    rng = np.random.default_rng(406)
    layer = make_dynamic(rng, 64, 256, threads=1)
    data = bytes(layer.to_bytes())

    def rt():
        qlinear.DynamicLinear.from_bytes(data)

    g = growth(rt)
    assert g < LIMIT, f"from_bytes: RSS grew by {g / 2**20:.2f} MiB over {CALLS} loads"


def test_alternating_input_qparams_no_growth():
    """Per-call input qparams fold the epilogue per call: no copy of the weights is kept,
    whatever the order of qparams."""
    rng = np.random.default_rng(407)
    K, N = 256, 2048
    layer = make_static(rng, N, K, with_input_qparams=False, threads=1)
    x = rand_u8(rng, (2, K))
    qps = [(0.05, 128), (0.06, 120), (0.07, 3)]
    state = {"i": 0}

    def call():
        state["i"] += 1
        return layer(x, *qps[state["i"] % 3])

    check(call, "Linear, alternating input qparams", call().nbytes)
