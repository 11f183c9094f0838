"""qlinear: exact int8 linear layers, bit for bit what torch's quantized Linear computes.

``qlinear.Linear`` is ``torch.ao.nn.quantized.Linear`` / ``LinearReLU`` (uint8 in, uint8
out), ``qlinear.DynamicLinear`` is ``torch.ao.nn.quantized.dynamic.Linear`` (float32 in,
float32 out). Both run the Rust crate ``qlinear``'s kernels (AVX-512 VNNI, AVX-VNNI,
AVX2, NEON, dotprod, i8mm, chosen at run time) and release the GIL while they compute.
torch is optional: ``qlinear.from_torch(module)`` converts a torch module and
``qlinear.torch.quantize_dynamic(model)`` swaps a float model's ``nn.Linear`` layers.

The full reference is ``docs/python.md`` in the repository.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional, Tuple

import numpy as np

from . import _native
from ._native import BackendUnavailableError, K_LIMIT, available_backends

__all__ = [
    "Linear",
    "DynamicLinear",
    "QuantizedWeight",
    "BackendUnavailableError",
    "available_backends",
    "quantize_weight",
    "quantize_per_tensor",
    "dequantize",
    "from_torch",
    "K_LIMIT",
]

_QSCHEMES = (
    "per_tensor_symmetric",
    "per_tensor_affine",
    "per_channel_symmetric",
    "per_channel_affine",
)


class QuantizedWeight:
    """An int8 weight and its qparams (what torch's ``weight()`` returns, unpacked).

    ``int_repr``: int8 ``[out_features, in_features]``; ``scales``: float32, one entry per
    tensor or one per output channel; ``zero_points``: int32, same length;
    ``per_channel``: which of the two.
    """

    __slots__ = ("int_repr", "scales", "zero_points", "per_channel")

    def __init__(self, int_repr, scales, zero_points, per_channel: bool):
        self.int_repr = int_repr
        self.scales = scales
        self.zero_points = zero_points
        self.per_channel = bool(per_channel)

    @property
    def shape(self) -> Tuple[int, int]:
        return tuple(self.int_repr.shape)

    @property
    def qscheme(self) -> str:
        """``per_tensor_affine`` or ``per_channel_affine`` (torch's names)."""
        return "per_channel_affine" if self.per_channel else "per_tensor_affine"

    def dequantize(self) -> np.ndarray:
        """float32 ``(w - zero_point) * scale`` per element, as torch's ``dequantize``."""
        w = self.int_repr.astype(np.int32)
        z = self.zero_points.reshape(-1, 1) if self.per_channel else self.zero_points[0]
        s = self.scales.reshape(-1, 1) if self.per_channel else self.scales[0]
        return ((w - z).astype(np.float32) * s).astype(np.float32)

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, QuantizedWeight):
            return NotImplemented
        return (
            self.per_channel == other.per_channel
            and np.array_equal(self.int_repr, other.int_repr)
            and np.array_equal(self.scales.view(np.uint32), other.scales.view(np.uint32))
            and np.array_equal(self.zero_points, other.zero_points)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        n, k = self.shape
        return (
            f"QuantizedWeight(shape=({n}, {k}), qscheme={self.qscheme}, "
            f"scales={_short(self.scales)}, zero_points={_short(self.zero_points)})"
        )


def _short(a: np.ndarray) -> str:
    if a.size == 1:
        return repr(a.reshape(-1)[0].item())
    return f"[{a.size} values]"


def quantize_weight(
    weight, qscheme: str = "per_channel_symmetric", reduce_range: bool = False
) -> QuantizedWeight:
    """float32 ``[out, in]`` -> :class:`QuantizedWeight`, exactly as torch's
    ``MinMaxObserver`` / ``PerChannelMinMaxObserver`` (qint8, axis 0) and
    ``quantize_per_tensor`` / ``quantize_per_channel`` do it."""
    return QuantizedWeight(
        *_native.quantize_weight(_as_array(weight), _str(qscheme, "qscheme"), bool(reduce_range))
    )


def quantize_per_tensor(x, scale: float, zero_point: int) -> np.ndarray:
    """torch's ``quantize_per_tensor(x, scale, zero_point, torch.quint8).int_repr()``:
    float32 of any shape -> uint8 of the same shape."""
    return _native.quantize_per_tensor(_as_array(x), _float(scale, "scale"), _int(zero_point, "zero_point"))


def dequantize(q, scale: float, zero_point: int) -> np.ndarray:
    """torch's ``dequantize`` of a quint8 tensor: uint8 of any shape -> float32."""
    return _native.dequantize(_as_array(q), _float(scale, "scale"), _int(zero_point, "zero_point"))


# ---------------------------------------------------------------------------------
# Arguments and inputs


_I64 = (-(2**63), 2**63 - 1)
_MAX_THREADS = 1 << 16


def _int(v, what: str) -> int:
    """An integer argument: Python or numpy integers, or an integral float; a
    ``ValueError`` for anything else, and for values beyond 64 bits."""
    if isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{what} must be an integer, got {v!r}")
    if isinstance(v, (int, np.integer)):
        i = int(v)
    else:
        a = np.asarray(v)
        if a.ndim == 0 and a.dtype.kind in "iu":
            i = int(a)
        elif a.ndim == 0 and a.dtype.kind == "f" and np.isfinite(a) and float(a).is_integer():
            i = int(a)
        else:
            raise ValueError(f"{what} must be an integer, got {v!r}")
    if not _I64[0] <= i <= _I64[1]:
        raise ValueError(f"{what} {i} is out of range")
    return i


def _float(v, what: str) -> float:
    """A float argument (Python or numpy number); ``ValueError`` otherwise. Range and
    finiteness are the layer's to check, with its own message."""
    if isinstance(v, (bool, np.bool_)) or v is None:
        raise ValueError(f"{what} must be a number, got {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{what} must be a number, got {v!r}") from e


def _str(v, what: str) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{what} must be a string, got {v!r}")
    return v


def _path(path) -> str:
    """A str, bytes or os.PathLike path as str."""
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError as e:
        raise ValueError(f"expected a path, got {type(path).__name__}") from e


def _bytes(data) -> bytes:
    """bytes, or any object with the buffer protocol (bytearray, memoryview, a uint8
    array), as bytes."""
    if isinstance(data, bytes):
        return data
    try:
        return memoryview(data).tobytes()
    except TypeError as e:
        raise ValueError(f"expected bytes or a buffer, got {type(data).__name__}") from e


def _as_array(x) -> np.ndarray:
    """Anything numpy can read on the CPU (ndarray, ``__array__``, ``__dlpack__``) as an
    ndarray, without copying when the object allows it."""
    if type(x) is np.ndarray:
        return x
    if isinstance(x, np.ma.MaskedArray):
        raise ValueError("masked arrays are not supported: fill or compress the mask first")
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__array__") or hasattr(x, "__array_interface__"):
        return np.asarray(x)
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError) as e:
            raise ValueError(f"cannot read the input through __dlpack__: {e}") from e
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise ValueError(
        f"expected a numpy array or an object with __array__ / __dlpack__, got {type(x).__name__}"
    )


def _weight_qparams(scale, zero_point) -> Tuple[list, list, bool]:
    """Normalizes ``weight_scale`` / ``weight_zero_point`` to lists and per-channel-ness."""
    s = _as_array(scale) if not isinstance(scale, (int, float)) else np.asarray(scale)
    z = _as_array(zero_point) if not isinstance(zero_point, int) else np.asarray(zero_point)
    if s.dtype.kind not in "fiu":
        raise ValueError(f"weight_scale must be numeric, got dtype {s.dtype}")
    if z.dtype.kind not in "iuf":
        raise ValueError(f"weight_zero_point must be integers, got dtype {z.dtype}")
    # Exact Python numbers, each checked (`_int` rejects non-integral floats and values
    # beyond 64 bits; the layer checks the int8 range with its own message).
    zs = [_int(v, "weight_zero_point") for v in z.reshape(-1).tolist()]
    if s.ndim == 0:
        if z.ndim != 0:
            raise ValueError(
                "a per-tensor weight_scale (a number) needs a per-tensor weight_zero_point, "
                f"got shape {z.shape}"
            )
        return [float(s)], zs, False
    if s.ndim != 1:
        raise ValueError(f"weight_scale must be a number or 1-D (per channel), got shape {s.shape}")
    if z.ndim == 0:
        zs = zs * s.shape[0]
    elif z.ndim != 1:
        raise ValueError(f"weight_zero_point must be 1-D like weight_scale, got shape {z.shape}")
    return s.astype(np.float64).tolist(), zs, True


def _bias(bias):
    if bias is None:
        return None
    return _as_array(bias)


def _is_torch(x) -> bool:
    """Whether ``x`` is a torch tensor (never imports torch: a tensor means it is)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _threads(threads) -> int:
    t = _int(threads, "threads")
    if not 0 <= t <= _MAX_THREADS:
        raise ValueError(f"threads must be in [0, {_MAX_THREADS}] (0 = all cores), got {t}")
    return t


# ---------------------------------------------------------------------------------
# Layers


def _from_native(name: str, doc: str) -> property:
    """A read-only property reading the native layer's attribute ``name``."""
    return property(lambda self: getattr(self._native, name), doc=doc)


class _Layer:
    """What both layer classes share: properties read from the native layer, I/O."""

    # `_torch_scale`: the torch module's own (double) output qparams, set by
    # `from_torch` so output tensors carry exactly the module's q_scale().
    __slots__ = ("_native", "_torch_scale")
    _KIND = ""  # "static" or "dynamic": which native layer the class wraps

    @classmethod
    def _wrap(cls, native):
        obj = cls.__new__(cls)
        obj._native = native
        return obj

    in_features = _from_native("in_features", "Columns of the input (the weight's second dimension).")
    out_features = _from_native("out_features", "Columns of the output (the weight's first dimension).")
    relu = _from_native("relu", "Whether a ReLU is fused (torch's LinearReLU).")
    profile = _from_native("profile", "The arithmetic profile: 'fbgemm' (engines fbgemm / x86) or 'qnnpack'.")
    per_channel = _from_native("per_channel", "Whether the weight has one scale / zero point per output channel.")
    backend = _from_native("backend", "The backend the weights are packed for (auto resolved).")
    kernel_name = _from_native("kernel_name", "The kernel the weights were packed for, e.g. avx512vnni/gemm_8x32c4.")

    def kernel_name_for(self, m: int) -> str:
        """The kernel a call with ``m`` rows runs."""
        m = _int(m, "m")
        if m < 0:
            raise ValueError(f"m must be >= 0, got {m}")
        return self._native.kernel_name_for(m)

    @property
    def threads(self) -> int:
        """Worker threads per call (0 = all cores)."""
        return self._native.threads

    @threads.setter
    def threads(self, value: int) -> None:
        self._native.threads = _threads(value)

    def weight(self) -> QuantizedWeight:
        """The exact int8 weight and its qparams."""
        return QuantizedWeight(*self._native.weight())

    def bias(self) -> Optional[np.ndarray]:
        """A float32 copy of the bias, or ``None``."""
        return self._native.bias()

    # -- persistence ----------------------------------------------------------------
    def _check_storable(self) -> None:
        """Hook: a static layer without default input qparams has none to store."""

    def to_bytes(self) -> bytes:
        """The layer in qlinear's packed-weights layer format (``docs/packed-format.md``)."""
        self._check_storable()
        return self._native.to_bytes()

    @classmethod
    def from_bytes(cls, data, backend: str = "auto", threads: int = 0):
        """A layer from :meth:`to_bytes` output (repacked when ``backend`` needs it)."""
        return cls._wrap(
            _native.NativeLayer.from_bytes(
                cls._KIND, _bytes(data), _str(backend, "backend"), _threads(threads)
            )
        )

    def save(self, path) -> None:
        """Writes :meth:`to_bytes` to ``path``."""
        data = self.to_bytes()
        with open(_path(path), "wb") as f:
            f.write(data)

    @classmethod
    def load(cls, path, backend: str = "auto", threads: int = 0):
        """Reads a file written by :meth:`save`."""
        with open(_path(path), "rb") as f:
            return cls.from_bytes(f.read(), backend, threads)

    def save_safetensors(self, path, prefix: str = "linear") -> None:
        """Writes the layer under ``prefix`` to a safetensors file (``docs/safetensors.md``)."""
        self._check_storable()
        self._native.save_safetensors(_path(path), _str(prefix, "prefix"))

    @classmethod
    def from_safetensors(cls, path, prefix: str = "linear", backend: str = "auto", threads: int = 0):
        """The layer stored under ``prefix`` in a safetensors file."""
        return cls._wrap(
            _native.NativeLayer.from_safetensors(
                cls._KIND, _path(path), _str(prefix, "prefix"), _str(backend, "backend"), _threads(threads)
            )
        )

    def __reduce__(self):
        # Pickle (and copy.deepcopy) keep everything: the packed layer, the thread
        # count, whether a static layer has default input qparams, and from_torch's
        # exact output qparams.
        static = self._KIND == "static"
        has_default = not static or self._native.input_scale is not None
        return (
            _restore,
            (type(self), self._native.to_bytes(), self.threads, has_default, getattr(self, "_torch_scale", None)),
        )

    def _weight_repr(self) -> str:
        qscheme = "torch.per_channel_affine" if self.per_channel else "torch.per_tensor_affine"
        return f"dtype=torch.qint8, qscheme={qscheme}"

    @classmethod
    def _from_quantized(cls, w: QuantizedWeight, **kwargs):
        """The layer of an already quantized weight (``kwargs`` as the constructor)."""
        if w.per_channel:
            return cls(w.int_repr, w.scales, w.zero_points, **kwargs)
        return cls(w.int_repr, float(w.scales[0]), int(w.zero_points[0]), **kwargs)

    @classmethod
    def from_float(
        cls,
        weight,
        bias=None,
        *,
        qscheme: str = "per_channel_symmetric",
        weight_reduce_range: bool = False,
        **kwargs,
    ):
        """Quantizes a float32 weight with torch's observer for ``qscheme``
        (``weight_reduce_range``: range [-64, 63]), then builds the layer (``kwargs`` as
        the constructor; a static layer needs ``scale`` and ``zero_point``)."""
        w = quantize_weight(weight, qscheme, weight_reduce_range)
        return cls._from_quantized(w, bias=bias, **kwargs)


def _restore(cls, data, threads, has_default_input=True, torch_scale=None):
    obj = cls._wrap(_native.NativeLayer.from_bytes(cls._KIND, data, "auto", threads, has_default_input))
    if torch_scale is not None:
        obj._torch_scale = torch_scale
    return obj


class DynamicLinear(_Layer):
    """``torch.ao.nn.quantized.dynamic.Linear``: float32 in, float32 out, the input
    quantized per call (per tensor, or per row with ``per_row=True``)."""

    __slots__ = ()
    _KIND = "dynamic"

    def __init__(
        self,
        weight,
        weight_scale,
        weight_zero_point=0,
        *,
        bias=None,
        relu: bool = False,
        profile: str = "fbgemm",
        reduce_range: Optional[bool] = None,
        per_row: bool = False,
        backend: str = "auto",
        threads: int = 0,
    ):
        scales, zps, per_channel = _weight_qparams(weight_scale, weight_zero_point)
        self._native = _native.NativeLayer.new_dynamic(
            _as_array(weight),
            scales,
            zps,
            per_channel,
            _bias(bias),
            bool(relu),
            _str(profile, "profile"),
            None if reduce_range is None else bool(reduce_range),
            bool(per_row),
            _str(backend, "backend"),
            _threads(threads),
        )

    reduce_range = _from_native("reduce_range", "Whether activations use 7 bits (torch's fbgemm module default).")
    per_row = _from_native("per_row", "Whether each input row gets its own activation qparams.")

    def forward(self, x):
        """float32 ``[..., in_features]`` -> float32 ``[..., out_features]``. A torch
        tensor in gives a torch tensor out."""
        if type(x) is np.ndarray:
            return self._native.forward(x)
        if _is_torch(x):
            from ._torch_io import dynamic_forward

            return dynamic_forward(self._native, x)
        return self._native.forward(_as_array(x))

    __call__ = forward

    def __repr__(self) -> str:
        return (
            f"DynamicLinear(in_features={self.in_features}, out_features={self.out_features}, "
            f"{self._weight_repr()}, bias={self._native.bias() is not None}, relu={self.relu}, "
            f"reduce_range={self.reduce_range}, per_row={self.per_row}, "
            f"profile={self.profile!r}, kernel={self.kernel_name!r})"
        )


class Linear(_Layer):
    """``torch.ao.nn.quantized.Linear`` (``LinearReLU`` with ``relu=True``): uint8 in,
    uint8 out with output qparams ``scale`` / ``zero_point``."""

    __slots__ = ()
    _KIND = "static"

    def __init__(
        self,
        weight,
        weight_scale,
        weight_zero_point=0,
        *,
        scale: float,
        zero_point: int,
        bias=None,
        input_scale: Optional[float] = None,
        input_zero_point: Optional[int] = None,
        relu: bool = False,
        profile: str = "fbgemm",
        backend: str = "auto",
        threads: int = 0,
    ):
        scales, zps, per_channel = _weight_qparams(weight_scale, weight_zero_point)
        self._native = _native.NativeLayer.new_static(
            _as_array(weight),
            scales,
            zps,
            per_channel,
            _bias(bias),
            _float(scale, "scale"),
            _int(zero_point, "zero_point"),
            None if input_scale is None else _float(input_scale, "input_scale"),
            None if input_zero_point is None else _int(input_zero_point, "input_zero_point"),
            bool(relu),
            _str(profile, "profile"),
            _str(backend, "backend"),
            _threads(threads),
        )

    def _check_storable(self) -> None:
        if self._native.input_scale is None:
            raise ValueError(
                "this layer has no default input qparams to store (it takes them per call); "
                "build it with input_scale / input_zero_point to save it, or pickle it"
            )

    scale = _from_native("scale", "Output scale (torch's Linear.scale).")
    zero_point = _from_native("zero_point", "Output zero point (torch's Linear.zero_point).")
    input_scale = _from_native("input_scale", "Default input scale (None when every call must give its own).")
    input_zero_point = _from_native("input_zero_point", "Default input zero point, or None.")

    def forward(self, x, input_scale: Optional[float] = None, input_zero_point: Optional[int] = None):
        """uint8 ``x`` -> uint8, with the given input qparams or the layer's default;
        float32 ``x`` -> float32 (quantize, layer, dequantize); a torch ``quint8`` tensor
        -> a torch ``quint8`` tensor (its own qparams are the input's)."""
        if type(x) is np.ndarray:
            if input_scale is None and input_zero_point is None:
                return self._native.forward(x)
            return self._native.forward(x, _opt_float(input_scale), _opt_int(input_zero_point))
        if _is_torch(x):
            from ._torch_io import static_forward

            return static_forward(self, x, input_scale, input_zero_point)
        return self._native.forward(_as_array(x), _opt_float(input_scale), _opt_int(input_zero_point))

    __call__ = forward

    def __repr__(self) -> str:
        return (
            f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
            f"scale={self.scale}, zero_point={self.zero_point}, {self._weight_repr()}, "
            f"bias={self._native.bias() is not None}, relu={self.relu}, "
            f"profile={self.profile!r}, kernel={self.kernel_name!r})"
        )


def _opt_float(v):
    return None if v is None else _float(v, "input_scale")


def _opt_int(v):
    return None if v is None else _int(v, "input_zero_point")


def from_torch(module, *, backend: str = "auto", threads: int = 0):
    """A qlinear layer computing what ``module`` computes, bit for bit.

    ``module``: ``torch.ao.nn.quantized.Linear``, ``torch.ao.nn.intrinsic.quantized.
    LinearReLU``, ``torch.ao.nn.quantized.dynamic.Linear`` or ``torch.ao.nn.intrinsic.
    quantized.dynamic.LinearReLU``. The profile follows ``torch.backends.quantized.engine``.
    """
    from ._torch_io import from_torch as _from_torch

    return _from_torch(module, backend=backend, threads=threads)


def __getattr__(name: str):
    # `qlinear.torch` on first use (PEP 562), so `import qlinear` never imports torch.
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'qlinear' has no attribute {name!r}")
