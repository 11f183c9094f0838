"""qlinear inside torch models (needs torch).

``quantize_dynamic(model)`` replaces every ``torch.nn.Linear`` of a float model with a
:class:`QLinearDynamic` module that runs qlinear's exact int8 kernels. The defaults,
per-channel symmetric weights and full-range activations, are far more accurate than
``torch.ao.quantization.quantize_dynamic``'s (per-tensor weights, 7-bit activations);
``qscheme="per_tensor_symmetric", reduce_range=True`` reproduces torch's result bit for
bit.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch as _torch

from . import DynamicLinear

__all__ = ["QLinearDynamic", "quantize_dynamic"]


class QLinearDynamic(_torch.nn.Module):
    """A ``torch.nn.Module`` running a :class:`qlinear.DynamicLinear` (float32 in and
    out, any leading dimensions). Inference only: no gradients flow through it."""

    def __init__(self, layer: DynamicLinear):
        super().__init__()
        self.layer = layer
        self.in_features = layer.in_features
        self.out_features = layer.out_features

    @classmethod
    def from_float(cls, linear: "_torch.nn.Linear", **settings) -> "QLinearDynamic":
        """``linear``'s weight quantized by qlinear; ``settings`` are
        :meth:`qlinear.DynamicLinear.from_float`'s keywords (``qscheme``,
        ``reduce_range``, ``per_row``, ``profile``, ``backend``, ``threads``)."""
        w = linear.weight.detach().to(_torch.float32).cpu().contiguous().numpy()
        b = None
        if linear.bias is not None:
            b = linear.bias.detach().to(_torch.float32).cpu().contiguous().numpy()
        return cls(DynamicLinear.from_float(w, b, **settings))

    # The layer lives in the state dict as its packed bytes (one uint8 tensor), so
    # `state_dict()` / `load_state_dict()` round-trip it like torch's own modules.
    _STATE_KEY = "qlinear_packed"

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        data = bytearray(self.layer.to_bytes())
        destination[prefix + self._STATE_KEY] = _torch.frombuffer(data, dtype=_torch.uint8)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        key = prefix + self._STATE_KEY
        if key not in state_dict:
            missing_keys.append(key)
            return
        packed = state_dict[key]
        try:
            layer = DynamicLinear.from_bytes(
                packed.detach().cpu().contiguous().numpy().tobytes(), threads=self.layer.threads
            )
        except ValueError as e:
            error_msgs.append(f"{key}: {e}")
            return
        self.layer = layer
        self.in_features, self.out_features = layer.in_features, layer.out_features

    def forward(self, x: "_torch.Tensor") -> "_torch.Tensor":
        dtype = x.dtype
        if dtype != _torch.float32:
            x = x.to(_torch.float32)
        y = self.layer(x)
        return y if dtype == _torch.float32 else y.to(dtype)

    def extra_repr(self) -> str:
        l = self.layer
        return (
            f"in_features={l.in_features}, out_features={l.out_features}, "
            f"per_channel={l.per_channel}, reduce_range={l.reduce_range}, "
            f"per_row={l.per_row}, kernel={l.kernel_name}"
        )


def quantize_dynamic(
    model: "_torch.nn.Module",
    *,
    qscheme: str = "per_channel_symmetric",
    reduce_range: bool = False,
    per_row: bool = False,
    profile: str = "fbgemm",
    backend: str = "auto",
    threads: int = 0,
    inplace: bool = False,
    exclude: Optional[set] = None,
) -> "_torch.nn.Module":
    """``model`` with every ``torch.nn.Linear`` (not under a name in ``exclude``)
    replaced by a :class:`QLinearDynamic`. A copy unless ``inplace``."""
    if not inplace:
        model = copy.deepcopy(model)
    exclude = set(exclude or ())
    settings = dict(
        qscheme=qscheme,
        reduce_range=reduce_range,
        per_row=per_row,
        profile=profile,
        backend=backend,
        threads=threads,
    )
    if isinstance(model, _torch.nn.Linear):
        return QLinearDynamic.from_float(model, **settings)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is _torch.nn.Linear and full not in exclude:
                setattr(module, child_name, QLinearDynamic.from_float(child, **settings))
    return model
