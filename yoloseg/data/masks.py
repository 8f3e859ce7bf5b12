"""Convert PNG mask images into YOLO-seg label files (``yoloseg convert masks``).

Two kinds of mask image, single-channel, 8 or 16 bit (PNG; TIFF and BMP read too), 0 = background:

* ``instance``: one value per instance. Each instance's class comes from a class mapping file (JSON or
  YAML: ``{instance_id: class}`` for every image, or ``{image_stem: {instance_id: class}}``) or from a
  class-id image of the same name in ``class_masks`` (the most frequent non-background value under the
  instance; class = value - ``offset``).
* ``class``: the pixel value is the class (class = value - ``offset``; ``ignore`` marks void pixels): each
  8-connected component of a class becomes one instance.

Each instance becomes one polygon: every 8-connected part is traced with the compiled contour tracer
(:func:`yoloseg.ops.masks_to_polygons`); a hole (background enclosed by the part) is traced as the border
of the part's pixels around it, oriented against the outer border and linked in at the closest vertices,
and the parts are linked the same way (:func:`yoloseg.ops.reference.join_contours`, the multi-part
convention `yoloseg convert coco` uses). Points are pixel centres ``(x + 0.5, y + 0.5)`` divided by the mask
width and height, so the training rasterizer fills back the traced pixels; a part one pixel wide (no
area between its pixel centres) becomes a thin rectangle around them. Parts are linked nearest first, as
the links are drawn as lines when a polygon is filled. A mask that cannot be used
(unreadable, colour, size differing from its class image, instance without a class) is reported per item
and skipped; the conversion goes on.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from yoloseg.utils.files import atomic_write_bytes, remove_partials

__all__ = ["MasksResult", "masks_to_yolo", "mask_polygon", "load_class_map"]

MASK_EXTS = (".png", ".tif", ".tiff", ".bmp")
MODES = ("instance", "class")


@dataclass
class MasksResult:
    out_dir: str
    n_masks: int = 0
    n_written: int = 0
    n_instances: int = 0
    problems: list = field(default_factory=list)  # (file, message)

    def summary(self) -> str:
        return (f"{self.n_masks} masks -> {self.out_dir}: {self.n_written} label files, {self.n_instances} "
                f"instances, {len(self.problems)} problems")


class _Bad(Exception):
    """A mask (or an instance of it) that cannot be converted."""


# ---------------------------------------------------------------------------------------------- geometry
def _signed_area(p) -> float:
    x, y = p[:, 0].astype(np.float64), p[:, 1].astype(np.float64)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _orient(p, sign):
    return p if np.sign(_signed_area(p)) == sign or sign == 0 else p[::-1]


def _part_polygon(comp: np.ndarray) -> list:
    """Outer border and hole borders of one 8-connected part (uint8 crop framed by a zero row/column)."""
    from yoloseg.ops import masks_to_polygons

    n, lab = cv2.connectedComponents((comp == 0).astype(np.uint8), connectivity=4)
    stack = [comp]
    if n > 2:  # background parts other than the one around the frame: holes
        stack += [(lab == k).astype(np.uint8) for k in range(1, n) if k != lab[0, 0]]
    polys = masks_to_polygons(np.stack(stack), "largest")
    return [p.astype(np.float64) for p in polys]


def _closest(a, b):
    """(i, j) minimising |a[i] - b[j]| for float vertices, compared on a quarter-pixel grid (compiled
    search when built; first in row-major order on ties)."""
    from yoloseg.ops._compiled import C, has_family

    if has_family("polygons") and hasattr(C, "closest_vertices"):
        qa, qb = (np.round(np.asarray(p, np.float64) * 4).astype(np.int32) for p in (a, b))
        return tuple(int(v) for v in C.closest_vertices(np.ascontiguousarray(qa), np.ascontiguousarray(qb)))
    from yoloseg.ops.reference import closest_vertices

    return closest_vertices(np.round(np.asarray(a, np.float64) * 4), np.round(np.asarray(b, np.float64) * 4))


def _insert(poly, part):
    """``part`` linked into ``poly`` at their closest vertices by an edge walked there and back (the
    multi-part convention of :func:`yoloseg.ops.reference.join_contours`, here onto the whole polygon)."""
    i, j = _closest(poly, part)
    rolled = np.roll(part, -j, axis=0)
    return np.concatenate([poly[: i + 1], rolled, rolled[:1], poly[i:]])


def _link(polys: list) -> np.ndarray:
    """One polygon from several: from the first, the nearest remaining one is linked in at its closest
    vertex, again and again (links are filled as lines by a rasterizer: short links add fewer pixels).
    Beyond 32 parts they are chained in order of their centres' nearness instead."""
    from yoloseg.ops.reference import join_contours

    if len(polys) == 1:
        return polys[0]
    if len(polys) > 32:
        centres = [p.mean(0) for p in polys]
        left, order = list(range(1, len(polys))), [0]
        while left:
            d = [float(((centres[order[-1]] - centres[k]) ** 2).sum()) for k in left]
            order.append(left.pop(int(np.argmin(d))))
        return join_contours([polys[k] for k in order], _closest)
    poly, left = polys[0], list(polys[1:])
    while left:
        gaps = []
        for p in left:
            i, j = _closest(poly, p)
            gaps.append(float(((poly[i] - p[j]) ** 2).sum()))
        poly = _insert(poly, left.pop(int(np.argmin(gaps))))
    return poly


