"""Concurrency: forward releases the GIL, and concurrent calls give the same bits."""

import os
import threading
import time

import numpy as np
import pytest

import qlinear
from conftest import assert_bitwise, first_diff, make_dynamic, make_static, rand_f32, rand_u8


def run_threads(fns):
    errors = []

    def wrap(fn):
        def go():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        return go

    ts = [threading.Thread(target=wrap(f)) for f in fns]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_two_threads_one_layer_same_bits(kind):
    rng = np.random.default_rng(300)
    M, K, N = 64, 512, 512
    if kind == "dynamic":
        layer = make_dynamic(rng, N, K, threads=1)
        xs = [rand_f32(rng, (M, K)) for _ in range(2)]
    else:
        layer = make_static(rng, N, K, threads=1)
        xs = [rand_u8(rng, (M, K)) for _ in range(2)]
    refs = [layer(x) for x in xs]
    calls = 500
    bad = []

    def worker(i):
        def go():
            x, ref = xs[i], refs[i]
            for c in range(calls):
                y = layer(x)
                d = first_diff(y, ref)
                if d is not None:
                    bad.append(f"thread {i} call {c}: {d}")
                    return

        return go

    run_threads([worker(0), worker(1)])
    assert not bad, "\n".join(bad)


def test_many_threads_mixed_layers():
    """Four threads, two layers with threads=0 (all cores) each, different shapes."""
    rng = np.random.default_rng(301)
    a = make_dynamic(rng, 256, 384, per_row=True)
    b = make_static(rng, 128, 256)
    xa = rand_f32(rng, (17, 384))
    xb = rand_u8(rng, (33, 256))
    xbf = rand_f32(rng, (9, 256))
    ra, rb, rbf = a(xa), b(xb), b(xbf)
    bad = []

    def go(layer, x, ref):
        def f():
            for _ in range(50):
                d = first_diff(layer(x), ref)
                if d is not None:
                    bad.append(d)
                    return

        return f

    run_threads([go(a, xa, ra), go(b, xb, rb), go(b, xbf, rbf), go(a, xa, ra)])
    assert not bad, bad


def long_call(kind, backend, min_seconds=0.2):
    """A layer (threads=1) and an input whose call takes >= min_seconds (rows double
    until it does, up to a cap that keeps memory below ~100 MB)."""
    rng = np.random.default_rng(302)
    if backend == "reference":
        k, n, m, m_max = 1024, 1024, 32, 8192
    else:
        k, n, m, m_max = 4096, 4096, 256, 4096
    w = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    if kind == "dynamic":
        layer = qlinear.DynamicLinear(w, 0.0078125, 0, threads=1, backend=backend)
    else:
        layer = qlinear.Linear(w, 0.0078125, 0, scale=64.0, zero_point=128, input_scale=0.03125,
                               input_zero_point=128, threads=1, backend=backend)

    def make_x(m):
        if kind == "dynamic":
            return rng.standard_normal((m, k), dtype=np.float32)
        return rng.integers(0, 256, size=(m, k), dtype=np.uint8)

    layer(make_x(8))  # warm up
    while True:
        x = make_x(m)
        t0 = time.perf_counter()
        layer(x)
        dt = time.perf_counter() - t0
        if dt >= min_seconds or m >= m_max:
            return layer, x, dt
        m = min(m * 2, m_max)


def gil_probe(fn):
    """Runs fn() in a background thread while the main thread spins, time-stamping
    every 256th iteration. Returns (call duration, main-loop iterations, the time span
    the main thread's time stamps cover *inside* the call).

    A native call that holds the GIL blocks the main thread for its whole duration (it
    never reaches the eval loop's switch points), so no stamp, or only ones within one
    switch interval of the call's start, falls inside it; a call that releases the GIL
    leaves the main thread running throughout."""
    times = {}

    def bg():
        times["start"] = time.perf_counter()
        times["result"] = fn()
        times["end"] = time.perf_counter()

    stamps = []
    counter = 0
    t = threading.Thread(target=bg)
    t.start()
    while t.is_alive():
        counter += 1
        if not counter & 255:
            stamps.append(time.perf_counter())
    t.join()
    assert "end" in times, "the background call failed"
    inside = [ts for ts in stamps if times["start"] < ts < times["end"]]
    span = inside[-1] - inside[0] if len(inside) >= 2 else 0.0
    return times["end"] - times["start"], counter, span, times["result"]


def test_gil_probe_detects_a_held_gil():
    """The probe itself: builtin sum over a range is native code that holds the GIL."""
    n = 1_000_000
    t0 = time.perf_counter()
    sum(range(n))
    per = time.perf_counter() - t0
    n = int(n * 0.2 / max(per, 1e-6))
    dt, counter, span, _ = gil_probe(lambda: sum(range(n)))
    assert dt > 0.05, dt
    assert span < 0.5 * dt, f"the probe saw the main thread run during a GIL-holding call ({span:.3f} of {dt:.3f} s)"


