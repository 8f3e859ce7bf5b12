"""Instance segmentation loss: the detection losses plus a per-instance mask loss.

Mask loss: for every positive anchor, the mask logits ``coeffs @ protos`` (at prototype resolution) are compared
with the ground-truth mask of the instance the anchor was assigned to by BCE-with-logits. Only pixels inside
the assigned box count; the per-anchor sum is divided by the number of mask pixels and by the box area as a
fraction of the image, so small objects weigh as much as large ones. The result is summed over positive
anchors and divided by their number. The mask term uses the box gain.

Ground-truth masks come in two layouts (``overlap_mask``):
- True: ``(B, h, w)`` integer index maps, ``j + 1`` marks the j-th instance of the image (label order), 0 is
  background. Any integer dtype works (int32/int64 for more than 255 instances), floats are compared exactly.
- False: ``(M, h, w)`` one binary mask per instance, in the order of ``batch_idx``.
When ``(h, w)`` differs from the prototype size, the prototypes are resized bilinearly to the masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from .detect import DetectionLoss, _head_of
from .mask import MaskGroup, windowed_mask_bce

__all__ = ["SegmentationLoss"]

class SegmentationLoss(DetectionLoss):
    """Segmentation loss of a YOLO-seg head.

    ``SegmentationLoss(model, hyp=None)`` reads ``nc``, ``stride``, ``reg_max`` and ``nm`` from
    ``model.model[-1]``; ``hyp`` (mapping or namespace; default ``model.args`` if present) supplies the gains
    ``box``, ``cls``, ``dfl`` and ``overlap_mask``. ``SegmentationLoss.from_params(nc, stride, ...)`` builds
    one without a model.

    Calling it with ``preds = (feats, coeffs, protos)`` (the train-mode head outputs) and a batch dict returns
    ``(total, items)``: ``items`` is a detached ``(4,)`` tensor of box, seg, cls, dfl after gains and
    ``total = items.sum() * batch_size`` (with gradient).
    """

    def __init__(self, model: Any = None, hyp: Any = None, *, topk: int = 10, _params: dict | None = None):
        if _params is None:
            if model is None:
                raise ValueError("SegmentationLoss needs a model (or use SegmentationLoss.from_params)")
            head = _head_of(model)
            missing = [a for a in ("nc", "stride", "reg_max") if not hasattr(head, a)]
            if missing:
                raise ValueError(f"model head {type(head).__name__} lacks {missing}")
            if hyp is None:
                hyp = getattr(model, "args", None)
            _params = {"nc": head.nc, "stride": head.stride, "reg_max": head.reg_max, "nm": getattr(head, "nm", 32)}
        params = dict(_params)
        self.nm = int(params.pop("nm", 32))
        super().__init__(**params, hyp=hyp, topk=topk)
        self.overlap = self.hyp["overlap_mask"]

    @classmethod
    def from_params(cls, nc: int, stride: Any, reg_max: int = 16, nm: int = 32, hyp: Any = None, topk: int = 10):
        """Build from plain values: class count, per-level strides, distance bins, mask coefficients."""
        return cls(None, hyp, topk=topk, _params={"nc": nc, "stride": stride, "reg_max": reg_max, "nm": nm})

    @classmethod
    def from_model(cls, model: Any, hyp: Any = None, **kwargs):
        return cls(model, hyp, **kwargs)

    def __call__(self, preds: Any, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        feats, coeffs, protos = self._unpack(preds)
        terms, _ = self.detection_terms(feats, batch)
        bs = protos.shape[0]
        if coeffs.shape[0] != bs or coeffs.shape[1] != self.nm:
            raise ValueError(f"coeffs must have shape (B, {self.nm}, A), got {tuple(coeffs.shape)}")
        if protos.ndim != 4 or protos.shape[1] != self.nm:
            raise ValueError(f"protos must have shape (B, {self.nm}, h, w), got {tuple(protos.shape)}")
        asg = terms.assignment
        if coeffs.shape[2] != asg.fg.shape[1]:
            raise ValueError(f"coeffs has {coeffs.shape[2]} anchors, feats have {asg.fg.shape[1]}")

        if bool(asg.fg.any()):
            if "masks" not in batch:
                raise ValueError("batch lacks 'masks'")
            seg = self.mask_loss(asg.fg, asg.gt_index, asg.boxes, batch, protos, coeffs, terms.imgsz)
        else:
            # keeps protos and coeffs in the graph (all-zero gradient) when nothing is positive
            seg = (protos * 0).sum() + (coeffs * 0).sum()

        h = self.hyp
        loss = torch.stack((terms.box * h["box"], seg * h["box"], terms.cls * h["cls"], terms.dfl * h["dfl"]))
        return loss.sum() * bs, loss.detach()

    def _unpack(self, preds: Any) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        # also accept (eval_output, (feats, coeffs, protos))
        if isinstance(preds, (tuple, list)) and len(preds) == 2 and isinstance(preds[1], (tuple, list)):
            preds = preds[1]
        if not isinstance(preds, (tuple, list)) or len(preds) != 3:
            raise ValueError("preds must be (feats, coeffs, protos) from the train-mode forward")
        feats, coeffs, protos = preds
        return list(feats), coeffs, protos

    def mask_loss(
        self,
        fg: torch.Tensor,
        gt_index: torch.Tensor,
        target_boxes: torch.Tensor,
        batch: Mapping,
        protos: torch.Tensor,
        coeffs: torch.Tensor,
        imgsz: torch.Tensor,
    ) -> torch.Tensor:
        """Mask loss before gain (see the module docstring). ``coeffs (B, nm, A)``, ``protos (B, nm, h, w)``."""
        bs = protos.shape[0]
        # half-precision heads (mixed precision training): the mask loss runs in float32
        work = torch.promote_types(torch.promote_types(protos.dtype, coeffs.dtype), torch.float32)
        protos, coeffs = protos.to(work), coeffs.to(work)
        masks = torch.as_tensor(batch["masks"], device=protos.device)
        if masks.ndim != 3:
            raise ValueError(f"batch['masks'] must be 3-D, got shape {tuple(masks.shape)}")
        if tuple(masks.shape[-2:]) != tuple(protos.shape[-2:]):
            protos = F.interpolate(protos, masks.shape[-2:], mode="bilinear", align_corners=False)
        mh, mw = protos.shape[-2:]
        bidx = torch.as_tensor(batch["batch_idx"], device=protos.device).reshape(-1).long()
        if self.overlap:
            if masks.shape[0] != bs:
                raise ValueError(f"overlap masks must be (B={bs}, h, w), got {tuple(masks.shape)}")
            if not masks.is_floating_point() and masks.dtype != torch.bool:
                counts = torch.bincount(bidx, minlength=bs)
                limit = torch.iinfo(masks.dtype).max
                if int(counts.max()) > limit:
                    raise ValueError(
                        f"batch['masks'] dtype {masks.dtype} cannot index {int(counts.max())} instances in one "
                        "image; use int32 or int64 index masks"
                    )
        elif masks.shape[0] != bidx.numel():
            raise ValueError(f"per-instance masks must be (M={bidx.numel()}, h, w), got {tuple(masks.shape)}")

        boxes_n = target_boxes / imgsz[[1, 0, 1, 0]]  # fractions of the image
        area = (boxes_n[..., 2] - boxes_n[..., 0]) * (boxes_n[..., 3] - boxes_n[..., 1])
        boxes_m = boxes_n * torch.tensor([mw, mh, mw, mh], device=protos.device, dtype=boxes_n.dtype)

        # pixel window of each box: columns c with x1 <= c < x2, rows r with y1 <= r < y2
        edges = boxes_m.ceil()
        limits = torch.tensor([mw, mh, mw, mh], device=edges.device, dtype=edges.dtype)
        edges = torch.minimum(edges.clamp(min=0), limits).long()
        coeffs_t = coeffs.transpose(1, 2)  # (B, A, nm)
        pixels = mh * mw
        selected, groups, group_areas, offset = [], [], [], 0
        for i in range(bs):
            anchors = fg[i].nonzero().squeeze(1)
            if anchors.numel() == 0:
                continue
            # group the image's positive anchors by assigned instance: one box, one target per group
            inst, order = gt_index[i, anchors].sort(stable=True)
            anchors = anchors[order]
            ids, counts = torch.unique_consecutive(inst, return_counts=True)
            starts = torch.cumsum(counts, 0) - counts
            heads = anchors[starts]
            group_areas.append(area[i, heads])
            selected.append(coeffs_t[i, anchors])
            if self.overlap:  # compare indices in a wide type
                index_map = masks[i] if masks.is_floating_point() else masks[i].long()
            else:
                own = masks[bidx == i]
            windows = edges[i, heads].tolist()
            for g, n, s0, (c0, r0, c1, r1) in zip(ids.tolist(), counts.tolist(), starts.tolist(), windows):
                if c1 <= c0 or r1 <= r0:  # the box covers no mask pixel: no loss, weight zero below
                    r1, c1 = r0, c0
                if self.overlap:
                    target = index_map[r0:r1, c0:c1] == g + 1
                else:
                    target = own[g, r0:r1, c0:c1]
                groups.append(MaskGroup(i, offset + s0, n, r0, r1, c0, c1, target.to(protos.dtype)))
            offset += anchors.numel()
        if not groups:
            return (protos * 0).sum() + (coeffs * 0).sum()
        areas = torch.cat(group_areas)
        scales = 1.0 / pixels / torch.where(areas > 0, areas, torch.ones_like(areas))
        total = windowed_mask_bce(torch.cat(selected), protos, scales, groups)
        return total / fg.sum()
