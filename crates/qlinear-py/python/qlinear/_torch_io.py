"""torch tensors and modules in and out of qlinear layers.

Imported only when a torch tensor or module reaches qlinear, so the package never
imports torch by itself.
"""

from __future__ import annotations

import numpy as np
import torch

from . import DynamicLinear, Linear

_ENGINE_PROFILE = {"x86": "fbgemm", "fbgemm": "fbgemm", "qnnpack": "qnnpack"}


def _cpu_numpy(x: "torch.Tensor", what: str) -> np.ndarray:
    """A dense CPU tensor as a numpy array sharing its memory and strides (qlinear
    reads any layout); a ``ValueError`` for what numpy cannot view."""
    if x.device.type != "cpu":
        raise ValueError(f"{what} must be on the CPU, got device {x.device}")
    if x.layout != torch.strided:
        raise ValueError(f"{what} must be a dense (strided) tensor, got layout {x.layout}")
    x = x.detach()
    if x.is_conj() or x.is_neg():
        x = x.resolve_conj().resolve_neg()
    try:
        return x.numpy()
    except (TypeError, RuntimeError) as e:
        raise ValueError(f"{what}: cannot read the tensor as an array: {e}") from e


def dynamic_forward(native, x):
    """float32 tensor -> float32 tensor through a native dynamic layer."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a tensor, got {type(x).__name__}")
    if x.is_quantized:
        raise ValueError(
            "a dynamic layer takes a float32 tensor, got a quantized tensor "
            f"({x.dtype}); dequantize it first"
        )
    if x.dtype != torch.float32:
        raise ValueError(f"input must be torch.float32, got {x.dtype}")
    return torch.from_numpy(native.forward(_cpu_numpy(x, "input")))


def static_forward(layer: Linear, x, input_scale=None, input_zero_point=None):
    """A quint8 tensor -> a quint8 tensor with the layer's output qparams (torch's
    quantized Linear); a float32 tensor -> float32 (quantize, layer, dequantize)."""
    native = layer._native
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a tensor, got {type(x).__name__}")
    if x.is_quantized:
        if x.dtype != torch.quint8:
            raise ValueError(f"a static layer takes torch.quint8 input, got {x.dtype}")
        if x.qscheme() != torch.per_tensor_affine:
            raise ValueError(f"input must be quantized per tensor, got {x.qscheme()}")
        if input_scale is not None or input_zero_point is not None:
            raise ValueError("a quantized tensor carries its own qparams: do not pass input_scale")
        q = _cpu_numpy(_quint8_bytes(x), "input")
        y = native.forward(q, float(x.q_scale()), int(x.q_zero_point()))
        scale, zero_point = _torch_output_qparams(layer)
        return torch._make_per_tensor_quantized_tensor(torch.from_numpy(y), scale, zero_point)
    if x.dtype == torch.uint8 or x.dtype == torch.float32:
        a = _cpu_numpy(x, "input")
        s = None if input_scale is None else float(input_scale)
        z = None if input_zero_point is None else int(input_zero_point)
        return torch.from_numpy(native.forward(a, s, z))
    raise ValueError(f"a static layer takes torch.quint8, uint8 or float32 input, got {x.dtype}")


def _quint8_bytes(x: "torch.Tensor") -> "torch.Tensor":
    """The uint8 values of a quint8 tensor without a copy: a uint8 tensor over the same
    storage, offset, sizes and strides (quint8 is one byte per element). torch's
    ``int_repr()`` copies element by element (about 0.1 ms for 128 x 3072)."""
    if x.element_size() != 1:  # never for quint8; kept as a guard
        return x.int_repr()
    return torch.empty(0, dtype=torch.uint8).set_(
        x.untyped_storage(), x.storage_offset(), x.size(), x.stride()
    )


def _torch_output_qparams(layer: Linear):
    """The output qparams a torch module would attach: its own double scale when the
    layer came from `from_torch` (the kernel uses its f32 rounding either way)."""
    exact = getattr(layer, "_torch_scale", None)
    if exact is not None:
        return exact
    return float(layer.scale), int(layer.zero_point)


def _weight_args(w):
    """A torch qint8 weight as (int8 array, scale, zero point) for the constructors."""
    if w.dtype != torch.qint8:
        raise ValueError(f"the weight must be torch.qint8, got {w.dtype}")
    data = w.int_repr().numpy()
    qs = w.qscheme()
    if qs in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return data, float(w.q_scale()), int(w.q_zero_point())
    if qs in (torch.per_channel_affine, torch.per_channel_symmetric):
        if w.q_per_channel_axis() != 0:
            raise ValueError(
                f"per-channel weights must be quantized along axis 0, got {w.q_per_channel_axis()}"
            )
        scales = w.q_per_channel_scales().numpy().astype(np.float64)
        zps = w.q_per_channel_zero_points().numpy().astype(np.int64)
        return data, scales, zps
    raise ValueError(f"unsupported weight qscheme {qs}")


def _bias(module):
    b = module.bias()
    if b is None:
        return None
    return b.detach().to(torch.float32).numpy().copy()


def from_torch(module, *, backend="auto", threads=0):
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
    import torch.ao.nn.quantized as nnq
    import torch.ao.nn.quantized.dynamic as nnqd

    engine = torch.backends.quantized.engine
    profile = _ENGINE_PROFILE.get(engine)
    if profile is None:
        raise ValueError(
            f"torch.backends.quantized.engine is {engine!r}: qlinear reproduces x86, fbgemm and qnnpack"
        )
    if isinstance(module, nnqd.Linear):  # dynamic (and dynamic LinearReLU)
        if module._packed_params.dtype != torch.qint8:
            raise ValueError(f"only qint8 dynamic Linear is supported, got {module._packed_params.dtype}")
        w, s, z = _weight_args(module.weight())
        version = getattr(module, "version", None)
        reduce_range = profile == "fbgemm" and version is not None and version >= 4
        return DynamicLinear(
            w,
            s,
            z,
            bias=_bias(module),
            relu=isinstance(module, nniqd.LinearReLU),
            profile=profile,
            reduce_range=reduce_range,
            backend=backend,
            threads=threads,
        )
    if isinstance(module, nnq.Linear):  # static (and LinearReLU)
        if module._packed_params.dtype != torch.qint8:
            raise ValueError(f"only qint8 Linear is supported, got {module._packed_params.dtype}")
        w, s, z = _weight_args(module.weight())
        layer = Linear(
            w,
            s,
            z,
            bias=_bias(module),
            scale=float(module.scale),
            zero_point=int(module.zero_point),
            relu=isinstance(module, nniq.LinearReLU),
            profile=profile,
            backend=backend,
            threads=threads,
        )
        layer._torch_scale = (float(module.scale), int(module.zero_point))
        return layer
    raise ValueError(
        f"from_torch takes torch.ao.nn.quantized.Linear, LinearReLU or their dynamic "
        f"versions, got {type(module).__module__}.{type(module).__name__}"
    )
