"""Instance segmentation metrics: COCO box and mask mAP plus precision/recall at the best-F1 confidence.

:class:`SegmentEvaluator` collects ground truth and detections image by image (in original-image pixels,
masks as COCO run-length encoding), builds the COCO ground-truth dict and results list in memory, and
:meth:`SegmentEvaluator.evaluate` returns :class:`SegmentMetrics`:

* mAP50-95 / mAP50 / mAP75 (overall and per class) are :func:`yoloseg.metrics.coco_evaluate`'s numbers
  for ``iou_type="bbox"`` and ``"segm"``: one number, the COCO one.
* Precision and recall come from a COCO matching pass at IoU 0.50 (area "all", at most 100 detections per
  image and category, crowd ground truth ignored, greedy by descending score exactly as COCOeval matches):
  for each class the step curves P(c), R(c) over a confidence grid c in [0, 1] (1000 points) are built, F1
  is averaged over the classes that have ground truth, and every class's P and R are read at the single
  confidence that maximises that mean F1 (the highest such confidence when several tie). ``mp``/``mr`` are
  their means. See docs/val.md.

The model-free entry points (ground truth as predictions, NaN detections) are exercised in
tests/test_metrics_segment.py.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["Metric", "SegmentMetrics", "SegmentEvaluator", "match_detections", "fitness"]

LOGGER = logging.getLogger("yoloseg")
CONF_GRID = np.linspace(0.0, 1.0, 1000)
MATCH_IOU = 0.5
MAX_DETS = 100


# ------------------------------------------------------------------------------------------ RLE access
def encode_masks(masks: np.ndarray) -> list:
    """(N, H, W) bool/uint8 -> list of COCO compressed RLE dicts (counts as str)."""
    from yoloseg.metrics import rle

    m = np.ascontiguousarray(masks, dtype=np.uint8)
    return [_as_str(r) for r in rle.encode(m)]


def polygons_to_rle(polygons, h: int, w: int) -> dict:
    """One instance's polygons (each (K, 2) pixels or a flat list) -> one RLE (their union)."""
    from yoloseg.metrics import rle

    flat = [np.asarray(p, np.float64).reshape(-1) for p in polygons]
    return _as_str(rle.from_polygons([p for p in flat if p.size >= 6], int(h), int(w)))


def _as_str(r: dict) -> dict:
    c = r["counts"]
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": c.decode("ascii") if isinstance(c, bytes) else c}


def rle_area(rles) -> np.ndarray:
    from yoloseg.metrics import rle

    return np.asarray(rle.area(list(rles)), np.float64) if len(rles) else np.zeros(0)


def _mask_iou(dt_rles, gt_rles, crowd) -> np.ndarray:
    from yoloseg.metrics import rle

    return np.asarray(rle.iou(list(dt_rles), list(gt_rles), np.asarray(crowd, np.uint8)), np.float64)


def _box_iou(dt_xywh, gt_xywh, crowd) -> np.ndarray:
    from yoloseg.metrics import rle

    if not len(dt_xywh) or not len(gt_xywh):
        return np.zeros((len(dt_xywh), len(gt_xywh)))
    return np.asarray(rle.iou(np.asarray(dt_xywh, np.float64), np.asarray(gt_xywh, np.float64),
                              np.asarray(crowd, np.uint8)), np.float64)


# ------------------------------------------------------------------------------------------ matching
def match_detections(iou: np.ndarray, crowd: np.ndarray, thr: float = MATCH_IOU):
    """COCOeval's greedy matching for one image and category at one IoU threshold.

    ``iou`` (D, G) for detections already sorted by descending score; ``crowd`` (G,) bool (ignored
    ground truth). Returns ``(tp, ignored)`` bool (D,): a detection is a true positive when it takes a
    still-free non-crowd ground truth with IoU >= thr (the highest IoU; among equal IoUs the last one, as
    COCOeval's loop does); it is ignored when its best match is a crowd region (crowd regions can absorb
    any number of detections). Everything else is a false positive.
    """
    d, g = iou.shape
    tp = np.zeros(d, bool)
    ign = np.zeros(d, bool)
    if d == 0 or g == 0:
        return tp, ign
    crowd = np.asarray(crowd, bool)
    taken = np.zeros(g, bool)
    t = min(thr, 1 - 1e-10)
    for i in range(d):
        row = iou[i]
        free = (~taken) & (~crowd) & (row >= t)
        if free.any():
            cand = np.where(free, row, -1.0)
            j = g - 1 - int(np.argmax(cand[::-1]))  # last index among the maxima
            taken[j] = True
            tp[i] = True
            continue
        cr = crowd & (row >= t)
        if cr.any():
            ign[i] = True
    return tp, ign


