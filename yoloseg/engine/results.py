"""Per-image prediction results: :class:`Results` with its :class:`Boxes` and :class:`Masks`.

Coordinates are in original-image pixels. ``Masks.data`` stays at the resolution the masks were
decoded at: the letterboxed model input (``retina_masks=False``), or the original image
(``retina_masks=True``); ``Masks.xy`` polygons are always mapped to the original image.

Polygons come from the outer contours of each mask (OpenCV ``RETR_EXTERNAL``,
``CHAIN_APPROX_SIMPLE``, vertices at pixel centres). With the default ``strategy="largest"``
each instance is described by its contour with the most vertices; ``strategy="all"`` joins all
outer contours of a mask into one polygon through thin bridges between nearest points (what the
Ultralytics format stores for multi-part objects). See ``yoloseg.ops.masks_to_polygons``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from yoloseg.utils.files import atomic_write_bytes

__all__ = ["Boxes", "Masks", "Results"]


def _safe_name(name: str) -> str:
    """A class name usable as one folder name."""
    cleaned = "".join(ch if ch.isalnum() or ch in " ._-" else "_" for ch in name).strip().strip(".")
    return cleaned or "_"


class _Data:
    """Wraps a tensor or array; moves between devices and numpy as a unit."""

    def __init__(self, data, orig_shape):
        if not isinstance(data, (torch.Tensor, np.ndarray)):
            raise ValueError(f"{type(self).__name__} data must be a torch.Tensor or numpy array, got {type(data)}")
        self.data = data
        self.orig_shape = tuple(int(v) for v in orig_shape[:2])

    @property
    def shape(self):
        return tuple(self.data.shape)

    def _new(self, data):
        return type(self)(data, self.orig_shape)

    def cpu(self):
        return self if isinstance(self.data, np.ndarray) else self._new(self.data.cpu())

    def numpy(self):
        return self if isinstance(self.data, np.ndarray) else self._new(self.data.cpu().numpy())

    def cuda(self):
        return self._new(torch.as_tensor(self.data).cuda())

    def to(self, *args, **kwargs):
        return self._new(torch.as_tensor(self.data).to(*args, **kwargs))

    def __len__(self):
        return len(self.data)

    def __getitem__(self, idx):
        if isinstance(idx, int):
            idx = [idx]
        if isinstance(self.data, np.ndarray) and isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        return self._new(self.data[idx])

    def __repr__(self):
        return f"{type(self).__name__}(shape={self.shape}, orig_shape={self.orig_shape})"


class Boxes(_Data):
    """Detected boxes, ``data`` (n, 6): x1, y1, x2, y2 (original-image pixels), conf, cls."""

    def __init__(self, data, orig_shape):
        if data.ndim == 1:
            data = data[None, :]
        if data.ndim != 2 or data.shape[-1] != 6:
            raise ValueError(f"Boxes data must be (n, 6) [x1, y1, x2, y2, conf, cls], got {tuple(data.shape)}")
        super().__init__(data, orig_shape)

    @property
    def xyxy(self):
        return self.data[:, :4]

    @property
    def conf(self):
        return self.data[:, 4]

    @property
    def cls(self):
        return self.data[:, 5]

    @property
    def xywh(self):
        b = self.xyxy
        out = b.clone() if isinstance(b, torch.Tensor) else b.copy()
        out[:, 0] = (b[:, 0] + b[:, 2]) / 2
        out[:, 1] = (b[:, 1] + b[:, 3]) / 2
        out[:, 2] = b[:, 2] - b[:, 0]
        out[:, 3] = b[:, 3] - b[:, 1]
        return out

    def _norm(self, b):
        h, w = self.orig_shape
        scale = [w, h, w, h]
        if isinstance(b, torch.Tensor):
            return b / torch.tensor(scale, dtype=b.dtype, device=b.device)
        return b / np.asarray(scale, dtype=b.dtype)

    @property
    def xyxyn(self):
        return self._norm(self.xyxy)

    @property
    def xywhn(self):
        return self._norm(self.xywh)


class Masks(_Data):
    """Instance masks ``data`` (n, h, w) with polygons ``xy`` (pixels) and ``xyn`` (normalized).

    ``strategy`` picks the polygon per mask: ``"largest"`` (default) or ``"all"`` (see module doc).
    ``boxes``: optional (n, 4) xyxy in mask pixels that contain every set pixel of their mask (the
    boxes the masks were cropped to); polygon extraction then reads only those windows.
    ``data`` may also be a :class:`yoloseg.ops.mask_crops.MaskCrops` (what the predictor gives on
    the CPU): then only the box regions are stored, polygons are traced from them, and the dense
    (n, h, w) bool tensor is built the first time ``data`` is read.
    """

    def __init__(self, data, orig_shape, strategy: str = "largest", boxes=None):
        from yoloseg.ops.mask_crops import MaskCrops

        if strategy not in ("largest", "all"):
            raise ValueError(f"polygon strategy must be 'largest' or 'all', got {strategy!r}")
        self.strategy = strategy
        self.crop_boxes = None
        self._xy = None
        self._crops = data if isinstance(data, MaskCrops) else None
        if self._crops is not None:
            self._dense = None
            self.orig_shape = tuple(int(v) for v in orig_shape[:2])
            return
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3:
            raise ValueError(f"Masks data must be (n, h, w), got {tuple(data.shape)}")
        super().__init__(data, orig_shape)
        if boxes is not None:
            b = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes)
            if b.shape != (len(data), 4):
                raise ValueError(f"Masks boxes must be ({len(data)}, 4) to match the masks, got {tuple(b.shape)}")
            self.crop_boxes = b

    @property
    def data(self):
        if self._crops is not None and self._dense is None:
            self._dense = self._crops.dense()
        return self._dense

    @data.setter
    def data(self, value):
        self._dense = value

    @property
    def shape(self):
        return self._crops.shape if self._crops is not None else tuple(self._dense.shape)

    def __len__(self):
        return len(self._crops) if self._crops is not None else len(self._dense)

    def _new(self, data, boxes=None):
        return Masks(data, self.orig_shape, self.strategy, boxes)

    def cpu(self):
        if self._crops is not None or isinstance(self.data, np.ndarray):
            return self
        return self._new(self.data.cpu(), self.crop_boxes)

    def numpy(self):
        return self if isinstance(self.data, np.ndarray) else self._new(self.data.cpu().numpy(), self.crop_boxes)

    def cuda(self):
        return self._new(torch.as_tensor(self.data).cuda(), self.crop_boxes)

    def to(self, *args, **kwargs):
        return self._new(torch.as_tensor(self.data).to(*args, **kwargs), self.crop_boxes)

    def __getitem__(self, idx):
        if self._crops is not None:
            return self._new(self._crops.select(idx))
        if isinstance(idx, int):
            idx = [idx]
        if isinstance(self.data, np.ndarray) and isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        data = self.data[idx]
        boxes = None
        if self.crop_boxes is not None:
            try:
                boxes = self.crop_boxes[idx.cpu().numpy() if isinstance(idx, torch.Tensor) else idx]
            except (IndexError, TypeError, ValueError):
                boxes = None
            if boxes is not None and (data.ndim != 3 or boxes.shape != (len(data), 4)):
                boxes = None  # an index the boxes cannot follow: fall back to scanning the masks
        return self._new(data, boxes)

    @property
    def xy(self) -> list[np.ndarray]:
        """One (K, 2) float32 polygon per mask in original-image pixels ((0, 2) for an empty mask)."""
        if self._xy is None:
            if len(self) == 0:
                self._xy = []
            else:
                from yoloseg.ops.polygons import polygons_flat, split_points

                if self._crops is not None:
                    pts, ends = self._crops.polygons_flat(self.strategy)
                else:
                    data = self.data.cpu() if isinstance(self.data, torch.Tensor) else self.data
                    pts, ends = polygons_flat(data, self.strategy, self.crop_boxes)
                pts = points_to_image(pts, self.shape[1:], self.orig_shape)
                self._xy = split_points(pts, ends)
        return self._xy

    @property
    def xyn(self) -> list[np.ndarray]:
        """Polygons of :attr:`xy` divided by the original width and height."""
        h, w = self.orig_shape
        scale = np.array([w, h], np.float32)
        return [p / scale for p in self.xy]


def label_lines(cls, confs, polys, save_conf: bool = False) -> list[str]:
    """YOLO-seg label lines ``cls x1 y1 x2 y2 ...`` from normalized polygons (optional conf last); polygons
    with fewer than 3 points are left out (no loader accepts them)."""
    lines = []
    for c, cf, poly in zip(cls, confs, polys):
        if len(poly) < 3:
            continue
        vals = " ".join(f"{v:.6g}" for v in np.asarray(poly).reshape(-1).tolist())
        lines.append(f"{int(c)} {vals}" + (f" {float(cf):.6g}" if save_conf else ""))
    return lines


def polygons_to_image(polys, mask_shape, orig_shape, normalize=False) -> list[np.ndarray]:
    """Map polygons from mask pixels (letterbox or original resolution) to the original image, clipped."""
    polys = [np.asarray(p, np.float32).reshape(-1, 2) for p in polys]
    if not polys:
        return []
    ends = np.cumsum([len(p) for p in polys]).tolist()
    pts = np.concatenate(polys) if ends[-1] else np.zeros((0, 2), np.float32)
    # one vectorized pass over all vertices, then sliced back per mask
    pts = points_to_image(pts, mask_shape, orig_shape, normalize)
    return [pts[a:b] for a, b in zip([0] + ends[:-1], ends)]


def points_to_image(pts: np.ndarray, mask_shape, orig_shape, normalize=False) -> np.ndarray:
    """(K, 2) float32 points from mask pixels to original-image pixels (clipped), or normalized."""
    from yoloseg.data.letterbox import unpad_region

    gy, gx, top, left, _, _ = unpad_region(mask_shape, orig_shape)
    h, w = orig_shape
    pts = (pts - np.array([left, top], np.float32)) / np.array([gx, gy], np.float32)
    np.clip(pts, 0, np.array([w, h], np.float32), out=pts)
    if normalize:
        pts /= np.array([w, h], np.float32)
    return pts.astype(np.float32, copy=False)


class Results:
    """Predictions for one image.

    Attributes:
        orig_img: the original BGR uint8 image; ``orig_shape`` its (h, w).
        path: where the image came from (file path, URL, or ``imageN.jpg`` for in-memory input).
        names: class id -> class name.
        boxes: :class:`Boxes` or None; masks: :class:`Masks` or None (None when there are no detections).
        mask_boxes (argument): optional (n, 4) boxes in mask pixels that the masks were cropped to
            (``Masks.crop_boxes``); they let polygon extraction skip scanning whole masks.
        speed: milliseconds per image for ``preprocess``, ``inference``, ``postprocess``.
    """

    def __init__(
        self, orig_img, path, names, boxes=None, masks=None, speed=None, polygon_strategy="largest", mask_boxes=None
    ):
        self.orig_img = orig_img
        self.orig_shape = tuple(int(v) for v in orig_img.shape[:2])
        self.path = str(path)
        self.names = dict(names)
        self.boxes = Boxes(boxes, self.orig_shape) if boxes is not None else None
        self.masks = Masks(masks, self.orig_shape, polygon_strategy, mask_boxes) if masks is not None else None
        self.speed = dict(speed) if speed else {"preprocess": None, "inference": None, "postprocess": None}
        self.polygon_strategy = polygon_strategy
        self.save_dir = None

    # ----- container behaviour ---------------------------------------------------------------
    def __len__(self):
        return 0 if self.boxes is None else len(self.boxes)

    def _apply(self, fn):
        r = Results(self.orig_img, self.path, self.names, speed=self.speed, polygon_strategy=self.polygon_strategy)
        r.boxes = None if self.boxes is None else fn(self.boxes)
        r.masks = None if self.masks is None else fn(self.masks)
        r.save_dir = self.save_dir
        return r

    def __getitem__(self, idx):
        return self._apply(lambda x: x[idx])

    def cpu(self):
        return self._apply(lambda x: x.cpu())

    def numpy(self):
        return self._apply(lambda x: x.numpy())

    def cuda(self):
        return self._apply(lambda x: x.cuda())

    def to(self, *args, **kwargs):
        return self._apply(lambda x: x.to(*args, **kwargs))

    def __repr__(self):
        return (
            f"Results(path={self.path!r}, orig_shape={self.orig_shape}, detections={len(self)}, "
            f"masks={'yes' if self.masks is not None else 'no'}, speed={self.speed})"
        )

    def verbose(self) -> str:
        """Counts per class, e.g. ``"2 ellipses, 1 triangle"`` (``"no detections"`` when empty)."""
        if not len(self):
            return "no detections"
        cls = self.boxes.cls
        cls = cls.cpu().numpy() if isinstance(cls, torch.Tensor) else np.asarray(cls)
        ids, counts = np.unique(cls.astype(int), return_counts=True)
        parts = []
        for c, n in zip(ids.tolist(), counts.tolist()):
            name = str(self.names.get(c, c))
            parts.append(f"{n} {name}{'s' if n > 1 else ''}")
        return ", ".join(parts)

    # ----- drawing and files --------------------------------------------------------------------
    def plot(self, conf=True, labels=True, boxes=True, masks=True, line_width=None, img=None, alpha=0.5):
        """Annotated BGR uint8 copy of the image: translucent masks, boxes, ``"name 0.87"`` labels."""
        from yoloseg.utils.plotting import plot_instances

        base = self.orig_img if img is None else img
        if len(self) == 0:
            return np.ascontiguousarray(base).copy()
        b = self.boxes.cpu()
        m = None
        if self.masks is not None:  # packed crops are drawn as they are, without a dense block
            m = self.masks._crops if self.masks._crops is not None else self.masks.cpu().data
        return plot_instances(
            base, b.xyxy, b.cls, b.conf, m, self.names, show_conf=conf, show_labels=labels, show_boxes=boxes,
            show_masks=masks, line_width=line_width, alpha=alpha,
        )

    def save(self, filename=None, **plot_kwargs) -> str:
        """Write :meth:`plot` to ``filename`` (default ``results_<image name>``); returns the path."""
        import cv2

        filename = Path(filename or f"results_{Path(self.path).name or 'image.jpg'}")
        if not filename.suffix:
            filename = filename.with_suffix(".jpg")
        filename.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(filename.suffix, self.plot(**plot_kwargs))
        if not ok:
            raise ValueError(f"cannot encode an image with extension '{filename.suffix}': {filename}")
        atomic_write_bytes(filename, buf.tobytes())
        return str(filename)

    def save_crop(self, save_dir, file_name="im") -> list[str]:
        """Write the original-image pixels inside each box to ``save_dir/<class name>/<file_name>_<i>.jpg``
        (i: the detection's index; boxes rounded outwards to whole pixels, clipped to the image).
        Returns the paths written."""
        import cv2

        if not len(self):
            return []
        b = self.boxes.cpu()
        h, w = self.orig_shape
        xyxy = np.asarray(b.xyxy, dtype=np.float64)
        cls = np.asarray(b.cls).astype(int).tolist()
        stem = Path(str(file_name)).stem or "im"
        out = []
        for i, ((x1, y1, x2, y2), c) in enumerate(zip(xyxy.tolist(), cls)):
            x1, y1 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
            x2, y2 = min(int(np.ceil(x2)), w), min(int(np.ceil(y2)), h)
            if x2 <= x1 or y2 <= y1:
                continue
            name = _safe_name(str(self.names.get(c, c)))
            path = Path(save_dir) / name / f"{stem}_{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(self.orig_img[y1:y2, x1:x2]))
            if not ok:
                raise ValueError(f"cannot encode the crop of detection {i} of '{self.path}'")
            atomic_write_bytes(path, buf.tobytes())
            out.append(str(path))
        return out

    def txt_lines(self, save_conf: bool = False) -> list[str]:
        """YOLO-seg label lines ``cls x1 y1 x2 y2 ...`` (normalized polygon, optional conf last).

        Without masks the line is ``cls xc yc w h``. Instances whose polygon has fewer than 3
        points are left out (no loader accepts them).
        """
        if not len(self):
            return []
        b = self.boxes.cpu()
        cls = np.asarray(b.cls).astype(int).tolist()
        confs = np.asarray(b.conf, dtype=np.float64).tolist()
        if self.masks is not None:
            return label_lines(cls, confs, self.masks.xyn, save_conf)
        lines = []
        for c, cf, box in zip(cls, confs, np.asarray(b.xywhn).tolist()):
            vals = " ".join(f"{v:.6g}" for v in box)
            lines.append(f"{c} {vals}" + (f" {cf:.6g}" if save_conf else ""))
        return lines

    def save_txt(self, txt_file, save_conf: bool = False) -> str:
        """Write :meth:`txt_lines` to ``txt_file`` (replacing it); nothing is written without lines."""
        lines = self.txt_lines(save_conf)
        txt_file = Path(txt_file)
        if lines:
            txt_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(txt_file, ("\n".join(lines) + "\n").encode())
        return str(txt_file)

    def summary(self, normalize: bool = False, decimals: int = 5) -> list[dict]:
        """One dict per detection: name, class, confidence, box {x1, y1, x2, y2}, segments {x, y}."""
        if not len(self):
            return []
        b = self.boxes.cpu()
        h, w = self.orig_shape if normalize else (1, 1)
        xyxy = np.asarray(b.xyxy, dtype=np.float64)
        cls = np.asarray(b.cls).astype(int).tolist()
        conf = np.asarray(b.conf, dtype=np.float64).tolist()
        polys = self.masks.xy if self.masks is not None else None
        out = []
        for i in range(len(cls)):
            x1, y1, x2, y2 = xyxy[i].tolist()
            d = {
                "name": str(self.names.get(cls[i], cls[i])),
                "class": cls[i],
                "confidence": round(conf[i], decimals),
                "box": {
                    "x1": round(x1 / w, decimals), "y1": round(y1 / h, decimals),
                    "x2": round(x2 / w, decimals), "y2": round(y2 / h, decimals),
                },
            }
            if polys is not None:
                p = polys[i].astype(np.float64)
                d["segments"] = {
                    "x": np.round(p[:, 0] / w, decimals).tolist(),
                    "y": np.round(p[:, 1] / h, decimals).tolist(),
                }
            out.append(d)
        return out

    def to_json(self, normalize: bool = False, decimals: int = 5) -> str:
        return json.dumps(self.summary(normalize=normalize, decimals=decimals), indent=2)
