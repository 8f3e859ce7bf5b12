"""Detection confusion matrix with a background row and column.

Rows are predicted classes, columns true classes; index ``nc`` is background. Per image, detections with
confidence >= ``conf`` are matched to ground truth by box IoU > ``iou_thres`` (class-agnostic, one-to-one,
highest IoU first). A matched pair counts at (predicted class, true class); an unmatched ground truth
at (background, true class) — a miss; an unmatched detection at (predicted class, background) — a false alarm.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ConfusionMatrix"]


def _box_iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


class ConfusionMatrix:
    """Accumulates a (nc+1, nc+1) int matrix; see the module docstring for the rules."""

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45):
        if nc < 1:
            raise ValueError(f"nc must be >= 1, got {nc}")
        self.nc = int(nc)
        self.conf = float(conf)
        self.iou_thres = float(iou_thres)
        self.matrix = np.zeros((self.nc + 1, self.nc + 1), np.int64)

    def process(self, det_boxes, det_scores, det_cls, gt_boxes, gt_cls) -> None:
        """One image: detections (D, 4) xyxy with scores and classes, ground truth (G, 4) xyxy and classes
        (same coordinate frame). Non-finite detections and classes outside [0, nc) are ignored."""
        db = np.asarray(det_boxes, np.float64).reshape(-1, 4)
        ds = np.asarray(det_scores, np.float64).reshape(-1)
        dc = np.asarray(det_cls, np.float64).reshape(-1)
        gb = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        gc = np.asarray(gt_cls, np.int64).reshape(-1)
        ok = np.isfinite(db).all(1) & np.isfinite(ds) & np.isfinite(dc) & (ds >= self.conf)
        ok &= (dc >= 0) & (dc < self.nc)
        db, dc = db[ok], dc[ok].astype(np.int64)
        gk = (gc >= 0) & (gc < self.nc)
        gb, gc = gb[gk], gc[gk]
        bg = self.nc
        if len(gc) == 0:
            np.add.at(self.matrix, (dc, bg), 1)
            return
        if len(dc) == 0:
            np.add.at(self.matrix, (bg, gc), 1)
            return
        iou = _box_iou_xyxy(gb, db)  # (G, D)
        gi, di = np.nonzero(iou > self.iou_thres)
        gt_used = np.zeros(len(gc), bool)
        dt_used = np.zeros(len(dc), bool)
        if len(gi):
            order = np.argsort(-iou[gi, di], kind="stable")
            for g, d in zip(gi[order], di[order]):
                if gt_used[g] or dt_used[d]:
                    continue
                gt_used[g] = dt_used[d] = True
                self.matrix[dc[d], gc[g]] += 1
        np.add.at(self.matrix, (bg, gc[~gt_used]), 1)
        np.add.at(self.matrix, (dc[~dt_used], bg), 1)

    def normalized(self) -> np.ndarray:
        """Each column (true class) divided by its total: the share of that class predicted as each row."""
        tot = self.matrix.sum(0, keepdims=True)
        return np.where(tot > 0, self.matrix / np.maximum(tot, 1), 0.0)

    def tp_fp(self) -> tuple[np.ndarray, np.ndarray]:
        tp = np.diag(self.matrix)[: self.nc]
        fp = self.matrix[: self.nc].sum(1) - tp
        return tp, fp
