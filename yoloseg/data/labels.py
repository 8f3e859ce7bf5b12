"""One-time label scan: check every image and YOLO-seg label file, report each problem per file, cache.

A label file has one line per instance, ``cls x1 y1 x2 y2 ...`` with coordinates normalized to [0, 1].
The scan runs in a thread pool (image decoding releases the GIL) and handles, per file:

* unreadable, corrupt or zero-byte image: the image is skipped and counted as corrupt;
* polygon with fewer than 3 points, odd coordinate count, non-numeric values, zero area: instance dropped;
* coordinates outside [0, 1] (any distance, 1e30 included): clipped to the image and kept, and said so
  per line ("slightly" within ``CLIP_TOL``, else "far"); an instance left with zero area is dropped;
* NaN or infinite values (class or coordinates): instance dropped;
* class id that is not an integer in ``[0, nc)``: instance dropped;
* duplicate lines: removed;
* empty or missing label file: a background image (no instances), not an error.

Results are cached next to the labels (``<labels dir>.cache``, a numpy archive read without pickle),
keyed by a hash of the image and label files' names, sizes and modification times plus ``nc``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import stat
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from yoloseg.data.yaml import img2label_paths
from yoloseg.utils.files import atomic_write_bytes

__all__ = ["CLIP_TOL", "FIXABLE", "LabelSet", "parse_label_file", "parse_label_line", "scan_labels", "cache_path_for"]

LOGGER = logging.getLogger("yoloseg.data")
CACHE_VERSION = "yoloseg-labels-1"
CLIP_TOL = 0.01  # excursions outside [0, 1] up to this are reported as "slightly outside" (all are clipped)
MIN_IMAGE_SIDE = 2


@dataclass
class LabelSet:
    """The checked contents of one split.

    ``im_files``: usable images; ``shapes``: (n, 2) int (h, w) of each; ``cls``: list of (k,) int64;
    ``segments``: list of lists of (m, 2) float32 normalized polygons; ``report``: (file, message) pairs for
    every problem found; counters ``n_background``, ``n_corrupt``, ``n_warnings``, ``n_instances``.
    """

    im_files: list
    shapes: np.ndarray
    cls: list
    segments: list
    report: list = field(default_factory=list)
    n_background: int = 0
    n_corrupt: int = 0
    n_warnings: int = 0
    cache_file: str | None = None
    from_cache: bool = False

    @property
    def n_instances(self) -> int:
        return int(sum(len(c) for c in self.cls))

    def summary(self) -> str:
        return (
            f"{len(self.im_files)} images, {self.n_background} backgrounds, {self.n_corrupt} corrupt skipped, "
            f"{self.n_warnings} warnings ({self.n_instances} instances)"
        )

    def report_text(self, limit: int | None = None) -> str:
        rows = self.report if limit is None else self.report[:limit]
        lines = [f"  {f}: {m}" for f, m in rows]
        if limit is not None and len(self.report) > limit:
            lines.append(f"  ... and {len(self.report) - limit} more")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- images


def _jpeg_size(data: bytes):
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return h, w
        i += 2 + length
    return None


def _header_size(data: bytes):
    """(h, w) from a JPEG or PNG header without decoding, or None."""
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return h, w
    return None


def check_image(path: str):
    """``(shape (h, w) or None, problem message or None, warning or None)`` for one image file."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return None, f"unreadable image ({e.strerror or e})", None
    if size == 0:
        return None, "corrupt image: empty file (0 bytes)", None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return None, f"unreadable image ({e.strerror or e})", None
    buf = np.frombuffer(data, np.uint8)
    warn = None
    hw = _header_size(data)
    if hw is not None:
        # a reduced-size decode proves the file decodes, at a fraction of the cost
        reduced = True
        try:
            small = cv2.imdecode(buf, cv2.IMREAD_REDUCED_GRAYSCALE_8)
        except cv2.error:  # OpenCV cannot shrink some tiny images (1x1, ...): decode at full size
            reduced, small = False, cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        if small is None:
            return None, "corrupt image: cannot be decoded", None
        h, w = hw if reduced else small.shape[:2]
        sh, sw = small.shape[:2]
        if reduced and h != w and (abs(sh - -(-h // 8)) > 1 or abs(sw - -(-w // 8)) > 1):
            h, w = w, h  # EXIF orientation rotated the decoded image
        if data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            warn = "truncated JPEG (no end marker), decoded anyway"
    else:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if img is None:
            return None, "corrupt image: cannot be decoded (unknown or damaged format)", None
        h, w = img.shape[:2]
    if h < MIN_IMAGE_SIDE or w < MIN_IMAGE_SIDE:
        return None, f"corrupt image: size {w}x{h} is too small", None
    return (int(h), int(w)), None, warn


# ---------------------------------------------------------------------------------------------- labels


# Kinds of problem a label line can have; FIXABLE ones are repaired by `yoloseg check fix=True`.
FIXABLE = ("clipped", "duplicate", "degenerate")


def parse_label_line(line: str, ln: int, nc: int | None):
    """Check one non-empty label line (``ln``: its 1-based number).

    Returns ``(cls, points, kind, message)``: ``points`` is the (k, 2) float32 polygon (clipped to [0, 1]
    when it was outside) or None when the instance is dropped; ``kind`` is None for a clean line, else one of
    ``"clipped"`` (slightly outside, kept), ``"outside"`` (far outside the image: clipped and kept, or dropped
    when nothing is left inside, e.g. pixel coordinates), ``"degenerate"`` (< 3 points, odd count, zero area),
    ``"class"`` (unknown class id), ``"malformed"`` (non-numeric or non-finite values).
    """
    tokens = line.split()
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        return None, None, "malformed", f"line {ln}: non-numeric value, instance dropped"
    c, coords = values[0], values[1:]
    if not (math.isfinite(c) and c == int(c) and 0 <= c and (nc is None or c < nc)):
        valid = "a non-negative integer" if nc is None else f"0..{nc - 1}"
        return None, None, "class", f"line {ln}: unknown class id {tokens[0]} (valid {valid}), instance dropped"
    if len(coords) % 2:
        return None, None, "degenerate", f"line {ln}: odd number of coordinates ({len(coords)}), instance dropped"
    if len(coords) < 6:
        return None, None, "degenerate", f"line {ln}: polygon has {len(coords) // 2} points (< 3), instance dropped"
    pts = np.asarray(coords, np.float32).reshape(-1, 2)
    if not np.isfinite(pts).all():
        return None, None, "malformed", f"line {ln}: non-finite coordinate, instance dropped"
    lo, hi = float(pts.min()), float(pts.max())
    excursion = max(0.0 - lo, hi - 1.0)
    kind = msg = None
    if excursion > 0:  # clip and keep: one stray vertex must not cost the instance (or the image)
        pts = np.clip(pts, 0.0, 1.0)
        if excursion > CLIP_TOL:
            kind, msg = "outside", f"line {ln}: coordinates far outside [0, 1] (min {lo:.4g}, max {hi:.4g}), clipped"
        else:
            kind, msg = "clipped", f"line {ln}: coordinates slightly outside [0, 1] (by {excursion:.3g}), clipped"
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    if area <= 0.0:
        if kind == "outside":  # e.g. pixel coordinates: nothing is left inside the image
            return None, None, "outside", (f"line {ln}: coordinates far outside [0, 1] (min {lo:.4g}, max "
                                           f"{hi:.4g}), nothing left inside the image after clipping, instance dropped")
        return None, None, "degenerate", f"line {ln}: polygon has zero area, instance dropped"
    return int(c), pts, kind, msg


def read_label_lines(path: str):
    """``(lines, missing, error)``: the text lines of a label file (a byte-order mark is tolerated)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return [], True, None
    except (OSError, UnicodeDecodeError) as e:
        return [], False, f"label file unreadable ({e}); treated as background"
    return text.splitlines(), False, None


def parse_label_file(path: str, nc: int | None):
    """Parse one label file (``nc=None``: any non-negative class id is valid).

    Returns ``(cls list, polygon list, messages, missing: bool)``.
    """
    lines, missing, error = read_label_lines(path)
    if missing or error:
        return [], [], [error] if error else [], missing
    classes, polys, msgs = [], [], []
    dup = 0
    for ln, line, first in label_lines(lines):
        if first is not None:
            dup += 1
            continue
        c, pts, _, msg = parse_label_line(line, ln, nc)
        if msg:
            msgs.append(msg)
        if pts is not None:
            classes.append(c)
            polys.append(pts)
    if dup:
        msgs.append(f"{dup} duplicate line(s) removed")
    return classes, polys, msgs, False


def label_lines(lines):
    """``(line number, stripped line, first)`` for each non-empty line; ``first`` is the number of the earlier
    line it repeats (same numeric values, see :func:`_line_key`), else None."""
    seen = {}
    for ln, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        key = _line_key(line)
        first = seen.setdefault(key, ln)
        yield ln, line, (first if first != ln else None)


def _line_key(line: str):
    """Duplicate-line key: the line's numeric values (``1 0.5`` and ``1.0 0.50`` are the same line)."""
    try:
        return tuple(float(t) for t in line.split())
    except ValueError:
        return line


def _scan_one(args):
    im_file, lb_file, nc = args
    shape, problem, warn = check_image(im_file)
    if problem:
        return im_file, None, [], [], [problem], True, False
    classes, polys, msgs, missing = parse_label_file(lb_file, nc)
    if warn:
        msgs.insert(0, warn)
    background = not classes
    return im_file, shape, classes, polys, msgs, False, background and missing


# ---------------------------------------------------------------------------------------------- cache


def cache_path_for(label_files) -> Path:
    """``<labels dir>.cache`` for the folder of the first label file."""
    return Path(label_files[0]).parent.with_suffix(".cache")


def _files_hash(im_files, lb_files, nc) -> str:
    h = hashlib.sha256()
    h.update(f"{CACHE_VERSION}|nc={nc}|clip={CLIP_TOL}".encode())
    for f in list(im_files) + list(lb_files):
        try:
            st = os.stat(f)
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}|-\n".encode())
    return h.hexdigest()


def _save_cache(path: Path, ls: LabelSet, digest: str) -> bool:
    counts = [len(c) for c in ls.cls]
    npts = [len(p) for segs in ls.segments for p in segs]
    points = np.concatenate([p for segs in ls.segments for p in segs]) if npts else np.zeros((0, 2), np.float32)
    meta = {
        "version": CACHE_VERSION,
        "hash": digest,
        "report": ls.report,
        "n_background": ls.n_background,
        "n_corrupt": ls.n_corrupt,
        "n_warnings": ls.n_warnings,
    }
    arrays = {
        "meta": np.array(json.dumps(meta)),
        "im_files": np.array(ls.im_files, dtype=str) if ls.im_files else np.zeros((0,), dtype="<U1"),
        "shapes": np.asarray(ls.shapes, np.int32).reshape(-1, 2),
        "counts": np.asarray(counts, np.int64),
        "cls": np.asarray([c for cl in ls.cls for c in cl], np.int64),
        "npts": np.asarray(npts, np.int64),
        "points": points.astype(np.float32),
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    if not _writable(path.parent):
        LOGGER.warning(f"label cache not saved: {path.parent} is read-only")
        return False
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        LOGGER.warning(f"label cache not saved: {path.parent} is not writable ({e.strerror or e})")
        return False
    return True


def _writable(folder: Path) -> bool:
    """False for a folder without write permission bits, even when running as root."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(folder, os.W_OK)


def _load_cache(path: Path, digest: str) -> LabelSet | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("version") != CACHE_VERSION or meta.get("hash") != digest:
                return None
            im_files = [str(f) for f in z["im_files"]]
            shapes, counts, cls_all = z["shapes"], z["counts"], z["cls"]
            npts, points = z["npts"], z["points"]
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    cls, segments = [], []
    pt_off = np.concatenate([[0], np.cumsum(npts)])
    k = 0
    for n in counts:
        cls.append(cls_all[k : k + n].copy())
        segments.append([points[pt_off[j] : pt_off[j + 1]].copy() for j in range(k, k + n)])
        k += n
    return LabelSet(
        im_files,
        shapes.copy(),
        cls,
        segments,
        [tuple(r) for r in meta["report"]],
        meta["n_background"],
        meta["n_corrupt"],
        meta["n_warnings"],
        str(path),
        True,
    )


# ---------------------------------------------------------------------------------------------- scan


def scan_labels(im_files, nc: int | None, cache: bool = True, workers: int | None = None, prefix: str = "") -> LabelSet:
    """Check ``im_files`` and their label files; use or refresh the cache; log the summary and problems."""
    im_files = list(im_files)
    if not im_files:
        raise FileNotFoundError(f"{prefix}no images found")
    lb_files = img2label_paths(im_files)
    cache_file = cache_path_for(lb_files)
    digest = _files_hash(im_files, lb_files, nc)
    ls = _load_cache(cache_file, digest) if cache and cache_file.is_file() else None
    if ls is None:
        ls = _scan(im_files, lb_files, nc, workers)
        if cache and cache_file.parent.is_dir():
            if _save_cache(cache_file, ls, digest):
                ls.cache_file = str(cache_file)
    _log(ls, prefix)
    return ls


def _scan(im_files, lb_files, nc, workers) -> LabelSet:
    workers = workers or min(8, max(1, (os.cpu_count() or 1)))
    jobs = [(f, lb, nc) for f, lb in zip(im_files, lb_files)]
    with ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(_scan_one, jobs, chunksize=16) if len(jobs) > 32 else map(_scan_one, jobs))
    files, shapes, cls, segs, report = [], [], [], [], []
    n_bg = n_corrupt = n_warn = 0
    for im_file, shape, classes, polys, msgs, corrupt, missing_label in results:
        if corrupt:
            n_corrupt += 1
            report.extend((im_file, f"{m}; image skipped") for m in msgs)
            continue
        files.append(im_file)
        shapes.append(shape)
        cls.append(np.asarray(classes, np.int64))
        segs.append(polys)
        if not classes:
            n_bg += 1
            if missing_label:
                report.append((im_file, "no label file: background image"))
            elif not msgs:
                report.append((im_file, "empty label file: background image"))
        n_warn += len(msgs)
        report.extend((im_file, m) for m in msgs)
    shapes_arr = np.asarray(shapes, np.int32).reshape(-1, 2)
    return LabelSet(files, shapes_arr, cls, segs, report, n_bg, n_corrupt, n_warn)


def _log(ls: LabelSet, prefix: str) -> None:
    src = f" (from cache {ls.cache_file})" if ls.from_cache else ""
    LOGGER.info(f"{prefix}{ls.summary()}{src}")
    problems = [(f, m) for f, m in ls.report if "background image" not in m]
    if problems:
        limit = 50
        lines = "\n".join(f"  {f}: {m}" for f, m in problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        LOGGER.warning(f"{prefix}label problems per file:\n{lines}{more}")
    if not ls.im_files:
        raise FileNotFoundError(f"{prefix}no usable images ({ls.n_corrupt} corrupt)")