def _grow(ring: np.ndarray, d: float) -> np.ndarray:
    """A hole's outline (through its own pixel centres) with every edge moved ``d`` out of the hole, mitred at
    the corners: the hole's pixels then lie inside the hole polygon and the part's pixels around it outside
    (0.6, not 0.5: a pixel centre exactly half a pixel from an edge is a tie the rasterizer may fill).
    A hole without area (a pixel, a line) becomes the rectangle around its pixel centres, ``d`` wider."""
    if len(ring) < 3 or _signed_area(ring) == 0:
        (x0, y0), (x1, y1) = ring.min(0) - d, ring.max(0) + d
        return np.array([[x0, y0], [x0, y1], [x1, y1], [x1, y0]])
    e = np.roll(ring, -1, 0) - ring
    n = np.stack([e[:, 1], -e[:, 0]], 1) / np.maximum(np.hypot(e[:, 0], e[:, 1]), 1e-12)[:, None]
    a, b = np.roll(n, 1, 0), n  # unit normals of the edges into and out of each vertex
    step = (a + b) / np.maximum(1.0 + (a * b).sum(1), 0.5)[:, None]
    out = ring + d * step
    return out if abs(_signed_area(out)) > abs(_signed_area(ring)) else ring - d * step


HOLE_GROW = 0.6  # how far a hole's outline moves out of the hole (see _grow)
THIN = 0.4  # half-width of the rectangle drawn for a part one pixel wide (covers its pixel centres only)


