"""Convolution primitives: Conv (conv + batch norm + SiLU), depth-wise Conv, Concat.

Attribute names (``conv``, ``bn``, ``act``) are part of the state-dict layout that lets YOLO11-seg
weights from other tools load one to one, so keep them stable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Batch-norm settings used across the YOLO11 family.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def _inplace_ok() -> bool:
    """True in plain inference (no autograd, not tracing, exporting or compiling): in-place activations are
    safe there and graphs keep their out-of-place ops."""
    return not torch.is_grad_enabled() and not torch.jit.is_tracing() and not torch.compiler.is_compiling()


def same_padding(k: int | tuple[int, int], d: int = 1) -> int | tuple[int, int]:
    """Padding that keeps the spatial size for odd kernel ``k`` with dilation ``d`` at stride 1."""
    if isinstance(k, int):
        return (d * (k - 1) + 1) // 2
    return tuple((d * (x - 1) + 1) // 2 for x in k)


def make_bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation (SiLU by default, Identity when ``act=False``).

    After :meth:`fuse_bn` the batch norm is folded into the convolution and ``bn`` becomes ``None``.
    """

    def __init__(self, c1: int, c2: int, k=1, s: int = 1, p=None, g: int = 1, d: int = 1, act=True):
        super().__init__()
        pad = same_padding(k, d) if p is None else p
        self.conv = nn.Conv2d(c1, c2, k, s, pad, dilation=d, groups=g, bias=False)
        self.bn = make_bn(c2)
        if act is True:
            self.act = nn.SiLU()
        elif isinstance(act, nn.Module):
            self.act = act
        else:
            self.act = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if type(self.act) is nn.SiLU and _inplace_ok():
            # the conv output is a fresh tensor nobody else holds: without autograd, SiLU overwrites it instead
            # of allocating another one (same numbers; about 7% of a CPU forward, mostly fresh-page faults)
            return F.silu(x, inplace=True)
        return self.act(x)

    @torch.no_grad()
    def fuse_bn(self) -> None:
        """Fold the batch norm (running statistics) into the convolution weights and bias."""
        if self.bn is None:
            return
        self.conv = fold_bn_into_conv(self.conv, self.bn)
        self.bn = None


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a Conv2d with bias that computes ``bn(conv(x))`` of eval mode.

    w' = w * gamma / sqrt(var + eps);  b' = (b - mean) / sqrt(var + eps) * gamma + beta
    (computed in the weights' dtype, in this order, so results match other float32 fusions closely).
    """
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(b)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(b)
    inv_std = torch.rsqrt(bn.running_var.detach() + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=w.device, dtype=w.dtype)
    fused.weight.copy_(w * (gamma * inv_std).view(-1, 1, 1, 1))
    fused.bias.copy_((b - bn.running_mean.detach()) * inv_std * gamma + beta)
    return fused.requires_grad_(False)


class DWConv(Conv):
    """Depth-wise (grouped by gcd of the channel counts) Conv."""

    def __init__(self, c1: int, c2: int, k=1, s: int = 1, d: int = 1, act=True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class Concat(nn.Module):
    """Concatenate a list of tensors along ``dim``."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.d = dim

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.d)
