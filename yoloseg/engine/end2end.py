"""End-to-end segmentation graph: the network, NMS and mask assembly in one module (for ONNX export).

``End2End(model, conf=0.25, iou=0.7, max_det=300)`` wraps an eval-mode segmentation model. Its forward maps
images ``(B, 3, H, W)`` in [0, 1] to five fixed-shape outputs:

    num_dets  (B,)                    int64    number of valid rows per image (the first ``num_dets`` rows)
    boxes     (B, max_det, 4)         float32  x1, y1, x2, y2 in input pixels (zeros in padding rows)
    scores    (B, max_det)            float32  confidence, descending (zeros in padding rows)
    classes   (B, max_det)            int64    class id (-1 in padding rows)
    masks     (B, max_det, H/4, W/4)  float32  mask probability (sigmoid of coeffs @ protos) at prototype
                                               resolution, zero outside the detection's box; ``> 0.5`` is the mask

The selection is the same as :func:`yoloseg.ops.non_max_suppression`: each anchor keeps only its best class,
candidates need ``score > conf``, NMS is per class (a box is dropped when its IoU with a kept, higher-scoring
box of the same class exceeds ``iou``), and the ``max_det`` best survivors are kept. Per-class NMS uses the
ONNX ``NonMaxSuppression`` operator's own class dimension: the scores tensor is ``(B, nc, A)`` with every
anchor's score left only in its best class's row, so no coordinate offsets are needed and the boxes keep
their full float32 precision whatever the number of classes. The masks equal
``yoloseg.ops.process_mask(..., upsample=False)``: ``logit > 0`` is ``probability > 0.5``; the crop keeps
prototype pixel ``(i, j)`` when its index lies in ``[x1, x2) x [y1, y2)`` of the box scaled to prototype
pixels.

Masks stay at prototype resolution on purpose: ``max_det`` masks at the full input size would be 16 times
larger (300 x 640 x 640 floats is about 490 MB per image), and a deployment has to undo the letterbox and
resize to its own image anyway, which it can do from these maps directly.

In eager PyTorch the NMS step runs :func:`yoloseg.ops.batched_nms`; when exported it becomes one
``NonMaxSuppression`` node (see :class:`_NonMaxSuppression`).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["End2End", "END2END_OUTPUTS"]

END2END_OUTPUTS = ("num_dets", "boxes", "scores", "classes", "masks")


class _NonMaxSuppression(torch.autograd.Function):
    """Per-class NMS with the ONNX ``NonMaxSuppression`` contract.

    boxes (B, A, 4) xyxy, scores (B, C, A) -> selected (K, 3) int64 rows ``[batch, class, box]``; per (batch,
    class) at most ``max_out`` boxes with ``score > score_threshold``, suppressed when IoU > ``iou_threshold``.
    """

    @staticmethod
    def forward(ctx, boxes, scores, max_out: int, iou_threshold: float, score_threshold: float):
        if torch.onnx.is_in_onnx_export():  # the symbolic below replaces this node; any valid rows will do
            return torch.zeros((1, 3), dtype=torch.int64, device=boxes.device)
        from yoloseg import ops

        rows = []
        for b in range(boxes.shape[0]):
            for c in range(scores.shape[1]):
                s = scores[b, c]
                idx = torch.nonzero(s > score_threshold).squeeze(1)
                if idx.numel() == 0:
                    continue
                keep = idx[ops.nms(boxes[b, idx], s[idx], iou_threshold)[:max_out]]
                rows.append(torch.stack([torch.full_like(keep, b), torch.full_like(keep, c), keep], 1))
        if not rows:
            return torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)
        return torch.cat(rows).to(torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_out: int, iou_threshold: float, score_threshold: float):
        max_t = g.op("Constant", value_t=torch.tensor([max_out], dtype=torch.int64))
        iou_t = g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32))
        conf_t = g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32))
        out = g.op("NonMaxSuppression", boxes, scores, max_t, iou_t, conf_t, center_point_box_i=0)
        out.setType(out.type().with_dtype(torch.int64).with_sizes([None, 3]))
        return out


class End2End(nn.Module):
    """A segmentation model followed by NMS and mask assembly; see the module docstring for the outputs.

    Args:
        model: eval-mode model whose forward gives ``(pred (B, 4+nc+nm, A), protos (B, nm, h, w))``.
        conf: score threshold (a candidate needs ``score > conf``), 0 <= conf < 1.
        iou: NMS IoU threshold, 0 <= iou <= 1.
        max_det: detections per image (the fixed number of output rows), >= 1.
    """

    def __init__(self, model: nn.Module, conf: float = 0.25, iou: float = 0.7, max_det: int = 300):
        super().__init__()
        if not 0.0 <= float(conf) < 1.0:
            raise ValueError(f"conf must be in [0, 1), got {conf!r}")
        if not 0.0 <= float(iou) <= 1.0:
            raise ValueError(f"iou must be in [0, 1], got {iou!r}")
        if isinstance(max_det, bool) or int(max_det) != max_det or int(max_det) < 1:
            raise ValueError(f"max_det must be a positive int, got {max_det!r}")
        self.model = model
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        head = model.model[-1] if hasattr(model, "model") else None
        self.nm = int(getattr(head, "nm", 32))

    def forward(self, x: torch.Tensor):
        pred, protos = self.model(x)
        bsz, _, h_in, w_in = x.shape
        nm, mh, mw = protos.shape[1], protos.shape[2], protos.shape[3]
        nc = pred.shape[1] - 4 - nm
        k = self.max_det

        xywh = pred[:, :4].transpose(1, 2)  # (B, A, 4)
        boxes = torch.cat((xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2), -1)
        cls_scores = pred[:, 4 : 4 + nc]  # (B, nc, A)
        coeffs = pred[:, 4 + nc :].transpose(1, 2)  # (B, A, nm)
        best, cls = cls_scores.max(1)  # (B, A)
        class_ids = torch.arange(nc, device=x.device).view(1, nc, 1)
        single = cls_scores * (class_ids == cls.unsqueeze(1)).to(cls_scores.dtype)  # best class only

        sel = _NonMaxSuppression.apply(boxes, single, k, self.iou, self.conf)  # (K, 3) [batch, class, box]
        kept = torch.zeros_like(best)
        kept[sel[:, 0], sel[:, 2]] = 1.0
        kept = kept * best

        # Padding columns make top-k valid when the image has fewer than max_det anchors.
        pad = torch.zeros((bsz, k), dtype=best.dtype, device=x.device)
        scores, idx = torch.cat((kept, pad), 1).topk(k, dim=1)  # (B, k), descending
        valid = scores > 0
        validf = valid.to(scores.dtype)

        boxes = torch.cat((boxes, pad.unsqueeze(-1).expand(-1, -1, 4)), 1)
        boxes = torch.gather(boxes, 1, idx.unsqueeze(-1).expand(-1, -1, 4)) * validf.unsqueeze(-1)
        classes = torch.gather(torch.cat((cls, pad.to(cls.dtype)), 1), 1, idx)
        classes = torch.where(valid, classes, torch.full_like(classes, -1))
        coeffs = torch.cat((coeffs, pad.unsqueeze(-1).expand(-1, -1, nm)), 1)
        coeffs = torch.gather(coeffs, 1, idx.unsqueeze(-1).expand(-1, -1, nm))
        scores = scores * validf
        num = valid.to(torch.int64).sum(1)

        logits = torch.bmm(coeffs, protos.reshape(bsz, nm, mh * mw)).reshape(bsz, k, mh, mw)
        # Box corners in prototype pixels; a pixel index j is inside when x1 <= j < x2.
        sx = mw / w_in
        sy = mh / h_in
        cols = torch.arange(mw, device=x.device, dtype=boxes.dtype).view(1, 1, 1, mw)
        rows = torch.arange(mh, device=x.device, dtype=boxes.dtype).view(1, 1, mh, 1)
        x1, y1 = (boxes[..., 0] * sx).view(bsz, k, 1, 1), (boxes[..., 1] * sy).view(bsz, k, 1, 1)
        x2, y2 = (boxes[..., 2] * sx).view(bsz, k, 1, 1), (boxes[..., 3] * sy).view(bsz, k, 1, 1)
        inside = (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
        masks = logits.sigmoid() * inside.to(logits.dtype)
        return num, boxes, scores, classes.to(torch.int64), masks
