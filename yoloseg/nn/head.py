"""Segmentation head: per-level box (DFL logits), class and mask-coefficient branches plus mask prototypes.

Train mode returns ``(feats, coeffs, protos)``:
    feats  list of (B, 4*reg_max + nc, Hi, Wi), box logits then class logits per level
    coeffs (B, nm, A) mask coefficients, A = sum(Hi*Wi)
    protos (B, nm, H/4, W/4)
Eval mode returns ``(pred, protos)`` with pred (B, 4 + nc + nm, A): box xywh in input pixels, sigmoid class
scores, mask coefficients. Anchors are cell centres, P3 first, row-major over (y, x) within a level.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from yoloseg.nn.blocks import DFL, Proto
from yoloseg.nn.conv import Conv, DWConv


def make_anchors(feats, strides, offset: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres (A, 2) in grid units and per-anchor stride (A, 1) for a list of (B, C, H, W) maps."""
    points, stride_col = [], []
    dtype, device = feats[0].dtype, feats[0].device
    for i, f in enumerate(feats):
        h, w = f.shape[2], f.shape[3]
        xs = torch.arange(w, device=device, dtype=dtype) + offset
        ys = torch.arange(h, device=device, dtype=dtype) + offset
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((gx, gy), -1).view(-1, 2))
        stride_col.append(torch.full((h * w, 1), float(strides[i]), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_col)


def dist_to_xywh(dist: torch.Tensor, anchors: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """(left, top, right, bottom) distances from anchor points -> (cx, cy, w, h)."""
    lt, rb = dist.chunk(2, dim)
    p1 = anchors - lt
    p2 = anchors + rb
    return torch.cat(((p1 + p2) / 2, p2 - p1), dim)


def dist_to_xyxy(dist: torch.Tensor, anchors: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """(left, top, right, bottom) distances from anchor points -> (x1, y1, x2, y2)."""
    lt, rb = dist.chunk(2, dim)
    return torch.cat((anchors - lt, anchors + rb), dim)


class Segment(nn.Module):
    """YOLO11 segmentation head over ``ch`` input levels."""

    def __init__(self, nc: int = 80, nm: int = 32, npr: int = 256, reg_max: int = 16, ch: tuple[int, ...] = ()):
        super().__init__()
        if not ch:
            raise ValueError("Segment head needs the channel count of each input level (ch)")
        self.nc = int(nc)
        self.nl = len(ch)
        self.reg_max = int(reg_max)
        self.no = self.nc + 4 * self.reg_max
        self.nm = int(nm)
        self.npr = int(npr)
        # Level strides as a plain CPU float tensor (not a buffer: it stays on the CPU and in float32 whatever
        # device/dtype the weights move to, and it is not part of the state dict). Set by the model builder.
        self.stride = torch.zeros(self.nl)

        c_box = max(16, ch[0] // 4, 4 * self.reg_max)
        c_cls = max(ch[0], min(self.nc, 100))
        c_mask = max(ch[0] // 4, self.nm)
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(c, c_box, 3), Conv(c_box, c_box, 3), nn.Conv2d(c_box, 4 * self.reg_max, 1)) for c in ch
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(
                nn.Sequential(DWConv(c, c, 3), Conv(c, c_cls, 1)),
                nn.Sequential(DWConv(c_cls, c_cls, 3), Conv(c_cls, c_cls, 1)),
                nn.Conv2d(c_cls, self.nc, 1),
            )
            for c in ch
        )
        self.dfl = DFL(self.reg_max) if self.reg_max > 1 else nn.Identity()
        self.proto = Proto(ch[0], self.npr, self.nm)
        self.cv4 = nn.ModuleList(
            nn.Sequential(Conv(c, c_mask, 3), Conv(c_mask, c_mask, 3), nn.Conv2d(c_mask, self.nm, 1)) for c in ch
        )
        self._anchor_key = None
        self._anchors = self._anchor_strides = None
        # Eval forward also returns the training outputs: ((pred, protos), (feats, coeffs, protos)).
        # The validator sets it while a trainer asks for val losses; exports never see it.
        self.with_train_outputs = False

    def init_biases(self, box_bias: float = 2.0) -> None:
        """Prior biases: box logits ``box_bias``; class logits log(5 / nc / (640 / stride)^2), i.e. about
        5 objects per 640x640 image spread over the level's cells and the classes. Needs ``stride`` set."""
        with torch.no_grad():
            for box_branch, cls_branch, s in zip(self.cv2, self.cv3, self.stride.tolist()):
                box_branch[-1].bias.fill_(box_bias)
                cls_branch[-1].bias[: self.nc] = math.log(5 / self.nc / (640 / s) ** 2)

    def _anchors_for(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
            anchors, strides = make_anchors(feats, self.stride)
            return anchors.transpose(0, 1), strides.transpose(0, 1)
        key = (tuple(f.shape[2:] for f in feats), feats[0].device, feats[0].dtype, tuple(self.stride.tolist()))
        if key != self._anchor_key:
            anchors, strides = make_anchors(feats, self.stride)
            self._anchors, self._anchor_strides = anchors.transpose(0, 1), strides.transpose(0, 1)
            self._anchor_key = key
        return self._anchors, self._anchor_strides

    def decode_boxes(self, box_logits: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        """(B, 4*reg_max, A) DFL logits -> (B, 4, A) xywh in input pixels."""
        anchors, strides = self._anchors_for(feats)
        return dist_to_xywh(self.dfl(box_logits), anchors.unsqueeze(0), dim=1) * strides

    def forward(self, x: list[torch.Tensor]):
        bs = x[0].shape[0]
        protos = self.proto(x[0])
        coeffs = torch.cat([self.cv4[i](x[i]).view(bs, self.nm, -1) for i in range(self.nl)], 2)
        box = [self.cv2[i](x[i]) for i in range(self.nl)]
        cls = [self.cv3[i](x[i]) for i in range(self.nl)]
        if self.training:
            feats = [torch.cat((box[i], cls[i]), 1) for i in range(self.nl)]
            return feats, coeffs, protos
        box_logits = torch.cat([b.view(bs, 4 * self.reg_max, -1) for b in box], -1)
        cls_logits = torch.cat([c.view(bs, self.nc, -1) for c in cls], -1)
        boxes = self.decode_boxes(box_logits, x)
        pred = torch.cat((boxes, cls_logits.sigmoid(), coeffs), 1)
        if self.with_train_outputs:
            return (pred, protos), ([torch.cat((box[i], cls[i]), 1) for i in range(self.nl)], coeffs, protos)
        return pred, protos
