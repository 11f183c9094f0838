"""Python-side measurements of the qlinear package (one thread throughout).

1. Call overhead: a Python call of a layer (numpy in, numpy out) against the Rust
   ``forward`` alone on the same layer and data, timed inside Rust in the same process.
   Rounds alternate between the two and the medians are compared.
2. With torch importable: qlinear against torch's own quantized Linear modules on three
   shapes, in the same process, one thread each (``torch.set_num_threads(1)``,
   ``threads=1``). Every qlinear output is checked bit for bit against torch's first.

    python crates/qlinear-py/bench/bench_python.py [--json out.json] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings

import numpy as np

import qlinear


def per_call(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def calls_for(fn, budget: float = 0.05) -> int:
    """Calls that take about `budget` seconds (at least 3)."""
    t = per_call(fn, 3)
    return max(3, int(budget / max(t, 1e-7)))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def overhead(rounds: int) -> dict:
    m, k, n = 1, 768, 3072
    rng = np.random.default_rng(1)
    w = rng.standard_normal((n, k)).astype(np.float32)
    layer = qlinear.DynamicLinear.from_float(w, reduce_range=False, threads=1)
    x = rng.standard_normal((m, k)).astype(np.float32)
    calls = calls_for(lambda: layer(x))
    py, rust = [], []
    for _ in range(rounds):
        py.append(per_call(lambda: layer(x), calls))
        rust.append(layer._native._rust_seconds_per_call(x, calls))
    py_us, rust_us = statistics.median(py) * 1e6, statistics.median(rust) * 1e6
    return {
        "shape": f"{m}x{k}x{n}",
        "kernel": layer.kernel_name_for(m),
        "python_call_us": round(py_us, 2),
        "rust_call_us": round(rust_us, 2),
        "overhead_us": round(py_us - rust_us, 2),
        "calls_per_round": calls,
        "rounds": rounds,
    }


def vs_torch(rounds: int) -> list:
    import copy

    import torch
    import torch.ao.nn.quantized as nnq

    torch.set_num_threads(1)
    torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
    rows = []
    for m, k, n in [(1, 768, 3072), (32, 768, 3072), (128, 3072, 768)]:
        g = torch.Generator().manual_seed(m * k + n)
        lin = torch.nn.Linear(k, n)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(n, k, generator=g) * 0.05)
            lin.bias.copy_(torch.randn(n, generator=g) * 0.1)
        x = torch.randn(m, k, generator=g)

        # Dynamic: torch's quantize_dynamic module, and qlinear built from it.
        tq = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(copy.deepcopy(lin)), {torch.nn.Linear}, dtype=torch.qint8
        )[0]
        ql = qlinear.from_torch(tq, threads=1)
        assert torch.equal(ql(x).view(torch.int32), tq(x).view(torch.int32)), "dynamic mismatch"
        xn = x.numpy()
        # Static: a quint8 input through torch's quantized Linear and the same via qlinear.
        ts = nnq.Linear(k, n)
        wq = torch.quantize_per_channel(
            lin.weight.detach(),
            lin.weight.detach().abs().amax(dim=1) / 127.0,
            torch.zeros(n, dtype=torch.long),
            0,
            torch.qint8,
        )
        ts.set_weight_bias(wq, lin.bias.detach())
        ts.scale, ts.zero_point = 0.05, 128
        xq = torch.quantize_per_tensor(x, 0.02, 128, torch.quint8)
        qs = qlinear.from_torch(ts, threads=1)
        assert torch.equal(qs(xq).int_repr(), ts(xq).int_repr()), "static mismatch"
        xu8 = xq.int_repr().numpy()

        cases = {
            "torch dynamic": lambda: tq(x),
            "qlinear dynamic (torch tensor)": lambda: ql(x),
            "qlinear dynamic (numpy)": lambda: ql(xn),
            "torch static": lambda: ts(xq),
            "qlinear static (torch quint8)": lambda: qs(xq),
            "qlinear static (numpy u8)": lambda: qs(xu8, 0.02, 128),
        }
        with torch.no_grad():
            calls = {name: calls_for(fn) for name, fn in cases.items()}
            times = {name: [] for name in cases}
            for _ in range(rounds):
                for name, fn in cases.items():
                    times[name].append(per_call(fn, calls[name]))
        med = {name: statistics.median(t) * 1e6 for name, t in times.items()}
        rows.append(
            {
                "shape": f"{m}x{k}x{n}",
                "kernel": ql.kernel_name_for(m),
                "us": {name: round(v, 2) for name, v in med.items()},
                "speedup_dynamic": round(med["torch dynamic"] / med["qlinear dynamic (torch tensor)"], 2),
                "speedup_static": round(med["torch static"] / med["qlinear static (torch quint8)"], 2),
            }
        )
    return rows


def main() -> None:
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    out = {"cpu": cpu_name(), "backends": qlinear.available_backends()}
    out["overhead"] = overhead(args.rounds)
    o = out["overhead"]
    print(f"cpu: {out['cpu']}")
    print(
        f"call overhead {o['shape']} ({o['kernel']}): python {o['python_call_us']} us, "
        f"rust {o['rust_call_us']} us, overhead {o['overhead_us']} us"
    )
    try:
        import torch
    except ImportError:
        print("torch is not installed: speed against torch skipped")
    else:
        out["torch"] = torch.__version__
        out["vs_torch"] = vs_torch(args.rounds)
        for r in out["vs_torch"]:
            print(f"{r['shape']} ({r['kernel']}):")
            for name, us in r["us"].items():
                print(f"  {name:32s} {us:10.2f} us")
            print(f"  qlinear / torch speedup: dynamic {r['speedup_dynamic']}x, static {r['speedup_static']}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
