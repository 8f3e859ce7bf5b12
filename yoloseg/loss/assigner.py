"""Task-aligned label assignment (TOOD, Feng et al. 2021) for anchor-free dense heads.

Each ground-truth box picks, among the anchor points inside it, the ``topk`` anchors with the largest
alignment ``score ** alpha * ciou ** beta`` (score: the predicted probability of the box's class). An anchor
claimed by several boxes keeps the box it overlaps most. Positive anchors get soft class targets: the
alignment, rescaled per box so that its best anchor reaches the box's best IoU.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .box import complete_iou, cxcywh_to_xyxy, xyxy_to_cxcywh

__all__ = ["Assignment", "TaskAlignedAssigner"]


class Assignment(NamedTuple):
    """Per-anchor targets. ``B`` images, ``A`` anchors, ``C`` classes."""

    labels: torch.Tensor  # (B, A) int64 class of the assigned box (meaningful where fg)
    boxes: torch.Tensor  # (B, A, 4) assigned box, xyxy pixels (meaningful where fg)
    scores: torch.Tensor  # (B, A, C) soft one-hot class targets, zero on background
    fg: torch.Tensor  # (B, A) bool, anchor is positive
    gt_index: torch.Tensor  # (B, A) int64 index of the assigned box within its image


class TaskAlignedAssigner:
    """Assign ground-truth boxes to anchor points.

    Args:
        num_classes: number of classes ``C``.
        topk: candidates kept per ground-truth box.
        alpha: exponent of the class score in the alignment.
        beta: exponent of the CIoU in the alignment.
        min_size: box sides shorter than this (pixels) are widened to it, about the box centre, when deciding
            which anchor points lie inside a box (the middle level's stride, so tiny objects still get anchors).
        eps: guards divisions and the strict inside test.
    """

    def __init__(
        self,
        num_classes: int,
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
        min_size: float = 16.0,
        eps: float = 1e-9,
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.num_classes = int(num_classes)
        self.topk = int(topk)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.min_size = float(min_size)
        self.eps = float(eps)

    @torch.no_grad()
    def __call__(
        self,
        scores: torch.Tensor,
        pred_boxes: torch.Tensor,
        points: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_valid: torch.Tensor,
    ) -> Assignment:
        """Assign targets.

        Args:
            scores: ``(B, A, C)`` predicted class probabilities (after sigmoid).
            pred_boxes: ``(B, A, 4)`` predicted boxes, xyxy pixels.
            points: ``(A, 2)`` anchor points, pixels.
            gt_labels: ``(B, G, 1)`` class ids (padded rows arbitrary).
            gt_boxes: ``(B, G, 4)`` xyxy pixels (padded rows zero).
            gt_valid: ``(B, G, 1)`` bool, real (not padding) rows.
        """
        bs, n_anchors, _ = scores.shape
        n_gt = gt_boxes.shape[1]
        device = scores.device
        if n_gt == 0:
            return Assignment(
                labels=torch.full((bs, n_anchors), self.num_classes, dtype=torch.long, device=device),
                boxes=torch.zeros_like(pred_boxes),
                scores=torch.zeros_like(scores),
                fg=torch.zeros((bs, n_anchors), dtype=torch.bool, device=device),
                gt_index=torch.zeros((bs, n_anchors), dtype=torch.long, device=device),
            )
        valid = gt_valid.bool()  # (B, G, 1)
        inside = self._points_inside(points, gt_boxes, valid)  # (B, G, A)
        candidates = inside & valid

        # alignment and CIoU for every candidate pair; zero elsewhere
        b_idx, g_idx, a_idx = candidates.nonzero(as_tuple=True)
        cls_of_pair = gt_labels[b_idx, g_idx, 0].long()
        pair_scores = scores[b_idx, a_idx, cls_of_pair]
        pair_iou = complete_iou(gt_boxes[b_idx, g_idx], pred_boxes[b_idx, a_idx]).squeeze(-1).clamp(0)
        overlaps = torch.zeros((bs, n_gt, n_anchors), dtype=pred_boxes.dtype, device=device)
        align = torch.zeros((bs, n_gt, n_anchors), dtype=scores.dtype, device=device)
        overlaps[b_idx, g_idx, a_idx] = pair_iou
        align[b_idx, g_idx, a_idx] = pair_scores.pow(self.alpha) * pair_iou.pow(self.beta)

        # the topk anchors of each real box, restricted to anchors inside it
        k = min(self.topk, n_anchors)
        top_idx = align.topk(k, dim=-1, largest=True).indices
        in_topk = torch.zeros_like(candidates).scatter_(-1, top_idx, True)
        positive = in_topk & candidates

        # an anchor claimed by several boxes goes to the box it overlaps most
        claims = positive.sum(1)  # (B, A)
        best_gt = overlaps.max(1).indices  # (B, A)
        best_one_hot = torch.zeros_like(positive).scatter_(1, best_gt.unsqueeze(1), True)
        positive = torch.where((claims > 1).unsqueeze(1), best_one_hot, positive)

        fg = positive.any(1)
        gt_index = positive.to(torch.uint8).argmax(1)

        # targets
        labels = gt_labels[..., 0].long().gather(1, gt_index).clamp(0)
        boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))
        target = torch.zeros((bs, n_anchors, self.num_classes), dtype=scores.dtype, device=device)
        target.scatter_(2, labels.unsqueeze(-1), 1.0)
        target = target * fg.unsqueeze(-1)

        # soft targets: alignment rescaled so each box's best anchor gets that box's best IoU
        align = align * positive
        overlaps = overlaps * positive
        box_best_align = align.amax(-1, keepdim=True)
        box_best_iou = overlaps.amax(-1, keepdim=True)
        per_anchor = (align * box_best_iou / (box_best_align + self.eps)).amax(1)  # (B, A)
        target = target * per_anchor.unsqueeze(-1)
        return Assignment(labels=labels, boxes=boxes, scores=target, fg=fg, gt_index=gt_index)

    def _points_inside(self, points: torch.Tensor, gt_boxes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``(B, G, A)``: anchor point strictly inside the box, after widening small real boxes to min_size."""
        cxcywh = xyxy_to_cxcywh(gt_boxes)
        size = cxcywh[..., 2:]
        floor = torch.tensor(self.min_size, dtype=size.dtype, device=size.device)
        size = torch.where((size < self.min_size) & valid, floor, size)
        widened = cxcywh_to_xyxy(torch.cat((cxcywh[..., :2], size), -1))
        x1, y1, x2, y2 = (c.unsqueeze(-1) for c in widened.unbind(-1))  # (B, G, 1) each
        px, py = points[:, 0], points[:, 1]
        eps = self.eps
        return (px - x1 > eps) & (py - y1 > eps) & (x2 - px > eps) & (y2 - py > eps)
