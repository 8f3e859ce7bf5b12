"""Box-cropped mask BCE computed only inside each box, with a hand-written backward.

Only pixels inside an instance's box contribute to the mask loss, and all positive anchors assigned to one
instance share that box and that target. So the loss is evaluated per instance on the box window of the
prototypes: ``(anchors of the instance, window pixels)`` logits instead of full ``(h, w)`` maps. The backward
writes each window's prototype gradient in place into one buffer, which autograd through many slices
cannot do (every slice would allocate and add a full-size gradient).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["MaskGroup", "windowed_mask_bce"]


class MaskGroup(NamedTuple):
    """Anchors ``rows[start:start+count]`` of the coefficient matrix, all assigned to one instance."""

    image: int
    start: int
    count: int
    r0: int  # window rows [r0, r1), columns [c0, c1) on the prototype grid
    r1: int
    c0: int
    c1: int
    target: torch.Tensor  # (r1 - r0, c1 - c0) float, the instance mask inside the window


class _WindowedMaskBCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, coeffs, protos, scales, groups):
        nm = protos.shape[1]
        sums = []
        for g in groups:
            window = protos[g.image, :, g.r0 : g.r1, g.c0 : g.c1].reshape(nm, -1)
            logits = coeffs[g.start : g.start + g.count] @ window
            target = g.target.reshape(1, -1).expand_as(logits)
            sums.append(F.binary_cross_entropy_with_logits(logits, target, reduction="sum"))
        ctx.save_for_backward(coeffs, protos, scales)
        ctx.groups = groups
        if not sums:
            return coeffs.new_zeros(())
        return (torch.stack(sums) * scales).sum()

    @staticmethod
    def backward(ctx, grad_out):
        coeffs, protos, scales = ctx.saved_tensors
        nm = protos.shape[1]
        need_c, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_c = torch.zeros_like(coeffs) if need_c else None
        grad_p = torch.zeros_like(protos) if need_p else None
        weights = (scales * grad_out).tolist()
        for g, w in zip(ctx.groups, weights):
            window = protos[g.image, :, g.r0 : g.r1, g.c0 : g.c1].reshape(nm, -1)
            c = coeffs[g.start : g.start + g.count]
            # d/dx of BCE-with-logits summed: sigmoid(x) - y
            d_logits = (c @ window).sigmoid_().sub_(g.target.reshape(1, -1)).mul_(w)
            if need_c:
                grad_c[g.start : g.start + g.count] = d_logits @ window.t()
            if need_p:
                grad_p[g.image, :, g.r0 : g.r1, g.c0 : g.c1] += (c.t() @ d_logits).view(nm, g.r1 - g.r0, g.c1 - g.c0)
        return grad_c, grad_p, None, None


def windowed_mask_bce(
    coeffs: torch.Tensor, protos: torch.Tensor, scales: torch.Tensor, groups: list[MaskGroup]
) -> torch.Tensor:
    """``sum_g scales[g] * sum(BCE-with-logits(coeffs_g @ window_g, target_g))`` over the groups.

    Args:
        coeffs: ``(N, nm)`` mask coefficients of the positive anchors, ordered so each group is contiguous.
        protos: ``(B, nm, h, w)`` prototypes.
        scales: ``(len(groups),)`` per-group weights (no gradient).
        groups: the instance groups, each with its window and target.
    """
    return _WindowedMaskBCE.apply(coeffs, protos, scales.detach().to(coeffs.dtype), groups)
