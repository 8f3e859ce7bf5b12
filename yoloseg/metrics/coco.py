"""COCO box and mask evaluation with pycocotools' numbers, computed by the compiled kernels.

``coco_evaluate(gt, dt, iou_type)`` reproduces ``COCOeval(COCO(gt), COCO(gt).loadRes(dt), iou_type)``
followed by ``evaluate(); accumulate(); summarize()`` with the default parameters: the same 12
summary numbers, the same ``precision`` / ``recall`` / ``scores`` arrays. The JSON texts are parsed
in C++ (no Python objects per annotation), masks stay run-length encoded, and the work runs without
the GIL.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np

__all__ = ["COCOEvalResult", "coco_evaluate", "IOU_THRESHOLDS", "RECALL_THRESHOLDS"]

# The exact doubles pycocotools uses (np.linspace values, not k/100).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0, 1e5**2), (0, 32**2), (32**2, 96**2), (96**2, 1e5**2))
AREA_LABELS = ("all", "small", "medium", "large")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (bytes, bytearray)):
        return obj.decode("ascii")
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _json_bytes(src, arg: str) -> bytes:
    """The JSON text of a path (.json or gzip) or of an in-memory COCO object."""
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"{arg}: no such file: {path}")
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return data
    if hasattr(src, "dataset") and isinstance(src.dataset, (dict, list)):  # a pycocotools COCO object
        src = src.dataset
    if isinstance(src, (dict, list, tuple)):
        try:
            return json.dumps(src, default=_json_default, separators=(",", ":")).encode()
        except (TypeError, ValueError) as e:
            raise ValueError(f"{arg}: cannot read the COCO data: {e}") from None
    raise ValueError(f"{arg} must be a path or a COCO {'dict' if arg == 'gt' else 'results list'}, "
                     f"got {type(src).__name__}")


class COCOEvalResult:
    """Numbers of one evaluation. ``stats`` follows ``COCOeval.stats``; ``precision`` is
    ``COCOeval.eval['precision']`` with shape (T=10, R=101, K, A=4, M=3), ``recall`` (T, K, A, M),
    ``scores`` like precision. ``per_class`` maps category id -> AP50-95 (area all, 100 detections),
    or None when the category has no ground truth that counts; ``per_class_ap50`` / ``_ap75`` alike."""

    def __init__(self, iou_type, precision, recall, scores, img_ids, cat_ids, num_gt, num_dt):
        self.iou_type = iou_type
        self.precision = precision
        self.recall = recall
        self.scores = scores
        self.img_ids = list(img_ids)
        self.cat_ids = list(cat_ids)
        self.num_gt = num_gt
        self.num_dt = num_dt
        self.iou_thresholds = IOU_THRESHOLDS
        self.recall_thresholds = RECALL_THRESHOLDS
        self.max_dets = MAX_DETS
        self._lines = []
        self.stats = self._summarize_all()
        self.per_class = self._per_class(None)
        self.per_class_ap50 = self._per_class(0)
        self.per_class_ap75 = self._per_class(5)

    def _summarize(self, ap=1, iou_thr=None, area="all", max_dets=100):
        # COCOeval.summarize's arithmetic (numpy's pairwise mean over the defined entries).
        aind = [i for i, lbl in enumerate(AREA_LABELS) if lbl == area]
        mind = [i for i, m in enumerate(self.max_dets) if m == max_dets]
        if ap == 1:
            s = self.precision
            if iou_thr is not None:
                s = s[np.where(iou_thr == IOU_THRESHOLDS)[0]]
            s = s[:, :, :, aind, mind]
        else:
            s = self.recall
            if iou_thr is not None:
                s = s[np.where(iou_thr == IOU_THRESHOLDS)[0]]
            s = s[:, :, aind, mind]
        mean_s = -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))
        title = "Average Precision" if ap == 1 else "Average Recall"
        kind = "(AP)" if ap == 1 else "(AR)"
        iou = (f"{IOU_THRESHOLDS[0]:0.2f}:{IOU_THRESHOLDS[-1]:0.2f}" if iou_thr is None
               else f"{iou_thr:0.2f}")
        self._lines.append(f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | "
                           f"maxDets={max_dets:>3d} ] = {mean_s:0.3f}")
        return mean_s

    def _summarize_all(self):
        m = self.max_dets
        return [
            self._summarize(1),
            self._summarize(1, iou_thr=0.5, max_dets=m[2]),
            self._summarize(1, iou_thr=0.75, max_dets=m[2]),
            self._summarize(1, area="small", max_dets=m[2]),
            self._summarize(1, area="medium", max_dets=m[2]),
            self._summarize(1, area="large", max_dets=m[2]),
            self._summarize(0, max_dets=m[0]),
            self._summarize(0, max_dets=m[1]),
            self._summarize(0, max_dets=m[2]),
            self._summarize(0, area="small", max_dets=m[2]),
            self._summarize(0, area="medium", max_dets=m[2]),
            self._summarize(0, area="large", max_dets=m[2]),
        ]

    def _per_class(self, t):
        out = {}
        for k, cat in enumerate(self.cat_ids):
            p = self.precision[:, :, k, 0, -1] if t is None else self.precision[t, :, k, 0, -1]
            p = p[p > -1]
            out[cat] = float(np.mean(p)) if p.size else None
        return out

    def summary(self) -> str:
        """The 12 lines COCOeval.summarize prints."""
        return "\n".join(self._lines)

    def as_dict(self) -> dict:
        return dict(zip(STAT_NAMES, self.stats))

    def __repr__(self):
        return f"COCOEvalResult(iou_type={self.iou_type!r}, AP={self.stats[0]:.4f}, AP50={self.stats[1]:.4f})"


def coco_evaluate(gt, dt, iou_type: str = "bbox", *, num_threads: int | None = None) -> COCOEvalResult:
    """Evaluate COCO results against COCO ground truth exactly as pycocotools does.

    gt: a COCO instances dict, a path to one (.json or .json.gz), or a pycocotools ``COCO``.
    dt: a list of result dicts (``image_id``, ``category_id``, ``score``, ``bbox`` and/or
        ``segmentation`` as compressed RLE), or a path to such a list (.json or .json.gz).
    iou_type: "bbox" or "segm". As in ``COCO.loadRes``, results with a ``bbox`` get the box area
        (w*h) even for "segm"; results with only a mask get the mask's area and box.
    num_threads: OpenMP threads (None: the runtime default).
    Bad input (NaN scores, unknown image ids, malformed JSON) raises ValueError.
    """
    from yoloseg import _C

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if isinstance(dt, dict):
        raise ValueError("dt must be a list of result dicts or a path, got a dict")
    gt_bytes = _json_bytes(gt, "gt")
    dt_bytes = _json_bytes(dt, "dt")
    r = _C.coco_evaluate_json(gt_bytes, dt_bytes, iou_type, IOU_THRESHOLDS, RECALL_THRESHOLDS,
                              list(MAX_DETS), np.asarray(AREA_RANGES, dtype=np.float64),
                              int(num_threads or 0))
    return COCOEvalResult(iou_type, r["precision"], r["recall"], r["scores"], r["img_ids"],
                          r["cat_ids"], r["num_gt"], r["num_dt"])
