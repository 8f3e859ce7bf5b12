"""Validation plots drawn with OpenCV: PR and F1/P/R curves, confusion matrices, val batch mosaics.

Files written into a val run folder:

* ``BoxPR_curve.png`` / ``MaskPR_curve.png``: COCO's interpolated precision at IoU 0.50 against recall
  (101 points) per class and their mean (the curve whose area is mAP50);
* ``BoxF1_curve.png`` / ``MaskF1_curve.png`` (and ``*P_curve.png``, ``*R_curve.png``): F1, precision and
  recall against confidence from the IoU-0.50 matching, per class and mean, best-F1 confidence marked;
* ``confusion_matrix.png`` (counts) and ``confusion_matrix_normalized.png`` (columns sum to 1);
* ``val_batch{i}_labels.jpg`` / ``val_batch{i}_pred.jpg``: ground truth and detections (conf >= 0.25, or
  the caller's ``conf``; written in each tile title) on the letterboxed images of the first batches.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from yoloseg.utils.plotting import colors, plot_instances

__all__ = ["plot_curves", "plot_confusion_matrix", "plot_metrics", "plot_val_batch", "mosaic"]

FONT = cv2.FONT_HERSHEY_SIMPLEX
GREY = (190, 190, 190)
MEAN_COLOR = (180, 80, 20)  # BGR: dark blue
PRED_CONF = 0.25
MAX_LEGEND = 20


def _write(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(Path(path).suffix or ".png", img)
    if not ok:
        raise ValueError(f"cannot encode {path}")
    buf.tofile(str(path))


def _text(img, s, org, scale=0.5, color=(0, 0, 0), thick=1):
    cv2.putText(img, str(s), (int(org[0]), int(org[1])), FONT, scale, color, thick, cv2.LINE_AA)


def plot_curves(path, x, ys, names: dict, xlabel: str, ylabel: str, title: str, mean_label: str,
                valid=None, mark_x: float | None = None, size=(1200, 800)) -> None:
    """Line chart of per-class curves ``ys`` (K, N) over ``x`` (N,) in [0, 1] x [0, 1] plus their mean
    (thick). ``valid`` (K,) selects the classes drawn and averaged; NaN points are skipped."""
    W, H = size
    img = np.full((H, W, 3), 255, np.uint8)
    ml, mr, mt, mb = 90, 300, 60, 80
    pw, ph = W - ml - mr, H - mt - mb

    def px(xv, yv):
        return ml + xv * pw, mt + (1 - yv) * ph

    for t in np.linspace(0, 1, 6):
        gx, gy = px(t, t)
        cv2.line(img, (int(gx), mt), (int(gx), mt + ph), (235, 235, 235), 1)
        cv2.line(img, (ml, int(gy)), (ml + pw, int(gy)), (235, 235, 235), 1)
        _text(img, f"{t:.1f}", (gx - 12, mt + ph + 22))
        _text(img, f"{t:.1f}", (ml - 40, gy + 5))
    cv2.rectangle(img, (ml, mt), (ml + pw, mt + ph), (0, 0, 0), 1)
    _text(img, xlabel, (ml + pw / 2 - 40, H - 25), 0.7)
    _text(img, ylabel, (10, mt - 8), 0.6)
    _text(img, title, (ml, 28), 0.8, thick=2)
    ys = np.asarray(ys, np.float64).reshape(-1, len(x))
    valid = np.ones(len(ys), bool) if valid is None else np.asarray(valid, bool)
    show_legend = int(valid.sum()) <= MAX_LEGEND
    legend = []

    def polyline(y, color, thick):
        ok = np.isfinite(y)
        if ok.sum() < 1:
            return
        pts = np.array([px(a, b) for a, b in zip(np.asarray(x)[ok], np.clip(y[ok], 0, 1))], np.float64)
        cv2.polylines(img, [np.round(pts).astype(np.int32)[:, None]], False, color, thick, cv2.LINE_AA)

    for k in np.flatnonzero(valid):
        col = colors(k) if show_legend else GREY
        polyline(ys[k], col, 1)
        if show_legend:
            legend.append((f"{names.get(int(k), k)}", col))
    if valid.any():
        with np.errstate(all="ignore"):
            mean = np.nanmean(np.where(np.isfinite(ys[valid]), ys[valid], np.nan), 0)
        polyline(mean, MEAN_COLOR, 3)
        legend.insert(0, (mean_label, MEAN_COLOR))
        if mark_x is not None:
            gx, _ = px(mark_x, 0)
            cv2.line(img, (int(gx), mt), (int(gx), mt + ph), MEAN_COLOR, 1, cv2.LINE_AA)
    y0 = mt + 10
    for s, col in legend[: MAX_LEGEND + 1]:
        cv2.line(img, (ml + pw + 15, y0), (ml + pw + 45, y0), col, 3 if col == MEAN_COLOR else 2)
        _text(img, s[:28], (ml + pw + 52, y0 + 5), 0.45)
        y0 += 22
    _write(path, img)


def plot_confusion_matrix(path, matrix: np.ndarray, names: dict, normalize: bool, size: int = 1000) -> None:
    """(nc+1)^2 matrix as a heat map; rows predicted, columns true, last row/column background.
    Class labels (and cell values) are written when there are at most 30 classes."""
    nc = matrix.shape[0] - 1
    m = np.asarray(matrix, np.float64)
    if normalize:
        tot = m.sum(0, keepdims=True)
        m = np.where(tot > 0, m / np.maximum(tot, 1), 0.0)
    labels = nc <= 30
    ml, mt = (170 if labels else 60), 70
    cell = max(4, (size - ml - 40) // (nc + 1))
    side = cell * (nc + 1)
    W, H = ml + side + 40, mt + side + (150 if labels else 60)
    img = np.full((H, W, 3), 255, np.uint8)
    vmax = m.max() if m.max() > 0 else 1.0
    t = (m / vmax)[..., None]
    white, blue = np.array([255, 255, 255.0]), np.array([140, 60, 10.0])  # BGR
    rgb = (white * (1 - t) + blue * t).astype(np.uint8)
    heat = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_NEAREST)
    img[mt : mt + side, ml : ml + side] = heat
    cv2.rectangle(img, (ml, mt), (ml + side, mt + side), (0, 0, 0), 1)
    names_all = [str(names.get(i, i)) for i in range(nc)] + ["background"]
    title = "Confusion matrix" + (" (normalized per true class)" if normalize else " (counts)")
    _text(img, title, (ml, 30), 0.8, thick=2)
    _text(img, "True", (ml + side // 2 - 20, H - 12), 0.6)
    _text(img, "Predicted", (5, mt - 12), 0.6)
    if labels:
        fs = min(0.5, cell / 40)
        for i, s in enumerate(names_all):
            _text(img, s[:20], (5, mt + i * cell + cell / 2 + 5), fs)
            # column labels written vertically: rotate a small text image
            timg = np.full((cell, 140, 3), 255, np.uint8)
            (tw, _), _ = cv2.getTextSize(s[:18], FONT, fs, 1)
            _text(timg, s[:18], (max(140 - tw - 4, 0), cell / 2 + 5), fs)  # ends next to the matrix
            timg = cv2.rotate(timg, cv2.ROTATE_90_COUNTERCLOCKWISE)
            y = mt + side + 5
            img[y : y + timg.shape[0], ml + i * cell : ml + i * cell + timg.shape[1]] = timg[: H - y]
        for r in range(nc + 1):
            for c in range(nc + 1):
                v = m[r, c]
                if v == 0:
                    continue
                s = f"{v:.2f}" if normalize else f"{int(v)}"
                col = (255, 255, 255) if v / vmax > 0.5 else (0, 0, 0)
                fsc = min(0.9, cell / 60)
                (tw, th), _ = cv2.getTextSize(s, FONT, fsc, 1)
                _text(img, s, (ml + c * cell + (cell - tw) / 2, mt + r * cell + (cell + th) / 2), fsc, col)
    _write(path, img)


def plot_metrics(save_dir, metrics, confusion=None) -> list[Path]:
    """All curve and confusion-matrix pictures of a finished evaluation; returns the written paths."""
    save_dir = Path(save_dir)
    out = []
    names = metrics.names
    for tag, m in (("Box", metrics.box), ("Mask", metrics.seg)):
        c = m.curves
        if "coco_precision50" in c:
            prec = c["coco_precision50"]
            valid = ~np.isnan(prec).all(1)
            p = save_dir / f"{tag}PR_curve.png"
            plot_curves(p, c["recall_thresholds"], prec, names, "Recall", "Precision",
                        f"{tag} precision-recall (COCO, IoU 0.50)", f"all classes mAP50 {m.map50:.3f}", valid)
            out.append(p)
        if "f1" in c:
            for key, label in (("f1", "F1"), ("p", "Precision"), ("r", "Recall")):
                p = save_dir / f"{tag}{label[0] if key != 'f1' else 'F1'}_curve.png"
                best = m.conf
                mean = c[key][c["has_gt"]].mean(0) if c["has_gt"].any() else np.zeros(1)
                at = float(mean[int(round(best * (len(c["conf"]) - 1)))]) if len(mean) > 1 else 0.0
                plot_curves(p, c["conf"], c[key], names, "Confidence", label, f"{tag} {label}-confidence (IoU 0.50)",
                            f"all classes {at:.2f} at {best:.3f}", c["has_gt"], mark_x=best)
                out.append(p)
    if confusion is not None:
        for norm, fname in ((True, "confusion_matrix_normalized.png"), (False, "confusion_matrix.png")):
            p = save_dir / fname
            plot_confusion_matrix(p, confusion.matrix, names, norm)
            out.append(p)
    return out


def mosaic(images: list, titles: list, tile: int = 480) -> np.ndarray:
    """Square grid of up to 16 images, each under its title: the title has its own band at the top of the
    ``tile`` square, so it never covers a label drawn near the image's top edge."""
    n = min(len(images), 16)
    g = int(np.ceil(np.sqrt(max(n, 1))))
    canvas = np.full((g * tile, g * tile, 3), 255, np.uint8)
    (_, th), _ = cv2.getTextSize("Ag", FONT, 0.5, 1)
    band = th + 12
    for k in range(n):
        im = images[k]
        r = min(tile / im.shape[1], (tile - band) / im.shape[0])
        h, w = max(int(im.shape[0] * r), 1), max(int(im.shape[1] * r), 1)
        im = cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
        y, x = (k // g) * tile, (k % g) * tile
        canvas[y + band : y + band + h, x : x + w] = im
        cv2.rectangle(canvas, (x, y), (x + tile - 1, y + tile - 1), (255, 255, 255), 2)
        _text(canvas, titles[k][:48], (x + 6, y + th + 6), 0.5, (0, 0, 0), 1)
    return canvas


def _label_images(batch: dict, names: dict, input_hw) -> tuple[list, list]:
    """The first 16 images of a collated batch with their ground truth drawn (masks, boxes, names)."""
    imgs = batch["img"][:16].cpu().numpy().transpose(0, 2, 3, 1)[..., ::-1]  # RGB -> BGR
    if imgs.dtype != np.uint8:  # preprocessed (float in [0, 1])
        imgs = np.clip(imgs * 255 + 0.5, 0, 255).astype(np.uint8)
    H, W = int(input_hw[0]), int(input_hw[1])
    titles = [Path(f).name for f in batch["im_file"][:16]]
    bidx = batch["batch_idx"].cpu().numpy().astype(int)
    cls = batch["cls"].cpu().numpy().reshape(-1).astype(int)
    xywh = batch["bboxes"].cpu().numpy().reshape(-1, 4) * [W, H, W, H]
    xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    masks = batch["masks"].cpu().numpy()
    overlap = masks.ndim == 3 and len(masks) == len(batch["img"]) and masks.dtype != np.uint8
    labels = []
    for i in range(len(imgs)):
        im = np.ascontiguousarray(imgs[i])
        sel = np.flatnonzero(bidx == i)
        if overlap:
            mk = np.stack([masks[i] == j + 1 for j in range(len(sel))]) if len(sel) else None
        else:
            mk = masks[sel].astype(bool) if len(sel) else None
        labels.append(plot_instances(im, xyxy[sel], cls[sel], None, mk, names, show_conf=False))
    return labels, titles


def plot_train_batch(save_dir, bi: int, batch: dict, names: dict) -> Path:
    """``train_batch{bi}.jpg``: the augmented training images of one batch with their labels."""
    path = Path(save_dir) / f"train_batch{bi}.jpg"
    labels, titles = _label_images(batch, names, batch["img"].shape[-2:])
    _write(path, mosaic(labels, titles))
    return path


def plot_val_batch(save_dir, bi: int, batch: dict, dets: list, protos, input_hw, names: dict,
                   conf: float = PRED_CONF) -> None:
    """``val_batch{bi}_labels.jpg`` and ``val_batch{bi}_pred.jpg`` for one collated batch; predictions with a
    score of at least ``conf`` are drawn."""
    from yoloseg import ops

    save_dir = Path(save_dir)
    imgs = batch["img"][:16].cpu().numpy().transpose(0, 2, 3, 1)[..., ::-1]  # RGB -> BGR
    H, W = int(input_hw[0]), int(input_hw[1])
    labels, titles = _label_images(batch, names, input_hw)
    preds = []
    for i in range(len(imgs)):
        im = np.ascontiguousarray(imgs[i])
        d = dets[i]
        d = d[d[:, 4] >= conf][:50]
        pm = None
        if len(d):
            pm = ops.process_mask(protos[i], d[:, 6:], d[:, :4], (H, W), upsample=True).cpu().numpy()
        preds.append(plot_instances(im, d[:, :4].cpu().numpy(), d[:, 5].cpu().numpy(), d[:, 4].cpu().numpy(), pm,
                                    names))
    _write(save_dir / f"val_batch{bi}_labels.jpg", mosaic(labels, titles))
    _write(save_dir / f"val_batch{bi}_pred.jpg", mosaic(preds, [f"{t} (conf>={conf:.3g})" for t in titles]))
