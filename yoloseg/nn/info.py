"""Model summary: layer/parameter/gradient counts and GFLOPs.

GFLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on one (1, ch, imgsz, imgsz) forward in eval
mode, run on the ``meta`` device (shapes only, no arithmetic). The counter charges 2 FLOPs per multiply-add
of convolutions, transposed convolutions and matrix products (the attention ``q @ k`` / ``v @ attn``
products included); element-wise work (batch norm, activations, pooling, softmax, additions) is not counted.
See docs/model.md for how this relates to other tools' numbers.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_layers(model: nn.Module) -> int:
    """Number of leaf modules (modules without children)."""
    return sum(1 for m in model.modules() if not next(m.children(), None))


def count_flops(model: nn.Module, imgsz: int | tuple[int, int] = 640, ch: int | None = None) -> float:
    """FLOPs (not GFLOPs) of one eval forward at ``imgsz`` (int or (h, w)), batch 1."""
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    if ch is None:
        ch = int(getattr(model, "yaml", {}).get("channels", 3))
    meta = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta(torch.empty(1, ch, h, w, device="meta"))
    return float(counter.get_total_flops())


def model_info(
    model: nn.Module, imgsz: int | tuple[int, int] = 640, verbose: bool = True
) -> tuple[int, int, int, float]:
    n_layers = count_layers(model)
    n_params = sum(p.numel() for p in model.parameters())
    n_grads = sum(p.numel() for p in model.parameters() if p.requires_grad)
    gflops = count_flops(model, imgsz) / 1e9
    if verbose:
        name = str(getattr(model, "yaml", {}).get("yaml_file", "") or type(model).__name__)
        fused = " (fused)" if getattr(model, "is_fused", lambda: False)() else ""
        size = imgsz if isinstance(imgsz, int) else "x".join(map(str, imgsz))
        msg = (
            f"{name} summary{fused}: {n_layers:,} layers, {n_params:,} parameters, {n_grads:,} gradients, "
            f"{gflops:.2f} GFLOPs at {size}"
        )
        print(msg)
    return n_layers, n_params, n_grads, gflops
