"""The built-in default data set ``synthetic-shapes``.

Generated on first use, deterministically (seeded numpy, fixed drawing order), as real JPEG images and
YOLO-seg label files, so that training on it runs the same scan/augment/collate path as any data set.
Each image holds 1..``max_instances`` filled shapes (class 0 ellipse, 1 triangle, 2 rectangle), each class
in its own colour family, on a noisy textured background; shapes may partly occlude earlier ones, in
which case the label is the polygon of the visible part.

Generation writes into a temporary folder beside the target and renames it into place, so an
interrupted run never leaves a half-written data set behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from yoloseg.data.yaml import PACKAGED_DIR, data_dir

__all__ = ["ensure_synthetic_shapes", "generate_synthetic_shapes", "synthetic_spec"]

# Hue centre (OpenCV 0..180 scale) of each class's colour family.
_CLASS_HUES = (5, 60, 112)


def synthetic_spec() -> dict:
    """The packaged description: ``names`` and the generator settings under ``synthetic``."""
    spec = yaml.safe_load((PACKAGED_DIR / "synthetic-shapes.yaml").read_text())
    return spec


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Low-saturation texture: smooth luminance blobs, a slight colour cast, faint strokes."""
    base = rng.uniform(70, 180)
    lum = rng.normal(0, 20, size=(6, 6, 1)).astype(np.float32)
    tint = rng.normal(0, 6, size=(4, 4, 3)).astype(np.float32)
    img = base + cv2.resize(lum, (s, s), interpolation=cv2.INTER_CUBIC)[:, :, None]
    img = img + cv2.resize(tint, (s, s), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 7))):
        grey = float(base + rng.uniform(-35, 35))
        col = (grey, grey, grey)
        p1 = tuple(int(v) for v in rng.integers(0, s, 2))
        if rng.random() < 0.5:
            p2 = tuple(int(v) for v in rng.integers(0, s, 2))
            cv2.line(img, p1, p2, col, int(rng.integers(1, 4)))
        else:
            cv2.circle(img, p1, int(rng.integers(8, s // 4)), col, int(rng.integers(1, 3)))
    return np.ascontiguousarray(img)


def _shape_polygon(rng: np.random.Generator, cls: int, s: int) -> np.ndarray:
    """A float (K, 2) polygon in pixels (cv2 drawing convention) for one shape of class ``cls``."""
    size = rng.uniform(0.16, 0.42) * s  # rough diameter
    r = size / 2
    cx, cy = rng.uniform(r * 0.7, s - r * 0.7, 2)
    ang = rng.uniform(0, np.pi)
    if cls == 0:  # ellipse
        a, b = r, r * rng.uniform(0.45, 1.0)
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        pts = np.stack([a * np.cos(t), b * np.sin(t)], 1)
    elif cls == 1:  # triangle with no sliver angles
        while True:
            th = np.sort(rng.uniform(0, 2 * np.pi, 3))
            gaps = np.diff(np.append(th, th[0] + 2 * np.pi))
            if gaps.min() > np.deg2rad(70):
                break
        rad = r * rng.uniform(0.85, 1.1, 3)
        pts = np.stack([rad * np.cos(th), rad * np.sin(th)], 1)
    else:  # rectangle
        w = r * rng.uniform(0.8, 1.25)
        h = w * rng.uniform(0.45, 1.0)
        pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], dtype=np.float64)
    c, sn = np.cos(ang), np.sin(ang)
    rot = np.array([[c, -sn], [sn, c]])
    pts = pts @ rot.T + (cx, cy)
    return np.clip(pts, 0, s - 1).astype(np.float32)


def _fill(mask_shape, poly: np.ndarray) -> np.ndarray:
    m = np.zeros(mask_shape, np.uint8)
    cv2.fillPoly(m, [np.round(poly * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return m


def _visible_polygon(mask: np.ndarray) -> np.ndarray | None:
    """Outline of a single-region mask, or None when it has several parts or a hole."""
    n, _ = cv2.connectedComponents(mask, connectivity=8)
    if n != 2:
        return None
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    c = max(contours, key=cv2.contourArea)
    c = cv2.approxPolyDP(c, 0.6, True).reshape(-1, 2).astype(np.float32)
    if len(c) < 3:
        return None
    refill = _fill(mask.shape, c)
    if abs(int(refill.sum()) - int(mask.sum())) > 0.04 * mask.sum() + 8:  # a hole or a bad outline
        return None
    return c


def _make_image(rng: np.random.Generator, s: int, max_instances: int):
    img = _background(rng, s)
    n = int(rng.integers(1, max_instances + 1))
    polys, classes, full, visible = [], [], [], []
    for _ in range(n):
        for _attempt in range(12):
            cls = int(rng.integers(0, 3))
            poly = _shape_polygon(rng, cls, s)
            m = _fill((s, s), poly)
            if m.sum() < 150:
                continue
            ok, new_vis = True, []
            for j in range(len(polys)):
                vis = visible[j] & (1 - m)
                if vis.sum() < 0.6 * full[j].sum() or (vis.sum() != visible[j].sum() and _visible_polygon(vis) is None):
                    ok = False
                    break
                new_vis.append(vis)
            if ok:
                visible[: len(new_vis)] = new_vis
                polys.append(poly)
                classes.append(cls)
                full.append(m)
                visible.append(m.copy())
                hsv = np.uint8([[[(_CLASS_HUES[cls] + rng.integers(-6, 7)) % 180, rng.integers(150, 256), rng.integers(140, 256)]]])
                colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
                shade = rng.uniform(-18, 18, 3).astype(np.float32)
                img[m.astype(bool)] = colour + shade
                break
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    img = img + rng.normal(0, 7, img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    labels = []
    for poly, cls, f, v in zip(polys, classes, full, visible):
        outline = poly if int(v.sum()) == int(f.sum()) else _visible_polygon(v)
        if outline is None:
            continue
        # drawing uses pixel-centre coordinates; labels use pixel-edge ones (pixel i spans [i, i+1])
        labels.append((cls, np.clip((outline + 0.5) / s, 0.0, 1.0)))
    return img, labels


def generate_synthetic_shapes(out_dir, n_train=64, n_val=24, imgsz=320, seed=0, max_instances=4, names=None):
    """Write the data set (``images/``, ``labels/``, ``data.yaml``) into ``out_dir`` (must not exist)."""
    out_dir = Path(out_dir)
    names = names or {0: "ellipse", 1: "triangle", 2: "rectangle"}
    for split_id, (split, count) in enumerate((("train", n_train), ("val", n_val))):
        (out_dir / "images" / split).mkdir(parents=True)
        (out_dir / "labels" / split).mkdir(parents=True)
        for i in range(int(count)):
            rng = np.random.default_rng([int(seed), split_id, i])
            img, labels = _make_image(rng, int(imgsz), int(max_instances))
            stem = f"{split}_{i:05d}"
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
            if not ok:
                raise RuntimeError("could not encode a synthetic image as JPEG")
            (out_dir / "images" / split / f"{stem}.jpg").write_bytes(buf.tobytes())
            lines = [f"{c} " + " ".join(f"{v:.6f}" for v in p.reshape(-1)) for c, p in labels]
            (out_dir / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    meta = {
        "path": ".",
        "train": "images/train",
        "val": "images/val",
        "names": {int(k): str(v) for k, v in names.items()},
    }
    head = "# synthetic-shapes (generated by yoloseg; safe to delete, it is regenerated on demand)\n"
    (out_dir / "data.yaml").write_text(head + yaml.safe_dump(meta, sort_keys=False))
    return out_dir / "data.yaml"


def ensure_synthetic_shapes(root=None, **overrides) -> Path:
    """Path of the synthetic data set's ``data.yaml``, generating the set first if needed.

    ``root`` defaults to :func:`yoloseg.data.yaml.data_dir`. ``overrides`` replace generator settings
    of the packaged spec (``n_train``, ``n_val``, ``imgsz``, ``seed``, ``max_instances``); non-default
    settings get their own folder.
    """
    spec = synthetic_spec()
    gen = dict(spec["synthetic"])
    unknown = set(overrides) - (set(gen) - {"version"})
    if unknown:
        raise ValueError(f"unknown synthetic-shapes setting(s) {sorted(unknown)}; valid: {sorted(gen)}")
    version = gen.pop("version")
    default = dict(gen)
    gen.update(overrides)
    name = f"synthetic-shapes-v{version}"
    if gen != default:
        name += "-" + "-".join(f"{k}{gen[k]}" for k in sorted(gen))
    root = Path(root) if root is not None else data_dir()
    final = root / name
    if (final / "data.yaml").is_file():
        return final / "data.yaml"
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root, name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        generate_synthetic_shapes(tmp / "ds", names=spec["names"], **gen)
        try:
            os.rename(tmp / "ds", final)
        except OSError:
            if not (final / "data.yaml").is_file():  # not a lost race with another process
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "data.yaml"


def _remove_stale_tmp(root: Path, name: str, age_s: float = 3600.0) -> None:
    """Delete leftovers of interrupted generations (older than ``age_s``)."""
    now = time.time()
    for p in root.glob(f".{name}.tmp-*"):
        try:
            if now - p.stat().st_mtime > age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass
