"""Pictures of a data set's labels (OpenCV, no display needed).

* ``labels.jpg``: instances per class (bars in the class colours), box width and height histograms
  (fractions of the image side), box aspect-ratio histogram (pixel width / height, log scale), and a heat map
  of the box centres. ``yoloseg check plots=True`` writes it per split; training writes the train split's
  into its run folder at start.
* ``overlays.jpg``: a grid of sample images with their polygons filled with transparency, outlined, and
  named by class.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from yoloseg.utils.plot_val import FONT, GREY, _text, _write, mosaic
from yoloseg.utils.plotting import colors, plot_instances

__all__ = ["label_boxes", "plot_label_stats", "plot_overlays"]

PANEL = (800, 560)  # w, h of each of the four panels
MARGIN = (70, 40, 30, 110)  # left, top, right, bottom


def label_boxes(polys, shapes) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) normalized xywh boxes of ``polys`` (normalized (k, 2) polygons) and their (n,) pixel aspect
    ratios w / h, for images of ``shapes`` ((h, w) per polygon)."""
    if not len(polys):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    lo = np.array([p.min(0) for p in polys], np.float32)
    hi = np.array([p.max(0) for p in polys], np.float32)
    xywh = np.concatenate([(lo + hi) / 2, hi - lo], 1)
    hw = np.asarray(shapes, np.float32).reshape(-1, 2)
    pw, ph = xywh[:, 2] * hw[:, 1], xywh[:, 3] * hw[:, 0]
    return xywh, np.maximum(pw, 1e-6) / np.maximum(ph, 1e-6)


def _frame(title: str):
    w, h = PANEL
    img = np.full((h, w, 3), 255, np.uint8)
    l, t, r, b = MARGIN
    x0, y0, x1, y1 = l, t, w - r, h - b
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
    _text(img, title, (l, 26), 0.65, (0, 0, 0), 2)
    return img, (x0, y0, x1, y1)