def mask_polygon(mask: np.ndarray) -> np.ndarray:
    """(K, 2) float32 polygon in pixel-index coordinates covering the binary ``mask`` (H, W): every part and
    hole joined into one polygon (see the module docstring); (0, 2) when the mask is empty. A part one pixel
    wide (no area between its pixel centres) becomes the rectangle around its pixel centres, ``THIN`` wide."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    parts, sign = [], None
    for j in np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable") + 1:  # largest part first
        x, y, w, h = (int(v) for v in stats[j, :4])
        comp = np.zeros((h + 2, w + 2), np.uint8)
        comp[1:-1, 1:-1] = lab[y : y + h, x : x + w] == j
        rings = [r.astype(np.float64) + (x - 1, y - 1) for r in _part_polygon(comp)]
        if len(rings[0]) < 3 or _signed_area(rings[0]) == 0:
            (x0, y0), (x1, y1) = rings[0].min(0) - THIN, rings[0].max(0) + THIN
            rings = [np.array([[x0, y0], [x0, y1], [x1, y1], [x1, y0]])]
        if sign is None:
            sign = np.sign(_signed_area(rings[0]))
        holes = [_orient(_grow(h, HOLE_GROW), -sign) for h in rings[1:]]
        parts.append(_link([_orient(rings[0], sign)] + holes))
    if not parts:
        return np.zeros((0, 2), np.float32)
    return _link(parts).astype(np.float32)


# ---------------------------------------------------------------------------------------------- reading
def load_class_map(path) -> dict:
    """Instance-to-class mapping from a JSON or YAML file; errors name the file and the position."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"class mapping {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"class mapping {path}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"class mapping {path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"class mapping {path}: expected a non-empty mapping {{instance_id: class}} or "
                         f"{{image_stem: {{instance_id: class}}}}")

    def ids(d, where):
        try:
            return {int(k): int(v) for k, v in d.items()}
        except (TypeError, ValueError):
            raise ValueError(f"class mapping {path}: {where} must map integer instance ids to integer "
                             f"classes") from None

    if all(isinstance(v, dict) for v in raw.values()):
        return {str(stem): ids(d, f"entry {stem!r}") for stem, d in raw.items()}
    return {None: ids(raw, "the mapping")}


def _read(path: Path, what: str) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise _Bad(f"{what} cannot be read (missing, damaged or not an image)")
    if img.ndim == 3:
        if img.shape[2] in (3, 4) and (img[..., :3] == img[..., :1]).all():
            img = img[..., 0]  # a grey image saved with colour channels
        else:
            raise _Bad(f"{what} is a colour image; expected one channel of ids")
    if img.dtype.kind not in "ui":
        raise _Bad(f"{what} holds {img.dtype} values; expected 8- or 16-bit integer ids")
    return img


# ---------------------------------------------------------------------------------------------- convert
def _boxes(img: np.ndarray, ignore=None) -> list:
    """(value, x0, y0, x1, y1) of every non-zero value of ``img`` (one pass over the set pixels)."""
    flat = img.ravel()
    idx = np.flatnonzero(flat)
    if ignore is not None:
        idx = idx[flat[idx] != ignore]
    if not idx.size:
        return []
    vals = flat[idx]
    order = np.argsort(vals, kind="stable")
    vals, idx = vals[order], idx[order]
    starts = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]])
    out = []
    w = img.shape[1]
    for s, e in zip(starts.tolist(), np.r_[starts[1:], len(vals)].tolist()):
        y, x = np.divmod(idx[s:e], w)
        out.append((int(vals[s]), int(x.min()), int(y.min()), int(x.max()) + 1, int(y.max()) + 1))
    return out


def _instances(img, mode, stem, class_map, class_img, offset, ignore, problems, tag):
    """(class, binary mask crop, x0, y0) for each instance of one mask image."""
    out = []
    boxes = _boxes(img, ignore if mode == "class" else None)
    if mode == "class":
        for v, x0, y0, x1, y1 in boxes:
            if v - offset < 0:
                problems.append((tag, f"value {v} gives class {v - offset} < 0 (offset={offset}); skipped"))
                continue
            n, lab, stats, _ = cv2.connectedComponentsWithStats((img[y0:y1, x0:x1] == v).astype(np.uint8),
                                                                connectivity=8)
            for j in range(1, n):
                x, y, w, h = (int(t) for t in stats[j, :4])
                out.append((v - offset, lab[y : y + h, x : x + w] == j, x0 + x, y0 + y))
        return out
    table = None if class_map is None else class_map.get(stem, class_map.get(None))
    if class_map is not None and table is None:
        raise _Bad(f"no entry {stem!r} in the class mapping")
    for v, x0, y0, x1, y1 in boxes:
        m = img[y0:y1, x0:x1] == v
        if table is not None:
            if v not in table:
                problems.append((tag, f"instance {v} has no class in the mapping; skipped"))
                continue
            c = table[v]
        else:
            under = class_img[y0:y1, x0:x1][m].astype(np.int64)
            under = under[(under != 0) & (under != ignore)]
            if not under.size:
                problems.append((tag, f"instance {v} lies on background of the class image; skipped"))
                continue
            c = int(np.bincount(under).argmax()) - offset
        if c < 0:
            problems.append((tag, f"instance {v}: class {c} < 0; skipped"))
            continue
        out.append((c, m, x0, y0))
    return out