def _pr_curves(scores: np.ndarray, tp: np.ndarray, n_gt: int):
    """Step curves P(c), R(c) on CONF_GRID from one class's detections (score, tp flag)."""
    if n_gt == 0:
        return np.zeros_like(CONF_GRID), np.zeros_like(CONF_GRID)
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], tp[order]
    ctp = np.cumsum(t)
    # number of detections with score >= c, for every c on the grid
    n = np.searchsorted(-s, -CONF_GRID, side="right")
    tpc = np.where(n > 0, ctp[np.maximum(n - 1, 0)] if len(ctp) else 0, 0)
    r = tpc / n_gt
    p = np.where(n > 0, tpc / np.maximum(n, 1), 0.0)
    return p, r


def fitness(box_map50: float, box_map: float, seg_map50: float, seg_map: float) -> float:
    """0.1 * mAP50 + 0.9 * mAP50-95, summed over box and mask."""
    return 0.1 * box_map50 + 0.9 * box_map + 0.1 * seg_map50 + 0.9 * seg_map


# ------------------------------------------------------------------------------------------ results
class Metric:
    """Numbers of one kind (box or mask). Per-class arrays have length ``nc`` (class index order).

    ``map`` / ``map50`` / ``map75``: COCO AP50-95 / AP50 / AP75 (area all, 100 detections);
    ``maps``: per-class AP50-95 (classes without ground truth get the overall ``map``);
    ``ap``, ``ap50``, ``ap75``, ``p``, ``r``: per class, NaN for classes without ground truth;
    ``mp``, ``mr``: mean P and R at ``conf`` (the best mean-F1 confidence); ``stats``: COCO's 12 numbers;
    ``curves``: arrays for plots (conf grid, P/R/F1 per class; COCO's 101-point precision at IoU .50).
    """

    def __init__(self, nc: int):
        self.nc = nc
        nan = np.full(nc, np.nan)
        self.ap, self.ap50, self.ap75, self.p, self.r = nan.copy(), nan.copy(), nan.copy(), nan.copy(), nan.copy()
        self.map = self.map50 = self.map75 = self.mp = self.mr = 0.0
        self.conf = 0.0
        self.stats = [-1.0] * 12
        self.ap_class_index = np.zeros(0, int)
        self.curves: dict = {}

    @property
    def maps(self) -> np.ndarray:
        out = np.full(self.nc, self.map)
        ok = ~np.isnan(self.ap)
        out[ok] = self.ap[ok]
        return out

    @property
    def all_ap(self) -> np.ndarray:
        return self.ap

    def mean_results(self) -> list:
        return [self.mp, self.mr, self.map50, self.map]

    def class_result(self, i: int) -> tuple:
        return float(self.p[i]), float(self.r[i]), float(self.ap50[i]), float(self.ap[i])

    def fitness(self) -> float:
        return 0.1 * self.map50 + 0.9 * self.map

    def __repr__(self):
        return (f"Metric(P={self.mp:.4f}, R={self.mr:.4f}, mAP50={self.map50:.4f}, mAP75={self.map75:.4f}, "
                f"mAP50-95={self.map:.4f})")


class SegmentMetrics:
    """What ``val()`` returns: ``.box`` and ``.seg`` (:class:`Metric`), ``.speed`` (ms per image),
    ``.fitness``, ``.results_dict``; plus per-class ground-truth counts and the confusion matrix."""

    KEYS = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)",
            "metrics/precision(M)", "metrics/recall(M)", "metrics/mAP50(M)", "metrics/mAP50-95(M)")

    def __init__(self, names: dict):
        self.names = dict(names)
        self.nc = len(self.names)
        self.box, self.seg = Metric(self.nc), Metric(self.nc)
        self.speed = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        self.nt_per_class = np.zeros(self.nc, int)
        self.nt_per_image = np.zeros(self.nc, int)
        self.n_images = 0
        self.confusion_matrix = None
        self.save_dir = None
        self.loss = None

    @property
    def keys(self) -> list:
        return list(self.KEYS)

    @property
    def fitness(self) -> float:
        return fitness(self.box.map50, self.box.map, self.seg.map50, self.seg.map)

    @property
    def results_dict(self) -> dict:
        vals = self.box.mean_results()[:2] + self.box.mean_results()[2:] + self.seg.mean_results()
        out = {k: float(v) for k, v in zip(self.KEYS, vals)}
        out["metrics/mAP75(B)"] = float(self.box.map75)
        out["metrics/mAP75(M)"] = float(self.seg.map75)
        out["fitness"] = float(self.fitness)
        return out

    @property
    def maps(self) -> np.ndarray:
        return self.box.maps + self.seg.maps

    def table(self) -> str:
        """Per-class table (class, images, instances, box P R mAP50 mAP75 mAP50-95, mask ditto)."""
        head = ("%22s" + "%11s" * 2 + "%10s" * 10) % ("Class", "Images", "Instances", "Box(P", "R", "mAP50", "mAP75",
                                                       "mAP50-95)", "Mask(P", "R", "mAP50", "mAP75", "mAP50-95)")
        fmt = "%22s" + "%11d" * 2 + "%10.3g" * 10
        b, s = self.box, self.seg
        lines = [head, fmt % ("all", self.n_images, int(self.nt_per_class.sum()), b.mp, b.mr, b.map50, b.map75, b.map,
                              s.mp, s.mr, s.map50, s.map75, s.map)]
        for i in np.flatnonzero(self.nt_per_class):
            lines.append(fmt % (str(self.names.get(int(i), i))[:22], self.nt_per_image[i], self.nt_per_class[i],
                                b.p[i], b.r[i], b.ap50[i], b.ap75[i], b.ap[i],
                                s.p[i], s.r[i], s.ap50[i], s.ap75[i], s.ap[i]))
        return "\n".join(lines)

    def summary(self) -> list[dict]:
        """One dict per class with ground truth (names and numbers), for JSON/CSV export."""
        out = []
        for i in np.flatnonzero(self.nt_per_class):
            row = {"class": int(i), "name": self.names.get(int(i), str(i)), "images": int(self.nt_per_image[i]),
                   "instances": int(self.nt_per_class[i])}
            for tag, m in (("box", self.box), ("mask", self.seg)):
                row.update({f"{tag}_p": float(m.p[i]), f"{tag}_r": float(m.r[i]), f"{tag}_map50": float(m.ap50[i]),
                            f"{tag}_map75": float(m.ap75[i]), f"{tag}_map": float(m.ap[i])})
            out.append(row)
        return out

    def __repr__(self):
        return f"SegmentMetrics(box={self.box!r}, seg={self.seg!r})"


# ------------------------------------------------------------------------------------------ evaluator
class SegmentEvaluator:
    """Collects ground truth and detections per image and evaluates them the COCO way.

    Args:
        names: class index -> name (the model's / data set's classes).
        category_ids: class index -> COCO category id (default: index + 1). The mapping is used for the
            ground truth it builds, for every result it writes and to read the per-class numbers back.
    """

    def __init__(self, names: dict, category_ids: dict | None = None):
        self.names = {int(k): str(v) for k, v in dict(names).items()}
        self.nc = len(self.names)
        self.cat_ids = {int(k): int(v) for k, v in (category_ids or {i: i + 1 for i in self.names}).items()}
        if sorted(self.cat_ids) != sorted(self.names):
            raise ValueError("category_ids must map every class index of names to a COCO category id")
        self.cls_of_cat = {v: k for k, v in self.cat_ids.items()}
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.results: list[dict] = []
        self._gt: dict = {}  # image id -> (cls (G,), xywh (G,4), rles, crowd (G,))
        self._dt: dict = {}  # image id -> (cls (D,), xywh (D,4), scores (D,), rles)
        self._shape: dict = {}  # image id -> (h, w)
        self._file: dict = {}  # image id -> file name (for messages)
        self.problems: list[tuple[str, str]] = []  # (file or image id, message)
        self.n_bad_detections = 0

    # ---- ground truth
    def add_image(self, image_id: int, shape, file_name: str = "") -> None:
        h, w = int(shape[0]), int(shape[1])
        if image_id in self._gt:
            raise ValueError(f"image id {image_id} added twice")
        self.images.append({"id": int(image_id), "file_name": str(file_name), "height": h, "width": w})
        self._gt[int(image_id)] = (np.zeros(0, int), np.zeros((0, 4)), [], np.zeros(0, bool))
        self._shape[int(image_id)] = (h, w)
        self._file[int(image_id)] = str(file_name) or str(image_id)

    def add_ground_truth(self, image_id: int, shape, cls, polygons, file_name: str = "") -> None:
        """One image and its instances: ``cls`` (G,) class indices, ``polygons`` one (K, 2) array of pixel
        coordinates per instance (original image). Instances with fewer than 3 points, no finite
        coordinates or an unknown class are dropped and reported in ``problems``; coordinates outside the
        image are clipped by the rasterisation as COCO does. The box is the polygon's extent (clipped to
        the image), the area the pixel count of its mask."""
        image_id = int(image_id)
        self.add_image(image_id, shape, file_name)
        h, w = self._shape[image_id]
        cls = np.asarray(cls).reshape(-1)
        if len(cls) != len(polygons):
            raise ValueError(f"image {file_name or image_id}: {len(cls)} classes for {len(polygons)} polygons")
        keep_cls, boxes, rles = [], [], []
        for k, (c, poly) in enumerate(zip(cls, polygons)):
            where = file_name or str(image_id)
            pts = np.asarray(poly, np.float64).reshape(-1, 2) if np.size(poly) % 2 == 0 else None
            if pts is None or len(pts) < 3:
                self.problems.append((where, f"instance {k}: polygon with fewer than 3 points dropped"))
                continue
            if not np.isfinite(pts).all():
                self.problems.append((where, f"instance {k}: non-finite polygon coordinate, instance dropped"))
                continue
            if not (float(c) == int(c) and int(c) in self.cat_ids):
                self.problems.append((where, f"instance {k}: unknown class id {c}, instance dropped"))
                continue
            x0, y0 = np.clip(pts.min(0), 0, (w, h))
            x1, y1 = np.clip(pts.max(0), 0, (w, h))
            keep_cls.append(int(c))
            boxes.append([x0, y0, x1 - x0, y1 - y0])
            rles.append(polygons_to_rle([pts], h, w))
        areas = rle_area(rles)
        for c, b, r, a in zip(keep_cls, boxes, rles, areas):
            self.annotations.append({
                "id": len(self.annotations) + 1, "image_id": image_id, "category_id": self.cat_ids[c],
                "segmentation": r, "area": float(a), "bbox": [float(v) for v in b], "iscrowd": 0,
            })
        self._gt[image_id] = (np.asarray(keep_cls, int), np.asarray(boxes, np.float64).reshape(-1, 4), rles,
                              np.zeros(len(keep_cls), bool))

    def add_coco_annotations(self, image: dict, anns: list) -> None:
        """One image of a COCO ground-truth file with its annotations, kept as they are (areas, crowd
        flags, ids) for ``coco_evaluate``; categories not in ``category_ids`` are reported and skipped."""
        image_id = int(image["id"])
        self.add_image(image_id, (image["height"], image["width"]), image.get("file_name", ""))
        self.images[-1] = dict(image)
        h, w = int(image["height"]), int(image["width"])
        cls, boxes, rles, crowd = [], [], [], []
        for a in anns:
            c = self.cls_of_cat.get(int(a["category_id"]))
            if c is None:
                self.problems.append((image.get("file_name", str(image_id)),
                                      f"annotation {a.get('id')}: category {a['category_id']} has no class, skipped"))
                continue
            seg = a.get("segmentation")
            if isinstance(seg, list):
                r = polygons_to_rle(seg, h, w)
            elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
                from yoloseg.metrics import rle

                r = _as_str(rle.merge([seg]))  # uncompressed counts -> compressed
            elif isinstance(seg, dict):
                r = seg
            else:
                r = polygons_to_rle([], h, w)
            self.annotations.append(dict(a))
            cls.append(c)
            boxes.append([float(v) for v in a.get("bbox", (0, 0, 0, 0))])
            rles.append(r)
            crowd.append(bool(a.get("iscrowd", 0)))
        self._gt[image_id] = (np.asarray(cls, int), np.asarray(boxes, np.float64).reshape(-1, 4), rles,
                              np.asarray(crowd, bool))

    # ---- detections
    def add_predictions(self, image_id: int, boxes_xyxy, scores, cls, rles: list) -> None:
        """Detections of one image in original-image pixels: boxes (D, 4) xyxy, scores (D,), cls (D,),
        one RLE per detection. Detections with a non-finite box or score, or an unknown class, are
        dropped and counted in ``n_bad_detections`` (COCO cannot rank them)."""
        image_id = int(image_id)
        if image_id not in self._gt:
            raise ValueError(f"add_predictions: image id {image_id} has no ground truth entry (add_image first)")
        b = np.asarray(_np(boxes_xyxy), np.float64).reshape(-1, 4)
        s = np.asarray(_np(scores), np.float64).reshape(-1)
        c = np.asarray(_np(cls), np.float64).reshape(-1)
        if not (len(b) == len(s) == len(c) == len(rles)):
            raise ValueError(f"add_predictions: {len(b)} boxes, {len(s)} scores, {len(c)} classes, {len(rles)} masks")
        ok = np.isfinite(b).all(1) & np.isfinite(s) & np.isfinite(c)
        ok &= np.isin(c, list(self.cat_ids))
        if not ok.all():
            bad = int((~ok).sum())
            self.n_bad_detections += bad
            self.problems.append((self._file.get(image_id, str(image_id)),
                                  f"{bad} detection(s) with non-finite values or unknown class dropped"))
        b, s, c = b[ok], s[ok], c[ok].astype(int)
        rles = [r for r, k in zip(rles, ok) if k]
        xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)
        prev = self._dt.get(image_id)
        if prev is not None:
            c = np.concatenate([prev[0], c])
            xywh = np.concatenate([prev[1], xywh])
            s = np.concatenate([prev[2], s])
            rles = prev[3] + rles
        self._dt[image_id] = (c, xywh, s, rles)

    def coco_gt(self) -> dict:
        cats = [{"id": self.cat_ids[i], "name": self.names[i], "supercategory": ""} for i in sorted(self.names)]
        return {"info": {"description": "yoloseg validation ground truth"}, "images": self.images,
                "annotations": self.annotations, "categories": cats}

    def coco_results(self) -> list[dict]:
        """COCO results list: image_id, category_id, bbox [x, y, w, h], score, segmentation (RLE)."""
        out = []
        for image_id in sorted(self._dt):
            c, xywh, s, rles = self._dt[image_id]
            for k in range(len(s)):
                out.append({"image_id": image_id, "category_id": self.cat_ids[int(c[k])],
                            "bbox": [float(v) for v in xywh[k]], "score": float(s[k]), "segmentation": rles[k]})
        return out

    # ---- evaluation
    def evaluate(self, results: list | None = None) -> SegmentMetrics:
        from yoloseg.metrics.coco import coco_evaluate

        m = SegmentMetrics(self.names)
        m.n_images = len(self.images)
        for cls, _, _, crowd in self._gt.values():
            real = cls[~crowd]
            np.add.at(m.nt_per_class, real, 1)
            np.add.at(m.nt_per_image, np.unique(real), 1)
        if not self.annotations:
            LOGGER.warning("no ground-truth instances in the evaluated images: all metrics are 0")
            return m
        gt = self.coco_gt()
        results = self.coco_results() if results is None else results
        for iou_type, metric in (("bbox", m.box), ("segm", m.seg)):
            r = coco_evaluate(gt, results, iou_type)
            self._fill(metric, r)
            self._fill_pr(metric, iou_type)
        return m

    def _fill(self, metric: Metric, r) -> None:
        metric.stats = [float(v) for v in r.stats]
        metric.map, metric.map50, metric.map75 = (max(float(v), 0.0) for v in r.stats[:3])
        for arr, src in ((metric.ap, r.per_class), (metric.ap50, r.per_class_ap50), (metric.ap75, r.per_class_ap75)):
            for cat, v in src.items():
                c = self.cls_of_cat.get(int(cat))
                if c is not None and v is not None:
                    arr[c] = v
        metric.ap_class_index = np.flatnonzero(~np.isnan(metric.ap))
        # COCO's interpolated precision at IoU .50, area all, 100 detections (101 recall points), per class
        prec = np.full((self.nc, len(r.recall_thresholds)), np.nan)
        for k, cat in enumerate(r.cat_ids):
            c = self.cls_of_cat.get(int(cat))
            if c is not None:
                p = np.asarray(r.precision[0, :, k, 0, -1], np.float64)
                prec[c] = np.where(p > -1, p, np.nan)
        metric.curves["recall_thresholds"] = np.asarray(r.recall_thresholds)
        metric.curves["coco_precision50"] = prec

    def _fill_pr(self, metric: Metric, iou_type: str) -> None:
        per_cls_scores = [[] for _ in range(self.nc)]
        per_cls_tp = [[] for _ in range(self.nc)]
        n_gt = np.zeros(self.nc, int)
        for image_id, (gcls, gbox, grle, gcrowd) in self._gt.items():
            np.add.at(n_gt, gcls[~gcrowd], 1)
            dt = self._dt.get(image_id)
            if dt is None or not len(dt[2]):
                continue
            dcls, dbox, dsc, drle = dt
            for c in np.unique(dcls):
                di = np.flatnonzero(dcls == c)
                di = di[np.argsort(-dsc[di], kind="mergesort")][:MAX_DETS]
                gi = np.flatnonzero(gcls == c)
                if len(gi):
                    if iou_type == "bbox":
                        iou = _box_iou(dbox[di], gbox[gi], gcrowd[gi])
                    else:
                        iou = _mask_iou([drle[j] for j in di], [grle[j] for j in gi], gcrowd[gi])
                    tp, ign = match_detections(iou, gcrowd[gi])
                else:
                    tp, ign = np.zeros(len(di), bool), np.zeros(len(di), bool)
                per_cls_scores[c].append(dsc[di][~ign])
                per_cls_tp[c].append(tp[~ign])
        P = np.zeros((self.nc, len(CONF_GRID)))
        R = np.zeros_like(P)
        for c in range(self.nc):
            if n_gt[c] == 0:
                continue
            s = np.concatenate(per_cls_scores[c]) if per_cls_scores[c] else np.zeros(0)
            t = np.concatenate(per_cls_tp[c]) if per_cls_tp[c] else np.zeros(0, bool)
            P[c], R[c] = _pr_curves(s, t, int(n_gt[c]))
        F1 = 2 * P * R / np.maximum(P + R, 1e-16)
        has = n_gt > 0
        metric.curves.update({"conf": CONF_GRID, "p": P, "r": R, "f1": F1, "has_gt": has})
        if not has.any():
            return
        mean_f1 = F1[has].mean(0)
        best = len(mean_f1) - 1 - int(np.argmax(mean_f1[::-1]))  # the highest confidence among equal maxima
        metric.conf = float(CONF_GRID[best])
        metric.p[has], metric.r[has] = P[has, best], R[has, best]
        metric.mp, metric.mr = float(P[has, best].mean()), float(R[has, best].mean())


def _np(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
