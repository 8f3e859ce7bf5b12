"""Access to the compiled kernels and shared input checks for the `yoloseg.ops` face."""

from __future__ import annotations

import math

import torch

try:  # the extension is always built by `pip install`; without it every op takes the reference path
    from yoloseg import _C as C
except ImportError:  # pragma: no cover - exercised only on broken installs
    C = None


def has_family(name: str) -> bool:
    return C is not None and name in getattr(C, "families", ())


def use_compiled(family: str, *tensors: torch.Tensor) -> bool:
    """True when the compiled kernel serves these tensors (CPU tensors and a built family)."""
    return has_family(family) and all(t.device.type == "cpu" for t in tensors)


def eager(*tensors: torch.Tensor) -> bool:
    """True for plain tensors outside torch.compile/export tracing.

    The face then calls the kernel directly instead of through its custom op: same result, no
    dispatcher overhead, and no lazy import of torch._dynamo (about a second) on the first call.
    """
    return not torch.compiler.is_compiling() and all(type(t) is torch.Tensor for t in tensors)


def num_threads() -> int:
    """Kernels follow torch's intra-op thread setting, so torch.set_num_threads(1) holds for them too."""
    return max(1, torch.get_num_threads())


def check_tensor(x, name: str, ndim: int | None = None, floating: bool = False, integer: bool = False):
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {x.dtype}")
    if integer and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise ValueError(f"{name} must be an integer tensor, got {x.dtype}")
    return x


def check_same_device(**tensors: torch.Tensor):
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{k} on {v}" for k, v in devices.items())
        raise ValueError(f"tensors must be on the same device, got {listing}")


def check_finite(x: torch.Tensor, name: str, allow_inf: bool = False):
    bad = torch.isnan(x) if allow_inf else ~torch.isfinite(x)
    if x.numel() and bool(bad.any()):
        what = "NaN" if allow_inf else "NaN or infinite"
        raise ValueError(f"{name} contains {what} values")


def check_threshold(value, name: str, lo: float | None = None, hi: float | None = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f" in [{lo}, {hi}]" if lo is not None and hi is not None else ""
        raise ValueError(f"{name} must be a finite number{rng}, got {value!r}")
    return v