def _convert_one(path: Path, rel: Path, out_dir: Path, mode, class_map, class_masks, offset, ignore):
    problems = []
    tag = str(path)
    try:
        img = _read(path, "mask")
        class_img = None
        if mode == "instance" and class_map is None:
            cpath = class_masks / rel
            class_img = _read(cpath, f"class image {cpath}")
            if class_img.shape != img.shape:
                raise _Bad(f"class image {cpath} is {class_img.shape[1]}x{class_img.shape[0]}, the mask "
                           f"{img.shape[1]}x{img.shape[0]}")
        h, w = img.shape
        lines = []
        for c, m, x0, y0 in _instances(img, mode, path.stem, class_map, class_img, offset, ignore, problems, tag):
            poly = mask_polygon(m).astype(np.float64) + (x0, y0)
            norm = np.clip((poly + 0.5) / (w, h), 0.0, 1.0)
            lines.append(f"{c} " + " ".join(f"{v:.6f}" for v in norm.ravel().tolist()))
    except _Bad as e:
        return False, 0, problems + [(tag, f"{e}; skipped")]
    atomic_write_bytes(out_dir / rel.with_suffix(".txt"), "".join(s + "\n" for s in lines).encode("ascii"))
    return True, len(lines), problems


def masks_to_yolo(masks_dir, out_dir, mode: str = "instance", class_map=None, class_masks=None, offset: int = 1,
                  ignore: int = 255, workers: int | None = None, verbose: bool = True) -> MasksResult:
    """Convert every mask image under ``masks_dir`` into ``out_dir/<same relative path>.txt``.

    mode: ``"instance"`` (needs ``class_map``, a mapping file path or dict, or ``class_masks``, a folder of
    class-id images with the same relative names) or ``"class"``. offset: class = pixel value - offset for
    class-id images (default 1: value 1 is class 0). ignore: void value of class-id images.
    """
    from yoloseg.data.check import _map

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    masks_dir = Path(masks_dir).expanduser()
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"masks: {masks_dir} is not a folder")
    if mode == "instance":
        if (class_map is None) == (class_masks is None):
            raise ValueError("instance masks need exactly one of a class mapping file (--classes) and a folder "
                             "of class-id images (--class-masks)")
        if class_map is not None and not isinstance(class_map, dict):
            class_map = load_class_map(class_map)
        if class_masks is not None:
            class_masks = Path(class_masks).expanduser()
            if not class_masks.is_dir():
                raise FileNotFoundError(f"class masks: {class_masks} is not a folder")
    elif class_map is not None or class_masks is not None:
        raise ValueError("class-id masks carry their classes; a class mapping or class masks is for mode=instance")
    out_dir = Path(out_dir).expanduser()
    files = sorted(p for p in masks_dir.rglob("*") if p.suffix.lower() in MASK_EXTS and p.is_file())
    if class_masks is not None and class_masks.resolve() == masks_dir.resolve():
        raise ValueError("class masks must be in another folder than the instance masks")
    if not files:
        raise FileNotFoundError(f"masks: no {'/'.join(MASK_EXTS)} files in {masks_dir}")
    res = MasksResult(str(out_dir), n_masks=len(files))
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partials(out_dir, recursive=True)  # left by an interrupted run
    jobs = [(p, p.relative_to(masks_dir), out_dir, mode, class_map, class_masks, offset, ignore) for p in files]
    for ok, n, problems in _map(_convert_one, jobs, "convert masks", workers):
        res.n_written += ok
        res.n_instances += n
        res.problems.extend(problems)
    if verbose:
        for f, m in res.problems[:20]:
            print(f"WARNING {f}: {m}", file=sys.stderr)
        if len(res.problems) > 20:
            print(f"WARNING ... and {len(res.problems) - 20} more", file=sys.stderr)
        print(res.summary(), file=sys.stderr)
    return res