@pytest.mark.parametrize("kind", ["dynamic", "static"])
@pytest.mark.parametrize("which", ["auto", "reference"])
def test_gil_released_during_forward(kind, which):
    layer, x, dt0 = long_call(kind, which)
    assert dt0 >= 0.02, f"calibration failed: the longest call took {dt0:.4f} s"
    dt, counter, span, y = gil_probe(lambda: layer(x))
    assert y.shape == (x.shape[0], layer.out_features)
    print(f"{kind}/{which}: {x.shape[0]}x{layer.in_features}x{layer.out_features} call "
          f"{dt:.3f} s; main loop ran {counter} times, covering {span:.3f} s of the call")
    assert counter > 1000, f"main thread ran only {counter} loop iterations during the call"
    assert span > 0.5 * dt, (
        f"the main thread ran during only {span:.3f} s of a {dt:.3f} s forward call: "
        f"the GIL is not released"
    )


def one_vs_two(work, rounds=5):
    """Best-of-`rounds` wall times of work() in one thread and of work() in each of two
    threads at once."""
    ones, twos = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        work()
        ones.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_threads([work, work])
        twos.append(time.perf_counter() - t0)
    return min(ones), min(twos)


def test_two_threads_scale():
    """Each of two threads runs the n calls one thread ran: with the GIL released and
    two free cores, the wall time is well below twice the single-thread time (1.0x
    ideally; 2.0x when calls are serialized)."""
    import hashlib

    cpus = os.cpu_count() or 1
    if cpus < 2:
        pytest.skip(f"os.cpu_count() = {cpus}: a 2-thread speed-up needs 2 cores")

    # Control: hashlib releases the GIL for large buffers. If two threads of it do not
    # scale either, two cores are not free right now (other processes are running),
    # and the measurement below would say nothing about qlinear.
    buf = os.urandom(1 << 22)

    def hash_work():
        for _ in range(40):
            hashlib.sha256(buf).digest()

    def control_ratio():
        c1, c2 = one_vs_two(hash_work)
        return c2 / c1, c1, c2

    def skip_unless_cores_free(when):
        control, c1, c2 = control_ratio()
        if control > 1.3:
            pytest.skip(
                f"two cores are not free ({when}): the GIL-free hashlib control took "
                f"{control:.2f}x in two threads ({c2:.3f} s vs {c1:.3f} s), so a timing "
                f"comparison is meaningless"
            )
        return control

    control = skip_unless_cores_free("before the measurement")

    rng = np.random.default_rng(304)
    layer = make_dynamic(rng, 1024, 1024, threads=1)
    x = rand_f32(rng, (64, 1024))
    layer(x)
    t0 = time.perf_counter()
    for _ in range(5):
        layer(x)
    per_call = (time.perf_counter() - t0) / 5
    n = max(5, int(0.2 / max(per_call, 1e-6)))  # about 0.2 s for one thread

    def work():
        for _ in range(n):
            layer(x)

    t1, t2 = one_vs_two(work)
    ratio = t2 / t1
    if ratio >= 1.8:
        # Another process may have taken a core meanwhile: only a slow result with the
        # cores still free counts as serialized calls.
        control = skip_unless_cores_free("after a slow measurement")
        t1, t2 = one_vs_two(work)
        ratio = t2 / t1
    print(f"control (hashlib) ratio {control:.2f}; 1 thread x {n} calls: {t1:.3f} s; "
          f"2 threads x {n} calls: {t2:.3f} s; ratio {ratio:.2f}")
    assert ratio < 1.8, (
        f"two threads doing {n} calls each took {ratio:.2f}x one thread doing {n} calls "
        f"(best of 5: {t2:.3f} s vs {t1:.3f} s; GIL-free control {control:.2f}x): "
        f"calls are serialized"
    )


@pytest.mark.parametrize("kind", ["dynamic", "dynamic-per-row", "static", "static-float"])
def test_layer_threads_do_not_change_bits(kind, backend):
    rng = np.random.default_rng(305)
    M, K, N = 97, 300, 517
    if kind.startswith("dynamic"):
        layer = make_dynamic(rng, N, K, per_row=kind.endswith("per-row"), backend=backend)
        x = rand_f32(rng, (M, K))
    else:
        layer = make_static(rng, N, K, backend=backend)
        x = rand_u8(rng, (M, K)) if kind == "static" else rand_f32(rng, (M, K))
    layer.threads = 1
    assert layer.threads == 1
    ref = layer(x)
    # threads=0 (the default) means all cores
    assert make_dynamic(rng, 4, 4).threads == 0
    assert make_static(rng, 4, 4).threads == 0
    for t in (2, 7, 0):
        layer.threads = t
        assert layer.threads == t
        assert_bitwise(layer(x), ref, f"threads={t}")
    # a reloaded copy with its own thread count
    for t in (1, 2, 7):
        other = type(layer).from_bytes(bytes(layer.to_bytes()), backend=backend)
        other.threads = t
        assert_bitwise(other(x), ref, f"reloaded, threads={t}")


def test_threads_setter_rejects_bad_values():
    layer = make_dynamic(np.random.default_rng(306), 8, 8)
    for bad in (-1, "two", 1.5):
        with pytest.raises((ValueError, TypeError, OverflowError)):
            layer.threads = bad