def _bars(img, rect, values, fill, ticks=None, xlabels=None):
    """Vertical bars of ``values`` filling ``rect``; ``fill`` a colour or a list of colours."""
    x0, y0, x1, y1 = rect
    values = np.asarray(values, np.float64)
    n = max(len(values), 1)
    top = max(float(values.max()) if len(values) else 1.0, 1.0)
    bw = (x1 - x0) / n
    for i, v in enumerate(values):
        col = fill[i] if isinstance(fill, list) else fill
        h = int(round((y1 - y0 - 4) * v / top))
        if h > 0:
            xa = int(x0 + i * bw + 1)
            cv2.rectangle(img, (xa, y1 - h), (max(int(x0 + (i + 1) * bw - 1), xa), y1), col, -1)
    _text(img, f"{int(top) if top == int(top) else f'{top:.3g}'}", (6, y0 + 12), 0.45)
    _text(img, "0", (x0 - 16, y1), 0.45)
    for frac, s in ticks or ():
        x = int(x0 + frac * (x1 - x0))
        cv2.line(img, (x, y1), (x, y1 + 5), (0, 0, 0), 1)
        (tw, _), _ = cv2.getTextSize(s, FONT, 0.45, 1)
        _text(img, s, (x - tw // 2, y1 + 20), 0.45)
    if xlabels:  # vertical class names under the bars
        step = max(1, int(np.ceil(len(xlabels) / max((x1 - x0) // 14, 1))))
        for i in range(0, len(xlabels), step):
            s = xlabels[i][:14]
            (tw, th), _ = cv2.getTextSize(s, FONT, 0.4, 1)
            tile = np.full((th + 6, tw + 4, 3), 255, np.uint8)
            _text(tile, s, (2, th + 2), 0.4)
            tile = cv2.rotate(tile, cv2.ROTATE_90_COUNTERCLOCKWISE)
            x = int(x0 + (i + 0.5) * bw - tile.shape[1] / 2)
            hh = min(tile.shape[0], img.shape[0] - y1 - 4)
            if 0 <= x and x + tile.shape[1] <= img.shape[1] and hh > 0:
                img[y1 + 4 : y1 + 4 + hh, x : x + tile.shape[1]] = tile[:hh]


def _class_panel(cls, names: dict):
    img, rect = _frame(f"instances per class ({len(cls)} instances)")
    counts = np.bincount(np.asarray(cls, np.int64), minlength=len(names)) if len(cls) else np.zeros(len(names))
    present = [i for i in range(len(counts)) if counts[i] > 0] if len(counts) > 40 else list(range(len(counts)))
    if len(counts) > 40:
        _text(img, f"{len(present)} of {len(counts)} classes present", (rect[2] - 260, 26), 0.5, (90, 90, 90))
    _bars(img, rect, counts[present], [colors(i) for i in present], xlabels=[str(names.get(i, i)) for i in present])
    return img


def _size_panel(xywh):
    img, rect = _frame("box width (blue) and height (orange), fraction of the image")
    bins = np.linspace(0, 1, 41)
    hw, _ = np.histogram(xywh[:, 2], bins)
    hh, _ = np.histogram(xywh[:, 3], bins)
    top = max(int(hw.max(initial=0)), int(hh.max(initial=0)), 1)
    x0, y0, x1, y1 = rect
    for hist, col, off in ((hw, (200, 110, 30), 0), (hh, (40, 140, 250), 0.5)):
        bw = (x1 - x0) / len(hist)
        for i, v in enumerate(hist):
            h = int(round((y1 - y0 - 4) * v / top))
            xa = int(x0 + (i + off * 0.9) * bw + 1)
            if h > 0:
                cv2.rectangle(img, (xa, y1 - h), (xa + max(int(bw * 0.45) - 1, 1), y1), col, -1)
    _text(img, str(top), (6, y0 + 12), 0.45)
    _bars(img, rect, [], (0, 0, 0), ticks=[(f, f"{f:.2g}") for f in (0, 0.25, 0.5, 0.75, 1.0)])
    return img


def _aspect_panel(aspect):
    img, rect = _frame("box aspect ratio (width / height, pixels)")
    a = np.log2(np.clip(aspect, 1 / 16, 16)) if len(aspect) else np.zeros(0)
    hist, _ = np.histogram(a, np.linspace(-4, 4, 49))
    ticks = [((v + 4) / 8, s) for v, s in ((-4, "1:16"), (-2, "1:4"), (-1, "1:2"), (0, "1:1"), (1, "2:1"),
                                            (2, "4:1"), (4, "16:1"))]
    _bars(img, rect, hist, (60, 160, 60), ticks=ticks)
    return img


def _centre_panel(xywh):
    img, (x0, y0, x1, y1) = _frame("box centres (x right, y down)")
    side = min(x1 - x0, y1 - y0)
    x0 = x0 + (x1 - x0 - side) // 2
    h2, _, _ = np.histogram2d(xywh[:, 1], xywh[:, 0], bins=50, range=[[0, 1], [0, 1]])
    heat = np.log1p(h2)
    heat = (255 * heat / max(heat.max(), 1e-9)).astype(np.uint8)
    heat = cv2.applyColorMap(cv2.resize(heat, (side, side), interpolation=cv2.INTER_NEAREST), cv2.COLORMAP_VIRIDIS)
    img[y0 : y0 + side, x0 : x0 + side] = heat
    cv2.rectangle(img, (x0, y0), (x0 + side, y0 + side), (0, 0, 0), 1)
    cv2.rectangle(img, (MARGIN[0], y0), (x1, y1), (255, 255, 255), 1)
    for f in (0, 0.5, 1):
        _text(img, f"{f:g}", (x0 + int(f * side) - 8, y0 + side + 18), 0.45)
        _text(img, f"{f:g}", (x0 - 30, y0 + int(f * side) + 5), 0.45)
    _text(img, "log count", (x0 + side + 10, y0 + 14), 0.45, (90, 90, 90))
    return img


def plot_label_stats(path, cls, polys, names: dict, shapes=None) -> Path:
    """``labels.jpg``: see the module docstring. ``cls`` (n,) class ids, ``polys`` n normalized polygons,
    ``shapes`` the (h, w) of each polygon's image (default: square images)."""
    shapes = np.ones((len(polys), 2)) if shapes is None else shapes
    xywh, aspect = label_boxes(polys, shapes)
    top = np.concatenate([_class_panel(cls, names), _centre_panel(xywh)], 1)
    bottom = np.concatenate([_size_panel(xywh), _aspect_panel(aspect)], 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, np.concatenate([top, bottom], 0))
    return path


def plot_overlays(path, items, names: dict, tile: int = 480) -> Path:
    """``overlays.jpg``: up to 16 images (objects with ``im_file``, ``cls``, normalized ``polys``) with their
    polygons filled with transparency, outlined in the class colour, and labelled with the class name."""
    from yoloseg.data.augment_polygons import Polygons, rasterize

    images, titles = [], []
    for it in items[:16]:
        im = cv2.imread(str(it.im_file), cv2.IMREAD_COLOR)
        if im is None:
            continue
        r = min(tile / max(im.shape[:2]), 1.0)
        if r < 1:
            im = cv2.resize(im, (max(int(im.shape[1] * r), 1), max(int(im.shape[0] * r), 1)),
                            interpolation=cv2.INTER_AREA)
        h, w = im.shape[:2]
        cls = np.asarray(it.cls, np.int64)
        if len(it.polys):
            polys = Polygons.from_list(list(it.polys), scale=(w, h))
            masks = rasterize(polys, (h, w), ratio=1).astype(bool)
            im = plot_instances(im, polys.boxes(), cls, None, masks, names, show_conf=False, line_width=1,
                                show_boxes=False, alpha=0.45)
            for c, p in zip(cls, polys.to_list()):
                cv2.polylines(im, [np.round(p).astype(np.int32)], True, colors(int(c)), 1, cv2.LINE_AA)
        images.append(im)
        titles.append(f"{Path(it.im_file).name} ({len(cls)})")
    canvas = mosaic(images, titles, tile) if images else np.full((tile, tile, 3), 255, np.uint8)
    if not images:
        _text(canvas, "no readable image", (20, tile // 2), 0.8, GREY, 2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, canvas)
    return path
