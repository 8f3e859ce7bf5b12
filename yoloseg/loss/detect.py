"""Box, class and distribution losses of the anchor-free detection head, with task-aligned assignment.

The head predicts, per anchor point, ``4 * reg_max`` distance-bin logits (left, top, right, bottom) followed
by ``nc`` class logits. Losses (before gains):

- cls: sum of BCE-with-logits against the assigner's soft targets over all anchors and classes;
- box: sum over positive anchors of ``(1 - CIoU) * w`` with ``w`` the anchor's soft target mass;
- dfl: the same weighted sum of the distribution focal loss of the four sides;

each divided by ``max(1, total soft target mass)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .assigner import Assignment, TaskAlignedAssigner
from .box import (
    anchor_grid,
    complete_iou,
    cxcywh_to_xyxy,
    dfl_loss,
    distances_to_xyxy,
    expected_distances,
    xyxy_to_distances,
)

__all__ = ["DEFAULT_HYP", "DetectionLoss", "DetectionTerms", "resolve_hyp"]

DEFAULT_HYP = {"box": 7.5, "cls": 0.5, "dfl": 1.5, "overlap_mask": True}


def resolve_hyp(hyp: Any) -> dict:
    """Loss gains from a mapping, an attribute namespace (e.g. a training config) or None (defaults).

    Only the keys the loss uses are read; anything else in a full training config is ignored.
    """
    out = dict(DEFAULT_HYP)
    if hyp is None:
        return out
    for key in out:
        if isinstance(hyp, Mapping):
            if key in hyp and hyp[key] is not None:
                out[key] = hyp[key]
        elif getattr(hyp, key, None) is not None:
            out[key] = getattr(hyp, key)
    for key in ("box", "cls", "dfl"):
        try:
            out[key] = float(out[key])
        except (TypeError, ValueError):
            raise ValueError(f"hyp[{key!r}] must be a number, got {out[key]!r}") from None
    out["overlap_mask"] = bool(out["overlap_mask"])
    return out


class DetectionTerms(NamedTuple):
    """Intermediate results shared with the segmentation loss (all losses before gains)."""

    box: torch.Tensor
    cls: torch.Tensor
    dfl: torch.Tensor
    assignment: Assignment
    imgsz: torch.Tensor  # (2,) input height, width in pixels


def _head_of(model: Any) -> Any:
    """The detection head: the last layer of ``model.model``, or ``model`` itself when it carries the fields."""
    layers = getattr(model, "model", None)
    if layers is not None:
        try:
            return layers[-1]
        except (TypeError, IndexError, KeyError):
            pass
    return model


def _check_strides(stride: Any) -> list[float]:
    values = [float(s) for s in (stride.tolist() if torch.is_tensor(stride) else stride)]
    if not values or any(not s > 0 for s in values):
        raise ValueError(f"stride must be a non-empty list of positive numbers, got {values}")
    return values


class DetectionLoss:
    """Detection loss of an anchor-free head.

    Args:
        nc: number of classes.
        stride: per-level strides, e.g. ``[8, 16, 32]``.
        reg_max: distance bins per side.
        hyp: gains ``box``, ``cls``, ``dfl`` (mapping, namespace or None for 7.5 / 0.5 / 1.5).
        topk: assigner candidates per box.
    """

    def __init__(self, nc: int, stride: Any, reg_max: int = 16, hyp: Any = None, topk: int = 10):
        if int(nc) < 1:
            raise ValueError(f"nc must be >= 1, got {nc}")
        if int(reg_max) < 2:
            raise ValueError(f"reg_max must be >= 2 (distribution bins), got {reg_max}")
        self.nc = int(nc)
        self.reg_max = int(reg_max)
        self.stride = _check_strides(stride)
        self.hyp = resolve_hyp(hyp)
        min_size = self.stride[1] if len(self.stride) > 1 else self.stride[0]
        self.assigner = TaskAlignedAssigner(self.nc, topk=topk, alpha=0.5, beta=6.0, min_size=min_size)

    @classmethod
    def from_model(cls, model: Any, hyp: Any = None, **kwargs):
        """Read nc, stride and reg_max from the model's head; gains from ``hyp`` or else ``model.args``."""
        head = _head_of(model)
        fields = ("nc", "stride", "reg_max")
        missing = [a for a in fields if not hasattr(head, a)]
        if missing:
            raise ValueError(f"model head {type(head).__name__} lacks {missing}")
        if hyp is None:
            hyp = getattr(model, "args", None)
        return cls(**{a: getattr(head, a) for a in fields}, hyp=hyp, **kwargs)

    @classmethod
    def from_params(cls, nc: int, stride: Any, reg_max: int = 16, hyp: Any = None, **kwargs):
        """Build from plain values, without a model."""
        return cls(nc=nc, stride=stride, reg_max=reg_max, hyp=hyp, **kwargs)

    # ------------------------------------------------------------------ pieces
    def split_feats(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-level ``(B, 4*reg_max + nc, Hi, Wi)`` maps to ``(B, A, 4*reg_max)`` and ``(B, A, nc)``."""
        if not isinstance(feats, (list, tuple)) or len(feats) != len(self.stride):
            raise ValueError(f"feats must be a list of {len(self.stride)} per-level tensors")
        no = 4 * self.reg_max + self.nc
        bs = feats[0].shape[0]
        for i, f in enumerate(feats):
            if f.ndim != 4 or f.shape[1] != no or f.shape[0] != bs:
                raise ValueError(f"feats[{i}] must have shape (B, {no}, H, W), got {tuple(f.shape)}")
        flat = torch.cat([f.reshape(bs, no, -1) for f in feats], 2)
        dist, logits = flat.split((4 * self.reg_max, self.nc), 1)
        return dist.permute(0, 2, 1).contiguous(), logits.permute(0, 2, 1).contiguous()

    @staticmethod
    def pad_targets(batch: Mapping, bs: int, scale: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``(B, G, 5)`` rows of (class, x1, y1, x2, y2 pixels) per image, in label order; zero padding."""
        for key in ("batch_idx", "cls", "bboxes"):
            if key not in batch:
                raise ValueError(f"batch lacks {key!r}")
        bidx = torch.as_tensor(batch["batch_idx"], device=device).reshape(-1).long()
        cls = torch.as_tensor(batch["cls"], device=device, dtype=scale.dtype).reshape(-1, 1)
        boxes = torch.as_tensor(batch["bboxes"], device=device, dtype=scale.dtype).reshape(-1, 4)
        m = bidx.numel()
        if cls.shape[0] != m or boxes.shape[0] != m:
            raise ValueError(f"batch_idx, cls and bboxes disagree in length: {m}, {cls.shape[0]}, {boxes.shape[0]}")
        if m == 0:
            return torch.zeros((bs, 0, 5), dtype=scale.dtype, device=device)
        if int(bidx.min()) < 0 or int(bidx.max()) >= bs:
            raise ValueError(f"batch_idx values must lie in [0, {bs}), got [{int(bidx.min())}, {int(bidx.max())}]")
        counts = torch.bincount(bidx, minlength=bs)
        slot = _rank_within_group(bidx, counts)
        out = torch.zeros((bs, int(counts.max()), 5), dtype=scale.dtype, device=device)
        out[bidx, slot] = torch.cat((cls, boxes), 1)
        out[..., 1:5] = cxcywh_to_xyxy(out[..., 1:5] * scale)
        return out

    def detection_terms(self, feats: list[torch.Tensor], batch: Mapping) -> tuple[DetectionTerms, dict]:
        """Assign targets and compute the three detection losses (before gains)."""
        pred_dist, pred_logits = self.split_feats(feats)
        bs, _, _ = pred_logits.shape
        dtype, device = pred_logits.dtype, pred_logits.device
        sizes = [tuple(f.shape[2:]) for f in feats]
        points, strides = anchor_grid(sizes, self.stride, dtype, device)
        imgsz = torch.tensor(sizes[0], dtype=dtype, device=device) * self.stride[0]

        targets = self.pad_targets(batch, bs, imgsz[[1, 0, 1, 0]], device)
        gt_labels, gt_boxes = targets.split((1, 4), 2)
        gt_valid = gt_boxes.sum(2, keepdim=True) > 0

        bins = torch.arange(self.reg_max, dtype=torch.float, device=device)
        pred_boxes = distances_to_xyxy(expected_distances(pred_dist, bins), points)  # grid units

        asg = self.assigner(
            pred_logits.detach().sigmoid(),
            (pred_boxes.detach() * strides).to(gt_boxes.dtype),
            points * strides,
            gt_labels,
            gt_boxes,
            gt_valid,
        )
        mass = asg.scores.sum().clamp(min=1)

        cls_loss = F.binary_cross_entropy_with_logits(pred_logits, asg.scores.to(dtype), reduction="none").sum() / mass

        fg = asg.fg.nonzero(as_tuple=True)
        target_grid = asg.boxes / strides
        weight = asg.scores[fg].sum(-1, keepdim=True)
        ciou = complete_iou(pred_boxes[fg], target_grid[fg])
        box_loss = ((1.0 - ciou) * weight).sum() / mass
        target_dist = xyxy_to_distances(points, target_grid, self.reg_max - 1 - 0.01)
        dfl = dfl_loss(pred_dist[fg].reshape(-1, self.reg_max), target_dist[fg], self.reg_max) * weight
        dfl = dfl.sum() / mass
        return DetectionTerms(box_loss, cls_loss, dfl, asg, imgsz), {"strides": strides}

    # ------------------------------------------------------------------ call
    def __call__(self, preds: Any, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        """``preds`` = per-level feats; returns ``(total, items (3,) box, cls, dfl)``; total = sum * batch size."""
        feats = preds[0] if isinstance(preds, tuple) and isinstance(preds[0], (list, tuple)) else preds
        terms, _ = self.detection_terms(list(feats), batch)
        h = self.hyp
        loss = torch.stack((terms.box * h["box"], terms.cls * h["cls"], terms.dfl * h["dfl"]))
        return loss.sum() * feats[0].shape[0], loss.detach()


def _rank_within_group(group: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Position of each element among the elements of its group, in original order."""
    order = torch.argsort(group, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(group)
    rank[order] = torch.arange(group.numel(), device=group.device) - starts[group[order]]
    return rank
